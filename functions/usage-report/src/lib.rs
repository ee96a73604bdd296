//! The usage-report function: a tenant's usage, request traces and dashboard.
//!
//! Routes (under any API Gateway stage prefix):
//! - `GET /v1/usage`              the usage report (buckets, per model, totals)
//! - `GET /v1/usage/events`       the tenant's requests, newest first, paginated
//! - `GET /dashboard`             the dashboard page; `/dashboard/app.js`, `/dashboard/app.css`
//! - `GET /healthz`
//!
//! Both API routes authenticate with the tenant's bearer key, exactly as invoke does; the
//! dashboard is static (HTML, JS and CSS compiled into the binary) and calls them from the
//! browser with the key the tenant types in. It loads nothing from anywhere else, which its
//! `Content-Security-Policy` enforces.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LOCATION};
use http::{Method, Request, Response, StatusCode};
use tollgate::GatewayError;
use tollgate::adapters::cached::CachedDirectory;
use tollgate::domain::ids::RequestId;
use tollgate::http::{self as edge, Body, bearer_token, route_path};
use tollgate::ports::store::UsageEvents;
use tollgate::ports::{ApiKeyLookup, TenantConfigSource, UsageQuery};
use tollgate::service::usage_report::UsageReportService;

/// What usage-report may touch: keys and configs (read), rollups and events (read).
#[derive(Clone)]
pub struct UsageReportState {
    pub report: UsageReportService,
}

impl UsageReportState {
    /// The report on `store`, with key and config lookups behind the per-container cache
    /// (`directory_ttl`, as for invoke; zero turns it off).
    pub fn on<S>(store: Arc<S>, directory_ttl: Duration) -> Self
    where
        S: ApiKeyLookup + TenantConfigSource + UsageQuery + UsageEvents + 'static,
    {
        let directory = Arc::new(CachedDirectory::new(
            store.clone(),
            store.clone(),
            directory_ttl,
        ));
        Self {
            report: UsageReportService {
                keys: directory.clone(),
                tenants: directory,
                usage: store.clone(),
                events: store,
                clock: Arc::new(tollgate::ports::clock::SystemClock),
            },
        }
    }
}

/// The dashboard's files, compiled in.
const DASHBOARD_HTML: &str = include_str!("../assets/dashboard.html");
const DASHBOARD_JS: &str = include_str!("../assets/app.js");
const DASHBOARD_CSS: &str = include_str!("../assets/app.css");

/// Everything the page needs comes from this origin; no inline script or style, no frames,
/// and no form submission (the key form is handled in script, so a key can never end up in
/// a URL, even with scripts off).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Usage,
    Events,
    Dashboard,
    /// `/dashboard/`: redirected, so the page's relative URLs resolve.
    DashboardSlash,
    Asset(&'static str, &'static str),
    Healthz,
    /// Under `/v1/usage/` but no such route.
    UnknownUsage,
    Other,
}

fn route(path: &str) -> Route {
    match route_path(path) {
        "/v1/usage" => return Route::Usage,
        "/v1/usage/events" => return Route::Events,
        "/healthz" => return Route::Healthz,
        p if p.starts_with("/v1/usage/") => return Route::UnknownUsage,
        p if p.starts_with("/v1/") => return Route::Other,
        _ => {}
    }
    // Not under /v1/: whatever precedes `/dashboard` is a stage or base path.
    let Some(at) = path.rfind("/dashboard") else {
        return Route::Other;
    };
    match &path[at + "/dashboard".len()..] {
        "" => Route::Dashboard,
        "/" => Route::DashboardSlash,
        "/app.js" => Route::Asset("text/javascript; charset=utf-8", DASHBOARD_JS),
        "/app.css" => Route::Asset("text/css; charset=utf-8", DASHBOARD_CSS),
        _ => Route::Other,
    }
}

/// Whether this function owns `path` (for `tollgate serve`'s dispatch); `/healthz` stays with
/// invoke there.
pub fn owns(path: &str) -> bool {
    !matches!(route(path), Route::Healthz | Route::Other)
}

pub async fn handle(state: &UsageReportState, req: Request<Bytes>) -> Response<Body> {
    let request_id = tollgate::lambda::request_id(&req);
    let path = req.uri().path().to_owned();
    let bearer = bearer_token(req.headers());
    let query = req.uri().query();
    let found = route(&path);
    let result = match (req.method().clone(), found) {
        (Method::GET, Route::Usage) => state
            .report
            .report(bearer, query)
            .await
            .map(|report| private_json(&report, &request_id)),
        (Method::GET, Route::Events) => state
            .report
            .events(bearer, query)
            .await
            .map(|list| private_json(&list, &request_id)),
        (Method::GET, Route::Dashboard) => Ok(page(
            "text/html; charset=utf-8",
            DASHBOARD_HTML,
            &request_id,
        )),
        (Method::GET, Route::Asset(content_type, text)) => {
            Ok(page(content_type, text, &request_id))
        }
        (Method::GET, Route::DashboardSlash) => Ok(redirect("../dashboard", &request_id)),
        (Method::GET, Route::Healthz) => Ok(edge::json(
            StatusCode::OK,
            &serde_json::json!({"status": "ok"}),
            &request_id,
        )),
        (method, Route::Other | Route::UnknownUsage) => Err(GatewayError::RouteNotFound {
            method: method.to_string(),
            path: route_path(&path).to_owned(),
        }),
        (method, _) => Err(GatewayError::MethodNotAllowed {
            method: method.to_string(),
            path: route_path(&path).to_owned(),
        }),
    };
    result.unwrap_or_else(|err| edge::logged_error(&err, &request_id))
}

/// A JSON body only this tenant may see: never stored by shared caches.
fn private_json<T: serde::Serialize>(value: &T, request_id: &RequestId) -> Response<Body> {
    let mut response = edge::json(StatusCode::OK, value, request_id);
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A dashboard file with the security headers.
fn page(content_type: &'static str, text: &'static str, request_id: &RequestId) -> Response<Body> {
    let mut response = Response::new(Body::full(text));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        http::header::X_FRAME_OPTIONS,
        HeaderValue::from_static("DENY"),
    );
    // Revalidated on every load, so a deploy never mixes an old page with a new script.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    edge::set_header(&mut response, "x-request-id", request_id.as_str());
    response
}

fn redirect(location: &'static str, request_id: &RequestId) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_static(location));
    edge::set_header(&mut response, "x-request-id", request_id.as_str());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_found_under_stage_prefixes() {
        assert_eq!(route("/v1/usage"), Route::Usage);
        assert_eq!(route("/prod/v1/usage/events"), Route::Events);
        assert_eq!(route("/prod/dashboard"), Route::Dashboard);
        assert_eq!(route("/dashboard/"), Route::DashboardSlash);
        assert!(matches!(route("/prod/dashboard/app.js"), Route::Asset(..)));
        assert_eq!(route("/dashboard/secret.txt"), Route::Other);
        assert_eq!(route("/v1/usage/other"), Route::UnknownUsage);
        assert_eq!(route("/v1/chat/dashboard"), Route::Other);
        assert!(owns("/prod/v1/usage"));
        assert!(owns("/dashboard/app.css"));
        assert!(!owns("/healthz"));
        assert!(!owns("/v1/usage_x"));
        assert!(!owns("/v1/chat/completions"));
    }

    #[test]
    fn the_page_loads_its_assets_by_relative_url_only() {
        assert!(DASHBOARD_HTML.contains("src=\"dashboard/app.js\""));
        assert!(DASHBOARD_HTML.contains("href=\"dashboard/app.css\""));
        for text in [DASHBOARD_HTML, DASHBOARD_JS, DASHBOARD_CSS] {
            // The SVG namespace is a name, not an address anything is loaded from.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://"));
            assert!(!text.contains("innerHTML") && !text.contains("outerHTML"));
            assert!(!text.contains("eval(") && !text.contains("document.write"));
        }
        assert!(!DASHBOARD_HTML.contains("<script>"));
        assert!(!DASHBOARD_HTML.contains("style="));
    }
}
