//! Tenant API keys.
//!
//! A key looks like `tg_<prefix>_<secret>`: the 12-character prefix is public and is how the
//! store finds the key; the whole key is stored only as its SHA-256 hash. Keys carry about 240
//! bits of entropy, so a fast hash is enough (no password KDF needed), and the stored hash is
//! compared in constant time.
//!
//! A key's lifecycle: it may carry a name, an expiry and scopes ([`KeyScope`]: what it may be
//! used for). It is live until it is revoked or its expiry passes; an expired or revoked key
//! is refused exactly as an unknown one is. Rotating a key issues a new one with the same name
//! and scopes and expires the old one after a stated overlap ([`rotate`]).

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};

use rand::RngExt;
use rand::distr::Alphanumeric;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ids::TenantId;

const PREFIX_LEN: usize = 12;
const SECRET_LEN: usize = 40;

/// The public, non-secret part of a key used to look it up.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    /// A prefix typed by an operator (`tollgate key revoke`): the 12 characters between `tg_`
    /// and the second `_`, with or without the leading `tg_`.
    pub fn parse(raw: &str) -> Option<Self> {
        let prefix = raw.strip_prefix("tg_").unwrap_or(raw);
        let valid = prefix.len() == PREFIX_LEN && prefix.bytes().all(|b| b.is_ascii_alphanumeric());
        valid.then(|| Self(prefix.to_owned()))
    }

    /// The prefix as text (without `tg_`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 of the whole key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyHash(#[serde(with = "hex_bytes")] [u8; 32]);

impl KeyHash {
    /// The SHA-256 of a whole key.
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// Constant-time equality, so the comparison leaks nothing about how much matched.
    pub fn matches(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// The hash as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits; `None` for anything else.
    pub fn from_hex(raw: &str) -> Option<Self> {
        let bytes = hex::decode(raw).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", &self.to_hex()[..8])
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let raw = String::deserialize(d)?;
        let bytes = hex::decode(raw).map_err(D::Error::custom)?;
        bytes
            .try_into()
            .map_err(|_| D::Error::custom("key hash must be 32 bytes"))
    }
}

/// A key presented by a client, parsed but not yet verified.
pub struct PresentedKey {
    prefix: KeyPrefix,
    hash: KeyHash,
}

impl PresentedKey {
    /// Parses `tg_<prefix>_<secret>`. Anything else is rejected without touching the store.
    pub fn parse(raw: &str) -> Option<Self> {
        let rest = raw.strip_prefix("tg_")?;
        let (prefix, secret) = rest.split_once('_')?;
        let well_formed = prefix.len() == PREFIX_LEN
            && secret.len() == SECRET_LEN
            && prefix.bytes().all(|b| b.is_ascii_alphanumeric())
            && secret.bytes().all(|b| b.is_ascii_alphanumeric());
        well_formed.then(|| Self {
            prefix: KeyPrefix(prefix.to_owned()),
            hash: KeyHash::of(raw),
        })
    }

    /// The prefix to look the key up by.
    pub fn prefix(&self) -> &KeyPrefix {
        &self.prefix
    }

    /// The hash of the whole presented key, to compare with the stored one.
    pub fn hash(&self) -> &KeyHash {
        &self.hash
    }
}

/// A freshly issued key: the plaintext exists only here, to be shown to the operator once.
pub struct IssuedKey {
    /// The whole key; never stored.
    pub plaintext: SecretString,
    /// What the store keeps.
    pub record: StoredKey,
}

/// What a key may be used for. A request outside its key's scopes is refused with a 403
/// naming the scope it needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KeyScope {
    /// Chat: `/v1/chat/completions`, `/v1/messages` (and its token count).
    #[serde(rename = "chat")]
    Chat,
    /// `POST /v1/embeddings`.
    #[serde(rename = "embeddings")]
    Embeddings,
    /// The tenant's documents: `/v1/documents` (upload, list, delete).
    #[serde(rename = "documents")]
    Documents,
    /// The usage API and the dashboard: `/v1/usage`, `/v1/usage/events`.
    #[serde(rename = "usage:read")]
    UsageRead,
    /// End-user profiles: `/v1/users/{id}/profile`.
    #[serde(rename = "profiles")]
    Profiles,
}

impl KeyScope {
    /// Every scope, in the order they are listed.
    pub const ALL: [KeyScope; 5] = [
        Self::Chat,
        Self::Embeddings,
        Self::Documents,
        Self::UsageRead,
        Self::Profiles,
    ];

    /// The scope's name, as keys list it and operators type it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Embeddings => "embeddings",
            Self::Documents => "documents",
            Self::UsageRead => "usage:read",
            Self::Profiles => "profiles",
        }
    }

    /// A scope by its name; `None` for anything else.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

impl fmt::Display for KeyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest key name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// A key's name, as an operator gives it: 1 to [`MAX_NAME_CHARS`] characters, no control
/// characters, trimmed.
pub fn key_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err("a key name must not be empty".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("a key name is at most {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("a key name must not contain control characters".into());
    }
    Ok(name.to_owned())
}

/// What a new key carries besides its tenant: all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySpec {
    /// A name for operators (`billing-worker`).
    pub name: Option<String>,
    /// What the key may be used for; `None`: everything.
    pub scopes: Option<BTreeSet<KeyScope>>,
    /// When the key stops working.
    pub expires_at: Option<DateTime<Utc>>,
}

/// What the store keeps about a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    /// The public prefix the key is found by.
    pub prefix: KeyPrefix,
    /// The SHA-256 of the whole key.
    pub hash: KeyHash,
    /// The tenant the key authenticates as.
    pub tenant_id: TenantId,
    /// When the key was issued.
    pub created_at: DateTime<Utc>,
    /// When the key was revoked; `None` while it is live.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The operator's name for it.
    #[serde(default)]
    pub name: Option<String>,
    /// From this instant on the key is refused; `None`: it does not expire.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// What the key may be used for; `None` (keys issued without scopes): everything.
    #[serde(default)]
    pub scopes: Option<BTreeSet<KeyScope>>,
}

/// Where a key is in its lifecycle at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// It authenticates.
    Live,
    /// Its expiry has passed.
    Expired,
    /// It was revoked.
    Revoked,
}

impl KeyState {
    /// As listings show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

impl StoredKey {
    /// True when `presented` is this key and the key is live at `now`: not revoked, and `now`
    /// is before its expiry (a key expiring at `t` is refused from `t` on).
    pub fn admits(&self, presented: &PresentedKey, now: DateTime<Utc>) -> bool {
        // Evaluate the hash comparison unconditionally so refused and live keys take equal time.
        let same = self.hash.matches(presented.hash()) && self.prefix == *presented.prefix();
        same && self.state(now) == KeyState::Live
    }

    /// The key's state at `now`.
    pub fn state(&self, now: DateTime<Utc>) -> KeyState {
        if self.revoked_at.is_some() {
            KeyState::Revoked
        } else if self.expires_at.is_some_and(|at| now >= at) {
            KeyState::Expired
        } else {
            KeyState::Live
        }
    }

    /// Whether the key may be used for `scope`.
    pub fn allows(&self, scope: KeyScope) -> bool {
        self.scopes.as_ref().is_none_or(|s| s.contains(&scope))
    }

    /// The scopes as listed: `all`, or their names joined by commas.
    pub fn scope_list(&self) -> String {
        match &self.scopes {
            None => "all".to_owned(),
            Some(scopes) => scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

fn random_alnum(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Issues a new random key for `tenant_id`, live for everything, without name or expiry.
pub fn issue_key(tenant_id: TenantId, now: DateTime<Utc>) -> IssuedKey {
    issue_key_with(tenant_id, KeySpec::default(), now)
}

/// Issues a new random key for `tenant_id` carrying `spec`.
pub fn issue_key_with(tenant_id: TenantId, spec: KeySpec, now: DateTime<Utc>) -> IssuedKey {
    let prefix = random_alnum(PREFIX_LEN);
    let secret = random_alnum(SECRET_LEN);
    let plaintext = format!("tg_{prefix}_{secret}");
    let record = StoredKey {
        prefix: KeyPrefix(prefix),
        hash: KeyHash::of(&plaintext),
        tenant_id,
        created_at: now,
        revoked_at: None,
        name: spec.name,
        expires_at: spec.expires_at,
        scopes: spec.scopes,
    };
    IssuedKey {
        plaintext: SecretString::from(plaintext),
        record,
    }
}

/// A rotation of `old` at `now`: the new key (same tenant, name and scopes, no expiry) and
/// when the old one stops working, `now + overlap` (or its own earlier expiry). The longest
/// overlap is [`MAX_OVERLAP`].
pub fn rotate(
    old: &StoredKey,
    overlap: chrono::Duration,
    now: DateTime<Utc>,
) -> (IssuedKey, DateTime<Utc>) {
    let overlap = overlap.clamp(chrono::Duration::zero(), MAX_OVERLAP);
    let spec = KeySpec {
        name: old.name.clone(),
        scopes: old.scopes.clone(),
        expires_at: None,
    };
    let old_until = old
        .expires_at
        .map_or(now + overlap, |at| at.min(now + overlap));
    (issue_key_with(old.tenant_id.clone(), spec, now), old_until)
}

/// The longest a rotated key may keep working beside its successor: 30 days.
pub const MAX_OVERLAP: chrono::Duration = chrono::Duration::days(30);

impl IssuedKey {
    /// The plaintext key, to show the operator once.
    pub fn expose(&self) -> &str {
        self.plaintext.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    #[test]
    fn an_issued_key_round_trips_through_parse_and_verify() {
        let issued = issue_key(tenant(), chrono::Utc::now());
        let presented = PresentedKey::parse(issued.expose()).expect("well formed");
        assert_eq!(presented.prefix(), &issued.record.prefix);
        assert!(issued.record.admits(&presented, chrono::Utc::now()));
    }

    #[test]
    fn a_key_with_the_right_prefix_but_wrong_secret_is_refused() {
        let issued = issue_key(tenant(), chrono::Utc::now());
        let mut forged = issued.expose().to_owned();
        let last = forged.pop().unwrap();
        forged.push(if last == 'a' { 'b' } else { 'a' });
        let presented = PresentedKey::parse(&forged).expect("well formed");
        assert!(!issued.record.admits(&presented, chrono::Utc::now()));
    }

    #[test]
    fn a_revoked_key_is_refused() {
        let mut issued = issue_key(tenant(), chrono::Utc::now());
        issued.record.revoked_at = Some(chrono::Utc::now());
        let presented = PresentedKey::parse(issued.expose()).unwrap();
        assert!(!issued.record.admits(&presented, chrono::Utc::now()));
    }

    #[test]
    fn a_key_is_refused_from_its_expiry_on_and_not_a_nanosecond_before() {
        let now = chrono::Utc::now();
        let at = now + chrono::Duration::minutes(5);
        let spec = KeySpec {
            expires_at: Some(at),
            ..KeySpec::default()
        };
        let issued = issue_key_with(tenant(), spec, now);
        let presented = PresentedKey::parse(issued.expose()).unwrap();
        let before = at - chrono::Duration::nanoseconds(1);
        assert!(issued.record.admits(&presented, before));
        assert_eq!(issued.record.state(before), KeyState::Live);
        assert!(!issued.record.admits(&presented, at));
        assert_eq!(issued.record.state(at), KeyState::Expired);
    }

    #[test]
    fn scopes_limit_a_key_and_a_key_without_scopes_may_do_everything() {
        let mut issued = issue_key(tenant(), chrono::Utc::now());
        assert!(KeyScope::ALL.iter().all(|s| issued.record.allows(*s)));
        assert_eq!(issued.record.scope_list(), "all");
        issued.record.scopes = Some([KeyScope::Chat, KeyScope::UsageRead].into());
        assert!(issued.record.allows(KeyScope::Chat));
        assert!(!issued.record.allows(KeyScope::Embeddings));
        assert_eq!(issued.record.scope_list(), "chat,usage:read");
        for scope in KeyScope::ALL {
            assert_eq!(KeyScope::parse(scope.as_str()), Some(scope));
            assert_eq!(
                serde_json::to_value(scope).unwrap(),
                serde_json::json!(scope.as_str())
            );
        }
        assert_eq!(KeyScope::parse("admin"), None);
    }

    #[test]
    fn rotation_keeps_name_and_scopes_and_bounds_the_old_keys_life() {
        let now = chrono::Utc::now();
        let spec = KeySpec {
            name: Some("billing".into()),
            scopes: Some([KeyScope::Chat].into()),
            expires_at: Some(now + chrono::Duration::hours(1)),
        };
        let old = issue_key_with(tenant(), spec, now).record;
        let (new, until) = rotate(&old, chrono::Duration::hours(24), now);
        assert_eq!(new.record.name.as_deref(), Some("billing"));
        assert_eq!(new.record.scopes, old.scopes);
        assert_eq!(new.record.expires_at, None);
        assert_ne!(new.record.prefix, old.prefix);
        // The old key's own expiry comes first.
        assert_eq!(until, now + chrono::Duration::hours(1));
        let (_, until) = rotate(&old, chrono::Duration::minutes(10), now);
        assert_eq!(until, now + chrono::Duration::minutes(10));
        let (_, until) = rotate(&old, chrono::Duration::days(400), now);
        assert_eq!(until, now + chrono::Duration::hours(1));
        let (_, until) = rotate(&new.record, chrono::Duration::days(400), now);
        assert_eq!(until, now + MAX_OVERLAP);
    }

    #[test]
    fn key_names_are_bounded_and_printable() {
        assert_eq!(key_name("  billing worker "), Ok("billing worker".into()));
        assert!(key_name("").is_err());
        assert!(key_name(&"x".repeat(MAX_NAME_CHARS)).is_ok());
        assert!(key_name(&"x".repeat(MAX_NAME_CHARS + 1)).is_err());
        assert!(key_name("a\nb").is_err());
    }

    #[test]
    fn malformed_keys_never_parse() {
        for raw in [
            "",
            "sk-abc",
            "tg_short_x",
            "tg__",
            &format!("tg_{}_{}", "a".repeat(12), "!".repeat(40)),
        ] {
            assert!(PresentedKey::parse(raw).is_none(), "{raw}");
        }
    }

    #[test]
    fn the_stored_hash_is_sha256_of_the_whole_key_and_debug_hides_it() {
        let issued = issue_key(tenant(), chrono::Utc::now());
        assert_eq!(issued.record.hash.to_hex().len(), 64);
        assert_eq!(
            KeyHash::from_hex(&issued.record.hash.to_hex()).unwrap(),
            issued.record.hash
        );
        let debug = format!("{:?}", issued.record);
        assert!(!debug.contains(&issued.record.hash.to_hex()));
        assert!(!debug.contains(issued.expose()));
    }

    #[test]
    fn an_operator_typed_prefix_parses_with_or_without_tg() {
        let issued = issue_key(tenant(), chrono::Utc::now());
        let prefix = issued.record.prefix.as_str();
        assert_eq!(KeyPrefix::parse(prefix), Some(issued.record.prefix.clone()));
        assert_eq!(
            KeyPrefix::parse(&format!("tg_{prefix}")),
            Some(issued.record.prefix.clone())
        );
        for bad in ["", "short", "tg_", "abcdefghijk!", "abcdefghijklm"] {
            assert_eq!(KeyPrefix::parse(bad), None, "{bad}");
        }
        // A whole key is not a prefix: it would put the secret in shell history.
        assert_eq!(KeyPrefix::parse(issued.expose()), None);
    }

    #[test]
    fn issued_keys_are_unique() {
        let a = issue_key(tenant(), chrono::Utc::now());
        let b = issue_key(tenant(), chrono::Utc::now());
        assert_ne!(a.expose(), b.expose());
    }
}
