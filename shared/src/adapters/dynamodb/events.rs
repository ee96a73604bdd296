//! A tenant's usage events, newest first, from the `by_tenant_time` index of the usage table.
//!
//! Event items (written by `usage.rs`) carry `gsi1pk = TENANT#{id}` and `gsi1sk = {created_at,
//! RFC 3339 ms}#{request_id}`. A page is one Query (or a few) on partition `TENANT#{tenant}` with
//! `ScanIndexForward = false` and a sort-key condition for the time bounds and the cursor:
//!
//! - the partition is always the authenticated tenant's; the cursor is only a sort key inside
//!   it, so another tenant's cursor can never reach another tenant's events;
//! - model, status and error type are filtered here, after decoding, rather than with a
//!   FilterExpression: DynamoDB charges a filtered Query for every item it reads either way, and
//!   this keeps the write path (and every event stored before the listing existed) unchanged;
//! - a call examines at most [`SCAN_BUDGET`] items, so a rare filter over a long history
//!   returns a short page with a cursor instead of reading the whole partition at once.
//!
//! GSI reads are eventually consistent: an event appears in the listing shortly (typically
//! well under a second) after its request finished.

use async_trait::async_trait;

use super::DynamoStore;
use super::codec::{GSI1PK, GSI1SK, Item, get_json, get_s, s};
use super::error::{self, corrupt};
use super::tables::USAGE_BY_TENANT_TIME;
use crate::domain::ids::TenantId;
use crate::domain::usage::UsageEvent;
use crate::domain::usage_report::{EventCursor, EventFilter, EventPage};
use crate::ports::store::{StoreError, UsageEvents};

/// Items one `events_page` call may examine (about 1,000 × ~1 KB: a few read units per page).
pub const SCAN_BUDGET: usize = 1_000;

/// Items per Query when a filter may drop some (DynamoDB's `Limit` counts items read).
const FILTERED_PAGE: usize = 200;

fn tenant_pk(tenant: &TenantId) -> String {
    format!("TENANT#{tenant}")
}

fn decode(item: &Item, tenant: &TenantId) -> Result<(EventCursor, UsageEvent), StoreError> {
    let position = EventCursor::from_sort_key(get_s(item, GSI1SK)?)
        .map_err(|e| corrupt(format!("event sort key: {e}")))?;
    let event: UsageEvent = get_json(item, "event")?;
    // The partition is the tenant's, so this cannot differ; if it ever did, fail closed
    // rather than show one tenant another's request.
    if &event.tenant_id != tenant {
        return Err(corrupt(format!(
            "event {} in tenant {tenant}'s partition belongs to another tenant",
            event.request_id
        )));
    }
    Ok((position, event))
}

#[async_trait]
impl UsageEvents for DynamoStore {
    async fn events_page(
        &self,
        tenant: &TenantId,
        filter: &EventFilter,
        cursor: Option<&EventCursor>,
        limit: usize,
    ) -> Result<EventPage, StoreError> {
        if limit == 0 {
            return Ok(EventPage {
                events: Vec::new(),
                next: None,
            });
        }
        let range = filter.key_range(cursor);
        let mut query = self
            .client
            .query()
            .table_name(&self.names.usage)
            .index_name(USAGE_BY_TENANT_TIME)
            .expression_attribute_names("#pk", GSI1PK)
            .expression_attribute_values(":pk", s(tenant_pk(tenant)))
            .scan_index_forward(false);
        // One sort-key condition per Query: BETWEEN is inclusive, so the upper bound's own item
        // (the cursor's event) is skipped below by `range.contains`.
        query = match (&range.lower, &range.upper) {
            (Some(lo), Some(hi)) => query
                .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":lo", s(lo))
                .expression_attribute_values(":hi", s(hi)),
            (None, Some(hi)) => query
                .key_condition_expression("#pk = :pk AND #sk < :hi")
                .expression_attribute_values(":hi", s(hi)),
            (Some(lo), None) => query
                .key_condition_expression("#pk = :pk AND #sk >= :lo")
                .expression_attribute_values(":lo", s(lo)),
            (None, None) => query.key_condition_expression("#pk = :pk"),
        };
        if range.lower.is_some() || range.upper.is_some() {
            query = query.expression_attribute_names("#sk", GSI1SK);
        }
        // Unfiltered, `limit + 1` items tell whether another page exists in one round trip.
        let page = if filter.admits_all() {
            limit + 1
        } else {
            FILTERED_PAGE.max(limit + 1)
        };
        let page = i32::try_from(page.min(SCAN_BUDGET)).unwrap_or(i32::MAX);

        let mut events: Vec<UsageEvent> = Vec::new();
        let mut last_returned: Option<EventCursor> = None;
        let mut last_examined: Option<EventCursor> = None;
        let mut examined = 0;
        let mut start = None;
        loop {
            self.trip();
            let out = query
                .clone()
                .limit(page)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| error::sdk("Query", e))?;
            for item in out.items.unwrap_or_default() {
                let (position, event) = decode(&item, tenant)?;
                examined += 1;
                if !range.contains(&position.sort_key()) {
                    continue;
                }
                if filter.matches(&event) {
                    if events.len() == limit {
                        // One more match exists: the page is full and has a successor.
                        return Ok(EventPage {
                            events,
                            next: last_returned,
                        });
                    }
                    events.push(event);
                    last_returned = Some(position.clone());
                }
                last_examined = Some(position);
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => {
                    if examined >= SCAN_BUDGET {
                        // Resume after what was examined, matched or not.
                        let next = if events.len() == limit {
                            last_returned
                        } else {
                            last_examined
                        };
                        return Ok(EventPage { events, next });
                    }
                    start = Some(key);
                }
                _ => return Ok(EventPage { events, next: None }),
            }
        }
    }
}
