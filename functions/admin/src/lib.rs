//! The admin function: provisioning over HTTP, for a SaaS back office signed in with AWS IAM.
//!
//! Routes (under any API Gateway stage prefix; API Gateway's `AWS_IAM` authorizer admits only
//! SigV4-signed requests from principals allowed `execute-api:Invoke` on them):
//! - `GET  /admin/v1/tenants`                     tenants, by id, paginated (`limit`, `cursor`)
//! - `POST /admin/v1/tenants`                     create: a configuration as `tollgate tenant
//!   show` prints it (201, `ETag`)
//! - `GET  /admin/v1/tenants/{id}`                one tenant (`ETag: "{version}"`)
//! - `PUT  /admin/v1/tenants/{id}`                replace, `If-Match` required (412 on a
//!   stale version, 428 without one)
//! - `POST /admin/v1/tenants/{id}/disable|enable` (`If-Match` optional)
//! - `GET  /admin/v1/tenants/{id}/keys`           the tenant's keys (never a key or hash)
//! - `POST /admin/v1/tenants/{id}/keys`           issue a key: `{name, scopes, expires_at}`,
//!   all optional; the key is in this response only (201)
//! - `POST /admin/v1/keys/{prefix}/rotate`        `{overlap_seconds}` (default a day; 201)
//! - `POST /admin/v1/keys/{prefix}/revoke`
//! - `GET  /admin/v1/tenants/{id}/budget`         its dollar budgets (overrides, in force) and
//!   the day's and month's spend (`ETag`)
//! - `PUT  /admin/v1/tenants/{id}/budget`         `{daily_usd, monthly_usd, alert_at_percent}`
//!   (each an amount, `"unlimited"`, or null for the tier's; `If-Match` optional)
//! - `GET  /admin/v1/prices`                      the price table in force, with each price's
//!   source
//! - `PUT  /admin/v1/prices`                      set an operator price: a price entry as
//!   `GET /admin/v1/prices` lists it (`provider`, `model`, `input`, `output`, ...; its
//!   `source` is ignored)
//! - `GET  /admin/v1/quotas`                      the upstream quotas
//! - `PUT  /admin/v1/quotas`                      set one: `{provider, model, key?,
//!   tokens_per_minute}`
//! - `GET  /admin/v1/audit`                       `tenant` (else the deployment-wide log),
//!   `limit`, `cursor`
//!
//! Every change goes through the same services as `tollgate tenant`, `tollgate key`,
//! `tollgate price` and `tollgate quota` (`service::tenant_admin`, `service::key_admin`,
//! `service::budget_admin`, `service::catalog_admin`) and is recorded in the audit log with the
//! caller's IAM ARN. A request without an IAM principal in its context is refused (403): API
//! Gateway always sets one behind `AWS_IAM`, so its absence means the function is reachable
//! some other way. Errors are `{"error": {"message", "type", "param", "code"}}`.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::header::{ETAG, IF_MATCH};
use http::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tollgate::GatewayError;
use tollgate::bootstrap::{Backend, Stores};
use tollgate::domain::audit::KeyView;
use tollgate::domain::budget::BudgetOverrides;
use tollgate::domain::ids::{RequestId, TenantId};
use tollgate::domain::keys::{KeyPrefix, KeyScope, KeySpec};
use tollgate::domain::limits::UpstreamQuota;
use tollgate::domain::pricing::PriceEntry;
use tollgate::domain::tenant::TenantConfig;
use tollgate::http::{self as edge, Body};
use tollgate::lambda::PlatformPrincipal;
use tollgate::ports::store::{Expect, StoreError};
use tollgate::routes::{Handler, Params, Route, RouteTable};
use tollgate::service::audit::Auditor;
use tollgate::service::budget_admin;
use tollgate::service::caller::Callers;
use tollgate::service::catalog_admin::{self, CatalogAdminError};
use tollgate::service::key_admin::{self, KeyAdminError};
use tollgate::service::tenant_admin::{self, TenantAdminError};

/// What the admin function may touch: every store port (it is the operators' front door).
#[derive(Clone)]
pub struct AdminState {
    /// The deployment's store.
    pub store: Arc<dyn Backend>,
    /// Unused (no tenant routes); the route table asks for one.
    pub callers: Callers,
}

impl AdminState {
    /// Admin's state on `stores`: the one constructor `main` and the tests use.
    pub fn build(stores: &Stores) -> Self {
        Self {
            store: stores.backend(),
            callers: stores.callers(),
        }
    }
}

macro_rules! admin {
    ($handler:ident) => {
        Handler::Open(|s, req, p| Box::pin(authorized(s, req, p, $handler)))
    };
}

impl RouteTable for AdminState {
    const ROUTES: &'static [Route<Self>] = &[
        Route {
            method: Method::GET,
            path: "/admin/v1/tenants",
            handler: admin!(list_tenants),
        },
        Route {
            method: Method::POST,
            path: "/admin/v1/tenants",
            handler: admin!(create_tenant),
        },
        Route {
            method: Method::GET,
            path: "/admin/v1/tenants/{id}",
            handler: admin!(get_tenant),
        },
        Route {
            method: Method::PUT,
            path: "/admin/v1/tenants/{id}",
            handler: admin!(replace_tenant),
        },
        Route {
            method: Method::POST,
            path: "/admin/v1/tenants/{id}/disable",
            handler: admin!(disable_tenant),
        },
        Route {
            method: Method::POST,
            path: "/admin/v1/tenants/{id}/enable",
            handler: admin!(enable_tenant),
        },
        Route {
            method: Method::GET,
            path: "/admin/v1/tenants/{id}/keys",
            handler: admin!(list_keys),
        },
        Route {
            method: Method::POST,
            path: "/admin/v1/tenants/{id}/keys",
            handler: admin!(create_key),
        },
        Route {
            method: Method::POST,
            path: "/admin/v1/keys/{prefix}/rotate",
            handler: admin!(rotate_key),
        },
        Route {
            method: Method::POST,
            path: "/admin/v1/keys/{prefix}/revoke",
            handler: admin!(revoke_key),
        },
        Route {
            method: Method::GET,
            path: "/admin/v1/tenants/{id}/budget",
            handler: admin!(get_budget),
        },
        Route {
            method: Method::PUT,
            path: "/admin/v1/tenants/{id}/budget",
            handler: admin!(set_budget),
        },
        Route {
            method: Method::GET,
            path: "/admin/v1/prices",
            handler: admin!(list_prices),
        },
        Route {
            method: Method::PUT,
            path: "/admin/v1/prices",
            handler: admin!(set_price),
        },
        Route {
            method: Method::GET,
            path: "/admin/v1/quotas",
            handler: admin!(list_quotas),
        },
        Route {
            method: Method::PUT,
            path: "/admin/v1/quotas",
            handler: admin!(set_quota),
        },
        Route {
            method: Method::GET,
            path: "/admin/v1/audit",
            handler: admin!(audit_log),
        },
    ];

    fn callers(&self) -> &Callers {
        &self.callers
    }

    /// Every error response of this function is logged (a line per failed request).
    fn error(err: &GatewayError, request_id: &RequestId) -> Response<Body> {
        edge::logged_error(err, request_id)
    }
}

/// Serves one request with admin's route table.
pub async fn handle(state: &AdminState, req: Request<Bytes>) -> Response<Body> {
    tollgate::routes::handle(state, req).await
}

/// One admin request: who is asking, the request, its captures.
pub struct Call {
    /// The caller's IAM ARN.
    pub principal: String,
    /// The request.
    pub req: Request<Bytes>,
    /// The path's captures.
    pub params: Params,
    /// Its id.
    pub request_id: RequestId,
}

impl Call {
    fn auditor<'a>(&self, state: &'a AdminState) -> Auditor<'a> {
        Auditor::new(
            state.store.as_ref(),
            self.principal.clone(),
            self.request_id.clone(),
        )
    }
}

/// An admin failure: a status, a code and a message, in the gateway's error shape.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    param: Option<&'static str>,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            param: None,
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    fn render(&self, request_id: &RequestId) -> Response<Body> {
        let kind = match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        if self.status.is_server_error() {
            tracing::error!(request_id = %request_id, status = self.status.as_u16(), code = self.code, message = %self.message, "admin request failed");
        } else {
            tracing::info!(request_id = %request_id, status = self.status.as_u16(), code = self.code, "admin request refused");
        }
        let body = json!({"error": {
            "message": self.message,
            "type": kind,
            "param": self.param,
            "code": self.code,
        }});
        let mut response = edge::json(self.status, &body, request_id);
        *response.status_mut() = self.status;
        response
    }
}

impl From<StoreError> for Refusal {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(_) | StoreError::Throttled => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store is unavailable; retry",
            ),
            other => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                other.to_string(),
            ),
        }
    }
}

impl From<TenantAdminError> for Refusal {
    fn from(err: TenantAdminError) -> Self {
        let message = err.to_string();
        match err {
            TenantAdminError::NotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "tenant_not_found", message)
            }
            TenantAdminError::Exists(_) => {
                Self::new(StatusCode::CONFLICT, "tenant_exists", message)
            }
            TenantAdminError::Invalid(_) => Self::invalid(message),
            TenantAdminError::Conflict { .. } => {
                Self::new(StatusCode::PRECONDITION_FAILED, "version_mismatch", message)
            }
            TenantAdminError::Store(err) => err.into(),
            TenantAdminError::Unaudited(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "unaudited", message)
            }
        }
    }
}

impl From<KeyAdminError> for Refusal {
    fn from(err: KeyAdminError) -> Self {
        let message = err.to_string();
        match err {
            KeyAdminError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            KeyAdminError::Invalid(_) => Self::invalid(message),
            KeyAdminError::Store(err) => err.into(),
            KeyAdminError::Unaudited(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "unaudited", message)
            }
        }
    }
}

impl From<CatalogAdminError> for Refusal {
    fn from(err: CatalogAdminError) -> Self {
        let message = err.to_string();
        match err {
            CatalogAdminError::Invalid(_) => Self::invalid(message),
            CatalogAdminError::Internal(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
            }
            CatalogAdminError::Store(err) => err.into(),
            CatalogAdminError::Unaudited(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "unaudited", message)
            }
        }
    }
}

type Served = Result<Response<Body>, Refusal>;

/// Runs `handler` for a request API Gateway authenticated with IAM, and renders its refusal.
async fn authorized<'a, F, Fut>(
    state: &'a AdminState,
    req: Request<Bytes>,
    params: Params,
    handler: F,
) -> Response<Body>
where
    F: FnOnce(&'a AdminState, Call) -> Fut,
    Fut: std::future::Future<Output = Served> + 'a,
{
    let request_id = tollgate::lambda::request_id(&req);
    let Some(PlatformPrincipal(principal)) = req.extensions().get::<PlatformPrincipal>().cloned()
    else {
        return Refusal::new(
            StatusCode::FORBIDDEN,
            "iam_identity_required",
            "the admin API needs a request signed with AWS SigV4 through API Gateway's AWS_IAM authorizer",
        )
        .render(&request_id);
    };
    let call = Call {
        principal,
        req,
        params,
        request_id: request_id.clone(),
    };
    match handler(state, call).await {
        Ok(response) => response,
        Err(refusal) => refusal.render(&request_id),
    }
}

fn tenant_param(params: &Params) -> Result<TenantId, Refusal> {
    TenantId::parse(params.get("id")).map_err(|e| {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "tenant_not_found",
            format!("no tenant `{}`: {e}", params.get("id")),
        )
    })
}

fn prefix_param(params: &Params) -> Result<KeyPrefix, Refusal> {
    KeyPrefix::parse(params.get("prefix")).ok_or_else(|| {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no key with that prefix (12 letters and digits)",
        )
    })
}

fn query(req: &Request<Bytes>, name: &str) -> Option<String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn limit(req: &Request<Bytes>, default: usize) -> Result<usize, Refusal> {
    match query(req, "limit") {
        None => Ok(default),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n @ 1..=1000) => Ok(n),
            _ => Err(Refusal {
                param: Some("limit"),
                ..Refusal::invalid("limit must be a whole number from 1 to 1000")
            }),
        },
    }
}

fn body<T: serde::de::DeserializeOwned>(req: &Request<Bytes>) -> Result<T, Refusal> {
    let raw: &[u8] = if req.body().is_empty() {
        b"{}"
    } else {
        req.body()
    };
    serde_json::from_slice(raw).map_err(|e| Refusal::invalid(format!("invalid JSON body: {e}")))
}

/// A body that must be given: a PUT replaces what it names, so an empty one is refused rather
/// than read as `{}` (which would reset every field it leaves out).
fn required_body<T: serde::de::DeserializeOwned>(req: &Request<Bytes>) -> Result<T, Refusal> {
    if req.body().iter().all(u8::is_ascii_whitespace) {
        return Err(Refusal::invalid(
            "this request needs a JSON body (send {} to mean \"every field at its default\")",
        ));
    }
    body(req)
}

/// `If-Match: "7"` (or `7`, or `W/"7"`): the version the change is based on.
fn if_match(req: &Request<Bytes>) -> Result<Option<u64>, Refusal> {
    let Some(raw) = req.headers().get(IF_MATCH) else {
        return Ok(None);
    };
    let raw = raw.to_str().unwrap_or("").trim();
    let raw = raw.strip_prefix("W/").unwrap_or(raw).trim_matches('"');
    raw.parse().map(Some).map_err(|_| {
        Refusal::invalid("If-Match must be the tenant's ETag (its version), e.g. \"3\"")
    })
}

fn with_etag(mut response: Response<Body>, version: u64) -> Response<Body> {
    if let Ok(value) = http::HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(ETAG, value);
    }
    response
}

fn tenant_response(
    status: StatusCode,
    saved: &tenant_admin::Saved,
    request_id: &RequestId,
) -> Response<Body> {
    let body = json!({
        "tenant": &*saved.config,
        "changed": saved.changed,
        "warnings": saved.warnings,
    });
    with_etag(edge::json(status, &body, request_id), saved.config.version)
}

async fn list_tenants(state: &AdminState, call: Call) -> Served {
    let limit = limit(&call.req, 100)?;
    let after = match query(&call.req, "cursor") {
        Some(raw) => Some(TenantId::parse(&raw).map_err(|e| Refusal {
            param: Some("cursor"),
            ..Refusal::invalid(format!("cursor: {e}"))
        })?),
        None => None,
    };
    let page = state
        .store
        .tenant_config_page(after.as_ref(), limit)
        .await?;
    let tenants: Vec<&TenantConfig> = page.configs.iter().map(|c| c.as_ref()).collect();
    Ok(edge::json(
        StatusCode::OK,
        &json!({"tenants": tenants, "next_cursor": page.next}),
        &call.request_id,
    ))
}

/// A configuration from a request body: `version` may be left out (the store assigns it).
fn config_body(req: &Request<Bytes>) -> Result<TenantConfig, Refusal> {
    let mut value: Value = required_body(req)?;
    if let Some(map) = value.as_object_mut() {
        map.entry("version").or_insert(json!(0));
    }
    serde_json::from_value(value)
        .map_err(|e| Refusal::invalid(format!("not a tenant configuration: {e}")))
}

async fn create_tenant(state: &AdminState, call: Call) -> Served {
    let config = config_body(&call.req)?;
    let saved = tenant_admin::create(
        state.store.as_ref(),
        &call.auditor(state),
        config,
        Utc::now(),
    )
    .await?;
    Ok(tenant_response(
        StatusCode::CREATED,
        &saved,
        &call.request_id,
    ))
}

async fn get_tenant(state: &AdminState, call: Call) -> Served {
    let id = tenant_param(&call.params)?;
    let config = state
        .store
        .tenant_config(&id)
        .await?
        .ok_or_else(|| Refusal::from(TenantAdminError::NotFound(id)))?;
    Ok(with_etag(
        edge::json(
            StatusCode::OK,
            &json!({"tenant": &*config}),
            &call.request_id,
        ),
        config.version,
    ))
}

async fn replace_tenant(state: &AdminState, call: Call) -> Served {
    let id = tenant_param(&call.params)?;
    let Some(version) = if_match(&call.req)? else {
        return Err(Refusal::new(
            StatusCode::PRECONDITION_REQUIRED,
            "if_match_required",
            "replacing a tenant needs If-Match with the ETag of the version it is based on (GET it first)",
        ));
    };
    let mut config = config_body(&call.req)?;
    if config.tenant_id != id {
        return Err(Refusal::invalid(format!(
            "the body is tenant `{}`, the path tenant `{id}`: a tenant's id cannot change",
            config.tenant_id
        )));
    }
    config.version = version;
    let saved = tenant_admin::replace(
        state.store.as_ref(),
        &call.auditor(state),
        &id,
        Expect::Version(version),
        config,
        Utc::now(),
    )
    .await?;
    Ok(tenant_response(StatusCode::OK, &saved, &call.request_id))
}

async fn disable_tenant(state: &AdminState, call: Call) -> Served {
    set_disabled(state, call, true).await
}

async fn enable_tenant(state: &AdminState, call: Call) -> Served {
    set_disabled(state, call, false).await
}

async fn set_disabled(state: &AdminState, call: Call, disabled: bool) -> Served {
    let id = tenant_param(&call.params)?;
    let expect = if_match(&call.req)?.map_or(Expect::Anything, Expect::Version);
    let saved = tenant_admin::set_disabled(
        state.store.as_ref(),
        &call.auditor(state),
        &id,
        disabled,
        expect,
        Utc::now(),
    )
    .await?;
    Ok(tenant_response(StatusCode::OK, &saved, &call.request_id))
}

fn key_json(view: KeyView, last_used: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Value {
    let state = match (view.revoked_at, view.expires_at) {
        (Some(_), _) => "revoked",
        (None, Some(at)) if now >= at => "expired",
        _ => "live",
    };
    let mut value = serde_json::to_value(&view).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.insert("state".into(), json!(state));
        map.insert("last_used_at".into(), json!(last_used));
    }
    value
}

async fn list_keys(state: &AdminState, call: Call) -> Served {
    let id = tenant_param(&call.params)?;
    if state.store.tenant_config(&id).await?.is_none() {
        return Err(TenantAdminError::NotFound(id).into());
    }
    let keys = state.store.keys_for(&id).await?;
    let prefixes: Vec<KeyPrefix> = keys.iter().map(|k| k.prefix.clone()).collect();
    let used = state.store.keys_last_used(&prefixes).await?;
    let now = Utc::now();
    let keys: Vec<Value> = keys
        .iter()
        .map(|k| key_json(KeyView::from(k), used.get(&k.prefix).copied(), now))
        .collect();
    Ok(edge::json(
        StatusCode::OK,
        &json!({"keys": keys}),
        &call.request_id,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    scopes: Option<BTreeSet<KeyScope>>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

/// A new key's response: the key itself (this once) and what is stored about it.
fn issued_json(issued: &tollgate::domain::keys::IssuedKey, now: DateTime<Utc>) -> Value {
    json!({
        "key": issued.expose(),
        "details": key_json(KeyView::from(&issued.record), None, now),
    })
}

async fn create_key(state: &AdminState, call: Call) -> Served {
    let id = tenant_param(&call.params)?;
    let NewKey {
        name,
        scopes,
        expires_at,
    } = body(&call.req)?;
    let now = Utc::now();
    let spec = KeySpec {
        name,
        scopes,
        expires_at,
    };
    let issued = key_admin::create(state.store.as_ref(), &call.auditor(state), &id, spec, now)
        .await
        .map_err(|e| match e {
            KeyAdminError::NotFound(_) => TenantAdminError::NotFound(id.clone()).into(),
            other => Refusal::from(other),
        })?;
    let mut response = edge::json(
        StatusCode::CREATED,
        &issued_json(&issued, now),
        &call.request_id,
    );
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotation {
    #[serde(default = "a_day")]
    overlap_seconds: i64,
}

fn a_day() -> i64 {
    86_400
}

async fn rotate_key(state: &AdminState, call: Call) -> Served {
    let prefix = prefix_param(&call.params)?;
    let Rotation { overlap_seconds } = body(&call.req)?;
    let now = Utc::now();
    let rotated = key_admin::rotate(
        state.store.as_ref(),
        &call.auditor(state),
        &prefix,
        chrono::Duration::seconds(overlap_seconds),
        now,
    )
    .await?;
    let mut body = issued_json(&rotated.key, now);
    body["rotated"] = json!({"prefix": rotated.old, "expires_at": rotated.old_until});
    let mut response = edge::json(StatusCode::CREATED, &body, &call.request_id);
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

async fn revoke_key(state: &AdminState, call: Call) -> Served {
    let prefix = prefix_param(&call.params)?;
    let now = Utc::now();
    key_admin::revoke(state.store.as_ref(), &call.auditor(state), &prefix, now).await?;
    let key = state
        .store
        .find_key(&prefix)
        .await?
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "not_found", "no such key"))?;
    Ok(edge::json(
        StatusCode::OK,
        &json!({"key": key_json(KeyView::from(&key), None, now)}),
        &call.request_id,
    ))
}

async fn get_budget(state: &AdminState, call: Call) -> Served {
    let id = tenant_param(&call.params)?;
    let status = budget_admin::status(state.store.as_ref(), &id, Utc::now()).await?;
    Ok(budget_response(&status, None, &call.request_id))
}

fn budget_response(
    status: &budget_admin::BudgetStatus,
    changed: Option<bool>,
    request_id: &RequestId,
) -> Response<Body> {
    let mut body = serde_json::to_value(status).unwrap_or(Value::Null);
    if let (Some(changed), Some(map)) = (changed, body.as_object_mut()) {
        map.insert("changed".into(), json!(changed));
    }
    with_etag(
        edge::json(StatusCode::OK, &body, request_id),
        status.version,
    )
}

async fn set_budget(state: &AdminState, call: Call) -> Served {
    let id = tenant_param(&call.params)?;
    let expect = if_match(&call.req)?.map_or(Expect::Anything, Expect::Version);
    let budget: BudgetOverrides = required_body(&call.req)?;
    let now = Utc::now();
    let saved = budget_admin::set(
        state.store.as_ref(),
        &call.auditor(state),
        &id,
        budget,
        expect,
        now,
    )
    .await?;
    // The change is written: answer from what was written, the spend only if it reads.
    let status = match budget_admin::status_of(state.store.as_ref(), &saved.config, now).await {
        Ok(status) => status,
        Err(err) => {
            tracing::warn!(request_id = %call.request_id, error = %err, "budget set; its spend could not be read for the answer");
            budget_admin::unread(&saved.config, now)
        }
    };
    Ok(budget_response(
        &status,
        Some(saved.changed),
        &call.request_id,
    ))
}

async fn list_prices(state: &AdminState, call: Call) -> Served {
    let prices = catalog_admin::prices(state.store.as_ref()).await?;
    Ok(edge::json(StatusCode::OK, &prices, &call.request_id))
}

async fn set_price(state: &AdminState, call: Call) -> Served {
    // A price as `GET /admin/v1/prices` lists it may be sent back: its `source` is ignored.
    let mut value: Value = required_body(&call.req)?;
    if let Some(map) = value.as_object_mut() {
        map.remove("source");
    }
    let entry: PriceEntry = serde_json::from_value(value)
        .map_err(|e| Refusal::invalid(format!("not a price entry: {e}")))?;
    let previous = catalog_admin::set_price(
        state.store.as_ref(),
        &call.auditor(state),
        entry.clone(),
        Utc::now(),
    )
    .await?;
    Ok(edge::json(
        StatusCode::OK,
        &json!({"price": entry, "previous": previous}),
        &call.request_id,
    ))
}

async fn list_quotas(state: &AdminState, call: Call) -> Served {
    let quotas = catalog_admin::quotas(state.store.as_ref()).await?;
    Ok(edge::json(
        StatusCode::OK,
        &json!({"quotas": quotas}),
        &call.request_id,
    ))
}

async fn set_quota(state: &AdminState, call: Call) -> Served {
    let quota: UpstreamQuota = required_body(&call.req)?;
    let previous = catalog_admin::set_quota(
        state.store.as_ref(),
        &call.auditor(state),
        quota.clone(),
        Utc::now(),
    )
    .await?;
    Ok(edge::json(
        StatusCode::OK,
        &json!({"quota": quota, "previous": previous}),
        &call.request_id,
    ))
}

async fn audit_log(state: &AdminState, call: Call) -> Served {
    let tenant = match query(&call.req, "tenant") {
        Some(raw) => Some(TenantId::parse(&raw).map_err(|e| Refusal {
            param: Some("tenant"),
            ..Refusal::invalid(format!("tenant: {e}"))
        })?),
        None => None,
    };
    let limit = limit(&call.req, 50)?;
    let cursor = query(&call.req, "cursor");
    let page = state
        .store
        .audit_page(tenant.as_ref(), cursor.as_deref(), limit)
        .await?;
    Ok(edge::json(
        StatusCode::OK,
        &json!({"records": page.records, "next_cursor": page.next}),
        &call.request_id,
    ))
}
