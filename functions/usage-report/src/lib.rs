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

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LOCATION};
use http::{Method, Request, Response, StatusCode};
use tollgate::GatewayError;
use tollgate::bootstrap::{Stores, usage_report_service};
use tollgate::domain::ids::RequestId;
use tollgate::domain::keys::KeyScope;
use tollgate::http::{self as edge, Body};
use tollgate::routes::{Handler, Route, RouteTable};
use tollgate::service::caller::{Caller, Callers};
use tollgate::service::usage_report::UsageReportService;

/// What usage-report may touch: keys and configs (read, through the caller extractor),
/// rollups and events (read).
#[derive(Clone)]
pub struct UsageReportState {
    /// Reports and event pages.
    pub report: UsageReportService,
    /// Resolves each request's caller from its key.
    pub callers: Callers,
}

impl UsageReportState {
    /// Usage-report's state on `stores`: the one constructor every `main`, `tollgate serve`
    /// and the tests use.
    pub fn build(stores: &Stores) -> Self {
        Self {
            report: usage_report_service(stores),
            callers: stores.callers(),
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

impl RouteTable for UsageReportState {
    const ROUTES: &'static [Route<Self>] = &[
        Route {
            method: Method::GET,
            path: "/v1/usage",
            handler: Handler::Tenant(Some(KeyScope::UsageRead), |s, c, req, _| {
                Box::pin(report(s, c, req))
            }),
        },
        Route {
            method: Method::GET,
            path: "/v1/usage/events",
            handler: Handler::Tenant(Some(KeyScope::UsageRead), |s, c, req, _| {
                Box::pin(events(s, c, req))
            }),
        },
        Route {
            method: Method::GET,
            path: "/dashboard",
            handler: Handler::Open(|_, req, _| {
                Box::pin(file(req, "text/html; charset=utf-8", DASHBOARD_HTML))
            }),
        },
        Route {
            method: Method::GET,
            // Redirected, so the page's relative URLs resolve.
            path: "/dashboard/",
            handler: Handler::Open(|_, req, _| Box::pin(redirect(req, "../dashboard"))),
        },
        Route {
            method: Method::GET,
            path: "/dashboard/app.js",
            handler: Handler::Open(|_, req, _| {
                Box::pin(file(req, "text/javascript; charset=utf-8", DASHBOARD_JS))
            }),
        },
        Route {
            method: Method::GET,
            path: "/dashboard/app.css",
            handler: Handler::Open(|_, req, _| {
                Box::pin(file(req, "text/css; charset=utf-8", DASHBOARD_CSS))
            }),
        },
        Route {
            method: Method::GET,
            path: "/healthz",
            handler: Handler::Open(|_, req, _| Box::pin(tollgate::routes::healthz(req))),
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

/// Serves one request with usage-report's route table.
pub async fn handle(state: &UsageReportState, req: Request<Bytes>) -> Response<Body> {
    tollgate::routes::handle(state, req).await
}

/// Whether this function serves `path` (any method).
pub fn owns(path: &str) -> bool {
    tollgate::routes::owns::<UsageReportState>(path)
}

async fn report(state: &UsageReportState, caller: Caller, req: Request<Bytes>) -> Response<Body> {
    let request_id = tollgate::lambda::request_id(&req);
    match state.report.report(&caller, req.uri().query()).await {
        Ok(report) => private_json(&report, &request_id),
        Err(err) => edge::logged_error(&err, &request_id),
    }
}

async fn events(state: &UsageReportState, caller: Caller, req: Request<Bytes>) -> Response<Body> {
    let request_id = tollgate::lambda::request_id(&req);
    match state.report.events(&caller, req.uri().query()).await {
        Ok(list) => private_json(&list, &request_id),
        Err(err) => edge::logged_error(&err, &request_id),
    }
}

async fn file(
    req: Request<Bytes>,
    content_type: &'static str,
    text: &'static str,
) -> Response<Body> {
    page(content_type, text, &tollgate::lambda::request_id(&req))
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

async fn redirect(req: Request<Bytes>, location: &'static str) -> Response<Body> {
    let request_id = tollgate::lambda::request_id(&req);
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
        for path in [
            "/v1/usage",
            "/prod/v1/usage/events",
            "/prod/dashboard",
            "/dashboard/",
            "/prod/dashboard/app.js",
            "/dashboard/app.css",
            "/healthz",
        ] {
            assert!(owns(path), "{path}");
        }
        for path in [
            "/dashboard/secret.txt",
            "/v1/usage/other",
            "/v1/usage_x",
            "/v1/chat/dashboard",
            "/v1/chat/completions",
        ] {
            assert!(!owns(path), "{path}");
        }
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
