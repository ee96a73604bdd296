//! Route tables: each function declares the routes it serves once, as a [`RouteTable`] on its
//! state, and everything that serves requests (the Lambda `main`, `tollgate serve`, the test
//! harness) goes through [`handle`] and [`dispatch`] here. No dispatch logic lives anywhere
//! else.
//!
//! A route is a method and a path pattern. Patterns are matched against the path from its
//! first `/v1/`, `/healthz` or `/dashboard` on, so any API Gateway stage or base path before it
//! is ignored. A pattern segment is a literal, `{name}` (one non-empty segment) or `{*name}`
//! (the rest of the segments there, slashes included, possibly empty: the handler judges it; at
//! most one per pattern). A path some route matches with
//! another method is a 405; a path no route matches is a 404.
//!
//! A [`Handler::Tenant`] route is served for a caller only: the caller (tenant and
//! configuration, enabled, with a key live now that has the route's scope) is resolved here,
//! once, by the table's [`Callers`], and a request without one gets the table's error
//! response (401, or 403 naming the scope the key lacks). [`Handler::Open`] routes (health, the
//! dashboard's files, and the metered routes that record their own refusals) get the bare
//! request.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::{Method, Request, Response};

use crate::domain::ids::RequestId;
use crate::domain::keys::KeyScope;
use crate::error::GatewayError;
use crate::http::{Body, bearer_token};
use crate::service::caller::{Caller, Callers};

/// What a handler returns: its response, later.
pub type Reply<'a> = Pin<Box<dyn Future<Output = Response<Body>> + Send + 'a>>;

/// A route's handler.
pub enum Handler<S: 'static> {
    /// Gets the function's state, the request, and the pattern's captures.
    Open(for<'a> fn(&'a S, Request<Bytes>, Params) -> Reply<'a>),
    /// Gets the request's caller too; never called without one. The key must have the scope
    /// (`None`: any live key will do).
    Tenant(
        Option<KeyScope>,
        for<'a> fn(&'a S, Caller, Request<Bytes>, Params) -> Reply<'a>,
    ),
}

/// One route of a function.
pub struct Route<S: 'static> {
    /// The HTTP method it answers.
    pub method: Method,
    /// Its pattern (see the module docs).
    pub path: &'static str,
    /// What serves it.
    pub handler: Handler<S>,
}

/// A function's routes, declared once on its state type.
pub trait RouteTable: Sized + Send + Sync + 'static {
    /// Every route the function serves.
    const ROUTES: &'static [Route<Self>];

    /// Resolves the callers of [`Handler::Tenant`] routes.
    fn callers(&self) -> &Callers;

    /// Renders an error response (404, 405, and the handlers' own errors where they use it).
    fn error(err: &GatewayError, request_id: &RequestId) -> Response<Body> {
        crate::http::error(err, request_id)
    }
}

/// The values a pattern's `{name}` segments captured, by name.
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(&'static str, String)>);

impl Params {
    /// The captured value of `{name}` (still percent-encoded); empty if the pattern has none.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// The part of `path` routes are matched against: from its first `/v1/` on, `/healthz` for any
/// path ending so, from its last `/dashboard` on; the path itself otherwise.
pub fn route_path(path: &str) -> &str {
    if path.ends_with("/healthz") {
        return "/healthz";
    }
    if let Some(at) = path.find("/v1/") {
        // The admin API's paths keep their `/admin` (and only when it is what precedes the
        // first `/v1/`: a tenant path cannot turn into an admin one).
        if path[..at].ends_with("/admin") {
            return &path[at - "/admin".len()..];
        }
        return &path[at..];
    }
    path.rfind("/dashboard").map_or(path, |at| &path[at..])
}

/// Matches `path` (already a [`route_path`]) against `pattern`.
fn matches(pattern: &'static str, path: &str) -> Option<Params> {
    // Most routes are told apart by their literal start, with no allocation; a pattern that
    // is all literal is an equality test.
    let literal = pattern.find('{').map_or(pattern, |at| &pattern[..at]);
    if literal.len() == pattern.len() {
        return (path == pattern).then(Params::default);
    }
    if !path.starts_with(literal) {
        return None;
    }
    let pat: Vec<&'static str> = pattern.split('/').collect();
    let got: Vec<&str> = path.split('/').collect();
    let capture = |name: &'static str, value: String| (name, value);
    let mut params = Vec::new();
    match pat.iter().position(|s| s.starts_with("{*")) {
        None => {
            if pat.len() != got.len() {
                return None;
            }
            for (p, g) in pat.iter().zip(&got) {
                segment(p, g, &mut params)?;
            }
        }
        Some(star) => {
            let after = pat.len() - star - 1;
            if got.len() < pat.len() {
                return None;
            }
            for (p, g) in pat[..star].iter().zip(&got[..star]) {
                segment(p, g, &mut params)?;
            }
            for (p, g) in pat[star + 1..].iter().zip(&got[got.len() - after..]) {
                segment(p, g, &mut params)?;
            }
            let rest = got[star..got.len() - after].join("/");
            let name = &pat[star][2..pat[star].len() - 1];
            params.push(capture(name, rest));
        }
    }
    Some(Params(params))
}

/// One pattern segment against one path segment: a literal must be equal, `{name}` takes any
/// non-empty segment.
fn segment(
    pattern: &'static str,
    got: &str,
    params: &mut Vec<(&'static str, String)>,
) -> Option<()> {
    match pattern.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
        Some(name) if !got.is_empty() => {
            params.push((name, got.to_owned()));
            Some(())
        }
        Some(_) => None,
        None => (pattern == got).then_some(()),
    }
}

/// Whether any of `S`'s routes matches `path`, whatever the method.
pub fn owns<S: RouteTable>(path: &str) -> bool {
    let path = route_path(path);
    S::ROUTES.iter().any(|r| matches(r.path, path).is_some())
}

/// Serves `req` with the route of `S` it matches: 405 if only another method's route matches
/// its path, 404 if none does.
pub async fn handle<S: RouteTable>(state: &S, req: Request<Bytes>) -> Response<Body> {
    let path = route_path(req.uri().path()).to_owned();
    let mut path_known = false;
    for route in S::ROUTES {
        if let Some(params) = matches(route.path, &path) {
            if route.method == req.method() {
                return match route.handler {
                    Handler::Open(handler) => handler(state, req, params).await,
                    Handler::Tenant(scope, handler) => {
                        match state
                            .callers()
                            .resolve(bearer_token(req.headers()), scope)
                            .await
                        {
                            Ok(caller) => handler(state, caller, req, params).await,
                            Err(refused) => {
                                S::error(&refused.error, &crate::lambda::request_id(&req))
                            }
                        }
                    }
                };
            }
            path_known = true;
        }
    }
    let request_id = crate::lambda::request_id(&req);
    let method = req.method().to_string();
    let err = if path_known {
        GatewayError::MethodNotAllowed { method, path }
    } else {
        GatewayError::RouteNotFound { method, path }
    };
    S::error(&err, &request_id)
}

/// `GET /healthz`, the same in every function that declares it.
pub async fn healthz(req: Request<Bytes>) -> Response<Body> {
    crate::http::json(
        http::StatusCode::OK,
        &serde_json::json!({"status": "ok"}),
        &crate::lambda::request_id(&req),
    )
}

/// A function behind a shared listener: what [`dispatch`] needs of it.
pub trait Mounted: Send + Sync {
    /// Whether one of the function's routes matches `path` (the raw request path), whatever
    /// the method.
    fn owns(&self, path: &str) -> bool;
    /// Serves `req` as [`handle`] does.
    fn serve<'a>(&'a self, req: Request<Bytes>) -> Reply<'a>;
}

impl<S: RouteTable> Mounted for S {
    fn owns(&self, path: &str) -> bool {
        owns::<S>(path)
    }

    fn serve<'a>(&'a self, req: Request<Bytes>) -> Reply<'a> {
        Box::pin(handle(self, req))
    }
}

/// Routes `req` to the first of `functions` that owns its path, as API Gateway routes each
/// path to its function (`tollgate serve`, the test harness); the last one answers a path
/// none owns (with its 404).
pub async fn dispatch(functions: &[&dyn Mounted], req: Request<Bytes>) -> Response<Body> {
    let path = req.uri().path();
    match functions.iter().find(|f| f.owns(path)).or(functions.last()) {
        Some(function) => function.serve(req).await,
        None => crate::http::error(
            &GatewayError::RouteNotFound {
                method: req.method().to_string(),
                path: route_path(path).to_owned(),
            },
            &crate::lambda::request_id(&req),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_prefixes_are_ignored() {
        assert_eq!(
            route_path("/prod/v1/chat/completions"),
            "/v1/chat/completions"
        );
        assert_eq!(route_path("/v1/models"), "/v1/models");
        assert_eq!(route_path("/prod/healthz"), "/healthz");
        assert_eq!(route_path("/prod/dashboard/app.js"), "/dashboard/app.js");
        assert_eq!(route_path("/other"), "/other");
        assert_eq!(route_path("/prod/admin/v1/tenants"), "/admin/v1/tenants");
        assert_eq!(route_path("/admin/v1/keys/x"), "/admin/v1/keys/x");
        assert_eq!(
            route_path("/prod/v1/documents/admin/v1/tenants"),
            "/v1/documents/admin/v1/tenants"
        );
    }

    #[test]
    fn literals_params_and_one_wildcard() {
        assert!(matches("/v1/models", "/v1/models").is_some());
        assert!(matches("/v1/models", "/v1/models/x").is_none());
        let p = matches("/v1/documents/{id}", "/v1/documents/faq").unwrap();
        assert_eq!(p.get("id"), "faq");
        assert!(matches("/v1/documents/{id}", "/v1/documents/").is_none());
        let p = matches("/v1/users/{*user}/profile", "/v1/users/a/b/profile").unwrap();
        assert_eq!(p.get("user"), "a/b");
        assert!(matches("/v1/users/{*user}/profile", "/v1/users/profile").is_none());
        let p = matches("/v1/users/{*user}/profile", "/v1/users//profile").unwrap();
        assert_eq!(p.get("user"), "");
        let p = matches("/v1/models/{*id}", "/v1/models/ft:x/y").unwrap();
        assert_eq!(p.get("id"), "ft:x/y");
    }
}
