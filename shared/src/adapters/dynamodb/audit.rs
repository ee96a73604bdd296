//! The audit log on the tenants table: `AUDIT#{tenant or _operator}` / `{position}` (see
//! `domain::audit::AuditRecord::position`), the record as JSON in `record`, and the TTL
//! attribute `expires_at` at its `retain_until`. A page is one Query, newest first, on
//! `sk < cursor`: the partition is fixed by the tenant asked for, so no cursor reaches
//! another tenant's log.

use async_trait::async_trait;

use super::DynamoStore;
use super::codec::{EXPIRES_AT, PK, SK, get_json, json, key_pk_sk, n, s};
use super::error;
use crate::domain::audit::{AuditRecord, OPERATOR_SCOPE};
use crate::domain::ids::TenantId;
use crate::ports::store::{AuditLog, AuditPage, StoreError};

fn audit_pk(scope: &str) -> String {
    format!("AUDIT#{scope}")
}

#[async_trait]
impl AuditLog for DynamoStore {
    async fn append(&self, record: &AuditRecord) -> Result<(), StoreError> {
        let mut item = key_pk_sk(audit_pk(record.scope()), record.position());
        item.insert("record".into(), json(record)?);
        item.insert(EXPIRES_AT.into(), n(record.retain_until.timestamp()));
        self.put_tenants_item(item).await
    }

    async fn audit_page(
        &self,
        tenant: Option<&TenantId>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<AuditPage, StoreError> {
        let scope = tenant.map_or(OPERATOR_SCOPE, TenantId::as_str);
        let limit = limit.clamp(1, 1_000);
        let mut query = self
            .client
            .query()
            .table_name(&self.names.tenants)
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":pk", s(audit_pk(scope)))
            .scan_index_forward(false)
            .consistent_read(true)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX));
        query = match cursor {
            Some(cursor) => query
                .key_condition_expression("#pk = :pk AND #sk < :cursor")
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":cursor", s(cursor)),
            None => query.key_condition_expression("#pk = :pk"),
        };
        self.trip();
        let out = query.send().await.map_err(|e| error::sdk("Query", e))?;
        let records: Vec<AuditRecord> = out
            .items
            .unwrap_or_default()
            .iter()
            .map(|item| get_json(item, "record"))
            .collect::<Result<_, _>>()?;
        let next = match out.last_evaluated_key {
            Some(_) => records.last().map(AuditRecord::position),
            None => None,
        };
        Ok(AuditPage { records, next })
    }
}
