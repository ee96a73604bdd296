//! Tenant API keys.
//!
//! A key looks like `tg_<prefix>_<secret>`: the 12-character prefix is public and is how the
//! store finds the key; the whole key is stored only as its SHA-256 hash. Keys carry about 240
//! bits of entropy, so a fast hash is enough (no password KDF needed), and the stored hash is
//! compared in constant time.

use std::fmt;

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

/// What the store keeps about a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredKey {
    /// The public prefix the key is found by.
    pub prefix: KeyPrefix,
    /// The SHA-256 of the whole key.
    pub hash: KeyHash,
    /// The tenant the key authenticates as.
    pub tenant_id: TenantId,
    /// When the key was issued.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When the key was revoked; `None` while it is live.
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl StoredKey {
    /// True when `presented` is this key and the key is still live.
    pub fn admits(&self, presented: &PresentedKey) -> bool {
        // Evaluate the hash comparison unconditionally so revoked and live keys take equal time.
        let same = self.hash.matches(presented.hash()) && self.prefix == *presented.prefix();
        same && self.revoked_at.is_none()
    }
}

fn random_alnum(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Issues a new random key for `tenant_id`.
pub fn issue_key(tenant_id: TenantId, now: chrono::DateTime<chrono::Utc>) -> IssuedKey {
    let prefix = random_alnum(PREFIX_LEN);
    let secret = random_alnum(SECRET_LEN);
    let plaintext = format!("tg_{prefix}_{secret}");
    let record = StoredKey {
        prefix: KeyPrefix(prefix),
        hash: KeyHash::of(&plaintext),
        tenant_id,
        created_at: now,
        revoked_at: None,
    };
    IssuedKey {
        plaintext: SecretString::from(plaintext),
        record,
    }
}

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
        assert!(issued.record.admits(&presented));
    }

    #[test]
    fn a_key_with_the_right_prefix_but_wrong_secret_is_refused() {
        let issued = issue_key(tenant(), chrono::Utc::now());
        let mut forged = issued.expose().to_owned();
        let last = forged.pop().unwrap();
        forged.push(if last == 'a' { 'b' } else { 'a' });
        let presented = PresentedKey::parse(&forged).expect("well formed");
        assert!(!issued.record.admits(&presented));
    }

    #[test]
    fn a_revoked_key_is_refused() {
        let mut issued = issue_key(tenant(), chrono::Utc::now());
        issued.record.revoked_at = Some(chrono::Utc::now());
        let presented = PresentedKey::parse(issued.expose()).unwrap();
        assert!(!issued.record.admits(&presented));
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
