//! The AWS SDK's HTTP client: reqwest, the client the providers and the embedder use.
//!
//! The SDK's own client (aws-smithy-http-client) is hyper with HTTP/2 and a second TLS
//! connector; beside reqwest that put two more monomorphized copies of hyper's client and h2
//! into every bootstrap. DynamoDB, Secrets Manager and CloudWatch speak HTTP/1.1, so one
//! reqwest client (HTTP/1.1, rustls on ring, see [`tls`](super::tls)) carries them all.
//!
//! The SDK keeps doing what it does above the connector: signing, retries, operation and
//! attempt timeouts. The connector maps reqwest's failures to the SDK's classes (timeout, I/O,
//! other), which decide what the SDK retries, and applies the connect and read timeouts the SDK
//! configuration asks for.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

/// Makes the reqwest builder each connector starts from (TLS roots, provider).
type MakeBuilder = Arc<dyn Fn() -> reqwest::ClientBuilder + Send + Sync>;
/// The SDK's connect and read timeouts, which a reqwest client fixes when it is built.
type Timeouts = (Option<Duration>, Option<Duration>);

/// An SDK [`HttpClient`] over reqwest clients from `make`: one client per distinct pair of
/// connect and read timeouts the SDK asks for (in practice one per process).
pub fn http_client(
    make: impl Fn() -> reqwest::ClientBuilder + Send + Sync + 'static,
) -> SharedHttpClient {
    SharedHttpClient::new(ReqwestHttpClient {
        make: Arc::new(make),
        connectors: Arc::default(),
    })
}

#[derive(Clone)]
struct ReqwestHttpClient {
    make: MakeBuilder,
    connectors: Arc<Mutex<HashMap<Timeouts, SharedHttpConnector>>>,
}

impl fmt::Debug for ReqwestHttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestHttpClient").finish_non_exhaustive()
    }
}

impl HttpClient for ReqwestHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let key = (settings.connect_timeout(), settings.read_timeout());
        let mut connectors = self.connectors.lock().unwrap_or_else(|e| e.into_inner());
        connectors
            .entry(key)
            .or_insert_with(|| {
                let mut builder = (self.make)()
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")));
                if let Some(timeout) = key.0 {
                    builder = builder.connect_timeout(timeout);
                }
                if let Some(timeout) = key.1 {
                    builder = builder.read_timeout(timeout);
                }
                SharedHttpConnector::new(ReqwestConnector {
                    client: builder.build().map_err(Arc::new),
                })
            })
            .clone()
    }
}

#[derive(Debug)]
struct ReqwestConnector {
    /// A client that failed to build fails every call with its error (rather than a panic).
    client: Result<reqwest::Client, Arc<reqwest::Error>>,
}

impl HttpConnector for ReqwestConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(err) => {
                let err = ConnectorError::other(err.to_string().into(), None);
                return HttpConnectorFuture::ready(Err(err));
            }
        };
        HttpConnectorFuture::new(async move {
            let request = to_reqwest(request)?;
            let response = client.execute(request).await.map_err(classify)?;
            from_reqwest(response)
        })
    }
}

fn to_reqwest(request: HttpRequest) -> Result<reqwest::Request, ConnectorError> {
    let request = request
        .try_into_http1x()
        .map_err(|err| ConnectorError::other(err.into(), None))?;
    let (parts, body) = request.into_parts();
    // SDK request bodies for these services are in memory; a streaming one is passed through.
    let body = match body.bytes() {
        Some(bytes) => reqwest::Body::from(bytes.to_vec()),
        None => reqwest::Body::wrap(body),
    };
    reqwest::Request::try_from(http::Request::from_parts(parts, body))
        .map_err(|err| ConnectorError::other(err.into(), None))
}

fn from_reqwest(response: reqwest::Response) -> Result<HttpResponse, ConnectorError> {
    let response: http::Response<reqwest::Body> = response.into();
    let (parts, body) = response.into_parts();
    HttpResponse::try_from(http::Response::from_parts(
        parts,
        SdkBody::from_body_1_x(body),
    ))
    .map_err(|err| ConnectorError::other(err.into(), None))
}

/// The SDK retries timeouts and I/O errors (connection refused or reset, a broken body), not
/// `other`.
fn classify(err: reqwest::Error) -> ConnectorError {
    if err.is_timeout() {
        ConnectorError::timeout(err.into())
    } else if err.is_connect() || err.is_request() || err.is_body() {
        ConnectorError::io(err.into())
    } else {
        ConnectorError::other(err.into(), None)
    }
}
