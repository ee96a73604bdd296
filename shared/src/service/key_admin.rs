//! Key lifecycle, as operators drive it (the `tollgate key` commands; the admin API builds on
//! the same functions): issue a key with a name, scopes and an expiry; rotate one (a new key
//! with the same name and scopes, the old one kept working for a stated overlap, then
//! expired); revoke one. Every rule lives here, so no front end can drift from another, and
//! every change is recorded in the audit log (`service::audit`) without key material.
//!
//! When running gateways see a change: a key's expiry is checked against the clock on every
//! request, so a key that carries its expiry stops at that instant. A revocation, and the
//! expiry a rotation sets on the old key, reach a warm container when its directory cache
//! refreshes the key (`TOLLGATE_DIRECTORY_CACHE_SECS`, 30 s by default): the old key may work
//! that much past its stated end there. A new key works at once (an unknown prefix is cached
//! for 5 s, and a new key's prefix was never looked up before it existed).

use chrono::{DateTime, Duration, Utc};

use crate::domain::audit::{AuditAction, key_state};
use crate::domain::ids::TenantId;
use crate::domain::keys::{self, IssuedKey, KeyPrefix, KeySpec, KeyState, StoredKey};
use crate::ports::store::{ApiKeyLookup, StoreError, TenantAdmin, TenantConfigSource};
use crate::service::audit::{Auditor, Change, Unaudited};

/// Why an operator's key change was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyAdminError {
    /// No such tenant or key.
    #[error("{0}")]
    NotFound(String),
    /// The change is not valid as asked (an expiry in the past, no scopes, a dead key).
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The change was made; its audit record was not written.
    #[error(transparent)]
    Unaudited(#[from] Unaudited),
}

fn resource(prefix: &KeyPrefix) -> String {
    format!("key/{prefix}")
}

/// A rotation's outcome: the new key, and until when the old one keeps working.
pub struct Rotated {
    /// The successor, with its plaintext to show once.
    pub key: IssuedKey,
    /// The old key's prefix.
    pub old: KeyPrefix,
    /// The old key is refused from this instant on.
    pub old_until: DateTime<Utc>,
}

/// Issues a key for `tenant` (which must exist) carrying `spec`.
pub async fn create<S>(
    store: &S,
    audit: &Auditor<'_>,
    tenant: &TenantId,
    spec: KeySpec,
    now: DateTime<Utc>,
) -> Result<IssuedKey, KeyAdminError>
where
    S: TenantAdmin + TenantConfigSource + ?Sized,
{
    if store.tenant_config(tenant).await?.is_none() {
        return Err(KeyAdminError::NotFound(format!("no tenant `{tenant}`")));
    }
    if let Some(at) = spec.expires_at
        && at <= now
    {
        return Err(KeyAdminError::Invalid(format!(
            "the expiry {} is not in the future",
            at.format("%Y-%m-%dT%H:%M:%SZ")
        )));
    }
    if spec.scopes.as_ref().is_some_and(|s| s.is_empty()) {
        return Err(KeyAdminError::Invalid(
            "a key needs at least one scope (leave scopes out for all of them)".into(),
        ));
    }
    if let Some(name) = &spec.name {
        keys::key_name(name).map_err(KeyAdminError::Invalid)?;
    }
    let issued = keys::issue_key_with(tenant.clone(), spec, now);
    store.put_key(issued.record.clone()).await?;
    audit
        .record(Change {
            tenant: Some(tenant),
            action: AuditAction::KeyCreate,
            resource: resource(&issued.record.prefix),
            before: None,
            after: Some(key_state(&issued.record)),
            at: now,
        })
        .await?;
    Ok(issued)
}

/// Rotates the live key `prefix`: issues its successor, then makes the old key expire after
/// `overlap` (at most [`keys::MAX_OVERLAP`]; sooner if it already expires sooner). The
/// successor is stored first, so a failure in between never leaves the tenant without a
/// working key (see the comments below for how each failure ends).
pub async fn rotate<S>(
    store: &S,
    audit: &Auditor<'_>,
    prefix: &KeyPrefix,
    overlap: Duration,
    now: DateTime<Utc>,
) -> Result<Rotated, KeyAdminError>
where
    S: TenantAdmin + ApiKeyLookup + ?Sized,
{
    if overlap < Duration::zero() || overlap > keys::MAX_OVERLAP {
        return Err(KeyAdminError::Invalid(format!(
            "the overlap must be between 0 and {} days",
            keys::MAX_OVERLAP.num_days()
        )));
    }
    let old = live(store, prefix, now).await?;
    let (key, old_until) = keys::rotate(&old, overlap, now);
    // The successor first: a failure between the two writes never leaves the tenant without a
    // working key.
    store.put_key(key.record.clone()).await?;
    if let Err(err) = store.expire_key(prefix, old_until).await {
        // The write may have applied with only its answer lost: look before undoing anything.
        match store.find_key(prefix).await {
            // Shortened after all: the rotation is done (recorded and returned below).
            Ok(Some(stored)) if stored.expires_at.is_some_and(|at| at <= old_until) => {}
            // Confirmed as it was: withdraw the successor (its secret exists only in this
            // call), so the failed rotation leaves the keys as they were.
            Ok(Some(stored)) if stored.expires_at == old.expires_at => {
                if let Err(undo) = store.revoke_key(&key.record.prefix).await {
                    tracing::warn!(successor = %key.record.prefix, error = %undo, "a failed rotation's successor could not be withdrawn; nobody holds its secret");
                }
                return Err(err.into());
            }
            // Unknown (or changed by someone else): keep the successor live, so whatever
            // happened to the old key, the tenant is not locked out. Nobody holds its secret.
            _ => return Err(err.into()),
        }
    }
    let mut ended = old.clone();
    ended.expires_at = Some(old_until);
    audit
        .record(Change {
            tenant: Some(&old.tenant_id),
            action: AuditAction::KeyRotate,
            resource: resource(prefix),
            before: Some(key_state(&old)),
            after: Some(serde_json::json!({
                "key": key_state(&ended),
                "successor": key_state(&key.record),
            })),
            at: now,
        })
        .await?;
    Ok(Rotated {
        key,
        old: prefix.clone(),
        old_until,
    })
}

/// Revokes `prefix` (revoking twice keeps the first time, and records nothing the second
/// time). Returns the key as it was.
pub async fn revoke<S>(
    store: &S,
    audit: &Auditor<'_>,
    prefix: &KeyPrefix,
    now: DateTime<Utc>,
) -> Result<StoredKey, KeyAdminError>
where
    S: TenantAdmin + ApiKeyLookup + ?Sized,
{
    let key = find(store, prefix).await?;
    if key.revoked_at.is_none() {
        match store.revoke_key(prefix).await {
            Err(StoreError::NotFound(_)) => {
                return Err(KeyAdminError::NotFound(format!(
                    "no key with prefix {prefix}"
                )));
            }
            other => other?,
        }
        let after = find(store, prefix).await?;
        audit
            .record(Change {
                tenant: Some(&key.tenant_id),
                action: AuditAction::KeyRevoke,
                resource: resource(prefix),
                before: Some(key_state(&key)),
                after: Some(key_state(&after)),
                at: now,
            })
            .await?;
    }
    Ok(key)
}

async fn find<S>(store: &S, prefix: &KeyPrefix) -> Result<StoredKey, KeyAdminError>
where
    S: ApiKeyLookup + ?Sized,
{
    store
        .find_key(prefix)
        .await?
        .ok_or_else(|| KeyAdminError::NotFound(format!("no key with prefix {prefix}")))
}

/// The key `prefix`, which must be live at `now`.
async fn live<S>(
    store: &S,
    prefix: &KeyPrefix,
    now: DateTime<Utc>,
) -> Result<StoredKey, KeyAdminError>
where
    S: ApiKeyLookup + ?Sized,
{
    let key = find(store, prefix).await?;
    match key.state(now) {
        KeyState::Live => Ok(key),
        state => Err(KeyAdminError::Invalid(format!(
            "key {prefix} is {}: issue a new key instead of rotating it",
            state.as_str()
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::adapters::memory::MemoryStore;
    use crate::domain::keys::{KeyScope, PresentedKey};
    use crate::ports::store::AuditLog;

    fn audit(store: &MemoryStore) -> Auditor<'_> {
        Auditor::new(
            store,
            "local:test",
            crate::domain::ids::RequestId::generate(),
        )
    }

    /// The demo tenants (`acme` among them), each with one key.
    async fn store_with(tenant: &TenantId) -> MemoryStore {
        let store = MemoryStore::new();
        crate::demo::seed(&store, Utc::now()).await.unwrap();
        assert!(store.tenant_config(tenant).await.unwrap().is_some());
        store
    }

    fn admits(key: &StoredKey, issued: &IssuedKey, at: DateTime<Utc>) -> bool {
        key.admits(&PresentedKey::parse(issued.expose()).unwrap(), at)
    }

    #[tokio::test]
    async fn a_rotated_key_works_until_its_overlap_ends_and_its_successor_from_the_start() {
        let tenant = TenantId::parse("acme").unwrap();
        let store = store_with(&tenant).await;
        let now = Utc::now();
        let spec = KeySpec {
            name: Some("worker".into()),
            scopes: Some([KeyScope::Chat].into()),
            expires_at: None,
        };
        let old = create(&store, &audit(&store), &tenant, spec, now)
            .await
            .unwrap();
        let rotated = rotate(
            &store,
            &audit(&store),
            &old.record.prefix,
            Duration::hours(24),
            now,
        )
        .await
        .unwrap();
        let end = now + Duration::hours(24);
        assert_eq!(rotated.old_until, end);
        let stored_old = store.find_key(&old.record.prefix).await.unwrap().unwrap();
        let stored_new = store
            .find_key(&rotated.key.record.prefix)
            .await
            .unwrap()
            .unwrap();
        assert!(admits(&stored_old, &old, end - Duration::nanoseconds(1)));
        assert!(!admits(&stored_old, &old, end));
        assert!(admits(&stored_new, &rotated.key, now));
        assert!(admits(&stored_new, &rotated.key, end + Duration::days(365)));
        assert_eq!(stored_new.name.as_deref(), Some("worker"));
        assert_eq!(stored_new.scopes, stored_old.scopes);
        // The old key cannot be rotated again once it has expired.
        let err = rotate(
            &store,
            &audit(&store),
            &old.record.prefix,
            Duration::hours(1),
            end,
        )
        .await
        .err()
        .unwrap();
        assert!(err.to_string().contains("expired"), "{err}");
    }

    #[tokio::test]
    async fn bad_specs_and_unknown_targets_are_refused_before_anything_is_stored() {
        let tenant = TenantId::parse("acme").unwrap();
        let store = store_with(&tenant).await;
        let now = Utc::now();
        let past = KeySpec {
            expires_at: Some(now),
            ..KeySpec::default()
        };
        assert!(matches!(
            create(&store, &audit(&store), &tenant, past, now).await,
            Err(KeyAdminError::Invalid(_))
        ));
        let none = KeySpec {
            scopes: Some(Default::default()),
            ..KeySpec::default()
        };
        assert!(matches!(
            create(&store, &audit(&store), &tenant, none, now).await,
            Err(KeyAdminError::Invalid(_))
        ));
        let before = store.keys_for(&tenant).await.unwrap().len();
        let other = TenantId::parse("nobody").unwrap();
        assert!(matches!(
            create(&store, &audit(&store), &other, KeySpec::default(), now).await,
            Err(KeyAdminError::NotFound(_))
        ));
        assert_eq!(store.keys_for(&tenant).await.unwrap().len(), before);
        let key = create(&store, &audit(&store), &tenant, KeySpec::default(), now)
            .await
            .unwrap();
        let prefix = key.record.prefix;
        for overlap in [
            Duration::seconds(-1),
            keys::MAX_OVERLAP + Duration::seconds(1),
        ] {
            assert!(matches!(
                rotate(&store, &audit(&store), &prefix, overlap, now).await,
                Err(KeyAdminError::Invalid(_))
            ));
        }
        revoke(&store, &audit(&store), &prefix, now).await.unwrap();
        let again = revoke(&store, &audit(&store), &prefix, now).await.unwrap();
        assert!(again.revoked_at.is_some(), "the first revocation is kept");
        assert!(
            rotate(&store, &audit(&store), &prefix, Duration::hours(1), now)
                .await
                .is_err()
        );
        assert_eq!(store.keys_for(&tenant).await.unwrap().len(), before + 1);
    }

    /// Where a rotation's store fails.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Failure {
        /// Storing the successor.
        PutKey,
        /// Shortening the old key, before the write applies.
        ExpireKey,
        /// Shortening the old key: the write applies, its answer is lost.
        ExpireKeyAnswer,
        /// Shortening the old key, and the read that would tell what happened.
        ExpireKeyAndRead,
    }

    /// The store of a rotation that fails as `failure` says.
    struct FailingAt {
        inner: MemoryStore,
        failure: Failure,
        expired: std::sync::atomic::AtomicBool,
    }

    fn down() -> StoreError {
        StoreError::Unavailable("injected failure".into())
    }

    #[async_trait::async_trait]
    impl ApiKeyLookup for FailingAt {
        async fn find_key(&self, prefix: &KeyPrefix) -> Result<Option<StoredKey>, StoreError> {
            let after_expiry = self.expired.load(std::sync::atomic::Ordering::SeqCst);
            if self.failure == Failure::ExpireKeyAndRead && after_expiry {
                return Err(down());
            }
            self.inner.find_key(prefix).await
        }
    }

    #[async_trait::async_trait]
    impl TenantAdmin for FailingAt {
        async fn put_tenant_config_if(
            &self,
            config: crate::domain::tenant::TenantConfig,
            expect: crate::ports::store::Expect,
        ) -> Result<u64, StoreError> {
            self.inner.put_tenant_config_if(config, expect).await
        }
        async fn tenant_configs(
            &self,
        ) -> Result<Vec<std::sync::Arc<crate::domain::tenant::TenantConfig>>, StoreError> {
            self.inner.tenant_configs().await
        }
        async fn put_key(&self, key: StoredKey) -> Result<(), StoreError> {
            if self.failure == Failure::PutKey {
                return Err(down());
            }
            self.inner.put_key(key).await
        }
        async fn keys_for(&self, tenant: &TenantId) -> Result<Vec<StoredKey>, StoreError> {
            self.inner.keys_for(tenant).await
        }
        async fn revoke_key(&self, prefix: &KeyPrefix) -> Result<(), StoreError> {
            self.inner.revoke_key(prefix).await
        }
        async fn expire_key(
            &self,
            prefix: &KeyPrefix,
            at: DateTime<Utc>,
        ) -> Result<(), StoreError> {
            self.expired
                .store(true, std::sync::atomic::Ordering::SeqCst);
            match self.failure {
                Failure::ExpireKey | Failure::ExpireKeyAndRead => Err(down()),
                Failure::ExpireKeyAnswer => {
                    self.inner.expire_key(prefix, at).await?;
                    Err(down())
                }
                Failure::PutKey => self.inner.expire_key(prefix, at).await,
            }
        }
        async fn register_fine_tuned(
            &self,
            provider: crate::domain::tenant::ProviderKind,
            model: &str,
            owner: &TenantId,
        ) -> Result<(), StoreError> {
            self.inner.register_fine_tuned(provider, model, owner).await
        }
    }

    /// A rotation stores the successor before it shortens the old key, and never leaves the
    /// tenant without a working key: a failure before the old key changes ends with the keys as
    /// they were (a stored successor withdrawn); a lost answer to a write that applied
    /// completes the rotation; a failure it cannot see through keeps the successor live.
    #[tokio::test]
    async fn a_rotation_failing_anywhere_never_leaves_the_tenant_without_a_key() {
        let tenant = TenantId::parse("acme").unwrap();
        let now = Utc::now();
        for failure in [
            Failure::PutKey,
            Failure::ExpireKey,
            Failure::ExpireKeyAnswer,
            Failure::ExpireKeyAndRead,
        ] {
            let inner = store_with(&tenant).await;
            let old = create(&inner, &audit(&inner), &tenant, KeySpec::default(), now)
                .await
                .unwrap();
            let records_before = inner.audit_page(Some(&tenant), None, 100).await.unwrap();
            let keys_before = inner.keys_for(&tenant).await.unwrap().len();
            let store = FailingAt {
                inner,
                failure,
                expired: Default::default(),
            };
            let result = rotate(
                &store,
                &audit(&store.inner),
                &old.record.prefix,
                Duration::hours(1),
                now,
            )
            .await;
            let stored_old = store
                .inner
                .find_key(&old.record.prefix)
                .await
                .unwrap()
                .unwrap();
            let keys = store.inner.keys_for(&tenant).await.unwrap();
            let live: Vec<&StoredKey> = keys.iter().filter(|k| k.revoked_at.is_none()).collect();
            let records = store
                .inner
                .audit_page(Some(&tenant), None, 100)
                .await
                .unwrap()
                .records
                .len();
            match failure {
                Failure::PutKey | Failure::ExpireKey => {
                    assert!(
                        matches!(result, Err(KeyAdminError::Store(_))),
                        "{failure:?}"
                    );
                    // The old key works as before; no successor is live; nothing recorded.
                    assert!(admits(&stored_old, &old, now + Duration::days(30)));
                    assert_eq!(live.len(), keys_before, "{failure:?}");
                    assert_eq!(records, records_before.records.len(), "{failure:?}");
                }
                Failure::ExpireKeyAnswer => {
                    // The old key was shortened: the rotation completes, successor and all.
                    let rotated = result.expect("a lost answer completes the rotation");
                    assert!(!admits(&stored_old, &old, now + Duration::hours(1)));
                    let successor = live
                        .iter()
                        .find(|k| k.prefix == rotated.key.record.prefix)
                        .expect("the successor is live");
                    assert!(admits(successor, &rotated.key, now + Duration::days(30)));
                    assert_eq!(records, records_before.records.len() + 1);
                }
                Failure::ExpireKeyAndRead => {
                    // Nothing known: the successor stays live beside the old key.
                    assert!(matches!(result, Err(KeyAdminError::Store(_))));
                    assert_eq!(live.len(), keys_before + 1);
                    assert!(admits(&stored_old, &old, now + Duration::days(30)));
                }
            }
        }
    }
}
