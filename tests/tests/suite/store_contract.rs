//! One contract per store port, run against every backend: the embedded store on every
//! `cargo test`, and DynamoDB in moto when `TOLLGATE_TEST_DYNAMODB_ENDPOINT` names one
//! (`infra/test.sh` starts it). `cargo test dynamodb` selects the DynamoDB variants.
//!
//! Each DynamoDB test creates its own four tables under a unique prefix, so the tests run in
//! parallel against one emulator. Without an endpoint the DynamoDB tests skip (and say so),
//! except in CI (`CI=true`), where they fail: a green CI must mean the adapter was exercised.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// A skipped DynamoDB test says so on stderr.
#![allow(clippy::print_stderr)]

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures_util::future::join_all;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tollgate::adapters::dynamodb::{DynamoStore, TableNames};
use tollgate::adapters::memory::MemoryStore;
use tollgate::domain::chat::{Completion, FinishReason, Role};
use tollgate::domain::documents::{DocumentCursor, DocumentId};
use tollgate::domain::ids::{RequestId, TenantId};
use tollgate::domain::keys::{
    KeyPrefix, KeyScope, KeySpec, PresentedKey, StoredKey, issue_key, issue_key_with,
};
use tollgate::domain::limits::UpstreamQuota;
use tollgate::domain::pricing::{ModelPrice, PriceEntry};
use tollgate::domain::storage::{CounterWrite, StorageSlot};
use tollgate::domain::tenant::{ProviderKind, TenantConfig};
use tollgate::domain::usage::{TokenUsage, UsageEvent, UsageRollup};
use tollgate::error::ErrorKind;
use tollgate::ports::store::{
    AddOutcome, AnomalyRecord, AnomalyStore, ApiKeyLookup, AuditLog, BudgetEventStore, Catalog,
    ClaimOutcome, ConversationStore, Counter, CounterAdd, CounterKey, DocumentRecord,
    DocumentStore, KeyUsage, LimiterStore, Recorded, ResponseCache, StoreError, TenantAdmin,
    TenantConfigSource, Turn, UsageQuery, UsageSink,
};

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).unwrap()
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 14, 15, 0, 0).unwrap()
}

/// A prefix no stored key has.
fn unknown_prefix() -> KeyPrefix {
    let raw = format!("tg_{}_{}", "Z".repeat(12), "q".repeat(40));
    PresentedKey::parse(&raw).unwrap().prefix().clone()
}

fn same_key(a: &StoredKey, b: &StoredKey) {
    assert_eq!(a.prefix, b.prefix);
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.tenant_id, b.tenant_id);
    assert_eq!(a.created_at, b.created_at);
    assert_eq!(a.revoked_at, b.revoked_at);
}

fn config_json(config: &TenantConfig) -> serde_json::Value {
    serde_json::to_value(config).unwrap()
}

struct EventBuilder(UsageEvent);

impl EventBuilder {
    fn new(tenant_id: &str, model: &str, at: DateTime<Utc>) -> Self {
        Self(UsageEvent {
            request_id: RequestId::generate(),
            tenant_id: tenant(tenant_id),
            created_at: at,
            model_requested: model.into(),
            model_served: model.into(),
            provider: ProviderKind::Openai,
            usage: TokenUsage {
                prompt_tokens: 1_000,
                completion_tokens: 200,
                cached_tokens: 0,
                cache_write_tokens: 0,
            },
            cost_usd: dec!(0.00027),
            latency_ms: 420,
            provider_latency_ms: Some(400),
            success: true,
            error_type: None,
            streamed: false,
            cache_hit: false,
            attempts: 1,
            client_disconnected: false,
            degraded_from: None,
            quality_score: None,
            usage_source: Default::default(),
            user: None,
        })
    }
    fn cost(mut self, cost: Decimal) -> Self {
        self.0.cost_usd = cost;
        self
    }
    fn tokens(mut self, prompt: u64, completion: u64, cached: u64, writes: u64) -> Self {
        self.0.usage = TokenUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: cached,
            cache_write_tokens: writes,
        };
        self
    }
    fn failed(mut self, kind: ErrorKind) -> Self {
        self.0.success = false;
        self.0.error_type = Some(kind);
        self.0.usage = TokenUsage::default();
        self.0.cost_usd = Decimal::ZERO;
        self
    }
    fn latency(mut self, ms: u64) -> Self {
        self.0.latency_ms = ms;
        self
    }
    fn streamed(mut self) -> Self {
        self.0.streamed = true;
        self
    }
    fn cache_hit(mut self) -> Self {
        self.0.cache_hit = true;
        self
    }
    fn degraded_from(mut self, model: &str) -> Self {
        self.0.degraded_from = Some(model.into());
        self
    }
    fn user(mut self, user: &str) -> Self {
        self.0.user = Some(tollgate::domain::profile::UserId::parse(user).unwrap());
        self
    }
    fn build(self) -> UsageEvent {
        self.0
    }
}

/// The rollups the events must sum to, built with the domain's own arithmetic.
fn expected_rollups(events: &[UsageEvent], tenant_id: &TenantId) -> Vec<UsageRollup> {
    let mut rollups: BTreeMap<(DateTime<Utc>, String), UsageRollup> = BTreeMap::new();
    for event in events.iter().filter(|e| &e.tenant_id == tenant_id) {
        let hour = UsageRollup::hour_of(event);
        rollups
            .entry((hour, event.model_requested.clone()))
            .or_insert_with(|| {
                UsageRollup::empty(event.tenant_id.clone(), hour, event.model_requested.clone())
            })
            .apply(event);
    }
    rollups.into_values().collect()
}

fn counter(key: &str) -> CounterKey {
    CounterKey(key.into())
}

fn add(key: &str, tokens: i64, requests: i64) -> CounterAdd {
    CounterAdd {
        key: counter(key),
        tokens,
        requests,
        max_tokens: None,
        max_requests: None,
        expires_at: Utc::now().timestamp() + 3600,
    }
}

fn capped(key: &str, tokens: i64, max_tokens: i64) -> CounterAdd {
    CounterAdd {
        max_tokens: Some(max_tokens),
        ..add(key, tokens, 1)
    }
}

fn c(tokens: i64, requests: i64) -> Counter {
    Counter { tokens, requests }
}

fn completion(content: &str) -> Completion {
    Completion {
        content: content.into(),
        tool_calls: Vec::new(),
        finish_reason: FinishReason::Stop,
        usage: TokenUsage {
            prompt_tokens: 12,
            completion_tokens: 3,
            cached_tokens: 0,
            cache_write_tokens: 0,
        },
        served_model: "gpt-4o-mini-2024-07-18".into(),
    }
}

fn price(provider: ProviderKind, model: &str, input: Decimal, output: Decimal) -> PriceEntry {
    PriceEntry {
        provider,
        model: model.into(),
        aliases: vec![],
        price: ModelPrice {
            input,
            output,
            cached_input: Some(input / dec!(2)),
            cache_write: None,
        },
    }
}

fn document_record(tenant_id: &TenantId, id: &str, chunks: u32) -> DocumentRecord {
    DocumentRecord {
        tenant_id: tenant_id.clone(),
        document_id: DocumentId::parse(id).unwrap(),
        title: format!("{id} title"),
        chunks,
        bytes: 100,
        metadata: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
        updated_at: DateTime::from_timestamp(1_795_000_000, 0).unwrap(),
    }
}

// ---------------------------------------------------------------------------------------------
// The contracts
// ---------------------------------------------------------------------------------------------

mod contract {
    use super::*;

    /// A key's last use is written when none newer than the interval is recorded: at most once
    /// per interval, however many gateways note it.
    pub async fn key_usage<S: KeyUsage>(store: &S) {
        let every = std::time::Duration::from_secs(300);
        let (a, b) = (
            KeyPrefix::parse("AAAAAAAAAAAA").unwrap(),
            KeyPrefix::parse("BBBBBBBBBBBB").unwrap(),
        );
        assert!(
            store
                .keys_last_used(&[a.clone(), b.clone()])
                .await
                .unwrap()
                .is_empty()
        );
        let secs = |s| t0() + chrono::Duration::seconds(s);
        assert!(store.touch_key(&a, secs(0), every).await.unwrap());
        assert!(!store.touch_key(&a, secs(1), every).await.unwrap());
        assert!(!store.touch_key(&a, secs(299), every).await.unwrap());
        assert!(store.touch_key(&a, secs(300), every).await.unwrap());
        // Eight gateways noting the same use at once: one write.
        let notes = (0..8).map(|_| store.touch_key(&a, secs(900), every));
        let wrote = futures_util::future::join_all(notes).await;
        assert_eq!(wrote.iter().filter(|w| *w.as_ref().unwrap()).count(), 1);
        let used = store.keys_last_used(&[a.clone(), b.clone()]).await.unwrap();
        assert_eq!(used.len(), 1);
        assert_eq!(used[&a], secs(900));
        // A listing of more keys than one BatchGetItem takes (100), one of them twice.
        let many: Vec<KeyPrefix> = (0..130)
            .map(|i| KeyPrefix::parse(&format!("K{i:011}")).unwrap())
            .collect();
        for (i, prefix) in many.iter().enumerate() {
            assert!(
                store
                    .touch_key(prefix, secs(i as i64), every)
                    .await
                    .unwrap()
            );
        }
        let mut asked = many.clone();
        asked.push(many[7].clone());
        asked.push(b.clone());
        let used = store.keys_last_used(&asked).await.unwrap();
        assert_eq!(used.len(), many.len());
        assert!(
            many.iter()
                .enumerate()
                .all(|(i, p)| used[p] == secs(i as i64))
        );
    }

    pub async fn audit_log<S: AuditLog>(store: &S) {
        use tollgate::domain::audit::{AuditAction, AuditRecord};
        let record = |tenant: Option<&str>, minute: i64, action| AuditRecord {
            tenant: tenant.map(super::tenant),
            at: t0() + chrono::Duration::minutes(minute),
            actor: "arn:aws:iam::123456789012:role/ops".into(),
            action,
            resource: "key/AAAAAAAAAAAA".into(),
            before: None,
            after: Some(serde_json::json!({"name": "билинг"})),
            request_id: RequestId::from_upstream(&format!("req-{minute}")),
            retain_until: t0() + chrono::Duration::days(400),
        };
        assert!(
            store
                .audit_page(Some(&super::tenant("acme")), None, 10)
                .await
                .unwrap()
                .records
                .is_empty()
        );
        // Appended out of order; a record appended twice is one.
        let acme: Vec<AuditRecord> = [3, 1, 4, 2, 5]
            .into_iter()
            .map(|m| record(Some("acme"), m, AuditAction::KeyCreate))
            .collect();
        for r in &acme {
            store.append(r).await.unwrap();
        }
        store.append(&acme[0]).await.unwrap();
        store
            .append(&record(Some("globex"), 6, AuditAction::KeyRevoke))
            .await
            .unwrap();
        store
            .append(&record(None, 7, AuditAction::PriceSet))
            .await
            .unwrap();

        // Newest first, two at a time, the cursor continuing strictly after the last.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..5 {
            let page = store
                .audit_page(Some(&super::tenant("acme")), cursor.as_deref(), 2)
                .await
                .unwrap();
            seen.extend(page.records.iter().map(|r| r.at));
            cursor = page.next;
            if cursor.is_none() {
                break;
            }
        }
        let minutes: Vec<i64> = seen.iter().map(|at| (*at - t0()).num_minutes()).collect();
        assert_eq!(minutes, [5, 4, 3, 2, 1]);
        let page = store
            .audit_page(Some(&super::tenant("acme")), None, 1)
            .await
            .unwrap();
        assert_eq!(
            page.records[0],
            record(Some("acme"), 5, AuditAction::KeyCreate)
        );

        // Each log holds its own records; a cursor from acme's log reads nothing of globex's.
        let globex = store
            .audit_page(Some(&super::tenant("globex")), None, 10)
            .await
            .unwrap();
        assert_eq!(globex.records.len(), 1);
        assert_eq!(globex.records[0].action, AuditAction::KeyRevoke);
        let acme_cursor = acme[1].position();
        let crossed = store
            .audit_page(Some(&super::tenant("globex")), Some(&acme_cursor), 10)
            .await
            .unwrap();
        assert!(
            crossed
                .records
                .iter()
                .all(|r| r.tenant == Some(super::tenant("globex")))
        );
        let operator = store.audit_page(None, None, 10).await.unwrap();
        assert_eq!(operator.records.len(), 1);
        assert_eq!(operator.records[0].tenant, None);
        assert!(
            store
                .audit_page(Some(&super::tenant("initech")), None, 10)
                .await
                .unwrap()
                .records
                .is_empty()
        );
    }

    pub async fn keys<S: ApiKeyLookup + TenantAdmin>(store: &S) {
        let (acme, globex) = (tenant("acme"), tenant("globex"));
        // Inserted newest first: keys_for must order by creation, not by insertion.
        let newer = issue_key(acme.clone(), t0() + chrono::Duration::seconds(5));
        let older = issue_key(acme.clone(), t0());
        let other = issue_key(globex.clone(), t0());
        for key in [&newer, &older, &other] {
            store.put_key(key.record.clone()).await.unwrap();
        }

        let found = store.find_key(&older.record.prefix).await.unwrap().unwrap();
        same_key(&found, &older.record);
        assert!(found.admits(&PresentedKey::parse(older.expose()).unwrap(), t0()));
        assert!(store.find_key(&unknown_prefix()).await.unwrap().is_none());

        let acme_keys = store.keys_for(&acme).await.unwrap();
        assert_eq!(acme_keys.len(), 2);
        same_key(&acme_keys[0], &older.record);
        same_key(&acme_keys[1], &newer.record);
        let globex_keys = store.keys_for(&globex).await.unwrap();
        assert_eq!(globex_keys.len(), 1);
        same_key(&globex_keys[0], &other.record);
        assert!(store.keys_for(&tenant("initech")).await.unwrap().is_empty());

        store.revoke_key(&older.record.prefix).await.unwrap();
        let revoked = store.find_key(&older.record.prefix).await.unwrap().unwrap();
        let revoked_at = revoked.revoked_at.expect("revocation is stored");
        assert!(!revoked.admits(&PresentedKey::parse(older.expose()).unwrap(), t0()));
        // Revoking again keeps the first revocation time.
        store.revoke_key(&older.record.prefix).await.unwrap();
        let again = store.find_key(&older.record.prefix).await.unwrap().unwrap();
        assert_eq!(again.revoked_at, Some(revoked_at));
        // The other keys are untouched.
        let live = store.find_key(&newer.record.prefix).await.unwrap().unwrap();
        assert!(live.revoked_at.is_none());
        assert!(matches!(
            store.revoke_key(&unknown_prefix()).await,
            Err(StoreError::NotFound(_))
        ));

        // A key's name, scopes and expiry round-trip (a name with spaces and non-ASCII).
        let spec = KeySpec {
            name: Some("billing worker · eu".into()),
            scopes: Some([KeyScope::Chat, KeyScope::UsageRead].into()),
            expires_at: Some(t0() + chrono::Duration::days(30)),
        };
        let scoped = issue_key_with(acme.clone(), spec, t0() + chrono::Duration::seconds(9));
        store.put_key(scoped.record.clone()).await.unwrap();
        let found = store
            .find_key(&scoped.record.prefix)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found, scoped.record);
        // Expiring sets an expiry, but never a later one than the key has.
        let at = t0() + chrono::Duration::hours(1);
        store.expire_key(&scoped.record.prefix, at).await.unwrap();
        store
            .expire_key(&scoped.record.prefix, at + chrono::Duration::hours(1))
            .await
            .unwrap();
        let found = store
            .find_key(&scoped.record.prefix)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.expires_at, Some(at));
        assert_eq!(found.scopes, scoped.record.scopes);
        store.expire_key(&newer.record.prefix, at).await.unwrap();
        let found = store.find_key(&newer.record.prefix).await.unwrap().unwrap();
        assert_eq!(found.expires_at, Some(at));
        assert!(found.admits(
            &PresentedKey::parse(newer.expose()).unwrap(),
            at - chrono::Duration::nanoseconds(1)
        ));
        assert!(!found.admits(&PresentedKey::parse(newer.expose()).unwrap(), at));
        assert!(matches!(
            store.expire_key(&unknown_prefix(), at).await,
            Err(StoreError::NotFound(_))
        ));
    }

    /// `If-Match` semantics: a write conditioned on a version or on absence applies only then,
    /// and of eight concurrent updates from the same version exactly one applies.
    pub async fn conditional_configs<S: TenantConfigSource + TenantAdmin>(store: &S) {
        use tollgate::ports::store::Expect;
        let acme = tollgate::demo::acme_config().unwrap();
        let conflict = |r: Result<u64, StoreError>| match r {
            Err(StoreError::Conflict { current }) => current,
            other => panic!("expected a conflict, got {other:?}"),
        };
        assert_eq!(
            conflict(
                store
                    .put_tenant_config_if(acme.clone(), Expect::Version(1))
                    .await
            ),
            None
        );
        assert_eq!(
            store
                .put_tenant_config_if(acme.clone(), Expect::Absent)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            conflict(
                store
                    .put_tenant_config_if(acme.clone(), Expect::Absent)
                    .await
            ),
            Some(1)
        );
        assert_eq!(
            conflict(
                store
                    .put_tenant_config_if(acme.clone(), Expect::Version(2))
                    .await
            ),
            Some(1)
        );
        let mut changed = acme.clone();
        changed.display_name = "Acme, changed".into();
        assert_eq!(
            store
                .put_tenant_config_if(changed, Expect::Version(1))
                .await
                .unwrap(),
            2
        );
        let writes = (0..8).map(|i| {
            let mut c = acme.clone();
            c.display_name = format!("writer {i}");
            store.put_tenant_config_if(c, Expect::Version(2))
        });
        let results = futures_util::future::join_all(writes).await;
        let applied: Vec<u64> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        assert_eq!(applied, [3], "{results:?}");
        assert!(
            results
                .iter()
                .filter(|r| r.is_err())
                .all(|r| matches!(r, Err(StoreError::Conflict { current: Some(_) })))
        );
        let stored = store.tenant_config(&acme.tenant_id).await.unwrap().unwrap();
        assert_eq!(stored.version, 3);
        assert!(stored.display_name.starts_with("writer "));
    }

    /// Tenants listed a page at a time: every tenant once, in id order, no page over its
    /// limit, and at most one empty page at the end.
    pub async fn tenant_pages<S: TenantAdmin>(store: &S) {
        let page = store.tenant_config_page(None, 10).await.unwrap();
        assert!(page.configs.is_empty() && page.next.is_none());
        let ids: Vec<String> = (0..7).rev().map(|i| format!("tenant-{i:02}")).collect();
        for id in &ids {
            let mut config = tollgate::demo::acme_config().unwrap();
            config.tenant_id = tenant(id);
            store.put_tenant_config(config).await.unwrap();
        }
        let mut sorted = ids.clone();
        sorted.sort();
        for limit in [1, 2, 3, 7, 8] {
            let (mut seen, mut after, mut pages) = (Vec::new(), None, Vec::new());
            loop {
                let page = store
                    .tenant_config_page(after.as_ref(), limit)
                    .await
                    .unwrap();
                assert!(page.configs.len() <= limit);
                pages.push(page.configs.len());
                seen.extend(page.configs.iter().map(|c| c.tenant_id.to_string()));
                match page.next {
                    Some(next) => {
                        assert_eq!(Some(&next), page.configs.last().map(|c| &c.tenant_id));
                        after = Some(next);
                    }
                    None => break,
                }
                assert!(pages.len() <= 8, "limit {limit}: {pages:?}");
            }
            assert_eq!(seen, sorted, "limit {limit}");
            let empty = pages.iter().filter(|n| **n == 0).count();
            assert!(
                empty == 0 || (empty == 1 && pages.last() == Some(&0)),
                "limit {limit}: {pages:?}"
            );
        }
        let rest = store
            .tenant_config_page(Some(&tenant("tenant-04")), 10)
            .await
            .unwrap();
        let ids: Vec<&str> = rest.configs.iter().map(|c| c.tenant_id.as_str()).collect();
        assert_eq!(ids, ["tenant-05", "tenant-06"]);
    }

    pub async fn tenant_configs<S: TenantConfigSource + TenantAdmin>(store: &S) {
        let acme = tollgate::demo::acme_config().unwrap();
        let mut globex = tollgate::demo::globex_config().unwrap();
        assert!(store.tenant_configs().await.unwrap().is_empty());
        assert!(
            store
                .tenant_config(&globex.tenant_id)
                .await
                .unwrap()
                .is_none()
        );

        assert_eq!(store.put_tenant_config(globex.clone()).await.unwrap(), 1);
        globex.display_name = "Globex Travel (renamed)".into();
        assert_eq!(store.put_tenant_config(globex.clone()).await.unwrap(), 2);
        assert_eq!(store.put_tenant_config(acme.clone()).await.unwrap(), 1);

        let stored = store
            .tenant_config(&globex.tenant_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.version, 2);
        globex.version = 2;
        assert_eq!(config_json(&stored), config_json(&globex));

        let all = store.tenant_configs().await.unwrap();
        let listed: Vec<_> = all
            .iter()
            .map(|c| (c.tenant_id.as_str(), c.version))
            .collect();
        assert_eq!(listed, [("acme", 1), ("globex", 2)]);

        // The fine-tuned registry.
        let ft = tollgate::demo::ACME_FINE_TUNED;
        assert_eq!(
            store
                .fine_tuned_owner(ProviderKind::Openai, ft)
                .await
                .unwrap(),
            None
        );
        store
            .register_fine_tuned(ProviderKind::Openai, ft, &acme.tenant_id)
            .await
            .unwrap();
        assert_eq!(
            store
                .fine_tuned_owner(ProviderKind::Openai, ft)
                .await
                .unwrap(),
            Some(acme.tenant_id.clone())
        );
        assert_eq!(
            store
                .fine_tuned_owner(ProviderKind::Anthropic, ft)
                .await
                .unwrap(),
            None
        );
        store
            .register_fine_tuned(ProviderKind::Openai, ft, &globex.tenant_id)
            .await
            .unwrap();
        assert_eq!(
            store
                .fine_tuned_owner(ProviderKind::Openai, ft)
                .await
                .unwrap(),
            Some(globex.tenant_id.clone())
        );
    }

    pub async fn usage<S: UsageSink + UsageQuery + LimiterStore>(store: &S) {
        let acme = tenant("acme");
        let h = t0();
        let events = vec![
            EventBuilder::new("acme", "gpt-4o-mini", h + chrono::Duration::seconds(1))
                .cost(dec!(0.00000015))
                .tokens(1, 0, 0, 0)
                .build(),
            EventBuilder::new("acme", "gpt-4o-mini", h + chrono::Duration::minutes(10))
                .cost(dec!(0.0075))
                .tokens(1000, 500, 200, 0)
                .latency(0)
                .streamed()
                .build(),
            EventBuilder::new("acme", "gpt-4o-mini", h + chrono::Duration::minutes(59))
                .failed(ErrorKind::UpstreamRateLimited)
                .latency(30_000)
                .build(),
            EventBuilder::new("acme", "gpt-4o-mini", h + chrono::Duration::minutes(30))
                .failed(ErrorKind::Timeout)
                .build(),
            EventBuilder::new("acme", "gpt-4o-mini", h + chrono::Duration::minutes(31))
                .failed(ErrorKind::Timeout)
                .build(),
            EventBuilder::new("acme", "claude-haiku", h + chrono::Duration::minutes(5))
                .cost(dec!(0.0190512345678901234))
                .tokens(10_000, 200, 6_000, 3_000)
                .cache_hit()
                .degraded_from("claude-sonnet")
                .build(),
            // The next hour, and another tenant in the same hour.
            EventBuilder::new("acme", "gpt-4o-mini", h + chrono::Duration::minutes(61))
                .cost(dec!(1.1))
                .build(),
            EventBuilder::new("globex", "gpt-4o-mini", h + chrono::Duration::minutes(2))
                .cost(dec!(9.99))
                .build(),
        ];
        for event in &events {
            assert_eq!(store.record(event, &[]).await.unwrap(), Recorded::Inserted);
        }

        let window = (h, h + chrono::Duration::hours(2));
        let rollups = store.rollups(&acme, window.0, window.1).await.unwrap();
        assert_eq!(rollups, expected_rollups(&events, &acme));
        assert_eq!(
            rollups.len(),
            3,
            "two models in the first hour, one in the second"
        );
        let first = &rollups[1];
        assert_eq!(first.model, "gpt-4o-mini");
        assert_eq!(first.requests, 5);
        assert_eq!(first.errors_by_type.get("timeout"), Some(&2));
        // Costs add up exactly: no float ever touched them.
        let event_sum: Decimal = events
            .iter()
            .filter(|e| e.tenant_id == acme)
            .map(|e| e.cost_usd)
            .sum();
        let rollup_sum: Decimal = rollups.iter().map(|r| r.cost_usd).sum();
        assert_eq!(rollup_sum, event_sum);
        assert_eq!(rollups[0].cost_usd, dec!(0.0190512345678901234));

        // Windows select whole hours that start inside them.
        let second_hour = store
            .rollups(&acme, h + chrono::Duration::minutes(1), window.1)
            .await
            .unwrap();
        assert_eq!(second_hour.len(), 1);
        assert_eq!(second_hour[0].hour, h + chrono::Duration::hours(1));
        assert!(store.rollups(&acme, h, h).await.unwrap().is_empty());
        assert!(
            store
                .rollups(&tenant("initech"), window.0, window.1)
                .await
                .unwrap()
                .is_empty()
        );

        // Events read back whole.
        for event in &events {
            assert_eq!(
                store.usage_event(&event.request_id).await.unwrap().as_ref(),
                Some(event)
            );
        }
        assert!(
            store
                .usage_event(&RequestId::generate())
                .await
                .unwrap()
                .is_none()
        );

        // A replayed request id (a retried Lambda) changes nothing, its adjustments included.
        let before = store.rollups(&acme, window.0, window.1).await.unwrap();
        let refund = add("acme:m:1", -500, 0);
        assert_eq!(
            store
                .record(&events[1], std::slice::from_ref(&refund))
                .await
                .unwrap(),
            Recorded::Duplicate
        );
        assert_eq!(
            store.rollups(&acme, window.0, window.1).await.unwrap(),
            before
        );
        assert_eq!(
            store.read_counters(&[counter("acme:m:1")]).await.unwrap(),
            [c(0, 0)]
        );
    }

    pub async fn usage_adjustments<S: UsageSink + UsageQuery + LimiterStore>(store: &S) {
        // Reserve 1_000 tokens for two windows, then reconcile to 640 actually used.
        let reserve = [
            capped("acme:m:7", 1_000, 5_000),
            capped("acme:h:9", 1_000, 50_000),
        ];
        assert_eq!(
            store.add_counters(&reserve).await.unwrap(),
            AddOutcome::Applied
        );
        let event = EventBuilder::new("acme", "gpt-4o", t0())
            .tokens(600, 40, 0, 0)
            .build();
        let reconcile = [add("acme:m:7", -360, 0), add("acme:h:9", -360, 0)];
        assert_eq!(
            store.record(&event, &reconcile).await.unwrap(),
            Recorded::Inserted
        );
        let keys = [counter("acme:m:7"), counter("acme:h:9")];
        assert_eq!(
            store.read_counters(&keys).await.unwrap(),
            [c(640, 1), c(640, 1)]
        );
        // Applied exactly once: the replay neither records nor refunds again.
        assert_eq!(
            store.record(&event, &reconcile).await.unwrap(),
            Recorded::Duplicate
        );
        assert_eq!(
            store.read_counters(&keys).await.unwrap(),
            [c(640, 1), c(640, 1)]
        );

        // A reconciliation must not carry a condition; if one fails, nothing is recorded.
        let bad = EventBuilder::new("acme", "gpt-4o", t0()).build();
        let err = store.record(&bad, &[capped("acme:m:7", 10_000, 100)]).await;
        assert!(matches!(err, Err(StoreError::Corrupt(_))), "{err:?}");
        assert!(store.usage_event(&bad.request_id).await.unwrap().is_none());
        assert_eq!(
            store.read_counters(&keys).await.unwrap(),
            [c(640, 1), c(640, 1)]
        );
        let rollups = store
            .rollups(&tenant("acme"), t0(), t0() + chrono::Duration::hours(1))
            .await
            .unwrap();
        assert_eq!(rollups.len(), 1);
        assert_eq!(rollups[0].requests, 1);
    }

    /// Events naming an end user roll up per tenant, user and UTC day, in the event's write
    /// (a replay adds nothing); the read is bounded and says when it stopped early.
    pub async fn user_rollups<S: UsageSink + UsageQuery + LimiterStore>(store: &S) {
        let t = tenant("end-users");
        let day = |d: u32, h: u32| Utc.with_ymd_and_hms(2026, 12, d, h, 30, 0).unwrap();
        let events = [
            EventBuilder::new(t.as_str(), "m", day(4, 23))
                .user("ann")
                .cost(dec!(0.001)),
            EventBuilder::new(t.as_str(), "m", day(5, 0))
                .user("ann")
                .cost(dec!(0.002)),
            EventBuilder::new(t.as_str(), "m", day(5, 9))
                .user("ann")
                .cost(dec!(0.00000003)),
            EventBuilder::new(t.as_str(), "m", day(5, 9))
                .user("bo|b@x.io")
                .cost(dec!(0.5)),
            EventBuilder::new(t.as_str(), "m", day(5, 9)).cost(dec!(7)),
            EventBuilder::new(t.as_str(), "m", day(6, 0))
                .user("ann")
                .cost(dec!(1)),
        ]
        .map(EventBuilder::build);
        for e in &events {
            assert_eq!(store.record(e, &[]).await.unwrap(), Recorded::Inserted);
        }
        assert_eq!(
            store.record(&events[1], &[]).await.unwrap(),
            Recorded::Duplicate
        );
        let d = |n: u32| chrono::NaiveDate::from_ymd_opt(2026, 12, n).unwrap();
        let read = store.user_rollups(&t, d(5), d(6), 100).await.unwrap();
        assert!(read.complete);
        let mut rows = read.rows;
        rows.sort_by(|a, b| a.user.cmp(&b.user));
        let summary: Vec<(String, u64, Decimal, u64)> = rows
            .iter()
            .map(|r| (r.user.to_string(), r.requests, r.cost_usd, r.prompt_tokens))
            .collect();
        assert_eq!(
            summary,
            [
                ("ann".to_owned(), 2, dec!(0.00200003), 2_000),
                ("bo|b@x.io".to_owned(), 1, dec!(0.5), 1_000),
            ]
        );
        let all = store.user_rollups(&t, d(1), d(31), 100).await.unwrap();
        assert_eq!(all.rows.len(), 4);
        let capped = store.user_rollups(&t, d(1), d(31), 3).await.unwrap();
        assert_eq!(capped.rows.len(), 3);
        assert!(!capped.complete);
        // Another tenant's same user id is another user.
        let other = tenant("other-users");
        assert!(
            store
                .user_rollups(&other, d(1), d(31), 100)
                .await
                .unwrap()
                .rows
                .is_empty()
        );
    }

    pub async fn limiter<S: LimiterStore>(store: &S) {
        let (a, b, missing) = (counter("t:m:a"), counter("t:m:b"), counter("t:m:missing"));
        // Missing counters read as zero, in the order asked, duplicates included.
        assert_eq!(
            store
                .read_counters(&[a.clone(), missing.clone(), a.clone()])
                .await
                .unwrap(),
            [c(0, 0); 3]
        );
        assert!(store.read_counters(&[]).await.unwrap().is_empty());
        assert_eq!(store.add_counters(&[]).await.unwrap(), AddOutcome::Applied);

        // A multi-counter add applies every add.
        let both = [capped("t:m:a", 100, 1_000), add("t:m:b", 50, 2)];
        assert_eq!(
            store.add_counters(&both).await.unwrap(),
            AddOutcome::Applied
        );
        assert_eq!(
            store
                .read_counters(&[b.clone(), missing.clone(), a.clone()])
                .await
                .unwrap(),
            [c(50, 2), c(0, 0), c(100, 1)]
        );

        // All or nothing: the second add breaks its cap, so the first is not applied either.
        let over = [add("t:m:a", 10, 1), capped("t:m:b", 1_000, 500)];
        assert_eq!(
            store.add_counters(&over).await.unwrap(),
            AddOutcome::Refused { index: 1 }
        );
        let first_fails = [capped("t:m:a", 1_000, 500), add("t:m:b", 10, 1)];
        assert_eq!(
            store.add_counters(&first_fails).await.unwrap(),
            AddOutcome::Refused { index: 0 }
        );
        assert_eq!(
            store.read_counters(&[a.clone(), b.clone()]).await.unwrap(),
            [c(100, 1), c(50, 2)]
        );

        // The cap is on the value after the add, inclusive (single-add path).
        assert_eq!(
            store
                .add_counters(&[capped("t:m:a", 900, 1_000)])
                .await
                .unwrap(),
            AddOutcome::Applied
        );
        assert_eq!(
            store
                .add_counters(&[capped("t:m:a", 1, 1_000)])
                .await
                .unwrap(),
            AddOutcome::Refused { index: 0 }
        );
        assert_eq!(
            store.read_counters(std::slice::from_ref(&a)).await.unwrap(),
            [c(1_000, 2)]
        );

        // Caps on requests, independently of tokens.
        let rpm = CounterAdd {
            max_requests: Some(3),
            ..add("t:m:b", 0, 1)
        };
        assert_eq!(
            store
                .add_counters(std::slice::from_ref(&rpm))
                .await
                .unwrap(),
            AddOutcome::Applied
        );
        assert_eq!(
            store
                .add_counters(std::slice::from_ref(&rpm))
                .await
                .unwrap(),
            AddOutcome::Refused { index: 0 }
        );
        assert_eq!(
            store
                .add_counters(&[add("t:m:a", 0, 0), rpm])
                .await
                .unwrap(),
            AddOutcome::Refused { index: 1 }
        );
        assert_eq!(
            store.read_counters(std::slice::from_ref(&b)).await.unwrap(),
            [c(50, 3)]
        );

        // Negative adds refund.
        assert_eq!(
            store.add_counters(&[add("t:m:a", -400, -1)]).await.unwrap(),
            AddOutcome::Applied
        );
        assert_eq!(
            store.read_counters(std::slice::from_ref(&a)).await.unwrap(),
            [c(600, 1)]
        );

        // A cap that a missing counter (zero) cannot meet refuses without creating it...
        assert_eq!(
            store.add_counters(&[capped("t:m:c", 10, 5)]).await.unwrap(),
            AddOutcome::Refused { index: 0 }
        );
        assert_eq!(
            store
                .add_counters(&[capped("t:m:c", 10, 5), add("t:m:d", 1, 1)])
                .await
                .unwrap(),
            AddOutcome::Refused { index: 0 }
        );
        assert_eq!(
            store
                .read_counters(&[counter("t:m:c"), counter("t:m:d")])
                .await
                .unwrap(),
            [c(0, 0), c(0, 0)]
        );
        // ...and one it can meet creates it.
        assert_eq!(
            store.add_counters(&[capped("t:m:c", 5, 5)]).await.unwrap(),
            AddOutcome::Applied
        );
        // A counter refunded below zero takes an add whose cap is below the add itself.
        assert_eq!(
            store.add_counters(&[add("t:m:e", -50, 0)]).await.unwrap(),
            AddOutcome::Applied
        );
        assert_eq!(
            store.add_counters(&[capped("t:m:e", 30, 0)]).await.unwrap(),
            AddOutcome::Applied
        );
        assert_eq!(
            store
                .read_counters(&[counter("t:m:c"), counter("t:m:e")])
                .await
                .unwrap(),
            [c(5, 1), c(-20, 1)]
        );
    }

    pub async fn limiter_reads_many_counters<S: LimiterStore>(store: &S) {
        // More keys than one DynamoDB BatchGetItem takes.
        let keys: Vec<CounterKey> = (0..150).map(|i| counter(&format!("bulk:{i}"))).collect();
        let adds = [add("bulk:7", 7, 1), add("bulk:140", 140, 1)];
        assert_eq!(
            store.add_counters(&adds).await.unwrap(),
            AddOutcome::Applied
        );
        let read = store.read_counters(&keys).await.unwrap();
        assert_eq!(read.len(), 150);
        for (i, counter) in read.iter().enumerate() {
            let expected = match i {
                7 => c(7, 1),
                140 => c(140, 1),
                _ => c(0, 0),
            };
            assert_eq!(*counter, expected, "counter {i}");
        }
    }

    /// 50 concurrent adds of 100 tokens against a cap of 2000: exactly 20 fit.
    /// Fifty concurrent adds to one counter admit exactly twenty.
    pub async fn concurrent_single_counter_adds<S: LimiterStore>(store: &S) {
        concurrent_adds(store, false).await;
    }

    /// Fifty concurrent adds to two windows at once admit exactly twenty.
    pub async fn concurrent_two_window_adds<S: LimiterStore>(store: &S) {
        concurrent_adds(store, true).await;
    }

    async fn concurrent_adds<S: LimiterStore>(store: &S, with_day_window: bool) {
        let outcomes = join_all((0..50).map(|i| async move {
            let mut adds = vec![capped("hot:m", 100, 2_000)];
            if with_day_window {
                adds.push(add(&format!("hot:h:{}", i % 2), 100, 1));
            }
            store.add_counters(&adds).await.unwrap()
        }))
        .await;
        let admitted = outcomes
            .iter()
            .filter(|o| **o == AddOutcome::Applied)
            .count();
        assert_eq!(admitted, 20, "{outcomes:?}");
        assert_eq!(
            store.read_counters(&[counter("hot:m")]).await.unwrap(),
            [c(2_000, 20)]
        );
        if with_day_window {
            let days = store
                .read_counters(&[counter("hot:h:0"), counter("hot:h:1")])
                .await
                .unwrap();
            assert_eq!(days[0].tokens + days[1].tokens, 2_000);
        }
    }

    pub async fn cache<S: ResponseCache>(store: &S) {
        assert!(store.get("acme:v1:abc").await.unwrap().is_none());
        let hello = completion("hello");
        store
            .put("acme:v1:abc", &hello, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(store.get("acme:v1:abc").await.unwrap(), Some(hello));
        // Keys are exact: another tenant's key misses.
        assert!(store.get("globex:v1:abc").await.unwrap().is_none());
        let again = completion("hello again");
        store
            .put("acme:v1:abc", &again, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(store.get("acme:v1:abc").await.unwrap(), Some(again));

        // Expired entries are never served, whether or not the backend deleted them yet.
        store
            .put(
                "acme:v1:short",
                &completion("brief"),
                Duration::from_millis(50),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(store.get("acme:v1:short").await.unwrap().is_none());

        // Embeddings replies: bit-exact vectors back, never read as a completion (or the
        // reverse), expiring like completions.
        let embedded = tollgate::ports::vector::Embeddings {
            vectors: vec![vec![0.1, -2.5e-8, f32::MAX], vec![1.0; 1536]],
            prompt_tokens: 7,
            model: "text-embedding-3-small".into(),
        };
        let entry = tollgate::ports::store::CachedEmbeddings::of(&embedded).unwrap();
        store
            .put_embeddings("acme:v1:emb", &entry, Duration::from_secs(60))
            .await
            .unwrap();
        let back = store.get_embeddings("acme:v1:emb").await.unwrap().unwrap();
        assert_eq!(back.embeddings().unwrap(), embedded);
        assert!(store.get("acme:v1:emb").await.unwrap().is_none());
        assert!(store.get_embeddings("acme:v1:abc").await.unwrap().is_none());
        assert!(
            store
                .get_embeddings("globex:v1:emb")
                .await
                .unwrap()
                .is_none()
        );
        store
            .put_embeddings("acme:v1:emb-short", &entry, Duration::from_millis(50))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(
            store
                .get_embeddings("acme:v1:emb-short")
                .await
                .unwrap()
                .is_none()
        );
        // A reply too large for one item is not an entry.
        let large = tollgate::ports::vector::Embeddings {
            vectors: vec![vec![0.5; 3072]; 40],
            ..embedded
        };
        assert!(tollgate::ports::store::CachedEmbeddings::of(&large).is_none());
    }

    /// Stores a version of `id` of `chunks` chunks the way ingest does: read the slot, plan
    /// the claim, claim (again after a concurrent change), commit.
    async fn store_version<S: DocumentStore>(
        store: &S,
        tenant_id: &TenantId,
        id: &str,
        chunks: u32,
        quota: u64,
    ) -> ClaimOutcome {
        let document = DocumentId::parse(id).unwrap();
        loop {
            let slot = store.storage_slot(tenant_id, &document).await.unwrap();
            let Ok(claim) = slot.claim(u64::from(chunks), quota, 0, Utc::now()) else {
                return ClaimOutcome::QuotaExceeded;
            };
            match store
                .claim_document(tenant_id, &document, &claim)
                .await
                .unwrap()
            {
                ClaimOutcome::Changed => continue,
                ClaimOutcome::QuotaExceeded => return ClaimOutcome::QuotaExceeded,
                ClaimOutcome::Claimed => {}
            }
            let record = document_record(tenant_id, id, chunks);
            assert!(
                store
                    .commit_document(&record, &claim.commit(u64::from(chunks)))
                    .await
                    .unwrap()
            );
            return ClaimOutcome::Claimed;
        }
    }

    async fn counter_of<S: DocumentStore>(store: &S, tenant_id: &TenantId) -> Option<u64> {
        let any = DocumentId::parse("any").unwrap();
        store.storage_slot(tenant_id, &any).await.unwrap().counter
    }

    pub async fn documents<S: DocumentStore>(store: &S) {
        let (acme, globex) = (tenant("acme"), tenant("globex"));
        let quota = 100;
        for (t, id, chunks) in [
            (&acme, "b-doc", 2),
            (&acme, "a-doc", 1),
            (&globex, "a-doc", 9),
            // Storing again replaces, and moves the charge to the new size.
            (&acme, "b-doc", 3),
        ] {
            assert_eq!(
                store_version(store, t, id, chunks, quota).await,
                ClaimOutcome::Claimed
            );
        }
        let page = store.documents_page(&acme, None, 10).await.unwrap();
        assert_eq!(
            page.documents,
            vec![
                document_record(&acme, "a-doc", 1),
                document_record(&acme, "b-doc", 3)
            ]
        );
        assert_eq!(page.next, None);
        assert_eq!(counter_of(store, &acme).await, Some(4));

        let doc = DocumentId::parse("a-doc").unwrap();
        let slot = store.storage_slot(&acme, &doc).await.unwrap();
        assert_eq!(slot.entry.record, Some(document_record(&acme, "a-doc", 1)));
        assert_eq!((slot.entry.charged, slot.entry.lease.clone()), (1, None));
        let removal = slot.removal(Utc::now()).unwrap().unwrap();
        assert!(store.remove_document(&acme, &doc, &removal).await.unwrap());
        // A removal of a version that is gone writes nothing.
        assert!(!store.remove_document(&acme, &doc, &removal).await.unwrap());
        assert_eq!(counter_of(store, &acme).await, Some(3));
        assert!(
            !store
                .storage_slot(&acme, &doc)
                .await
                .unwrap()
                .entry
                .exists()
        );
        // The other tenant's document of the same id, and its counter, are untouched.
        let page = store.documents_page(&globex, None, 10).await.unwrap();
        assert_eq!(page.documents, vec![document_record(&globex, "a-doc", 9)]);
        assert_eq!(counter_of(store, &globex).await, Some(9));
    }

    /// Claims are all-or-nothing conditional writes: the quota, the entry's version, the
    /// counter's creation and the lease each refuse a write that would break them.
    pub async fn storage_claims<S: DocumentStore>(store: &S) {
        let acme = tenant("acme");
        let doc = DocumentId::parse("guide").unwrap();
        let now = Utc::now();

        // The first claim creates the counter from the seed (the index's count).
        let fresh = store.storage_slot(&acme, &doc).await.unwrap();
        assert_eq!(fresh, StorageSlot::default());
        let first = fresh.claim(4, 10, 5, now).unwrap();
        let second = fresh.claim(1, 10, 5, now).unwrap();
        assert_eq!(
            store.claim_document(&acme, &doc, &first).await.unwrap(),
            ClaimOutcome::Claimed
        );
        // A claim planned from the same read finds the entry changed and writes nothing.
        assert_eq!(
            store.claim_document(&acme, &doc, &second).await.unwrap(),
            ClaimOutcome::Changed
        );
        let held = store.storage_slot(&acme, &doc).await.unwrap();
        assert_eq!(held.counter, Some(9));
        assert_eq!(held.entry.charged, 4);
        assert_eq!(held.entry.lease.as_ref(), Some(&first.lease));
        assert_eq!(held.entry.record, None);
        // Another id's claim that creates the counter again is refused: it exists now.
        let other = DocumentId::parse("other").unwrap();
        let late = StorageSlot::default().claim(1, 10, 0, now).unwrap();
        assert_eq!(
            store.claim_document(&acme, &other, &late).await.unwrap(),
            ClaimOutcome::Changed
        );

        // Only the lease holder settles; releasing a never-stored id leaves no entry.
        let mut stranger = first.release(&fresh.entry);
        stranger.lease_token = "someone-else".into();
        assert!(
            !store
                .release_document(&acme, &doc, &stranger)
                .await
                .unwrap()
        );
        assert!(
            store
                .release_document(&acme, &doc, &first.release(&fresh.entry))
                .await
                .unwrap()
        );
        let released = store.storage_slot(&acme, &doc).await.unwrap();
        assert_eq!(
            (released.entry.exists(), released.counter),
            (false, Some(5))
        );

        // Past the quota: refused by the store itself, nothing written.
        let slot = store.storage_slot(&acme, &other).await.unwrap();
        let mut greedy = slot.claim(5, 10, 0, now).unwrap();
        greedy.counter = Some(CounterWrite::Add { add: 6, max: 10 });
        assert_eq!(
            store.claim_document(&acme, &other, &greedy).await.unwrap(),
            ClaimOutcome::QuotaExceeded
        );
        assert_eq!(store.storage_slot(&acme, &other).await.unwrap(), slot);

        // A failed index write keeps the larger charge; committing later settles it.
        assert_eq!(
            store_version(store, &acme, "guide", 2, 10).await,
            ClaimOutcome::Claimed
        );
        let stored = store.storage_slot(&acme, &doc).await.unwrap();
        assert_eq!((stored.entry.charged, stored.counter), (2, Some(7)));
        let bigger = stored.claim(3, 10, 0, now).unwrap();
        store.claim_document(&acme, &doc, &bigger).await.unwrap();
        assert!(
            store
                .release_document(&acme, &doc, &bigger.abandon())
                .await
                .unwrap()
        );
        let kept = store.storage_slot(&acme, &doc).await.unwrap();
        assert_eq!((kept.entry.charged, kept.counter), (3, Some(8)));
        assert_eq!(kept.entry.record, Some(document_record(&acme, "guide", 2)));
        assert_eq!(kept.entry.lease, None);

        // An expired lease is no one's: the next claim takes the id over.
        let stale = kept
            .claim(1, 10, 0, now - chrono::Duration::hours(1))
            .unwrap();
        store.claim_document(&acme, &doc, &stale).await.unwrap();
        let abandoned = store.storage_slot(&acme, &doc).await.unwrap();
        assert_eq!(abandoned.claim(1, 10, 0, now).map(|_| ()), Ok(()));
        assert_eq!(
            store_version(store, &acme, "guide", 1, 10).await,
            ClaimOutcome::Claimed
        );
        let taken = store.storage_slot(&acme, &doc).await.unwrap();
        assert_eq!((taken.entry.charged, taken.counter), (1, Some(6)));
        // The stale holder can no longer settle.
        assert!(
            !store
                .commit_document(&document_record(&acme, "guide", 1), &stale.commit(1))
                .await
                .unwrap()
        );
    }

    /// 8 concurrent claims of 3 chunks against a quota of 10, on a tenant without a counter
    /// (so they also race to create it): exactly 3 fit, and the counter says 9.
    pub async fn concurrent_claims<S: DocumentStore>(store: &S) {
        let acme = tenant("acme");
        let outcomes = join_all((0..8).map(|i| {
            let acme = acme.clone();
            async move { store_version(store, &acme, &format!("doc-{i}"), 3, 10).await }
        }))
        .await;
        let stored = outcomes
            .iter()
            .filter(|o| **o == ClaimOutcome::Claimed)
            .count();
        assert_eq!(stored, 3, "{outcomes:?}");
        assert_eq!(counter_of(store, &acme).await, Some(9));
        let page = store.documents_page(&acme, None, 100).await.unwrap();
        assert_eq!(page.documents.len(), 3);
    }

    /// Pages by id, `limit` at a time; entries without a committed version are not listed;
    /// a cursor is only a position in the caller's own registry.
    pub async fn document_pages<S: DocumentStore>(store: &S) {
        let (acme, globex) = (tenant("acme"), tenant("globex"));
        for i in (0..25).rev() {
            let id = format!("d{i:02}");
            store_version(store, &acme, &id, 1, 1_000).await;
            if i % 5 == 0 {
                store_version(store, &globex, &id, 2, 1_000).await;
            }
        }
        // An id whose first ingest is in flight.
        let pending = DocumentId::parse("d10a").unwrap();
        let slot = store.storage_slot(&acme, &pending).await.unwrap();
        let claim = slot.claim(1, 1_000, 0, Utc::now()).unwrap();
        store.claim_document(&acme, &pending, &claim).await.unwrap();

        let mut ids = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let page = store
                .documents_page(&acme, cursor.as_ref(), 10)
                .await
                .unwrap();
            pages += 1;
            assert!(page.documents.len() <= 10);
            ids.extend(page.documents.iter().map(|d| d.document_id.to_string()));
            assert!(page.documents.iter().all(|d| d.tenant_id == acme));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let expected: Vec<String> = (0..25).map(|i| format!("d{i:02}")).collect();
        assert_eq!(ids, expected);
        assert_eq!(pages, 3);

        // acme's cursor after d10, used by globex: globex's own documents after d10.
        let after_d10 = DocumentCursor::after(DocumentId::parse("d10").unwrap());
        let page = store
            .documents_page(&globex, Some(&after_d10), 10)
            .await
            .unwrap();
        let listed: Vec<(String, String)> = page
            .documents
            .iter()
            .map(|d| (d.tenant_id.to_string(), d.document_id.to_string()))
            .collect();
        assert_eq!(
            listed,
            [("globex", "d15"), ("globex", "d20")].map(|(t, d)| (t.to_owned(), d.to_owned()))
        );
        assert_eq!(page.next, None);
        // A tenant with no documents has an empty last page.
        let empty = store
            .documents_page(&tenant("initech"), None, 10)
            .await
            .unwrap();
        assert_eq!((empty.documents.len(), empty.next), (0, None));
    }

    pub async fn conversations<S: ConversationStore>(store: &S) {
        let acme = TenantId::parse("acme").unwrap();
        let globex = TenantId::parse("globex").unwrap();
        let turn = |n: i64, content: &str| Turn {
            role: if n % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            },
            content: content.to_owned(),
            tokens: 3,
            at: DateTime::from_timestamp(1_795_000_000 + n, 0).unwrap(),
        };
        store
            .append_turns(&acme, "c1", &[turn(0, "hi"), turn(1, "hello")])
            .await
            .unwrap();
        store
            .append_turns(&acme, "c1", &[turn(2, "again"), turn(3, "sure")])
            .await
            .unwrap();
        assert_eq!(
            store.load_turns(&acme, "c1", 10).await.unwrap(),
            vec![
                turn(0, "hi"),
                turn(1, "hello"),
                turn(2, "again"),
                turn(3, "sure")
            ]
        );
        // The newest turns, oldest first.
        assert_eq!(
            store.load_turns(&acme, "c1", 2).await.unwrap(),
            vec![turn(2, "again"), turn(3, "sure")]
        );
        // The same id under another tenant is another, empty conversation.
        assert!(
            store
                .load_turns(&globex, "c1", 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.load_turns(&acme, "c2", 10).await.unwrap().is_empty());
    }

    pub async fn anomalies<S: AnomalyStore>(store: &S) {
        let anomaly = |tenant: &str, hour: i64, kind: &str| AnomalyRecord {
            tenant_id: TenantId::parse(tenant).unwrap(),
            hour: DateTime::from_timestamp(1_795_000_000 - 1_795_000_000 % 3600 + hour * 3600, 0)
                .unwrap(),
            kind: kind.to_owned(),
            observed: dec!(12.5),
            baseline: dec!(2.25),
            detected_at: DateTime::from_timestamp(1_795_100_000, 0).unwrap(),
        };
        assert_eq!(
            store
                .record_anomaly(&anomaly("acme", 1, "cost_spike"))
                .await
                .unwrap(),
            Recorded::Inserted
        );
        // A duplicated scheduled run records nothing new.
        assert_eq!(
            store
                .record_anomaly(&anomaly("acme", 1, "cost_spike"))
                .await
                .unwrap(),
            Recorded::Duplicate
        );
        assert_eq!(
            store
                .record_anomaly(&anomaly("acme", 1, "quality_drop"))
                .await
                .unwrap(),
            Recorded::Inserted
        );
        assert_eq!(
            store
                .record_anomaly(&anomaly("globex", 2, "cost_spike"))
                .await
                .unwrap(),
            Recorded::Inserted
        );
        assert_eq!(
            store
                .record_anomaly(&anomaly("globex", 9, "cost_spike"))
                .await
                .unwrap(),
            Recorded::Inserted
        );
        let from = anomaly("acme", 0, "x").hour;
        let to = anomaly("acme", 3, "x").hour;
        let found = store.anomalies(from, to).await.unwrap();
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found.windows(2).all(|w| w[0].hour <= w[1].hour));
        assert_eq!(found[0].observed, dec!(12.5));
    }

    pub async fn budget_events<S: BudgetEventStore>(store: &S) {
        use tollgate::domain::budget::Period;
        use tollgate::domain::budget_event::{BudgetEvent, BudgetEventKind};
        // 2026-12-06 and December 2026, UTC.
        let day = DateTime::from_timestamp(1_796_515_200, 0).unwrap();
        let month = DateTime::from_timestamp(1_796_083_200, 0).unwrap();
        let event =
            |tenant: &str, user: Option<&str>, period: Period, kind: BudgetEventKind| BudgetEvent {
                tenant_id: TenantId::parse(tenant).unwrap(),
                user: user.map(|u| tollgate::domain::profile::UserId::parse(u).unwrap()),
                period,
                period_start: if period == Period::Day { day } else { month },
                kind,
                spend_usd: dec!(0.00995),
                budget_usd: dec!(0.01),
                alert_at_percent: 80,
                occurred_at: day + chrono::Duration::hours(9),
            };
        let exhausted = event("acme", None, Period::Day, BudgetEventKind::Exhausted);
        assert_eq!(
            store.budget_event_published(&exhausted).await.unwrap(),
            None
        );
        assert_eq!(
            store.record_budget_event(&exhausted).await.unwrap(),
            Recorded::Inserted
        );
        // Another container, or a retried request: nothing new, even with other figures.
        let later = BudgetEvent {
            spend_usd: dec!(0.0101),
            ..exhausted.clone()
        };
        assert_eq!(
            store.record_budget_event(&later).await.unwrap(),
            Recorded::Duplicate
        );
        // The same user id under two tenants is two subjects; the tenant's own is a third.
        for (tenant, user) in [
            ("acme", Some("alice")),
            ("globex", Some("alice")),
            ("globex", None),
        ] {
            let e = event(tenant, user, Period::Day, BudgetEventKind::Threshold);
            assert_eq!(
                store.record_budget_event(&e).await.unwrap(),
                Recorded::Inserted
            );
        }
        let monthly = event("acme", None, Period::Month, BudgetEventKind::Exhausted);
        assert_eq!(
            store.record_budget_event(&monthly).await.unwrap(),
            Recorded::Inserted
        );

        let days = store.budget_events(Period::Day, day).await.unwrap();
        let ids: Vec<String> = days.iter().map(|s| s.event.id()).collect();
        assert_eq!(
            ids,
            [
                "acme/day/2026-12-06/exhausted",
                "acme/u/alice/day/2026-12-06/threshold",
                "globex/day/2026-12-06/threshold",
                "globex/u/alice/day/2026-12-06/threshold",
            ]
        );
        assert_eq!(days[0].event, exhausted, "the first record stands");
        assert!(days.iter().all(|s| !s.published));
        let months = store.budget_events(Period::Month, month).await.unwrap();
        assert_eq!(months.len(), 1);
        assert_eq!(months[0].event, monthly);
        let next_day = day + chrono::Duration::days(1);
        assert!(
            store
                .budget_events(Period::Day, next_day)
                .await
                .unwrap()
                .is_empty()
        );

        store.mark_budget_event_published(&exhausted).await.unwrap();
        store.mark_budget_event_published(&exhausted).await.unwrap();
        assert_eq!(
            store.budget_event_published(&exhausted).await.unwrap(),
            Some(true)
        );
        let other = event("globex", None, Period::Day, BudgetEventKind::Threshold);
        assert_eq!(
            store.budget_event_published(&other).await.unwrap(),
            Some(false)
        );
        // Marking an event never recorded records nothing.
        let never = event("initech", None, Period::Day, BudgetEventKind::Reset);
        store.mark_budget_event_published(&never).await.unwrap();
        assert_eq!(store.budget_event_published(&never).await.unwrap(), None);
        let published: Vec<bool> = store
            .budget_events(Period::Day, day)
            .await
            .unwrap()
            .iter()
            .map(|s| s.published)
            .collect();
        assert_eq!(published, [true, false, false, false]);
    }

    /// Price writes are conditional on the entries' version: a write based on a version
    /// another write moved is refused with nothing written, so eight concurrent sets of
    /// different models claiming one alias (each valid alone, any two together not) land
    /// exactly one, and the entries the gateway loads stay valid.
    pub async fn price_versions<S: Catalog + AuditLog>(store: &S) {
        let layer = store.price_layer().await.unwrap();
        assert_eq!((layer.version, layer.entries.len()), (0, 0));
        let first = price(ProviderKind::Openai, "v-model", dec!(1), dec!(2));
        store.put_price_if(&first, 0).await.unwrap();
        let stale = price(ProviderKind::Openai, "stale-model", dec!(1), dec!(2));
        assert!(matches!(
            store.put_price_if(&stale, 0).await,
            Err(StoreError::Conflict { .. })
        ));
        let layer = store.price_layer().await.unwrap();
        assert_eq!(layer.version, 1);
        assert_eq!(
            layer.entries,
            std::slice::from_ref(&first),
            "the stale write wrote nothing"
        );
        store.put_price_if(&stale, 1).await.unwrap();
        assert_eq!(store.price_layer().await.unwrap().version, 2);

        let audit = tollgate::service::audit::Auditor::new(
            store,
            "arn:aws:iam::123456789012:role/ops",
            RequestId::generate(),
        );
        let sets = (0..8).map(|i| {
            let entry = PriceEntry {
                aliases: vec!["one-alias".into()],
                ..price(
                    ProviderKind::Openai,
                    &format!("racer-{i}"),
                    dec!(1),
                    dec!(2),
                )
            };
            tollgate::service::catalog_admin::set_price(store, &audit, entry, t0())
        });
        let results = join_all(sets).await;
        let landed = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(landed, 1, "{results:?}");
        assert!(results.iter().all(|r| match r {
            Ok(_) => true,
            Err(e) => e.to_string().contains("one-alias"),
        }));
        let entries = store.prices().await.unwrap();
        let mut table = tollgate::domain::pricing::PriceTable::bundled().unwrap();
        table
            .extend(entries.clone())
            .expect("the stored entries still load");
        assert_eq!(
            entries
                .iter()
                .filter(|e| e.model.starts_with("racer-"))
                .count(),
            1
        );
        let records = store.audit_page(None, None, 100).await.unwrap().records;
        assert_eq!(records.len(), 1, "only the set that landed is recorded");
    }

    pub async fn catalog<S: Catalog>(store: &S) {
        assert!(store.prices().await.unwrap().is_empty());
        assert!(store.upstream_quotas().await.unwrap().is_empty());
        let entries = [
            // Aliases round-trip, non-ASCII ones included.
            PriceEntry {
                aliases: vec!["claude-x-20250101".into(), "克劳德-x".into()],
                ..price(ProviderKind::Anthropic, "claude-x", dec!(3.00), dec!(15.00))
            },
            price(ProviderKind::Openai, "gpt-4o", dec!(2.50), dec!(10.00)),
            price(ProviderKind::Openai, "a-model", dec!(0.000001), dec!(0.15)),
        ];
        for entry in &entries {
            store.put_price(entry).await.unwrap();
        }
        let changed = price(ProviderKind::Openai, "gpt-4o", dec!(2.00), dec!(8.00));
        store.put_price(&changed).await.unwrap();
        // Ordered by provider, then model; replaced, not duplicated; Decimals exact; aliases
        // kept in order.
        assert_eq!(
            store.prices().await.unwrap(),
            [entries[2].clone(), changed, entries[0].clone()]
        );

        let quota = |provider, model: &str, tpm| UpstreamQuota {
            provider,
            model: model.into(),
            key: None,
            tokens_per_minute: tpm,
        };
        store
            .put_upstream_quota(&quota(ProviderKind::Anthropic, "claude-x", 400_000))
            .await
            .unwrap();
        store
            .put_upstream_quota(&quota(ProviderKind::Openai, "gpt-4o", 30_000_000))
            .await
            .unwrap();
        store
            .put_upstream_quota(&quota(ProviderKind::Openai, "gpt-4o", 2_000_000))
            .await
            .unwrap();
        assert_eq!(
            store.upstream_quotas().await.unwrap(),
            [
                quota(ProviderKind::Openai, "gpt-4o", 2_000_000),
                quota(ProviderKind::Anthropic, "claude-x", 400_000),
            ]
        );

        // One key's quota is its own entry beside the model's: set, replaced, and never
        // confused with the model-wide quota of a model id that looks like a key suffix.
        let keyed = |key, tpm| UpstreamQuota {
            key: Some(key),
            ..quota(ProviderKind::Openai, "gpt-4o", tpm)
        };
        for q in [
            keyed(1, 30_000),
            keyed(0, 10_000),
            keyed(1, 40_000),
            quota(ProviderKind::Openai, "gpt-4o#m#1#k1", 5_000),
        ] {
            store.put_upstream_quota(&q).await.unwrap();
        }
        let mut all = store.upstream_quotas().await.unwrap();
        all.sort_by(|a, b| (a.provider, &a.model, a.key).cmp(&(b.provider, &b.model, b.key)));
        assert_eq!(
            all,
            [
                quota(ProviderKind::Openai, "gpt-4o", 2_000_000),
                keyed(0, 10_000),
                keyed(1, 40_000),
                quota(ProviderKind::Openai, "gpt-4o#m#1#k1", 5_000),
                quota(ProviderKind::Anthropic, "claude-x", 400_000),
            ]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

async fn memory() -> Option<MemoryStore> {
    Some(MemoryStore::new())
}

fn dynamodb_endpoint() -> Option<String> {
    tollgate_tests::moto::endpoint("DynamoDB contract suite")
}

/// A store on fresh tables of its own, so tests run in parallel on one emulator.
async fn dynamodb() -> Option<DynamoStore> {
    tollgate_tests::moto::fresh_store("DynamoDB contract suite", "t").await
}

tollgate_tests::contract_suite! {
    backends: [memory, dynamodb],
    cases: {
        conversations_append_and_load_the_newest_turns_per_tenant => contract::conversations,
        anomalies_are_recorded_once_per_tenant_hour_and_kind => contract::anomalies,
        documents_are_listed_by_id_replaced_and_deleted_per_tenant => contract::documents,
        storage_claims_are_conditional_on_the_quota_the_version_and_the_lease => contract::storage_claims,
        eight_concurrent_claims_of_3_chunks_fit_exactly_3_in_a_quota_of_10 => contract::concurrent_claims,
        documents_are_paged_by_id_within_the_callers_own_registry => contract::document_pages,
        keys_are_found_by_prefix_listed_oldest_first_and_revoked_once => contract::keys,
        tenant_configs_get_increasing_versions_and_list_by_id => contract::tenant_configs,
        tenants_are_listed_a_page_at_a_time_in_id_order => contract::tenant_pages,
        conditional_config_writes_apply_once_of_eight_concurrent_updates => contract::conditional_configs,
        usage_is_recorded_once_and_rollups_equal_the_sum_of_events => contract::usage,
        usage_adjustments_reconcile_counters_exactly_once => contract::usage_adjustments,
        end_user_usage_rolls_up_per_user_and_utc_day => contract::user_rollups,
        limiter_adds_are_capped_all_or_nothing_and_report_the_refused_index => contract::limiter,
        limiter_reads_more_counters_than_one_batch_in_order => contract::limiter_reads_many_counters,
        fifty_concurrent_single_counter_adds_admit_exactly_twenty => contract::concurrent_single_counter_adds,
        fifty_concurrent_two_window_adds_admit_exactly_twenty => contract::concurrent_two_window_adds,
        cached_responses_are_served_until_they_expire => contract::cache,
        catalog_prices_and_quotas_round_trip_in_order => contract::catalog,
        concurrent_price_sets_land_only_on_the_version_they_checked => contract::price_versions,
        budget_events_are_recorded_once_per_subject_period_and_kind => contract::budget_events,
        audit_logs_are_paged_newest_first_per_tenant_and_never_cross => contract::audit_log,
        a_keys_last_use_is_written_at_most_once_per_interval => contract::key_usage,
    },
}

/// DynamoDB-only properties: table creation and the round trips each port costs.
mod dynamodb_adapter {
    use super::*;

    #[tokio::test]
    async fn dynamodb_create_tables_is_idempotent() {
        let Some(store) = dynamodb().await else {
            return;
        };
        let again = store.create_tables().await.unwrap();
        assert_eq!(again.len(), 4);
        assert!(again.iter().all(|r| !r.created), "{again:?}");
        let limits = again.iter().find(|r| r.table.ends_with("-limits")).unwrap();
        assert_eq!(limits.ttl, Some(("expires_at", false)));
    }

    #[tokio::test]
    async fn dynamodb_round_trips_per_operation() {
        let Some(store) = dynamodb().await else {
            return;
        };
        let trips = |before: u64| store.round_trips() - before;

        let before = store.round_trips();
        store
            .add_counters(&[capped("rt:m", 10, 100)])
            .await
            .unwrap();
        assert_eq!(trips(before), 1, "one conditional UpdateItem");

        let before = store.round_trips();
        let two = [capped("rt:m", 10, 100), capped("rt:h", 10, 1_000)];
        store.add_counters(&two).await.unwrap();
        assert_eq!(trips(before), 1, "one TransactWriteItems");

        let before = store.round_trips();
        let keys: Vec<_> = (0..8).map(|i| counter(&format!("rt:{i}"))).collect();
        store.read_counters(&keys).await.unwrap();
        assert_eq!(trips(before), 1, "one BatchGetItem");

        let before = store.round_trips();
        let event = EventBuilder::new("acme", "gpt-4o", t0()).build();
        let reconcile = [add("rt:m", -5, 0), add("rt:h", -5, 0)];
        store.record(&event, &reconcile).await.unwrap();
        assert_eq!(
            trips(before),
            1,
            "event, rollup and adjustments in one transaction"
        );

        let (acme, doc) = (tenant("acme"), DocumentId::parse("rt-doc").unwrap());
        let before = store.round_trips();
        let slot = store.storage_slot(&acme, &doc).await.unwrap();
        assert_eq!(
            trips(before),
            1,
            "one BatchGetItem: the entry and the counter"
        );
        let claim = slot.claim(3, 10, 0, Utc::now()).unwrap();
        let before = store.round_trips();
        store.claim_document(&acme, &doc, &claim).await.unwrap();
        assert_eq!(trips(before), 1, "one TransactWriteItems");
        let before = store.round_trips();
        let record = document_record(&acme, "rt-doc", 3);
        store
            .commit_document(&record, &claim.commit(3))
            .await
            .unwrap();
        assert_eq!(trips(before), 1, "one TransactWriteItems");

        let before = store.round_trips();
        store.find_key(&unknown_prefix()).await.unwrap();
        store.tenant_config(&tenant("acme")).await.unwrap();
        assert_eq!(trips(before), 2, "one GetItem each");
    }

    #[tokio::test]
    async fn dynamodb_missing_tables_are_reported_as_unavailable() {
        let Some(endpoint) = dynamodb_endpoint() else {
            return;
        };
        let store = DynamoStore::emulator(&endpoint, TableNames::with_prefix("never-created"));
        let err = store.read_counters(&[counter("x")]).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Unavailable(m) if m.contains("tollgate init")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn dynamodb_unreachable_endpoint_is_unavailable_not_a_panic() {
        // A port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = DynamoStore::emulator(
            &format!("http://127.0.0.1:{port}"),
            TableNames::with_prefix("nowhere"),
        );
        let err = store.add_counters(&[add("x", 1, 1)]).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            !format!("{err}").contains("test"),
            "no credentials in errors: {err}"
        );
    }
}
