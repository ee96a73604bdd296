//! Conversations and anomalies on the usage table.
//!
//! - `CONV#{tenant}#{conversation}` / `TURN#{uuid v7}#{n}`: one turn as JSON. Loading is one
//!   Query, newest first, limited to the turns wanted. The tenant is part of the key, so the
//!   same conversation id under another tenant is another partition.
//! - `ANOMALY#{tenant}` / `{hour}#{kind}`: written with `attribute_not_exists(pk)`, so a retried
//!   or duplicated scheduled run records it once. `gsi1pk = ANOMALIES`, `gsi1sk =
//!   {hour}#{tenant}#{kind}` on the `by_tenant_time` index lists every tenant's anomalies by
//!   hour for operators.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use super::DynamoStore;
use super::codec::{GSI1PK, GSI1SK, PK, SK, get_json, json, key_pk_sk, s, time_key};
use super::error;
use super::tables::USAGE_BY_TENANT_TIME;
use crate::domain::ids::TenantId;
use crate::ports::store::{
    AnomalyRecord, AnomalyStore, ConversationStore, Recorded, StoreError, Turn,
};

fn conversation_pk(tenant: &TenantId, conversation: &str) -> String {
    format!("CONV#{tenant}#{conversation}")
}

#[async_trait]
impl ConversationStore for DynamoStore {
    async fn append_turns(
        &self,
        tenant: &TenantId,
        conversation: &str,
        turns: &[Turn],
    ) -> Result<(), StoreError> {
        // A UUIDv7 per append sorts by time and never collides, even for two appends in the
        // same millisecond; `n` keeps the order within one append.
        let append = uuid::Uuid::now_v7();
        for (n, turn) in turns.iter().enumerate() {
            let sk = format!("TURN#{append}#{n:04}");
            let mut item = key_pk_sk(conversation_pk(tenant, conversation), sk);
            item.insert("turn".into(), json(turn)?);
            self.trip();
            self.client
                .put_item()
                .table_name(&self.names.usage)
                .set_item(Some(item))
                .send()
                .await
                .map_err(|e| error::sdk("PutItem", e))?;
        }
        Ok(())
    }

    async fn load_turns(
        &self,
        tenant: &TenantId,
        conversation: &str,
        max_turns: usize,
    ) -> Result<Vec<Turn>, StoreError> {
        if max_turns == 0 {
            return Ok(Vec::new());
        }
        self.trip();
        let out = self
            .client
            .query()
            .table_name(&self.names.usage)
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :turn)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", s(conversation_pk(tenant, conversation)))
            .expression_attribute_values(":turn", s("TURN#"))
            .scan_index_forward(false)
            .limit(i32::try_from(max_turns).unwrap_or(i32::MAX))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| error::sdk("Query", e))?;
        let mut turns = out
            .items
            .unwrap_or_default()
            .iter()
            .map(|item| get_json(item, "turn"))
            .collect::<Result<Vec<Turn>, _>>()?;
        turns.reverse();
        Ok(turns)
    }
}

#[async_trait]
impl AnomalyStore for DynamoStore {
    async fn record_anomaly(&self, anomaly: &AnomalyRecord) -> Result<Recorded, StoreError> {
        let hour = time_key(anomaly.hour);
        let mut item = key_pk_sk(
            format!("ANOMALY#{}", anomaly.tenant_id),
            format!("{hour}#{}", anomaly.kind),
        );
        item.insert("anomaly".into(), json(anomaly)?);
        item.insert(GSI1PK.into(), s("ANOMALIES"));
        item.insert(
            GSI1SK.into(),
            s(format!("{hour}#{}#{}", anomaly.tenant_id, anomaly.kind)),
        );
        self.put_once(&self.names.usage, item).await
    }

    async fn anomalies(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<AnomalyRecord>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.names.usage)
            .index_name(USAGE_BY_TENANT_TIME)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :from AND :to")
            .expression_attribute_names("#pk", GSI1PK)
            .expression_attribute_names("#sk", GSI1SK)
            .expression_attribute_values(":pk", s("ANOMALIES"))
            .expression_attribute_values(":from", s(time_key(from)))
            // `~` sorts after every character of the `#tenant#kind` suffix.
            .expression_attribute_values(":to", AttributeValue::S(format!("{}~", time_key(to))));
        let all: Vec<AnomalyRecord> = self
            .query_all(query)
            .await?
            .iter()
            .map(|item| get_json(item, "anomaly"))
            .collect::<Result<_, _>>()?;
        Ok(all
            .into_iter()
            .filter(|a| a.hour >= from && a.hour < to)
            .collect())
    }
}
