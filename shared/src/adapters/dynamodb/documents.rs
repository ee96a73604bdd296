//! The document registry and the storage counters, on the tenants table.
//!
//! - `DOCS#{tenant}` / `{document id}`: one entry per document id, with `record` (the committed
//!   version as JSON; absent while an id's first ingest is in flight), `charged` (chunks held in
//!   the counter), `version` (bumped by every write) and, while a request holds the id,
//!   `lease_token` and `lease_until`. Entries written before charges existed have only
//!   `record`, and read as charged their record's chunks at version 0.
//! - `DOCS#{tenant}` / `#storage`: the tenant's counter of charged chunks, `chunks`. In the
//!   registry's partition, so ingest's access stays one item type (`DOCS#` in IAM); `#` is not a
//!   document id character and sorts before all of them, so listings start after it.
//!
//! Access patterns: an ingest or delete reads its entry and the counter with one BatchGetItem
//! (two items, strongly consistent), whatever the number of documents; a claim, a commit, a
//! release and a removal are each one TransactWriteItems of the entry's Update (or Delete)
//! with the counter's Update, so a claim's `chunks <= quota - add` condition and the entry's
//! version condition hold together (see `domain::storage`). `GET /v1/documents` is one Query
//! per page, ordered by id.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, KeysAndAttributes, TransactWriteItem, Update,
};

use super::DynamoStore;
use super::codec::{
    Item, PK, SK, get_i64, get_json, get_s, get_time, get_u64, json, key_pk_sk, n, s, time_key,
};
use super::error::{self, corrupt};
use crate::domain::documents::{DocumentCursor, DocumentId, DocumentPage, DocumentRecord};
use crate::domain::ids::TenantId;
use crate::domain::storage::{
    Claim, CounterWrite, DocumentEntry, Lease, Removal, Settlement, StorageSlot,
};
use crate::ports::store::{ClaimOutcome, DocumentStore, StoreError};

/// The counter's sort key: sorts before every document id (`-` is the smallest id character).
const COUNTER_SK: &str = "#storage";
/// Entries one `documents_page` call may examine: entries of ids whose first ingest has not
/// committed are skipped, and a page stays a bounded read however many there are.
const LIST_SCAN_BUDGET: usize = 1_000;
/// Rounds of BatchGetItem `UnprocessedKeys` before giving up as throttled.
const READ_RETRIES: u32 = 3;

fn docs_pk(tenant: &TenantId) -> String {
    format!("DOCS#{tenant}")
}

fn entry_key(tenant: &TenantId, document: &DocumentId) -> Item {
    key_pk_sk(docs_pk(tenant), document.as_str())
}

fn counter_key(tenant: &TenantId) -> Item {
    key_pk_sk(docs_pk(tenant), COUNTER_SK)
}

fn record_of(item: &Item) -> Result<Option<DocumentRecord>, StoreError> {
    item.contains_key("record")
        .then(|| get_json(item, "record"))
        .transpose()
}

fn decode_entry(
    item: &Item,
    tenant: &TenantId,
    document: &DocumentId,
) -> Result<DocumentEntry, StoreError> {
    let record = record_of(item)?;
    // The key names the tenant and document; a record naming others is corrupt, never served.
    if record
        .as_ref()
        .is_some_and(|r| &r.tenant_id != tenant || &r.document_id != document)
    {
        return Err(corrupt("document record does not match its key"));
    }
    let charged = if item.contains_key("charged") {
        get_u64(item, "charged")?
    } else {
        record.as_ref().map_or(0, |r| u64::from(r.chunks))
    };
    let lease = if item.contains_key("lease_token") {
        Some(Lease {
            token: get_s(item, "lease_token")?.to_owned(),
            until: get_time(item, "lease_until")?,
        })
    } else {
        None
    };
    Ok(DocumentEntry {
        record,
        charged,
        lease,
        version: get_u64(item, "version")?,
    })
}

/// The entry's condition: still `version` (0: no entry, or one without versions).
fn version_condition(version: u64) -> (String, Option<AttributeValue>) {
    if version == 0 {
        ("attribute_not_exists(#version)".into(), None)
    } else {
        ("#version = :version".into(), Some(n(version)))
    }
}

impl DynamoStore {
    fn counter_add(&self, tenant: &TenantId, delta: i64) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.names.tenants)
            .set_key(Some(counter_key(tenant)))
            .update_expression("ADD #chunks :delta")
            .expression_attribute_names("#chunks", "chunks")
            .expression_attribute_values(":delta", n(delta))
            .build()
            .map_err(error::build)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// The counter write of a claim.
    fn claim_counter(
        &self,
        tenant: &TenantId,
        write: CounterWrite,
    ) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.names.tenants)
            .set_key(Some(counter_key(tenant)))
            .expression_attribute_names("#chunks", "chunks");
        let update = match write {
            CounterWrite::Create { value } => update
                .update_expression("SET #chunks = :value")
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":value", n(value)),
            // The counter after the add stays within max: DynamoDB decides on the item itself,
            // so no number of concurrent ingests can take it past the quota.
            CounterWrite::Add { add, max } => update
                .update_expression("ADD #chunks :add")
                .condition_expression("#chunks <= :cap")
                .expression_attribute_values(":add", n(add))
                .expression_attribute_values(":cap", n(max.saturating_sub(add))),
        };
        Ok(TransactWriteItem::builder()
            .update(update.build().map_err(error::build)?)
            .build())
    }

    /// Ends a claim on the entry (the lease must still be the settlement's), committing
    /// `record` when given.
    async fn settle(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
        settlement: &Settlement,
        record: Option<&DocumentRecord>,
    ) -> Result<bool, StoreError> {
        let entry = if settlement.drop_entry && record.is_none() {
            let delete = Delete::builder()
                .table_name(&self.names.tenants)
                .set_key(Some(entry_key(tenant, document)))
                .condition_expression("#token = :token")
                .expression_attribute_names("#token", "lease_token")
                .expression_attribute_values(":token", s(&settlement.lease_token))
                .build()
                .map_err(error::build)?;
            TransactWriteItem::builder().delete(delete).build()
        } else {
            let mut set = String::from("#charged = :charged, #version = #version + :one");
            let mut update = Update::builder()
                .table_name(&self.names.tenants)
                .set_key(Some(entry_key(tenant, document)))
                .condition_expression("#token = :token")
                .expression_attribute_names("#token", "lease_token")
                .expression_attribute_names("#until", "lease_until")
                .expression_attribute_names("#charged", "charged")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":token", s(&settlement.lease_token))
                .expression_attribute_values(":charged", n(settlement.charge))
                .expression_attribute_values(":one", n(1));
            if let Some(record) = record {
                set.push_str(", #record = :record");
                update = update
                    .expression_attribute_names("#record", "record")
                    .expression_attribute_values(":record", json(record)?);
            }
            let update = update
                .update_expression(format!("SET {set} REMOVE #token, #until"))
                .build()
                .map_err(error::build)?;
            TransactWriteItem::builder().update(update).build()
        };
        let mut items = vec![entry];
        if settlement.counter_delta() != 0 {
            items.push(self.counter_add(tenant, settlement.counter_delta())?);
        }
        Ok(match self.transact(items, true).await? {
            None => true,
            Some(failed) if failed.contains(&0) => false,
            Some(failed) => {
                return Err(StoreError::Corrupt(format!(
                    "an unconditional counter add was refused (items {failed:?})"
                )));
            }
        })
    }
}

#[async_trait]
impl DocumentStore for DynamoStore {
    async fn storage_slot(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
    ) -> Result<StorageSlot, StoreError> {
        let table = &self.names.tenants;
        let mut pending = Some(
            KeysAndAttributes::builder()
                .keys(entry_key(tenant, document))
                .keys(counter_key(tenant))
                .consistent_read(true)
                .build()
                .map_err(error::build)?,
        );
        let mut slot = StorageSlot::default();
        for _ in 0..=READ_RETRIES {
            let Some(request) = pending.take() else {
                return Ok(slot);
            };
            self.trip();
            let out = self
                .client
                .batch_get_item()
                .request_items(table, request)
                .send()
                .await
                .map_err(|e| error::sdk("BatchGetItem", e))?;
            let items = out
                .responses
                .and_then(|mut r| r.remove(table))
                .unwrap_or_default();
            for item in &items {
                if get_s(item, SK)? == COUNTER_SK {
                    // Below zero only if a registry written before the counter existed
                    // disagreed with the index it was seeded from; read as empty.
                    let chunks = get_i64(item, "chunks")?.max(0);
                    slot.counter = Some(u64::try_from(chunks).unwrap_or_default());
                } else {
                    slot.entry = decode_entry(item, tenant, document)?;
                }
            }
            pending = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(table))
                .filter(|k| !k.keys().is_empty());
        }
        match pending {
            None => Ok(slot),
            Some(_) => Err(StoreError::Throttled),
        }
    }

    async fn claim_document(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
        claim: &Claim,
    ) -> Result<ClaimOutcome, StoreError> {
        let (condition, expected) = version_condition(claim.version);
        let mut entry = Update::builder()
            .table_name(&self.names.tenants)
            .set_key(Some(entry_key(tenant, document)))
            .update_expression(
                "SET #charged = :charged, #token = :token, #until = :until, #version = :next",
            )
            .condition_expression(condition)
            .expression_attribute_names("#charged", "charged")
            .expression_attribute_names("#token", "lease_token")
            .expression_attribute_names("#until", "lease_until")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":charged", n(claim.charge))
            .expression_attribute_values(":token", s(&claim.lease.token))
            .expression_attribute_values(":until", s(time_key(claim.lease.until)))
            .expression_attribute_values(":next", n(claim.version + 1));
        if let Some(expected) = expected {
            entry = entry.expression_attribute_values(":version", expected);
        }
        let entry = entry.build().map_err(error::build)?;
        // The entry first: when both conditions fail, a changed entry is the answer (read
        // again), not the quota.
        let mut items = vec![TransactWriteItem::builder().update(entry).build()];
        if let Some(write) = claim.counter {
            items.push(self.claim_counter(tenant, write)?);
        }
        Ok(match self.transact(items, true).await? {
            None => ClaimOutcome::Claimed,
            Some(failed) if failed.contains(&0) => ClaimOutcome::Changed,
            Some(_) => match claim.counter {
                Some(CounterWrite::Add { .. }) => ClaimOutcome::QuotaExceeded,
                // Another claim created the counter first.
                Some(CounterWrite::Create { .. }) | None => ClaimOutcome::Changed,
            },
        })
    }

    async fn commit_document(
        &self,
        record: &DocumentRecord,
        settlement: &Settlement,
    ) -> Result<bool, StoreError> {
        self.settle(
            &record.tenant_id,
            &record.document_id,
            settlement,
            Some(record),
        )
        .await
    }

    async fn release_document(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
        settlement: &Settlement,
    ) -> Result<bool, StoreError> {
        self.settle(tenant, document, settlement, None).await
    }

    async fn remove_document(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
        removal: &Removal,
    ) -> Result<bool, StoreError> {
        let (version, expected) = version_condition(removal.version);
        let mut delete = Delete::builder()
            .table_name(&self.names.tenants)
            .set_key(Some(entry_key(tenant, document)))
            .condition_expression(format!("attribute_exists(#pk) AND {version}"))
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#version", "version");
        if let Some(expected) = expected {
            delete = delete.expression_attribute_values(":version", expected);
        }
        let mut items = vec![
            TransactWriteItem::builder()
                .delete(delete.build().map_err(error::build)?)
                .build(),
        ];
        if removal.credit && removal.charge > 0 {
            let credit = i64::try_from(removal.charge).unwrap_or(i64::MAX);
            items.push(self.counter_add(tenant, -credit)?);
        }
        Ok(match self.transact(items, true).await? {
            None => true,
            Some(failed) if failed.contains(&0) => false,
            Some(failed) => {
                return Err(StoreError::Corrupt(format!(
                    "an unconditional counter add was refused (items {failed:?})"
                )));
            }
        })
    }

    async fn documents_page(
        &self,
        tenant: &TenantId,
        cursor: Option<&DocumentCursor>,
        limit: usize,
    ) -> Result<DocumentPage, StoreError> {
        let limit = limit.max(1);
        let mut query = self
            .client
            .query()
            .table_name(&self.names.tenants)
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":pk", s(docs_pk(tenant)))
            .consistent_read(true)
            .limit(i32::try_from(limit + 1).unwrap_or(i32::MAX));
        query = match cursor {
            Some(cursor) => query
                .key_condition_expression("#pk = :pk AND #sk > :after")
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":after", s(cursor.id().as_str())),
            // Past the counter item.
            None => query
                .key_condition_expression("#pk = :pk AND #sk > :after")
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":after", s(COUNTER_SK)),
        };
        let mut documents: Vec<DocumentRecord> = Vec::new();
        let mut last_examined: Option<DocumentId> = None;
        let mut examined = 0;
        let mut start = None;
        loop {
            self.trip();
            let out = query
                .clone()
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| error::sdk("Query", e))?;
            let items = out.items.unwrap_or_default();
            self.count_read(&items, true);
            for item in &items {
                examined += 1;
                let id = DocumentId::parse(get_s(item, SK)?)
                    .map_err(|_| corrupt("document entry with an invalid id"))?;
                if let Some(record) = record_of(item)? {
                    if record.tenant_id != *tenant || record.document_id != id {
                        return Err(corrupt("document record does not match its key"));
                    }
                    if documents.len() == limit {
                        // One more exists: the page is full and has a successor.
                        let next = documents
                            .last()
                            .map(|d| DocumentCursor::after(d.document_id.clone()));
                        return Ok(DocumentPage { documents, next });
                    }
                    documents.push(record);
                }
                last_examined = Some(id);
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => {
                    if examined >= LIST_SCAN_BUDGET {
                        // Resume after what was examined, listed or not.
                        let next = last_examined.map(DocumentCursor::after);
                        return Ok(DocumentPage { documents, next });
                    }
                    start = Some(key);
                }
                _ => {
                    return Ok(DocumentPage {
                        documents,
                        next: None,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_key_is_no_document_id_and_sorts_before_every_one() {
        assert!(DocumentId::parse(COUNTER_SK).is_err());
        let smallest = (0_u8..=127)
            .filter(|b| DocumentId::parse((*b as char).to_string()).is_ok())
            .min()
            .unwrap();
        assert!(COUNTER_SK.as_bytes()[0] < smallest, "{}", smallest as char);
    }
}
