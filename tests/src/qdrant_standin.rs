//! A local server that speaks Qdrant's gRPC protocol, for testing the Qdrant adapter without a
//! Qdrant.
//!
//! Built on the server traits qdrant-client generates from Qdrant's protos (`Points`,
//! `Collections`, `Qdrant`), served by tonic on `127.0.0.1:<random port>`. It implements what
//! Tollgate's adapter uses, with Qdrant's semantics where they matter:
//!
//! - collections: `collection_exists`, `create` (cosine, one unnamed dense vector), `get`
//!   (vector params and payload schema), `list`, `delete`; points: `create_field_index`,
//!   `upsert`, `delete` (by filter), `count`, `query` (nearest to a dense vector);
//! - exact cosine search (vectors normalised on upsert, as Qdrant does for cosine), filters
//!   with `must` / `should` / `must_not` over keyword, integer and range conditions;
//! - Qdrant's error codes: a missing collection is `NOT_FOUND`, a second create is
//!   `ALREADY_EXISTS`, a wrong vector size is `INVALID_ARGUMENT`.
//!
//! Stricter than Qdrant on purpose: every query, count and delete must carry a `must` keyword
//! condition on `tenant_id`, or it is refused with `INVALID_ARGUMENT` (deletes by point id are
//! refused too). Points are partitioned by their `tenant_id` payload, as Qdrant's `is_tenant`
//! index keeps them, so a query reads only its tenant's points. Every request is recorded
//! ([`QdrantStandIn::calls`]) so a test can assert which filter went out.
//!
//! Faults: [`QdrantStandIn::set_unavailable`] answers everything with `UNAVAILABLE`;
//! [`QdrantStandIn::ignore_tenant_filter_in_queries`] simulates a server that accepts a
//! query's tenant filter and then ignores it (for the Qdrant adapter's contract test that such
//! a server's answer gets through the adapter; counts and deletes stay scoped);
//! [`QdrantStandIn::stop`] closes the listener; [`QdrantStandIn::require_api_key`] refuses
//! calls without the given `api-key`, as Qdrant Cloud does. (The isolation canaries' fault run
//! does not use this server: it breaks the embedded index's filter instead, with
//! `MemoryVectorIndex::with_broken_tenant_filter`.)
//!
//! Methods Tollgate does not use answer `UNIMPLEMENTED`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ::qdrant_client::qdrant::collections_server::{Collections, CollectionsServer};
use ::qdrant_client::qdrant::points_server::{Points, PointsServer};
use ::qdrant_client::qdrant::qdrant_server::{Qdrant, QdrantServer};
// A glob: the stand-in names most of the generated messages.
use ::qdrant_client::qdrant::*;
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// One request the stand-in received (refused ones included).
#[derive(Debug, Clone, PartialEq)]
pub struct QdrantCall {
    /// The gRPC method: `query`, `count`, `delete`, `upsert`, `create`, `create_field_index`,
    /// `collection_exists`, `get`, ...
    pub method: &'static str,
    pub collection: String,
    /// The filter of a query, count or filter delete.
    pub filter: Option<Filter>,
    /// Points in an upsert.
    pub points: usize,
}

impl QdrantCall {
    /// Whether this call selects points (and so must be tenant-scoped).
    pub fn selects_points(&self) -> bool {
        matches!(self.method, "query" | "count" | "delete")
    }

    /// The tenant of the call's `must` keyword condition on `tenant_id`, if it has one.
    pub fn tenant(&self) -> Option<String> {
        self.filter.as_ref().and_then(must_tenant)
    }
}

pub struct QdrantStandIn {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct State {
    collections: Mutex<HashMap<String, Collection>>,
    calls: Mutex<Vec<QdrantCall>>,
    unavailable: AtomicBool,
    ignore_tenant_filter: AtomicBool,
    /// When set, every call must present this `api-key` (as Qdrant Cloud checks).
    required_api_key: Mutex<Option<String>>,
    /// The `api-key` metadata of every call, in arrival order.
    api_keys_seen: Mutex<Vec<Option<String>>>,
}

struct Collection {
    size: u64,
    payload_schema: HashMap<String, PayloadSchemaInfo>,
    /// Points by their `tenant_id` payload value ("" when absent), then by point id.
    partitions: HashMap<String, HashMap<String, StoredPoint>>,
    /// Which partition holds each point id.
    owners: HashMap<String, String>,
}

struct StoredPoint {
    id: PointId,
    /// `point_key(&id)`, kept for ordering ties.
    key: String,
    payload: HashMap<String, Value>,
    unit: Vec<f32>,
}

const TENANT_FIELD: &str = "tenant_id";

impl QdrantStandIn {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a stand-in port");
        let addr = listener.local_addr().expect("stand-in address");
        let state = Arc::new(State::default());
        let service = Arc::new(Service(Arc::clone(&state)));
        let (shutdown, stopped) = oneshot::channel::<()>();
        let keys = {
            let state = Arc::clone(&state);
            move |request: Request<()>| check_api_key(&state, request)
        };
        let router = Server::builder()
            .add_service(InterceptedService::new(
                PointsServer::from_arc(Arc::clone(&service)),
                keys.clone(),
            ))
            .add_service(InterceptedService::new(
                CollectionsServer::from_arc(Arc::clone(&service)),
                keys.clone(),
            ))
            .add_service(InterceptedService::new(
                QdrantServer::from_arc(service),
                keys,
            ));
        let server = tokio::spawn(async move {
            router
                // TCP_NODELAY: without it small replies can wait on delayed ACKs
                // (40 ms stalls seen in the retrieval bench).
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .expect("Qdrant stand-in server");
        });
        Self {
            addr,
            state,
            shutdown: Some(shutdown),
            server,
        }
    }

    /// The gRPC URL to give the Qdrant client: `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in arrival order, including refused ones.
    pub fn calls(&self) -> Vec<QdrantCall> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Every received query, count and delete.
    pub fn point_selecting_calls(&self) -> Vec<QdrantCall> {
        self.calls()
            .into_iter()
            .filter(QdrantCall::selects_points)
            .collect()
    }

    /// From now on, calls without this `api-key` are refused with `UNAUTHENTICATED`.
    pub fn require_api_key(&self, key: &str) {
        *self.state.required_api_key.lock().unwrap() = Some(key.to_owned());
    }

    /// The `api-key` each call presented, in arrival order (`None`: no key).
    pub fn api_keys_seen(&self) -> Vec<Option<String>> {
        self.state.api_keys_seen.lock().unwrap().clone()
    }

    /// While set, every method answers `UNAVAILABLE` (as a Qdrant restarting or overloaded).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.state.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// **Fault injection**: while set, queries still must carry the tenant filter but the
    /// stand-in ignores its `tenant_id` conditions and ranks every tenant's points. Counts
    /// and deletes stay scoped, so a fault run does not destroy other tenants' data (which no
    /// read-side check could catch).
    pub fn ignore_tenant_filter_in_queries(&self, ignore: bool) {
        self.state
            .ignore_tenant_filter
            .store(ignore, Ordering::SeqCst);
    }

    /// Points stored in `collection` (all tenants), or `None` if it does not exist.
    pub fn point_count(&self, collection: &str) -> Option<usize> {
        let collections = self.state.collections.lock().unwrap();
        collections.get(collection).map(|c| c.owners.len())
    }

    /// Stops serving: the listener closes, later connections are refused.
    pub async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        // Graceful shutdown waits for open connections; a client may keep one open.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), &mut self.server).await;
        self.server.abort();
    }
}

impl Drop for QdrantStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Records the presented `api-key` and refuses a wrong one, before any method runs.
fn check_api_key(state: &State, request: Request<()>) -> Result<Request<()>, Status> {
    let presented = request
        .metadata()
        .get("api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.api_keys_seen.lock().unwrap().push(presented.clone());
    match &*state.required_api_key.lock().unwrap() {
        Some(required) if presented.as_deref() != Some(required.as_str()) => {
            Err(Status::unauthenticated("invalid api key"))
        }
        _ => Ok(request),
    }
}

struct Service(Arc<State>);

impl Service {
    fn record(
        &self,
        method: &'static str,
        collection: &str,
        filter: Option<&Filter>,
        points: usize,
    ) {
        self.0.calls.lock().unwrap().push(QdrantCall {
            method,
            collection: collection.to_owned(),
            filter: filter.cloned(),
            points,
        });
    }

    fn gate(&self) -> Result<(), Status> {
        if self.0.unavailable.load(Ordering::SeqCst) {
            Err(Status::unavailable(
                "the Qdrant stand-in is set unavailable",
            ))
        } else {
            Ok(())
        }
    }

    fn with_collection<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut Collection) -> Result<T, Status>,
    ) -> Result<T, Status> {
        let mut collections = self.0.collections.lock().unwrap();
        let collection = collections.get_mut(name).ok_or_else(|| {
            Status::not_found(format!("Not found: Collection `{name}` doesn't exist!"))
        })?;
        f(collection)
    }

    fn ignoring_tenant(&self) -> bool {
        self.0.ignore_tenant_filter.load(Ordering::SeqCst)
    }
}

/// The keyword of the first `must` condition matching `tenant_id` exactly.
fn must_tenant(filter: &Filter) -> Option<String> {
    filter.must.iter().find_map(|c| match &c.condition_one_of {
        Some(condition::ConditionOneOf::Field(f)) if f.key == TENANT_FIELD => {
            match f.r#match.as_ref().and_then(|m| m.match_value.as_ref()) {
                Some(r#match::MatchValue::Keyword(k)) => Some(k.clone()),
                _ => None,
            }
        }
        _ => None,
    })
}

/// The stand-in's rule: a request that selects points names its tenant in a `must` filter.
fn required_tenant(method: &str, filter: Option<&Filter>) -> Result<String, Status> {
    filter.and_then(must_tenant).ok_or_else(|| {
        Status::invalid_argument(format!(
            "Qdrant stand-in refuses `{method}` without a `must` keyword condition on `{TENANT_FIELD}`"
        ))
    })
}

fn field_values<'a>(payload: &'a HashMap<String, Value>, key: &str) -> Vec<&'a Value> {
    match payload.get(key) {
        None => Vec::new(),
        Some(v) => match v.as_list() {
            Some(list) => list.iter().collect(),
            None => vec![v],
        },
    }
}

fn condition_holds(
    condition: &Condition,
    payload: &HashMap<String, Value>,
    ignore_tenant: bool,
) -> Result<bool, Status> {
    use condition::ConditionOneOf;
    use r#match::MatchValue;
    match &condition.condition_one_of {
        Some(ConditionOneOf::Field(field)) => {
            if ignore_tenant && field.key == TENANT_FIELD {
                return Ok(true);
            }
            let values = field_values(payload, &field.key);
            if let Some(m) = &field.r#match {
                return match &m.match_value {
                    Some(MatchValue::Keyword(k)) => {
                        Ok(values.iter().any(|v| v.as_str() == Some(k)))
                    }
                    Some(MatchValue::Integer(i)) => {
                        Ok(values.iter().any(|v| v.as_integer() == Some(*i)))
                    }
                    Some(MatchValue::Boolean(b)) => {
                        Ok(values.iter().any(|v| v.as_bool() == Some(*b)))
                    }
                    Some(MatchValue::Keywords(any)) => Ok(values
                        .iter()
                        .any(|v| v.as_str().is_some_and(|s| any.strings.contains(s)))),
                    other => Err(Status::unimplemented(format!(
                        "Qdrant stand-in: match {other:?}"
                    ))),
                };
            }
            if let Some(range) = &field.range {
                let within = |x: f64| {
                    range.lt.is_none_or(|b| x < b)
                        && range.lte.is_none_or(|b| x <= b)
                        && range.gt.is_none_or(|b| x > b)
                        && range.gte.is_none_or(|b| x >= b)
                };
                return Ok(values.iter().any(|v| {
                    v.as_integer()
                        .map(|i| i as f64)
                        .or_else(|| v.as_double())
                        .is_some_and(within)
                }));
            }
            Err(Status::unimplemented(format!(
                "Qdrant stand-in: field condition on `{}`",
                field.key
            )))
        }
        Some(ConditionOneOf::Filter(filter)) => filter_holds(filter, payload, ignore_tenant),
        other => Err(Status::unimplemented(format!(
            "Qdrant stand-in: condition {other:?}"
        ))),
    }
}

fn filter_holds(
    filter: &Filter,
    payload: &HashMap<String, Value>,
    ignore_tenant: bool,
) -> Result<bool, Status> {
    if filter.min_should.is_some() {
        return Err(Status::unimplemented("Qdrant stand-in: min_should"));
    }
    for c in &filter.must {
        if !condition_holds(c, payload, ignore_tenant)? {
            return Ok(false);
        }
    }
    for c in &filter.must_not {
        if condition_holds(c, payload, ignore_tenant)? {
            return Ok(false);
        }
    }
    if filter.should.is_empty() {
        return Ok(true);
    }
    for c in &filter.should {
        if condition_holds(c, payload, ignore_tenant)? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn point_key(id: &PointId) -> Result<String, Status> {
    match &id.point_id_options {
        Some(point_id::PointIdOptions::Num(n)) => Ok(format!("n:{n}")),
        Some(point_id::PointIdOptions::Uuid(u)) => {
            // Qdrant accepts any UUID spelling and normalises it.
            Ok(format!("u:{}", u.to_ascii_lowercase()))
        }
        None => Err(Status::invalid_argument("point without an id")),
    }
}

fn unit(vector: Vec<f32>, size: u64) -> Result<Vec<f32>, Status> {
    if vector.len() as u64 != size {
        return Err(Status::invalid_argument(format!(
            "Wrong input: Vector dimension error: expected dim: {size}, got {}",
            vector.len()
        )));
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    Ok(if norm > 0.0 {
        vector.into_iter().map(|x| x / norm).collect()
    } else {
        vector
    })
}

impl Collection {
    /// The points a tenant-scoped request may read: the tenant's partition, or every
    /// partition when the tenant filter is being ignored (fault injection).
    fn candidates<'a>(
        &'a self,
        tenant: &str,
        ignore_tenant: bool,
    ) -> Box<dyn Iterator<Item = &'a StoredPoint> + 'a> {
        if ignore_tenant {
            Box::new(self.partitions.values().flat_map(|p| p.values()))
        } else {
            Box::new(
                self.partitions
                    .get(tenant)
                    .into_iter()
                    .flat_map(|p| p.values()),
            )
        }
    }

    /// The ids of `tenant`'s points matching `filter` (counts and deletes: always scoped).
    fn matching_keys(&self, tenant: &str, filter: &Filter) -> Result<Vec<String>, Status> {
        let mut keys = Vec::new();
        for point in self.candidates(tenant, false) {
            if filter_holds(filter, &point.payload, false)? {
                keys.push(point.key.clone());
            }
        }
        Ok(keys)
    }

    fn remove(&mut self, key: &str) {
        if let Some(partition) = self.owners.remove(key)
            && let Some(points) = self.partitions.get_mut(&partition)
        {
            points.remove(key);
            if points.is_empty() {
                self.partitions.remove(&partition);
            }
        }
    }
}

fn completed() -> Response<PointsOperationResponse> {
    Response::new(PointsOperationResponse {
        result: Some(UpdateResult {
            operation_id: Some(0),
            status: UpdateStatus::Completed as i32,
        }),
        ..Default::default()
    })
}

/// Implements a generated server trait: the methods given in full, every other one listed as
/// `name(Request) -> Response;` answering `UNIMPLEMENTED`. (A macro around the whole impl, so
/// `#[tonic::async_trait]` sees the generated methods.)
macro_rules! standin_impl {
    (
        impl $trait:ident for Service;
        unimplemented { $($name:ident($req:ident) -> $resp:ident;)* }
        $($body:tt)*
    ) => {
        #[tonic::async_trait]
        impl $trait for Service {
            $($body)*
            $(
                async fn $name(
                    &self,
                    _request: Request<$req>,
                ) -> Result<Response<$resp>, Status> {
                    Err(Status::unimplemented(concat!(
                        "the Qdrant stand-in does not implement ",
                        stringify!($name)
                    )))
                }
            )*
        }
    };
}

standin_impl! {
    impl Collections for Service;
    unimplemented {
        update(UpdateCollection) -> CollectionOperationResponse;
        update_aliases(ChangeAliases) -> CollectionOperationResponse;
        list_collection_aliases(ListCollectionAliasesRequest) -> ListAliasesResponse;
        list_aliases(ListAliasesRequest) -> ListAliasesResponse;
        collection_cluster_info(CollectionClusterInfoRequest) -> CollectionClusterInfoResponse;
        update_collection_cluster_setup(UpdateCollectionClusterSetupRequest) -> UpdateCollectionClusterSetupResponse;
        create_shard_key(CreateShardKeyRequest) -> CreateShardKeyResponse;
        delete_shard_key(DeleteShardKeyRequest) -> DeleteShardKeyResponse;
        list_shard_keys(ListShardKeysRequest) -> ListShardKeysResponse;
    }

    async fn get(
        &self,
        request: Request<GetCollectionInfoRequest>,
    ) -> Result<Response<GetCollectionInfoResponse>, Status> {
        let name = request.into_inner().collection_name;
        self.record("get", &name, None, 0);
        self.gate()?;
        self.with_collection(&name, |c| {
            let info = CollectionInfo {
                status: CollectionStatus::Green as i32,
                config: Some(CollectionConfig {
                    params: Some(CollectionParams {
                        shard_number: 1,
                        vectors_config: Some(VectorsConfig {
                            config: Some(vectors_config::Config::Params(VectorParams {
                                size: c.size,
                                distance: Distance::Cosine as i32,
                                ..Default::default()
                            })),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                payload_schema: c.payload_schema.clone(),
                points_count: Some(c.owners.len() as u64),
                ..Default::default()
            };
            Ok(Response::new(GetCollectionInfoResponse {
                result: Some(info),
                time: 0.0,
            }))
        })
    }

    async fn list(
        &self,
        _request: Request<ListCollectionsRequest>,
    ) -> Result<Response<ListCollectionsResponse>, Status> {
        self.record("list", "", None, 0);
        self.gate()?;
        let collections = self.0.collections.lock().unwrap();
        Ok(Response::new(ListCollectionsResponse {
            collections: collections
                .keys()
                .map(|name| CollectionDescription { name: name.clone() })
                .collect(),
            time: 0.0,
        }))
    }

    async fn create(
        &self,
        request: Request<CreateCollection>,
    ) -> Result<Response<CollectionOperationResponse>, Status> {
        let request = request.into_inner();
        let name = request.collection_name;
        self.record("create", &name, None, 0);
        self.gate()?;
        let params = match request.vectors_config.and_then(|v| v.config) {
            Some(vectors_config::Config::Params(p)) => p,
            other => {
                return Err(Status::unimplemented(format!(
                    "Qdrant stand-in: only one unnamed vector per point, not {other:?}"
                )));
            }
        };
        if params.distance != Distance::Cosine as i32 {
            return Err(Status::unimplemented("Qdrant stand-in: cosine distance only"));
        }
        if params.size == 0 {
            return Err(Status::invalid_argument("Wrong input: vector size must be positive"));
        }
        let mut collections = self.0.collections.lock().unwrap();
        if collections.contains_key(&name) {
            return Err(Status::already_exists(format!(
                "Wrong input: Collection `{name}` already exists!"
            )));
        }
        collections.insert(
            name,
            Collection {
                size: params.size,
                payload_schema: HashMap::new(),
                partitions: HashMap::new(),
                owners: HashMap::new(),
            },
        );
        Ok(Response::new(CollectionOperationResponse {
            result: true,
            time: 0.0,
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteCollection>,
    ) -> Result<Response<CollectionOperationResponse>, Status> {
        let name = request.into_inner().collection_name;
        self.record("delete_collection", &name, None, 0);
        self.gate()?;
        let removed = self.0.collections.lock().unwrap().remove(&name).is_some();
        Ok(Response::new(CollectionOperationResponse {
            result: removed,
            time: 0.0,
        }))
    }

    async fn collection_exists(
        &self,
        request: Request<CollectionExistsRequest>,
    ) -> Result<Response<CollectionExistsResponse>, Status> {
        let name = request.into_inner().collection_name;
        self.record("collection_exists", &name, None, 0);
        self.gate()?;
        let exists = self.0.collections.lock().unwrap().contains_key(&name);
        Ok(Response::new(CollectionExistsResponse {
            result: Some(CollectionExists { exists }),
            time: 0.0,
        }))
    }
}

standin_impl! {
    impl Points for Service;
    unimplemented {
        get(GetPoints) -> GetResponse;
        update_vectors(UpdatePointVectors) -> PointsOperationResponse;
        delete_vectors(DeletePointVectors) -> PointsOperationResponse;
        set_payload(SetPayloadPoints) -> PointsOperationResponse;
        overwrite_payload(SetPayloadPoints) -> PointsOperationResponse;
        delete_payload(DeletePayloadPoints) -> PointsOperationResponse;
        clear_payload(ClearPayloadPoints) -> PointsOperationResponse;
        delete_field_index(DeleteFieldIndexCollection) -> PointsOperationResponse;
        create_vector_name(CreateVectorNameRequest) -> PointsOperationResponse;
        delete_vector_name(DeleteVectorNameRequest) -> PointsOperationResponse;
        search(SearchPoints) -> SearchResponse;
        search_batch(SearchBatchPoints) -> SearchBatchResponse;
        search_groups(SearchPointGroups) -> SearchGroupsResponse;
        scroll(ScrollPoints) -> ScrollResponse;
        recommend(RecommendPoints) -> RecommendResponse;
        recommend_batch(RecommendBatchPoints) -> RecommendBatchResponse;
        recommend_groups(RecommendPointGroups) -> RecommendGroupsResponse;
        discover(DiscoverPoints) -> DiscoverResponse;
        discover_batch(DiscoverBatchPoints) -> DiscoverBatchResponse;
        update_batch(UpdateBatchPoints) -> UpdateBatchResponse;
        query_batch(QueryBatchPoints) -> QueryBatchResponse;
        query_groups(QueryPointGroups) -> QueryGroupsResponse;
        facet(FacetCounts) -> FacetResponse;
        search_matrix_pairs(SearchMatrixPoints) -> SearchMatrixPairsResponse;
        search_matrix_offsets(SearchMatrixPoints) -> SearchMatrixOffsetsResponse;
    }

    async fn upsert(
        &self,
        request: Request<UpsertPoints>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        let request = request.into_inner();
        self.record("upsert", &request.collection_name, None, request.points.len());
        self.gate()?;
        if request.update_filter.is_some() {
            return Err(Status::unimplemented("Qdrant stand-in: upsert with update_filter"));
        }
        self.with_collection(&request.collection_name, |c| {
            // Validate the whole batch before applying any of it, as Qdrant does.
            let mut staged = Vec::with_capacity(request.points.len());
            for point in request.points {
                let id = point
                    .id
                    .ok_or_else(|| Status::invalid_argument("point without an id"))?;
                let vector = match point.vectors.and_then(|v| v.vectors_options) {
                    Some(vectors::VectorsOptions::Vector(v)) => v
                        .try_into_dense()
                        .map_err(|e| Status::invalid_argument(e.to_string()))?,
                    other => {
                        return Err(Status::unimplemented(format!(
                            "Qdrant stand-in: only one unnamed dense vector, not {other:?}"
                        )));
                    }
                };
                let key = point_key(&id)?;
                let partition = point
                    .payload
                    .get(TENANT_FIELD)
                    .and_then(Value::as_str)
                    .cloned()
                    .unwrap_or_default();
                let unit = unit(vector, c.size)?;
                staged.push((
                    key.clone(),
                    partition,
                    StoredPoint {
                        id,
                        key,
                        payload: point.payload,
                        unit,
                    },
                ));
            }
            for (key, partition, point) in staged {
                c.remove(&key);
                c.owners.insert(key.clone(), partition.clone());
                c.partitions.entry(partition).or_default().insert(key, point);
            }
            Ok(completed())
        })
    }

    async fn delete(
        &self,
        request: Request<DeletePoints>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        let request = request.into_inner();
        let filter = match request.points.and_then(|p| p.points_selector_one_of) {
            Some(points_selector::PointsSelectorOneOf::Filter(filter)) => Some(filter),
            _ => None,
        };
        self.record("delete", &request.collection_name, filter.as_ref(), 0);
        self.gate()?;
        let tenant = required_tenant("delete", filter.as_ref())?;
        self.with_collection(&request.collection_name, |c| {
            let filter = filter.unwrap_or_default();
            for key in c.matching_keys(&tenant, &filter)? {
                c.remove(&key);
            }
            Ok(completed())
        })
    }

    async fn create_field_index(
        &self,
        request: Request<CreateFieldIndexCollection>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        let request = request.into_inner();
        self.record("create_field_index", &request.collection_name, None, 0);
        self.gate()?;
        let data_type = match request.field_type.map(FieldType::try_from) {
            Some(Ok(FieldType::Keyword)) => PayloadSchemaType::Keyword,
            Some(Ok(FieldType::Integer)) => PayloadSchemaType::Integer,
            other => {
                return Err(Status::unimplemented(format!(
                    "Qdrant stand-in: index of type {other:?}"
                )));
            }
        };
        self.with_collection(&request.collection_name, |c| {
            let points = c.owners.len() as u64;
            c.payload_schema.insert(
                request.field_name,
                PayloadSchemaInfo {
                    data_type: data_type as i32,
                    params: request.field_index_params,
                    points: Some(points),
                },
            );
            Ok(completed())
        })
    }

    async fn count(
        &self,
        request: Request<CountPoints>,
    ) -> Result<Response<CountResponse>, Status> {
        let request = request.into_inner();
        self.record("count", &request.collection_name, request.filter.as_ref(), 0);
        self.gate()?;
        let tenant = required_tenant("count", request.filter.as_ref())?;
        self.with_collection(&request.collection_name, |c| {
            let filter = request.filter.unwrap_or_default();
            let count = c.matching_keys(&tenant, &filter)?.len() as u64;
            Ok(Response::new(CountResponse {
                result: Some(CountResult { count }),
                ..Default::default()
            }))
        })
    }

    async fn query(
        &self,
        request: Request<QueryPoints>,
    ) -> Result<Response<QueryResponse>, Status> {
        let request = request.into_inner();
        self.record("query", &request.collection_name, request.filter.as_ref(), 0);
        self.gate()?;
        let tenant = required_tenant("query", request.filter.as_ref())?;
        if !request.prefetch.is_empty() || request.using.is_some() {
            return Err(Status::unimplemented("Qdrant stand-in: prefetch or named vectors"));
        }
        let vector = match request.query.and_then(|q| q.variant) {
            Some(query::Variant::Nearest(VectorInput {
                variant: Some(vector_input::Variant::Dense(dense)),
            })) => dense.data,
            other => {
                return Err(Status::unimplemented(format!(
                    "Qdrant stand-in: only nearest-to-a-dense-vector queries, not {other:?}"
                )));
            }
        };
        let with_payload = match request.with_payload.and_then(|w| w.selector_options) {
            // The query API returns no payload unless asked.
            None => false,
            Some(with_payload_selector::SelectorOptions::Enable(enable)) => enable,
            Some(other) => {
                return Err(Status::unimplemented(format!(
                    "Qdrant stand-in: payload selector {other:?}"
                )));
            }
        };
        let limit = request.limit.unwrap_or(10) as usize;
        let offset = request.offset.unwrap_or(0) as usize;
        let ignore = self.ignoring_tenant();
        self.with_collection(&request.collection_name, |c| {
            let query = unit(vector, c.size)?;
            let filter = request.filter.unwrap_or_default();
            let mut scored = Vec::new();
            for point in c.candidates(&tenant, ignore) {
                if !filter_holds(&filter, &point.payload, ignore)? {
                    continue;
                }
                let score: f32 = query.iter().zip(&point.unit).map(|(a, b)| a * b).sum();
                if request.score_threshold.is_none_or(|t| score >= t) {
                    scored.push((score, point));
                }
            }
            scored.sort_by(|a, b| {
                b.0.total_cmp(&a.0)
                    .then_with(|| a.1.key.cmp(&b.1.key))
            });
            let result = scored
                .into_iter()
                .skip(offset)
                .take(limit)
                .map(|(score, point)| ScoredPoint {
                    id: Some(point.id.clone()),
                    payload: if with_payload {
                        point.payload.clone()
                    } else {
                        HashMap::new()
                    },
                    score,
                    ..Default::default()
                })
                .collect();
            Ok(Response::new(QueryResponse {
                result,
                ..Default::default()
            }))
        })
    }
}

#[tonic::async_trait]
impl Qdrant for Service {
    async fn health_check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckReply>, Status> {
        self.gate()?;
        Ok(Response::new(HealthCheckReply {
            title: "qdrant stand-in (tollgate-tests)".into(),
            version: "1.16.0".into(),
            commit: None,
        }))
    }
}
