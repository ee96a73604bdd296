//! Tenant documents for retrieval: ids, the bounds on a document's title and metadata, the
//! registry record, chunks and the identity of a chunk in the index, and the listing cursor.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ids::TenantId;

/// Longest title, in bytes. The title is copied into the payload of every chunk (up to 1,000
/// per document), so it is bounded like the text: 256 bytes is a long headline.
pub const MAX_TITLE_BYTES: usize = 256;
/// Most metadata entries per document.
pub const MAX_METADATA_ENTRIES: usize = 32;
/// Longest metadata key, in bytes.
pub const MAX_METADATA_KEY_BYTES: usize = 128;
/// Longest metadata value, in bytes.
pub const MAX_METADATA_VALUE_BYTES: usize = 1_024;
/// Most metadata bytes per document, keys and values together. Metadata is copied into every
/// chunk's payload too: at this bound a document of 1,000 chunks carries 2 MiB of metadata,
/// where the per-entry bounds alone would allow 36 MiB.
pub const MAX_METADATA_BYTES: usize = 2_048;

/// A title or metadata over its bound. Messages name the field and the numbers, never the
/// value (a key is content too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DocumentFieldError {
    /// The title is over [`MAX_TITLE_BYTES`]; `bytes` is its length.
    #[error("`title` is {bytes} bytes; the limit is {MAX_TITLE_BYTES}")]
    TitleTooLong {
        /// The title's length, in bytes.
        bytes: usize,
    },
    /// More than [`MAX_METADATA_ENTRIES`] entries; `entries` is how many.
    #[error("`metadata` has {entries} entries; the limit is {MAX_METADATA_ENTRIES}")]
    TooManyEntries {
        /// How many entries were sent.
        entries: usize,
    },
    /// A key is over [`MAX_METADATA_KEY_BYTES`]; `bytes` is its length.
    #[error("a `metadata` key is {bytes} bytes; the limit is {MAX_METADATA_KEY_BYTES}")]
    KeyTooLong {
        /// The key's length, in bytes.
        bytes: usize,
    },
    /// A value is over [`MAX_METADATA_VALUE_BYTES`]; `bytes` is its length.
    #[error("a `metadata` value is {bytes} bytes; the limit is {MAX_METADATA_VALUE_BYTES}")]
    ValueTooLong {
        /// The value's length, in bytes.
        bytes: usize,
    },
    /// Keys and values total over [`MAX_METADATA_BYTES`]; `bytes` is the total.
    #[error("`metadata` is {bytes} bytes (keys and values); the limit is {MAX_METADATA_BYTES}")]
    MetadataTooLarge {
        /// Keys and values together, in bytes.
        bytes: usize,
    },
}

impl DocumentFieldError {
    /// The request field at fault.
    pub fn field(self) -> &'static str {
        match self {
            Self::TitleTooLong { .. } => "title",
            Self::TooManyEntries { .. }
            | Self::KeyTooLong { .. }
            | Self::ValueTooLong { .. }
            | Self::MetadataTooLarge { .. } => "metadata",
        }
    }
}

/// A document's title (empty when none was sent), within [`MAX_TITLE_BYTES`].
pub fn parse_title(raw: Option<String>) -> Result<String, DocumentFieldError> {
    let title = raw.unwrap_or_default();
    if title.len() > MAX_TITLE_BYTES {
        return Err(DocumentFieldError::TitleTooLong { bytes: title.len() });
    }
    Ok(title)
}

/// A document's metadata, within every metadata bound; the first bound broken is reported.
pub fn parse_metadata(
    raw: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, DocumentFieldError> {
    if raw.len() > MAX_METADATA_ENTRIES {
        return Err(DocumentFieldError::TooManyEntries { entries: raw.len() });
    }
    let mut total = 0;
    for (key, value) in &raw {
        if key.len() > MAX_METADATA_KEY_BYTES {
            return Err(DocumentFieldError::KeyTooLong { bytes: key.len() });
        }
        if value.len() > MAX_METADATA_VALUE_BYTES {
            return Err(DocumentFieldError::ValueTooLong { bytes: value.len() });
        }
        total += key.len() + value.len();
    }
    if total > MAX_METADATA_BYTES {
        return Err(DocumentFieldError::MetadataTooLarge { bytes: total });
    }
    Ok(raw)
}

/// Longest document id.
const MAX_DOCUMENT_ID: usize = 128;

/// A document id chosen by the tenant (or generated): 1 to 128 characters of
/// `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DocumentId(String);

impl DocumentId {
    /// Accepts a valid id; the error says what a valid one looks like.
    pub fn parse(raw: impl Into<String>) -> Result<Self, String> {
        let raw = raw.into();
        let ok = (1..=MAX_DOCUMENT_ID).contains(&raw.len())
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

    /// A fresh id, `doc-` and a UUIDv7.
    pub fn generate() -> Self {
        Self(format!("doc-{}", uuid::Uuid::now_v7().simple()))
    }

    /// The id as text.
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

/// What the gateway keeps about one of a tenant's documents (its chunks live in the vector
/// index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentRecord {
    /// The tenant that owns the document.
    pub tenant_id: TenantId,
    /// The document's id within the tenant.
    pub document_id: DocumentId,
    /// The title (empty when none was sent).
    pub title: String,
    /// How many chunks the document was split into.
    pub chunks: u32,
    /// Bytes of text stored.
    pub bytes: u64,
    /// The tenant's metadata, copied into every chunk.
    pub metadata: BTreeMap<String, String>,
    /// When this version was stored.
    pub updated_at: DateTime<Utc>,
}

/// A position in a tenant's document listing (`GET /v1/documents`, by id): the id of the last
/// document of a page.
///
/// It carries no tenant: a listing always reads the authenticated tenant's own registry, and a
/// cursor only says where to resume in it. A cursor issued to another tenant therefore lists
/// nothing of theirs (as `EventCursor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentCursor {
    after: DocumentId,
}

/// A cursor that is malformed, or not one this API issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cursor is not one this API issued")]
pub struct DocumentCursorError;

const DOCUMENT_CURSOR_VERSION: &str = "d1";

impl DocumentCursor {
    /// A cursor that resumes after `id`.
    pub fn after(id: DocumentId) -> Self {
        Self { after: id }
    }

    /// The id the next page starts after.
    pub fn id(&self) -> &DocumentId {
        &self.after
    }

    /// The opaque form clients get (`next_cursor`): URL-safe, versioned.
    pub fn encode(&self) -> String {
        format!(
            "{DOCUMENT_CURSOR_VERSION}{}",
            hex::encode(self.after.as_str())
        )
    }

    /// Parses the form [`DocumentCursor::encode`] produces.
    pub fn decode(raw: &str) -> Result<Self, DocumentCursorError> {
        let body = raw
            .strip_prefix(DOCUMENT_CURSOR_VERSION)
            .ok_or(DocumentCursorError)?;
        if body.len() > 2 * MAX_DOCUMENT_ID {
            return Err(DocumentCursorError);
        }
        let bytes = hex::decode(body).map_err(|_| DocumentCursorError)?;
        let id = String::from_utf8(bytes).map_err(|_| DocumentCursorError)?;
        DocumentId::parse(id)
            .map(Self::after)
            .map_err(|_| DocumentCursorError)
    }
}

/// One page of a tenant's documents, by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentPage {
    /// Up to the page's limit of documents, by id.
    pub documents: Vec<DocumentRecord>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<DocumentCursor>,
}

/// One chunk of a tenant's document, as stored in the vector index's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// The tenant that owns the chunk.
    pub tenant_id: TenantId,
    /// The document it was cut from.
    pub document_id: DocumentId,
    /// Its position in the document, from 0.
    pub chunk_index: u32,
    /// The document's title.
    pub title: String,
    /// The chunk's text.
    pub text: String,
    /// The document's metadata.
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
    fn cursors_round_trip_and_anything_else_is_refused() {
        let cursor = DocumentCursor::after(DocumentId::parse("faq-2026.md").unwrap());
        let raw = cursor.encode();
        assert!(raw.bytes().all(|b| b.is_ascii_alphanumeric()), "{raw}");
        assert_eq!(DocumentCursor::decode(&raw), Ok(cursor));
        let too_long = format!("d1{}", hex::encode("x".repeat(129)));
        for bad in ["", "d1", "d1zz", "e1616263", "d12f", &too_long] {
            assert_eq!(
                DocumentCursor::decode(bad),
                Err(DocumentCursorError),
                "{bad}"
            );
        }
    }

    #[test]
    fn titles_and_metadata_are_bounded_in_bytes_and_errors_never_quote_them() {
        assert_eq!(parse_title(None).unwrap(), "");
        assert!(parse_title(Some("é".repeat(128))).is_ok());
        let err = parse_title(Some("é".repeat(128) + "x")).unwrap_err();
        assert_eq!(err, DocumentFieldError::TitleTooLong { bytes: 257 });
        assert_eq!(err.field(), "title");
        let secret = BTreeMap::from([("secret".repeat(30), "v".to_owned())]);
        let err = parse_metadata(secret).unwrap_err();
        assert_eq!(err.field(), "metadata");
        assert!(!err.to_string().contains("secret"), "{err}");
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
