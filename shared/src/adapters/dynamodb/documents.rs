//! The document registry on the tenants table: `DOCS#{tenant}` / `{document id}` holding the
//! record as JSON. One Query lists a tenant's documents, ordered by id.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;

use super::DynamoStore;
use super::codec::{Item, PK, get_json, json, key_pk_sk, s};
use super::error;
use crate::domain::documents::DocumentId;
use crate::domain::ids::TenantId;
use crate::ports::store::{DocumentRecord, DocumentStore, StoreError};

fn docs_pk(tenant: &TenantId) -> String {
    format!("DOCS#{tenant}")
}

#[async_trait]
impl DocumentStore for DynamoStore {
    async fn put_document(&self, record: &DocumentRecord) -> Result<(), StoreError> {
        let mut item: Item = key_pk_sk(docs_pk(&record.tenant_id), record.document_id.as_str());
        item.insert("record".into(), json(record)?);
        self.put_tenants_item(item).await
    }

    async fn documents(&self, tenant: &TenantId) -> Result<Vec<DocumentRecord>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.names.tenants)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":pk", s(docs_pk(tenant)))
            .consistent_read(true);
        self.query_all(query)
            .await?
            .iter()
            .map(|item| get_json(item, "record"))
            .collect()
    }

    async fn delete_document(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
    ) -> Result<bool, StoreError> {
        self.trip();
        let out = self
            .client
            .delete_item()
            .table_name(&self.names.tenants)
            .set_key(Some(key_pk_sk(docs_pk(tenant), document.as_str())))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| error::sdk("DeleteItem", e))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }
}
