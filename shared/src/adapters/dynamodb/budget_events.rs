//! Budget events' outbox on the usage table.
//!
//! `BUDGET#{day|month}#{period label}` / `{event id}`: the event as JSON (`event`) and
//! `published` (a boolean). Written with `attribute_not_exists(pk)`, so concurrent requests in
//! every container, and retried ones, record one item per id. A period's events are one
//! partition (a Query); the stream that feeds the publisher matches `pk` on the `BUDGET#`
//! prefix (template.yaml).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use super::DynamoStore;
use super::codec::{Item, PK, SK, get_json, json, key_pk_sk, s};
use super::error;
use crate::domain::budget::Period;
use crate::domain::budget_event::BudgetEvent;
use crate::ports::store::{
    BudgetEventRecorder, BudgetEventStore, Recorded, StoreError, StoredBudgetEvent,
};

/// The partition of a period's events.
fn partition(period: Period, start: DateTime<Utc>) -> String {
    format!(
        "BUDGET#{}#{}",
        period.noun(),
        period.label(start.timestamp())
    )
}

fn key(event: &BudgetEvent) -> Item {
    key_pk_sk(partition(event.period, event.period_start), event.id())
}

fn published(item: &Item) -> bool {
    matches!(item.get("published"), Some(AttributeValue::Bool(true)))
}

#[async_trait]
impl BudgetEventRecorder for DynamoStore {
    async fn record_budget_event(&self, event: &BudgetEvent) -> Result<Recorded, StoreError> {
        let mut item = key(event);
        item.insert("event".into(), json(event)?);
        item.insert("published".into(), AttributeValue::Bool(false));
        self.put_once(&self.names.usage, item).await
    }
}

#[async_trait]
impl BudgetEventStore for DynamoStore {
    async fn budget_events(
        &self,
        period: Period,
        start: DateTime<Utc>,
    ) -> Result<Vec<StoredBudgetEvent>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.names.usage)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":pk", s(partition(period, start)))
            .consistent_read(true);
        self.query_all(query)
            .await?
            .iter()
            .map(|item| {
                Ok(StoredBudgetEvent {
                    event: get_json(item, "event")?,
                    published: published(item),
                })
            })
            .collect()
    }

    async fn budget_event_published(
        &self,
        event: &BudgetEvent,
    ) -> Result<Option<bool>, StoreError> {
        self.trip();
        let out = self
            .client
            .get_item()
            .table_name(&self.names.usage)
            .set_key(Some(key(event)))
            .projection_expression("#published")
            .expression_attribute_names("#published", "published")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| error::sdk("GetItem", e))?;
        Ok(out.item.as_ref().map(published))
    }

    async fn mark_budget_event_published(&self, event: &BudgetEvent) -> Result<(), StoreError> {
        self.trip();
        let result = self
            .client
            .update_item()
            .table_name(&self.names.usage)
            .set_key(Some(key(event)))
            .update_expression("SET #published = :yes")
            .condition_expression("attribute_exists(#sk)")
            .expression_attribute_names("#published", "published")
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Never recorded (a record deleted by hand): nothing to mark.
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(err) => Err(error::sdk("UpdateItem", err)),
        }
    }
}
