//! Tenant documents for retrieval: ids, chunks and the identity of a chunk in the index.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ids::TenantId;

/// A document id chosen by the tenant (or generated): 1 to 128 characters of
/// `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DocumentId(String);

impl DocumentId {
    pub fn parse(raw: impl Into<String>) -> Result<Self, String> {
        let raw = raw.into();
        let ok = (1..=128).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(raw))
        } else {
            Err(format!(
                "invalid document id `{raw}`: use 1-128 characters of A-Z, a-z, 0-9, '.', '_' and '-'"
            ))
        }
    }

    pub fn generate() -> Self {
        Self(format!("doc-{}", uuid::Uuid::now_v7().simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DocumentId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<DocumentId> for String {
    fn from(value: DocumentId) -> Self {
        value.0
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One chunk of a tenant's document, as stored in the vector index's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub tenant_id: TenantId,
    pub document_id: DocumentId,
    pub chunk_index: u32,
    pub title: String,
    pub text: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl Chunk {
    /// The chunk's point id: a UUID derived from tenant, document and index, so re-ingesting
    /// a document overwrites its points and two tenants' documents with the same id never
    /// collide.
    pub fn point_id(&self) -> uuid::Uuid {
        let mut hasher = Sha256::new();
        for part in [
            self.tenant_id.as_str().as_bytes(),
            self.document_id.as_str().as_bytes(),
            &self.chunk_index.to_le_bytes(),
        ] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        let digest = hasher.finalize();
        let mut bytes = [0_u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(tenant: &str, doc: &str, index: u32) -> Chunk {
        Chunk {
            tenant_id: TenantId::parse(tenant).unwrap(),
            document_id: DocumentId::parse(doc).unwrap(),
            chunk_index: index,
            title: String::new(),
            text: String::new(),
            metadata: BTreeMap::new(),
        }
    }

    #[test]
    fn point_ids_are_stable_and_tenant_scoped() {
        assert_eq!(
            chunk("acme", "faq", 0).point_id(),
            chunk("acme", "faq", 0).point_id()
        );
        assert_ne!(
            chunk("acme", "faq", 0).point_id(),
            chunk("globex", "faq", 0).point_id()
        );
        assert_ne!(
            chunk("acme", "faq", 0).point_id(),
            chunk("acme", "faq", 1).point_id()
        );
    }

    #[test]
    fn document_ids_are_restricted() {
        assert!(DocumentId::parse("faq-2026.md").is_ok());
        assert!(DocumentId::parse("").is_err());
        assert!(DocumentId::parse("a/b").is_err());
        assert!(DocumentId::parse("x".repeat(129)).is_err());
        assert!(DocumentId::generate().as_str().starts_with("doc-"));
    }
}
