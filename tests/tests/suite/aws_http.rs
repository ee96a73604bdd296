//! The AWS SDK's requests through `tollgate::adapters::aws_http` (reqwest) reach the wire as the
//! SDK signed them. moto does not check SigV4 signatures, so the suites that run against it
//! cannot show this: here a local server captures the request and the signature is computed
//! again, with aws-sigv4, from what arrived. A header the connector added to the signed set,
//! dropped or changed, or a changed body or path, would give another signature.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::IntoResponse;
use chrono::NaiveDateTime;
use http::{HeaderMap, Method, Uri};
use tollgate::adapters::tls;

/// What the server received.
#[derive(Clone)]
struct Received {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Received>>>;

async fn record(
    State(log): State<Log>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    log.lock().unwrap().push(Received {
        method,
        uri,
        headers,
        body,
    });
    (
        [("content-type", "application/x-amz-json-1.0")],
        r#"{"TableNames":[]}"#,
    )
}

/// `Credential=.../<date>/<region>/<service>/aws4_request, SignedHeaders=a;b, Signature=hex`.
fn authorization_field<'a>(authorization: &'a str, name: &str) -> &'a str {
    authorization
        .split([' ', ','])
        .find_map(|part| part.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {authorization}"))
}

#[tokio::test]
async fn sdk_requests_reach_the_wire_exactly_as_signed() {
    let log = Log::default();
    let app = Router::new().fallback(record).with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                "AKIDTEST",
                "secret-test",
                None,
                None,
                "test",
            ))
            .endpoint_url(format!("http://{addr}"))
            .http_client(tls::aws_http_client())
            .build(),
    );

    client.list_tables().send().await.unwrap();
    server.abort();

    let received = log
        .lock()
        .unwrap()
        .pop()
        .expect("the server got the request");
    let header = |name: &str| {
        received
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let authorization = header("authorization");
    let signed: Vec<&str> = authorization_field(&authorization, "SignedHeaders")
        .split(';')
        .collect();
    assert!(
        signed.contains(&"host") && signed.contains(&"x-amz-target"),
        "{signed:?}"
    );
    let values: Vec<(String, String)> = signed
        .iter()
        .map(|name| ((*name).to_owned(), header(name)))
        .collect();
    let at = NaiveDateTime::parse_from_str(&header("x-amz-date"), "%Y%m%dT%H%M%SZ")
        .unwrap()
        .and_utc();
    let identity: Identity = Credentials::new("AKIDTEST", "secret-test", None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("dynamodb")
        .time(SystemTime::from(at))
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let url = format!("http://{addr}{}", received.uri);
    let request = SignableRequest::new(
        received.method.as_str(),
        url,
        values.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        SignableBody::Bytes(&received.body),
    )
    .unwrap();

    let (_, signature) = sign(request, &params).unwrap().into_parts();

    assert_eq!(
        signature,
        authorization_field(&authorization, "Signature"),
        "the request on the wire is not the one the SDK signed"
    );
}
