//! The vector index on Qdrant, over qdrant-client's gRPC API (port 6334).
//!
//! One collection holds every tenant's chunks, as Qdrant's multitenancy guide prescribes: a
//! keyword payload index on `tenant_id` created with `is_tenant: true` (Qdrant then keeps each
//! tenant's points together), and a `must` condition on it in every read and delete. That
//! condition is built in exactly one place, [`tenant_filter`]; every request that selects points
//! goes through it. The retrieval service checks every returned chunk again (defense in depth);
//! this adapter does not, but it never sends a point-selecting request without the filter.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use qdrant_client::qdrant::{
    CollectionExistsRequest, Condition, CountPoints, CreateCollection, CreateFieldIndexCollection,
    DeletePoints, Distance, FieldType, Filter, GetCollectionInfoRequest, KeywordIndexParams,
    PayloadIndexParams, PayloadSchemaType, PointId, PointStruct, PointsOperationResponse,
    PointsSelector, Query, QueryPoints, ScoredPoint, Struct, UpdateStatus, UpsertPoints, Value,
    VectorParams, VectorsConfig, WithPayloadSelector, payload_index_params::IndexParams,
    points_selector::PointsSelectorOneOf, value::Kind, vectors_config,
    with_payload_selector::SelectorOptions,
};
use qdrant_client::{Qdrant, QdrantError};
use secrecy::ExposeSecret;

use crate::adapters::api_key::ApiKey;
use crate::domain::documents::{Chunk, DocumentId};
use crate::domain::ids::TenantId;
use crate::ports::vector::{IndexError, IndexedChunk, ScoredChunk, VectorIndex};

/// Payload field names. `tenant_id` and `document_id` carry keyword indexes.
const TENANT_FIELD: &str = "tenant_id";
const DOCUMENT_FIELD: &str = "document_id";
const CHUNK_INDEX_FIELD: &str = "chunk_index";
const TITLE_FIELD: &str = "title";
const TEXT_FIELD: &str = "text";
const METADATA_FIELD: &str = "metadata";

/// Points per upsert request. A document's chunks go in batches so a long document with large
/// embeddings (1,536 dimensions is 6 KiB a vector) stays well under gRPC message limits.
const UPSERT_BATCH: usize = 256;

/// A [`VectorIndex`] on a Qdrant collection, over gRPC.
pub struct QdrantIndex {
    url: String,
    /// Fixed, or read from Secrets Manager when the first request connects.
    api_key: Option<ApiKey>,
    /// Built on first use (after the key is known); dropped when Qdrant refuses the key, so
    /// the next request reads a rotated key and connects again.
    client: RwLock<Option<Arc<Qdrant>>>,
    connect: tokio::sync::Mutex<()>,
    collection: String,
    /// The vector size `ensure_ready` confirmed, so a wrong-sized batch is refused before
    /// `replace_document` deletes anything.
    dimensions: OnceLock<usize>,
}

/// No client internals (its configuration holds the API key).
impl fmt::Debug for QdrantIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantIndex")
            .field("url", &self.url)
            .field("api_key", &self.api_key)
            .field("collection", &self.collection)
            .finish_non_exhaustive()
    }
}

impl QdrantIndex {
    /// An index on `url` (Qdrant's gRPC endpoint, e.g. `http://127.0.0.1:6334`). Makes no
    /// network call: the key (when managed) is read and the connection opened on first use,
    /// and the server version check is skipped, so a cold start never blocks on Qdrant.
    pub fn new(
        url: &str,
        api_key: Option<ApiKey>,
        collection: impl Into<String>,
    ) -> Result<Self, IndexError> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(IndexError::Rejected(format!(
                "Qdrant URL `{url}` must start with http:// or https://"
            )));
        }
        // Validates the URL now, so a typo fails the cold start rather than the first request.
        build_client(url, None)?;
        Ok(Self {
            url: url.to_owned(),
            api_key,
            client: RwLock::new(None),
            connect: tokio::sync::Mutex::new(()),
            collection: collection.into(),
            dimensions: OnceLock::new(),
        })
    }

    fn current_client(&self) -> Option<Arc<Qdrant>> {
        match self.client.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_client(&self, client: Option<Arc<Qdrant>>) {
        match self.client.write() {
            Ok(mut guard) => *guard = client,
            Err(poisoned) => *poisoned.into_inner() = client,
        }
    }

    /// The client, built on first use with the (resolved) key.
    async fn client(&self) -> Result<Arc<Qdrant>, IndexError> {
        if let Some(client) = self.current_client() {
            return Ok(client);
        }
        let _single_flight = self.connect.lock().await;
        if let Some(client) = self.current_client() {
            return Ok(client);
        }
        let key = match &self.api_key {
            Some(key) => Some(key.resolve().await.map_err(|e| {
                IndexError::Unavailable(format!("the Qdrant API key is unavailable: {e}"))
            })?),
            None => None,
        };
        let client = Arc::new(build_client(
            &self.url,
            key.as_ref().map(|k| k.expose_secret()),
        )?);
        self.set_client(Some(client.clone()));
        Ok(client)
    }

    /// Qdrant refused the key: connect again, with a freshly read key, on the next request.
    fn forget_credentials(&self) {
        self.set_client(None);
        if let Some(key) = &self.api_key {
            key.invalidate();
        }
    }

    /// The collection's name.
    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// Counts `tenant`'s points (of one document, when given).
    async fn count_points(
        &self,
        tenant: &TenantId,
        document: Option<&DocumentId>,
    ) -> Result<u64, IndexError> {
        let response = self
            .client()
            .await?
            .count(CountPoints {
                collection_name: self.collection.clone(),
                filter: Some(tenant_filter(tenant, document)),
                // Exact: the count feeds a storage quota and delete_document's answer.
                exact: Some(true),
                ..Default::default()
            })
            .await
            .map_err(|e| self.error("count", e))?;
        response
            .result
            .map(|r| r.count)
            .ok_or_else(|| IndexError::Corrupt("count response without a result".into()))
    }

    /// Deletes the points of `document` of `tenant`, waiting until it is applied.
    async fn delete_points(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
    ) -> Result<(), IndexError> {
        let response = self
            .client()
            .await?
            .delete_points(DeletePoints {
                collection_name: self.collection.clone(),
                wait: Some(true),
                points: Some(PointsSelector {
                    points_selector_one_of: Some(PointsSelectorOneOf::Filter(tenant_filter(
                        tenant,
                        Some(document),
                    ))),
                }),
                ..Default::default()
            })
            .await
            .map_err(|e| self.error("delete", e))?;
        applied("delete", &response)
    }

    /// Creates the collection if missing; a concurrent creator winning the race is fine.
    async fn ensure_collection(&self, dimensions: usize) -> Result<(), IndexError> {
        let exists = self
            .client()
            .await?
            .collection_exists(CollectionExistsRequest {
                collection_name: self.collection.clone(),
            })
            .await
            .map_err(|e| self.error("collection_exists", e))?;
        if exists {
            return Ok(());
        }
        let created = self
            .client()
            .await?
            .create_collection(CreateCollection {
                collection_name: self.collection.clone(),
                vectors_config: Some(VectorsConfig {
                    config: Some(vectors_config::Config::Params(VectorParams {
                        size: dimensions as u64,
                        distance: Distance::Cosine as i32,
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(QdrantError::ResponseError { status })
                if status.code() == tonic::Code::AlreadyExists =>
            {
                Ok(())
            }
            Err(e) => Err(self.error("create_collection", e)),
        }
    }

    /// Maps a client error, naming the operation and collection (never the API key).
    fn error(&self, operation: &str, error: QdrantError) -> IndexError {
        let context = format!("Qdrant {operation} on `{}`", self.collection);
        match error {
            QdrantError::ResponseError { status } => {
                if status.code() == tonic::Code::Unauthenticated {
                    self.forget_credentials();
                }
                status_error(&context, &status)
            }
            QdrantError::ResourceExhaustedError {
                retry_after_seconds,
                ..
            } => IndexError::Busy {
                retry_after: Duration::from_secs(retry_after_seconds.max(1)),
                detail: format!("{context}: rate limited"),
            },
            QdrantError::ConversionError(message) => {
                IndexError::Rejected(format!("{context}: {message}"))
            }
            QdrantError::InvalidUri(e) => IndexError::Rejected(format!("{context}: {e}")),
            QdrantError::NoSnapshotFound(message) => {
                IndexError::Unavailable(format!("{context}: {message}"))
            }
            QdrantError::Io(e) => IndexError::Unavailable(format!("{context}: {e}")),
        }
    }
}

/// A client for `url`; builds no connection (that happens on the first call).
fn build_client(url: &str, api_key: Option<&str>) -> Result<Qdrant, IndexError> {
    let mut config = Qdrant::from_url(url).skip_compatibility_check();
    if let Some(key) = api_key {
        config = config.api_key(key);
    }
    config
        .build()
        .map_err(|e| IndexError::Rejected(format!("invalid Qdrant URL `{url}`: {e}")))
}

/// The one place a tenant filter is built: a `must` keyword match on `tenant_id` (served by
/// the `is_tenant` payload index), narrowed to one document when given. Every search, count
/// and delete this adapter sends carries it.
fn tenant_filter(tenant: &TenantId, document: Option<&DocumentId>) -> Filter {
    let mut must = vec![Condition::matches(TENANT_FIELD, tenant.as_str().to_owned())];
    if let Some(document) = document {
        must.push(Condition::matches(
            DOCUMENT_FIELD,
            document.as_str().to_owned(),
        ));
    }
    Filter::must(must)
}

/// One exhaustive map from gRPC status to the port's error (no `_` arm: a new code forces a
/// decision). Retryable conditions are `Unavailable`; a request Qdrant will never accept is
/// `Rejected`.
fn status_error(context: &str, status: &tonic::Status) -> IndexError {
    use tonic::Code;
    let detail = format!("{context}: {:?}: {}", status.code(), status.message());
    match status.code() {
        // qdrant-client reports a failed connect as Internal("Failed to connect to ...").
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Aborted
        | Code::Internal
        | Code::Unknown => IndexError::Unavailable(detail),
        // Writes disabled (Qdrant's `Locked`) or a failed precondition: the operator's to fix.
        Code::FailedPrecondition => IndexError::Unavailable(detail),
        Code::NotFound => IndexError::Unavailable(format!(
            "{detail} (is the collection created? run `tollgate init`)"
        )),
        // A wrong or missing API key is a deployment problem, not the caller's.
        Code::Unauthenticated | Code::PermissionDenied => IndexError::Unavailable(detail),
        Code::InvalidArgument | Code::OutOfRange | Code::AlreadyExists | Code::Unimplemented => {
            IndexError::Rejected(detail)
        }
        // Rate limited (Qdrant Cloud): the server's `retry-after` metadata, or a second.
        Code::ResourceExhausted => IndexError::Busy {
            retry_after: status
                .metadata()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(Duration::from_secs(1), |s| Duration::from_secs(s.max(1))),
            detail,
        },
        Code::DataLoss => IndexError::Corrupt(detail),
        Code::Ok => IndexError::Corrupt(format!("{detail} (an error status of OK)")),
    }
}

/// Writes are sent with `wait: true`: anything but `Completed` was not applied for sure.
fn applied(operation: &str, response: &PointsOperationResponse) -> Result<(), IndexError> {
    let status = response.result.as_ref().map(|r| r.status);
    if status == Some(UpdateStatus::Completed as i32) {
        Ok(())
    } else {
        let name = status
            .and_then(|s| UpdateStatus::try_from(s).ok())
            .map_or("none", |s| s.as_str_name());
        Err(IndexError::Unavailable(format!(
            "Qdrant {operation} was not confirmed as applied (status {name})"
        )))
    }
}

fn string(value: &str) -> Value {
    Value::from(value.to_owned())
}

fn payload(chunk: &Chunk) -> HashMap<String, Value> {
    let metadata = Struct {
        fields: chunk
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), string(v)))
            .collect(),
    };
    HashMap::from([
        (TENANT_FIELD.to_owned(), string(chunk.tenant_id.as_str())),
        (
            DOCUMENT_FIELD.to_owned(),
            string(chunk.document_id.as_str()),
        ),
        (
            CHUNK_INDEX_FIELD.to_owned(),
            Value::from(i64::from(chunk.chunk_index)),
        ),
        (TITLE_FIELD.to_owned(), string(&chunk.title)),
        (TEXT_FIELD.to_owned(), string(&chunk.text)),
        (
            METADATA_FIELD.to_owned(),
            Value {
                kind: Some(Kind::StructValue(metadata)),
            },
        ),
    ])
}

/// Reads a payload written by [`payload`] back into a chunk.
fn chunk_from_payload(payload: &HashMap<String, Value>) -> Result<Chunk, String> {
    let text_field = |name: &str| {
        payload
            .get(name)
            .and_then(Value::as_str)
            .cloned()
            .ok_or_else(|| format!("payload field `{name}` is missing or not a string"))
    };
    let tenant_id = TenantId::parse(text_field(TENANT_FIELD)?).map_err(|e| e.to_string())?;
    let document_id = DocumentId::parse(text_field(DOCUMENT_FIELD)?)?;
    let chunk_index = payload
        .get(CHUNK_INDEX_FIELD)
        .and_then(Value::as_integer)
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| format!("payload field `{CHUNK_INDEX_FIELD}` is not a chunk index"))?;
    let metadata = match payload.get(METADATA_FIELD) {
        None => Default::default(),
        Some(value) => value
            .as_struct()
            .ok_or_else(|| format!("payload field `{METADATA_FIELD}` is not an object"))?
            .fields
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|v| (k.clone(), v.clone()))
                    .ok_or_else(|| format!("metadata `{k}` is not a string"))
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(Chunk {
        tenant_id,
        document_id,
        chunk_index,
        title: text_field(TITLE_FIELD)?,
        text: text_field(TEXT_FIELD)?,
        metadata,
    })
}

fn scored_chunk(point: ScoredPoint) -> Result<ScoredChunk, IndexError> {
    let chunk = chunk_from_payload(&point.payload).map_err(|e| {
        IndexError::Corrupt(format!("Qdrant point {:?}: {e}", point.id.map(point_id)))
    })?;
    Ok(ScoredChunk {
        chunk,
        score: point.score,
    })
}

fn point_id(id: PointId) -> String {
    use qdrant_client::qdrant::point_id::PointIdOptions;
    match id.point_id_options {
        Some(PointIdOptions::Uuid(uuid)) => uuid,
        Some(PointIdOptions::Num(n)) => n.to_string(),
        None => "(none)".into(),
    }
}

/// Whether `collection_info`'s payload schema has `field` as a keyword index (with
/// `is_tenant: true` when `tenant` is asked for).
fn has_keyword_index(
    schema: &HashMap<String, qdrant_client::qdrant::PayloadSchemaInfo>,
    field: &str,
    tenant: bool,
) -> bool {
    schema.get(field).is_some_and(|info| {
        info.data_type == PayloadSchemaType::Keyword as i32
            && (!tenant
                || matches!(
                    info.params.as_ref().and_then(|p| p.index_params.as_ref()),
                    Some(IndexParams::KeywordIndexParams(KeywordIndexParams {
                        is_tenant: Some(true),
                        ..
                    }))
                ))
    })
}

#[async_trait]
impl VectorIndex for QdrantIndex {
    async fn ensure_ready(&self, dimensions: usize) -> Result<(), IndexError> {
        self.ensure_collection(dimensions).await?;

        let info = self
            .client()
            .await?
            .collection_info(GetCollectionInfoRequest {
                collection_name: self.collection.clone(),
            })
            .await
            .map_err(|e| self.error("collection_info", e))?
            .result
            .ok_or_else(|| IndexError::Corrupt("collection info without a result".into()))?;

        // An existing collection made for another embedder would reject every upsert later,
        // with a less helpful message: say it now.
        let params = info
            .config
            .as_ref()
            .and_then(|c| c.params.as_ref())
            .and_then(|p| p.vectors_config.as_ref())
            .and_then(|v| v.config.as_ref());
        match params {
            Some(vectors_config::Config::Params(p))
                if p.size == dimensions as u64 && p.distance == Distance::Cosine as i32 => {}
            other => {
                return Err(IndexError::Rejected(format!(
                    "Qdrant collection `{}` exists with vectors {other:?}, not {dimensions} \
                     dimensions with cosine distance",
                    self.collection
                )));
            }
        }

        let indexes = [
            (TENANT_FIELD, true),
            // Narrows a tenant's points to one document for re-ingest and delete.
            (DOCUMENT_FIELD, false),
        ];
        for (field, is_tenant) in indexes {
            if has_keyword_index(&info.payload_schema, field, is_tenant) {
                continue;
            }
            let response = self
                .client()
                .await?
                .create_field_index(CreateFieldIndexCollection {
                    collection_name: self.collection.clone(),
                    wait: Some(true),
                    field_name: field.to_owned(),
                    field_type: Some(FieldType::Keyword as i32),
                    field_index_params: Some(PayloadIndexParams {
                        index_params: Some(IndexParams::KeywordIndexParams(KeywordIndexParams {
                            is_tenant: Some(is_tenant),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                })
                .await
                .map_err(|e| self.error("create_field_index", e))?;
            applied("create_field_index", &response)?;
        }
        let _ = self.dimensions.set(dimensions);
        Ok(())
    }

    /// Deletes the document's points, then upserts the new ones in batches, each request
    /// waiting until applied. Deleting first means a failure part-way leaves the document
    /// absent or partly uploaded (the caller reports the failure and a retry converges), never
    /// a mix of two versions' chunks.
    async fn replace_document(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
        chunks: Vec<IndexedChunk>,
    ) -> Result<(), IndexError> {
        // The payload's tenant_id is what the filter matches: a chunk of another tenant or
        // document must never be written under this call.
        if let Some(stray) = chunks
            .iter()
            .find(|c| &c.chunk.tenant_id != tenant || &c.chunk.document_id != document)
        {
            return Err(IndexError::Rejected(format!(
                "chunk of {}/{} passed to replace {tenant}/{document}",
                stray.chunk.tenant_id, stray.chunk.document_id
            )));
        }
        for IndexedChunk { vector, .. } in &chunks {
            if let Some(&expected) = self.dimensions.get()
                && vector.len() != expected
            {
                return Err(IndexError::Rejected(format!(
                    "vector has {} dimensions, the collection has {expected}",
                    vector.len()
                )));
            }
            if vector.iter().any(|x| !x.is_finite()) {
                return Err(IndexError::Rejected("vector has a non-finite value".into()));
            }
        }

        self.delete_points(tenant, document).await?;
        let mut points = chunks
            .into_iter()
            .map(|IndexedChunk { chunk, vector }| PointStruct {
                id: Some(PointId::from(chunk.point_id().to_string())),
                payload: payload(&chunk),
                vectors: Some(vector.into()),
            });
        loop {
            let batch: Vec<PointStruct> = points.by_ref().take(UPSERT_BATCH).collect();
            if batch.is_empty() {
                return Ok(());
            }
            let response = self
                .client()
                .await?
                .upsert_points(UpsertPoints {
                    collection_name: self.collection.clone(),
                    wait: Some(true),
                    points: batch,
                    ..Default::default()
                })
                .await
                .map_err(|e| self.error("upsert", e))?;
            applied("upsert", &response)?;
        }
    }

    /// Qdrant's delete does not say how many points it removed, so this counts first (with
    /// the same filter). A concurrent re-ingest of the same document can make the number
    /// approximate; the deletion itself is complete.
    async fn delete_document(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
    ) -> Result<u64, IndexError> {
        let count = self.count_points(tenant, Some(document)).await?;
        if count > 0 {
            self.delete_points(tenant, document).await?;
        }
        Ok(count)
    }

    async fn search(
        &self,
        tenant: &TenantId,
        vector: &[f32],
        top_k: usize,
    ) -> Result<Vec<ScoredChunk>, IndexError> {
        if top_k == 0 {
            return Ok(Vec::new());
        }
        let response = self
            .client()
            .await?
            .query(QueryPoints {
                collection_name: self.collection.clone(),
                query: Some(Query::from(vector.to_vec())),
                filter: Some(tenant_filter(tenant, None)),
                limit: Some(top_k as u64),
                with_payload: Some(WithPayloadSelector {
                    selector_options: Some(SelectorOptions::Enable(true)),
                }),
                ..Default::default()
            })
            .await
            .map_err(|e| self.error("query", e))?;
        response.result.into_iter().map(scored_chunk).collect()
    }

    async fn count(&self, tenant: &TenantId) -> Result<u64, IndexError> {
        self.count_points(tenant, None).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use qdrant_client::qdrant::{condition::ConditionOneOf, r#match::MatchValue};

    use super::*;

    fn chunk() -> Chunk {
        Chunk {
            tenant_id: TenantId::parse("acme").unwrap(),
            document_id: DocumentId::parse("faq.md").unwrap(),
            chunk_index: 3,
            title: "FAQ".into(),
            text: "Refunds take 5 days.".into(),
            metadata: BTreeMap::from([("lang".into(), "en".into())]),
        }
    }

    #[test]
    fn payloads_round_trip_into_chunks() {
        assert_eq!(chunk_from_payload(&payload(&chunk())).unwrap(), chunk());
    }

    #[test]
    fn a_payload_without_a_valid_tenant_is_not_a_chunk() {
        let mut p = payload(&chunk());
        p.insert(TENANT_FIELD.into(), string("Not A Tenant"));
        assert!(chunk_from_payload(&p).is_err());
        p.remove(TENANT_FIELD);
        assert!(chunk_from_payload(&p).is_err());
        let mut p = payload(&chunk());
        p.insert(CHUNK_INDEX_FIELD.into(), Value::from(-1_i64));
        assert!(chunk_from_payload(&p).is_err());
    }

    #[test]
    fn the_tenant_filter_is_a_must_keyword_match_on_tenant_id() {
        let tenant = TenantId::parse("acme").unwrap();
        let document = DocumentId::parse("faq.md").unwrap();
        let keyword = |c: &Condition| match &c.condition_one_of {
            Some(ConditionOneOf::Field(f)) => {
                match f.r#match.as_ref().and_then(|m| m.match_value.as_ref()) {
                    Some(MatchValue::Keyword(k)) => (f.key.clone(), k.clone()),
                    other => panic!("not a keyword match: {other:?}"),
                }
            }
            other => panic!("not a field condition: {other:?}"),
        };
        let filter = tenant_filter(&tenant, Some(&document));
        let must: Vec<_> = filter.must.iter().map(keyword).collect();
        assert_eq!(
            must,
            [
                ("tenant_id".to_owned(), "acme".to_owned()),
                ("document_id".to_owned(), "faq.md".to_owned())
            ]
        );
        assert!(filter.should.is_empty() && filter.must_not.is_empty());
        assert_eq!(tenant_filter(&tenant, None).must.len(), 1);
    }

    #[test]
    fn rate_limiting_is_busy_with_the_servers_retry_hint() {
        let mut status = tonic::Status::resource_exhausted("too many requests");
        status.metadata_mut().insert(
            "retry-after",
            tonic::metadata::MetadataValue::from_static("7"),
        );
        let IndexError::Busy { retry_after, .. } = status_error("Qdrant query", &status) else {
            panic!("busy");
        };
        assert_eq!(retry_after, Duration::from_secs(7));
        let bare = tonic::Status::resource_exhausted("too many requests");
        assert!(matches!(
            status_error("Qdrant query", &bare),
            IndexError::Busy { retry_after, .. } if retry_after == Duration::from_secs(1)
        ));
        let busy = crate::error::GatewayError::from(status_error("Qdrant query", &status));
        assert_eq!(busy.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.retry_after(), Some(Duration::from_secs(7)));
        assert!(!busy.to_string().contains("Qdrant"), "details stay in logs");
    }

    #[test]
    fn construction_checks_the_url_without_connecting() {
        assert!(QdrantIndex::new("http://127.0.0.1:1", None, "chunks").is_ok());
        assert!(matches!(
            QdrantIndex::new("127.0.0.1:6334", None, "chunks"),
            Err(IndexError::Rejected(_))
        ));
        let index = QdrantIndex::new(
            "https://qdrant.example:6334",
            Some(ApiKey::from("s3cret-key")),
            "chunks",
        )
        .unwrap();
        assert!(!format!("{index:?}").contains("s3cret"));
    }
}
