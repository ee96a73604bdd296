//! What the HTTP provider adapters share: their settings, one reqwest client each, error
//! classification, timeouts, and turning an SSE body into an [`EventStream`].
//!
//! Each adapter only knows its own wire format: how to build a request body, parse a reply,
//! and translate stream events ([`StreamTranslator`]).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::api_key::ApiKey;
use super::key_pool::{self, KeyPool};
use super::sigv4::AwsSigner;
use super::sse::{SseEvent, SseParser};
use crate::domain::tenant::ProviderKind;
use crate::ports::provider::{EventStream, ProviderError, ProviderErrorKind, StreamEvent};

/// Connection and behaviour settings for one provider.
///
/// Build with [`ProviderSettings::new`] and override fields with struct update syntax:
/// `ProviderSettings { request_timeout: Duration::from_secs(30), ..ProviderSettings::new(url, key) }`.
#[derive(Clone)]
pub struct ProviderSettings {
    /// OpenAI: up to and including `/v1` (`https://api.openai.com/v1`, the SDK convention, so an
    /// `OPENAI_BASE_URL` works as users expect). Anthropic: the host only
    /// (`https://api.anthropic.com`).
    pub base_url: String,
    /// Fixed, or read from Secrets Manager on first use (see [`ApiKey`]).
    pub api_key: ApiKey,
    /// Time allowed for a provider to start answering: the whole limit for a streamed call
    /// to send its headers, and the base of a buffered call's limit, which also allows
    /// `max_tokens / output_tokens_per_second` for the reply (see [`CallLimits`]).
    pub request_timeout: Duration,
    /// The slowest output rate a buffered call is given time for: with 20 tokens/s, a reply
    /// capped at 1,024 tokens gets 51 s on top of `request_timeout`.
    pub output_tokens_per_second: u32,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Longest gap allowed between two chunks of a stream.
    pub stream_idle_timeout: Duration,
    /// Anthropic: a tenant system prompt of at least this many tokens (estimated) is marked
    /// for prompt caching. Shorter prompts are below Anthropic's cacheable minimum anyway.
    pub cache_min_tokens: usize,
    /// Anthropic requires `max_tokens`; this is sent when the client set none.
    pub default_max_tokens: u32,
}

impl ProviderSettings {
    /// Settings for `base_url` with `api_key` and the default timeouts and limits.
    pub fn new(base_url: impl Into<String>, api_key: impl Into<ApiKey>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: api_key.into(),
            request_timeout: Duration::from_secs(60),
            output_tokens_per_second: 20,
            connect_timeout: Duration::from_secs(5),
            stream_idle_timeout: Duration::from_secs(30),
            cache_min_tokens: 1024,
            default_max_tokens: 4096,
        }
    }
}

impl fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key)
            .field("request_timeout", &self.request_timeout)
            .field("output_tokens_per_second", &self.output_tokens_per_second)
            .field("connect_timeout", &self.connect_timeout)
            .field("stream_idle_timeout", &self.stream_idle_timeout)
            .field("cache_min_tokens", &self.cache_min_tokens)
            .field("default_max_tokens", &self.default_max_tokens)
            .finish()
    }
}

/// Why a provider adapter could not be built (at cold start, from configuration).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderSetupError {
    /// The base URL is not an http(s) URL.
    #[error("the {provider} base URL `{url}` is not an http(s) URL")]
    InvalidBaseUrl {
        /// The provider it was for.
        provider: ProviderKind,
        /// The URL as configured.
        url: String,
    },
    /// The API key is empty or not a valid HTTP header value.
    #[error("the {provider} API key is empty or contains characters not allowed in an HTTP header")]
    InvalidApiKey {
        /// The provider it was for.
        provider: ProviderKind,
    },
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client for {provider}: {detail}")]
    Client {
        /// The provider it was for.
        provider: ProviderKind,
        /// The client builder's error.
        detail: String,
    },
}

/// How an adapter presents its key: `header: {prefix}{key}`.
#[derive(Debug, Clone)]
pub(crate) struct Auth {
    pub(crate) header: HeaderName,
    pub(crate) prefix: &'static str,
}

impl Auth {
    pub(crate) fn bearer() -> Self {
        Self {
            header: reqwest::header::AUTHORIZATION,
            prefix: "Bearer ",
        }
    }

    pub(crate) fn header(name: &'static str) -> Self {
        Self {
            header: HeaderName::from_static(name),
            prefix: "",
        }
    }
}

/// A header value carrying the API key, marked sensitive so reqwest never prints it.
fn secret_header(provider: ProviderKind, value: &str) -> Result<HeaderValue, ProviderSetupError> {
    if value.trim().is_empty() {
        return Err(ProviderSetupError::InvalidApiKey { provider });
    }
    let mut header =
        HeaderValue::from_str(value).map_err(|_| ProviderSetupError::InvalidApiKey { provider })?;
    header.set_sensitive(true);
    Ok(header)
}

/// The credential header of each key the configured value lists (`key_pool::keys`).
fn auth_values(
    provider: ProviderKind,
    auth: &Auth,
    value: &str,
) -> Result<Vec<HeaderValue>, ProviderSetupError> {
    let values = key_pool::keys(value)
        .map(|key| secret_header(provider, &format!("{}{key}", auth.prefix)))
        .collect::<Result<Vec<_>, _>>()?;
    if values.is_empty() {
        return Err(ProviderSetupError::InvalidApiKey { provider });
    }
    Ok(values)
}

/// What an adapter's stream translator wants after an event.
pub(crate) enum Flow {
    Continue,
    /// The provider said the stream is complete; stop reading.
    Done,
}

/// How a streamed body's bytes become events: SSE for OpenAI and Anthropic, AWS's binary
/// event stream for Bedrock.
pub(crate) trait Framing: Send + 'static {
    type Event;
    fn start() -> Self;
    /// The events `chunk` completed; an error when the body cannot be a valid stream.
    fn decode(&mut self, chunk: &[u8]) -> Result<Vec<Self::Event>, String>;
}

impl Framing for SseParser {
    type Event = SseEvent;

    fn start() -> Self {
        SseParser::new()
    }

    fn decode(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, String> {
        Ok(self.push(chunk))
    }
}

impl Framing for super::event_stream::Decoder {
    type Event = super::event_stream::Message;

    fn start() -> Self {
        Self::default()
    }

    fn decode(&mut self, chunk: &[u8]) -> Result<Vec<Self::Event>, String> {
        self.push(chunk).map_err(|e| e.to_string())
    }
}

/// Turns a provider's stream events into [`StreamEvent`]s.
pub(crate) trait StreamTranslator: Send + 'static {
    /// How the body is framed into events.
    type Framing: Framing;

    fn on_event(
        &mut self,
        event: <Self::Framing as Framing>::Event,
        out: &mut Vec<StreamEvent>,
    ) -> Result<Flow, ProviderError>;

    /// The body ended before [`Flow::Done`]. Emit what is owed, or say why this is an error.
    fn on_end(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError>;
}

/// Makes [`ProviderError`]s whose messages are scrubbed of the API key, whatever the provider
/// echoed back. Cloned into each stream, which cannot borrow its [`HttpCore`].
#[derive(Clone)]
struct ErrorMaker {
    provider: ProviderKind,
    api_key: ApiKey,
}

impl ErrorMaker {
    fn make(&self, kind: ProviderErrorKind, message: String) -> ProviderError {
        let message = match self.api_key.current() {
            // Every key of a pool, and the whole value, in case the provider echoed either.
            Some(key) => {
                key_pool::keys(key.expose_secret()).fold(scrub(message, key.expose_secret()), scrub)
            }
            None => message,
        };
        ProviderError::new(self.provider, kind, message)
    }
}

fn scrub(message: String, key: impl AsRef<str>) -> String {
    let key = key.as_ref();
    // A very short key could match ordinary text; real keys are far longer.
    if key.len() >= 8 && message.contains(key) {
        message.replace(key, "[REDACTED]")
    } else {
        message
    }
}

/// How long one call may take: what the request asks for (its output cap) and the deadline it
/// must end by; and the pool key it must use, if the limiter pinned one.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CallLimits {
    pub(crate) max_tokens: Option<u32>,
    pub(crate) deadline: Option<tokio::time::Instant>,
    pub(crate) pool_key: Option<u16>,
}

impl CallLimits {
    pub(crate) fn of(request: &crate::ports::provider::ProviderRequest) -> Self {
        Self {
            max_tokens: request.max_tokens,
            deadline: request.deadline,
            pool_key: request.pool_key,
        }
    }

    /// No output cap or deadline, on `pool_key` (embeddings).
    pub(crate) fn on_key(pool_key: Option<u16>) -> Self {
        Self {
            pool_key,
            ..Self::default()
        }
    }
}

/// The part of a provider adapter that speaks HTTP: one client, one endpoint.
pub(crate) struct HttpCore {
    provider: ProviderKind,
    client: reqwest::Client,
    /// Sent with every request (API version headers and the like).
    headers: HeaderMap,
    endpoint: Url,
    auth: Auth,
    /// The credential header of each key, built once when the keys are fixed; a managed
    /// value is resolved (from its cache, usually) on every request.
    static_auth: Option<Vec<HeaderValue>>,
    /// Which of several keys goes next, and which rest after a 429 (`key_pool`).
    pool: KeyPool,
    /// Set for an AWS API: each request is signed with SigV4 instead of carrying a key.
    signer: Option<AwsSigner>,
    errors: ErrorMaker,
    request_timeout: Duration,
    output_tokens_per_second: u32,
    stream_idle_timeout: Duration,
}

impl fmt::Debug for HttpCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCore")
            .field("provider", &self.provider)
            .field("endpoint", &self.endpoint.as_str())
            .field("request_timeout", &self.request_timeout)
            .field("stream_idle_timeout", &self.stream_idle_timeout)
            .finish_non_exhaustive()
    }
}

/// One HTTP client per connect timeout for the whole process, shared by every provider and
/// embedder: building one loads the system's root certificates (about 4 ms each at cold
/// start), and one connection pool serves every host anyway. A clone is a handle to the same
/// client.
///
/// No client-wide `timeout`: reqwest applies it to the whole body, which would cut long
/// streams; buffered calls get a per-call limit and streams an idle limit instead. Redirects are
/// refused so a key never follows one to another host.
fn shared_client(connect_timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    static CLIENTS: Mutex<Vec<(Duration, reqwest::Client)>> = Mutex::new(Vec::new());
    let mut clients = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, client)) = clients.iter().find(|(t, _)| *t == connect_timeout) {
        return Ok(client.clone());
    }
    let client = super::tls::reqwest_builder()
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
        .build()?;
    clients.push((connect_timeout, client.clone()));
    Ok(client)
}

impl HttpCore {
    /// `path` is appended to the base URL (whose trailing `/` is ignored). `headers` are sent
    /// with every request, and the key as `auth` says.
    pub(crate) fn new(
        provider: ProviderKind,
        settings: &ProviderSettings,
        path: &str,
        auth: Auth,
        headers: HeaderMap,
    ) -> Result<Self, ProviderSetupError> {
        let invalid_url = || ProviderSetupError::InvalidBaseUrl {
            provider,
            url: settings.base_url.clone(),
        };
        let endpoint = Url::parse(&format!(
            "{}{path}",
            settings.base_url.trim_end_matches('/')
        ))
        .map_err(|_| invalid_url())?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.cannot_be_a_base() {
            return Err(invalid_url());
        }
        let static_auth = match &settings.api_key {
            ApiKey::Static(key) => Some(auth_values(provider, &auth, key.expose_secret())?),
            ApiKey::Managed(_) => None,
        };
        Self::with_auth(provider, settings, endpoint, auth, headers, static_auth)
    }

    fn with_auth(
        provider: ProviderKind,
        settings: &ProviderSettings,
        endpoint: Url,
        auth: Auth,
        headers: HeaderMap,
        static_auth: Option<Vec<HeaderValue>>,
    ) -> Result<Self, ProviderSetupError> {
        let client =
            shared_client(settings.connect_timeout).map_err(|e| ProviderSetupError::Client {
                provider,
                detail: e.without_url().to_string(),
            })?;
        Ok(Self {
            provider,
            client,
            headers,
            endpoint,
            auth,
            static_auth,
            pool: KeyPool::default(),
            signer: None,
            errors: ErrorMaker {
                provider,
                api_key: settings.api_key.clone(),
            },
            request_timeout: settings.request_timeout,
            output_tokens_per_second: settings.output_tokens_per_second.max(1),
            stream_idle_timeout: settings.stream_idle_timeout,
        })
    }

    /// A core for an AWS API at `settings.base_url`: every request is signed by `signer`
    /// (`settings.api_key` is not used) and sent to the URL its caller gives
    /// ([`HttpCore::url`]).
    pub(crate) fn signed(
        provider: ProviderKind,
        settings: &ProviderSettings,
        signer: AwsSigner,
    ) -> Result<Self, ProviderSetupError> {
        let settings = ProviderSettings {
            api_key: ApiKey::Static(String::new().into()),
            ..settings.clone()
        };
        let endpoint = Url::parse(&settings.base_url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && !url.cannot_be_a_base())
            .ok_or_else(|| ProviderSetupError::InvalidBaseUrl {
                provider,
                url: settings.base_url.clone(),
            })?;
        let mut core = Self::with_auth(
            provider,
            &settings,
            endpoint,
            Auth::bearer(),
            HeaderMap::new(),
            Some(Vec::new()),
        )?;
        core.signer = Some(signer);
        Ok(core)
    }

    /// `path` (already percent-encoded) appended to the base URL.
    pub(crate) fn url(&self, path: &str) -> Url {
        let mut url = self.endpoint.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}{path}"));
        url
    }

    /// An error whose message is scrubbed of the API key.
    pub(crate) fn error(
        &self,
        kind: ProviderErrorKind,
        message: impl Into<String>,
    ) -> ProviderError {
        self.errors.make(kind, message.into())
    }

    /// How long a buffered call capped at `max_tokens` may take: the request timeout plus the
    /// reply at the slowest expected rate. A call with no cap gets the request timeout alone.
    pub(crate) fn buffered_timeout(&self, max_tokens: Option<u32>) -> Duration {
        let reply = max_tokens.map_or(Duration::ZERO, |cap| {
            Duration::from_secs_f64(f64::from(cap) / f64::from(self.output_tokens_per_second))
        });
        self.request_timeout.saturating_add(reply)
    }

    /// The instant a call must be over by: `limit` from now, or the call's deadline if sooner.
    /// A deadline already past refuses the call before anything is sent.
    fn end_by(
        &self,
        limit: Duration,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<tokio::time::Instant, ProviderError> {
        let now = tokio::time::Instant::now();
        if deadline.is_some_and(|d| d <= now) {
            return Err(self.error(
                ProviderErrorKind::Timeout,
                "the call's deadline passed before it was sent",
            ));
        }
        let by = now + limit;
        Ok(deadline.map_or(by, |d| d.min(by)))
    }

    /// POSTs `body` and returns the successful response's body. The whole exchange, body
    /// included, must finish within [`HttpCore::buffered_timeout`] and the call's deadline.
    /// Once that time runs out the request has been sent: the error says so (`started`), so
    /// it is not sent again and is metered with an estimate.
    pub(crate) async fn post_json(
        &self,
        body: &impl Serialize,
        limits: CallLimits,
    ) -> Result<Bytes, ProviderError> {
        self.post_json_to(&self.endpoint, body, limits).await
    }

    /// [`HttpCore::post_json`] to `url` instead of the configured endpoint.
    pub(crate) async fn post_json_to(
        &self,
        url: &Url,
        body: &impl Serialize,
        limits: CallLimits,
    ) -> Result<Bytes, ProviderError> {
        let limit = self.buffered_timeout(limits.max_tokens);
        let end_by = self.end_by(limit, limits.deadline)?;
        let exchange = async {
            let response = self.send(url, body, limits.pool_key).await?;
            response
                .bytes()
                .await
                .map_err(|e| self.transport_error(e).after_send())
        };
        tokio::time::timeout_at(end_by, exchange)
            .await
            .map_err(|_| self.timed_out(limit, limits.deadline, end_by))?
    }

    /// POSTs `body` and streams the reply through `translator`. The response must start
    /// within the request timeout; then each chunk must follow the previous one within the
    /// idle timeout, and the last one arrive before the call's deadline.
    pub(crate) async fn post_stream<T: StreamTranslator>(
        &self,
        body: &impl Serialize,
        translator: T,
        limits: CallLimits,
    ) -> Result<EventStream, ProviderError> {
        self.post_stream_to(&self.endpoint, body, translator, limits)
            .await
    }

    /// [`HttpCore::post_stream`] to `url` instead of the configured endpoint.
    pub(crate) async fn post_stream_to<T: StreamTranslator>(
        &self,
        url: &Url,
        body: &impl Serialize,
        translator: T,
        limits: CallLimits,
    ) -> Result<EventStream, ProviderError> {
        let end_by = self.end_by(self.request_timeout, limits.deadline)?;
        let response = tokio::time::timeout_at(end_by, self.send(url, body, limits.pool_key))
            .await
            .map_err(|_| self.timed_out(self.request_timeout, limits.deadline, end_by))??;
        let state = StreamState {
            body: Box::pin(response.bytes_stream()),
            framing: T::Framing::start(),
            translator,
            pending: VecDeque::new(),
            finished: false,
            idle_timeout: self.stream_idle_timeout,
            deadline: limits.deadline,
            errors: self.errors.clone(),
        };
        Ok(Box::pin(futures_util::stream::unfold(
            state,
            StreamState::next,
        )))
    }

    /// The credential header for this request, with its key's position among `n` keys: the
    /// `pinned` one, or the pool's pick (not one of the positions this call already `tried`).
    async fn auth_value(
        &self,
        tried: &[usize],
        pinned: Option<u16>,
    ) -> Result<(HeaderValue, usize, usize), ProviderError> {
        let credentials = |message: String| {
            ProviderError::new(self.provider, ProviderErrorKind::Credentials, message)
        };
        let pick = |n: usize| match pinned {
            None => Ok(self.pool.pick(n, tried)),
            Some(key) if usize::from(key) < n => Ok(usize::from(key)),
            Some(key) => Err(credentials(format!(
                "an upstream quota names {} key {key}, but the {} key pool has {n} key(s); \
                 fix the quota (`tollgate quota`) or the keys",
                self.provider, self.provider
            ))),
        };
        if let Some(values) = &self.static_auth {
            let at = pick(values.len())?;
            return Ok((values[at].clone(), at, values.len()));
        }
        let key = self.errors.api_key.resolve().await.map_err(|e| {
            credentials(format!("the {} API key is unavailable: {e}", self.provider))
        })?;
        let keys: Vec<&str> = key_pool::keys(key.expose_secret()).collect();
        if keys.is_empty() {
            return Err(credentials(format!(
                "the {} API key is empty",
                self.provider
            )));
        }
        let at = pick(keys.len())?;
        let key = keys[at];
        let value = secret_header(self.provider, &format!("{}{key}", self.auth.prefix))
            .map_err(|e| credentials(e.to_string()))?;
        Ok((value, at, keys.len()))
    }

    /// Sends the request; a non-2xx answer becomes a classified error. With several keys, a
    /// 429 (or a refused key, 401/403) rests the key that got it and the request goes out
    /// again at once on an awake one (each key at most once per call; `key_pool`), unless
    /// the call is `pinned` to a key: its reservation holds that key's quota and no other, so
    /// the error is returned (the retry policy and the route's fallbacks take it from there).
    async fn send(
        &self,
        url: &Url,
        body: &impl Serialize,
        pinned: Option<u16>,
    ) -> Result<reqwest::Response, ProviderError> {
        let body = Bytes::from(serde_json::to_vec(body).map_err(|e| {
            self.error(
                ProviderErrorKind::Rejected,
                format!("the request could not be encoded: {e}"),
            )
        })?);
        if let Some(signer) = &self.signer {
            return self.send_signed(signer, url, body).await;
        }
        let mut tried = Vec::new();
        loop {
            let (auth, key, keys) = self.auth_value(&tried, pinned).await?;
            let credential = [(self.auth.header.clone(), auth)];
            let Refusal {
                status,
                headers,
                body: body_bytes,
            } = match self.post_once(url, credential, body.clone()).await? {
                Ok(response) => return Ok(response),
                Err(refusal) => refusal,
            };
            let refused = matches!(status.as_u16(), 401 | 403);
            if keys > 1 && (status == StatusCode::TOO_MANY_REQUESTS || refused) {
                let rest = if refused {
                    // Read the secret again on the next call, in case it was rotated.
                    self.errors.api_key.invalidate();
                    Some(key_pool::MAX_REST)
                } else {
                    retry_after(&headers)
                };
                self.pool.rest(key, keys, rest);
                tried.push(key);
                if pinned.is_none() && tried.len() < keys && self.pool.any_awake(keys, &tried) {
                    tracing::info!(provider = %self.provider, key, keys, status = status.as_u16(), "provider key rate limited or refused; resting it and using the next");
                    continue;
                }
            }
            return Err(self.status_error(status, &headers, &body_bytes));
        }
    }

    /// Sends a request signed with SigV4 (one attempt: an AWS role has one identity).
    async fn send_signed(
        &self,
        signer: &AwsSigner,
        url: &Url,
        body: Bytes,
    ) -> Result<reqwest::Response, ProviderError> {
        let signing = signer
            .sign("POST", url.as_str(), &[("content-type", JSON)], &body)
            .await
            .map_err(|message| self.error(ProviderErrorKind::Credentials, message))?;
        self.post_once(url, signing, body).await?.map_err(|r| {
            if matches!(r.status.as_u16(), 401 | 403) {
                // Expired or rotated credentials: ask the provider again on the next call.
                signer.invalidate();
            }
            self.status_error(r.status, &r.headers, &r.body)
        })
    }

    /// One POST of `body` with `credentials` (a key's header, or the signing headers): the
    /// 2xx response, or the refusal to classify.
    async fn post_once(
        &self,
        url: &Url,
        credentials: impl IntoIterator<Item = (HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> Result<Result<reqwest::Response, Refusal>, ProviderError> {
        let mut request = self
            .client
            .post(url.clone())
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, JSON);
        for (name, value) in credentials {
            request = request.header(name, value);
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(Ok(response));
        }
        let headers = response.headers().clone();
        // The error body is diagnostic only: if it cannot be read, classify on the status.
        let body = response.bytes().await.unwrap_or_default();
        Ok(Err(Refusal {
            status,
            headers,
            body,
        }))
    }

    /// The call ran out of time after the request was sent (`started`).
    fn timed_out(
        &self,
        limit: Duration,
        deadline: Option<tokio::time::Instant>,
        end_by: tokio::time::Instant,
    ) -> ProviderError {
        let message = if deadline == Some(end_by) {
            "no answer before the function's deadline".to_owned()
        } else {
            format!("no answer within {limit:?}")
        };
        self.error(ProviderErrorKind::Timeout, message).after_send()
    }

    fn transport_error(&self, err: reqwest::Error) -> ProviderError {
        transport_error(self.provider, err)
    }

    /// Classifies a non-2xx answer.
    pub(crate) fn status_error(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> ProviderError {
        let code = status.as_u16();
        let parsed = error_message(headers, body);
        // Bedrock answers an exhausted account quota with a 400: it is a rate limit, worth a
        // retry later and a fallback now, not the client's error.
        let aws_type = headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(':').next());
        if self.signer.is_some() && aws_type == Some("ServiceQuotaExceededException") {
            return self.error(
                ProviderErrorKind::RateLimited { retry_after: None },
                parsed.unwrap_or_else(|| format!("HTTP {code}")),
            );
        }
        let provider_message = || parsed.clone().unwrap_or_else(|| format!("HTTP {code}"));
        match code {
            429 => self.error(
                ProviderErrorKind::RateLimited {
                    retry_after: retry_after(headers),
                },
                provider_message(),
            ),
            // The provider's wording can quote part of the key; say only what happened. A
            // managed key is read again on the next call, in case it was rotated.
            // A signed request carries no key to quote; AWS's words say which permission or
            // model access is missing, which is what the operator needs.
            401 | 403 if self.signer.is_some() => self.error(
                ProviderErrorKind::Credentials,
                format!(
                    "AWS refused the request (HTTP {code}): {}",
                    provider_message()
                ),
            ),
            401 | 403 => {
                self.errors.api_key.invalidate();
                self.error(
                    ProviderErrorKind::Credentials,
                    format!("the provider refused the API key (HTTP {code})"),
                )
            }
            400 | 404 | 413 | 422 => self.error(ProviderErrorKind::Rejected, provider_message()),
            408 => self.error(ProviderErrorKind::Timeout, format!("HTTP {code}")),
            // Anything else, 5xx (and Anthropic's 529 "overloaded") included, is the provider's
            // problem and worth another try.
            _ => self.error(
                ProviderErrorKind::Upstream,
                match &parsed {
                    Some(message) => format!("HTTP {code}: {message}"),
                    None => format!("HTTP {code}"),
                },
            ),
        }
    }
}

const JSON: &str = "application/json";

/// A non-2xx answer, read whole.
struct Refusal {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// The provider's own words about a failed call, truncated: `error.message` (OpenAI,
/// Anthropic) or `message` (AWS), after AWS's error type (`x-amzn-errortype`) when present.
fn error_message(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct AwsError {
        #[serde(alias = "Message")]
        message: String,
    }
    let message = serde_json::from_slice::<ErrorEnvelope>(body)
        .map(|e| e.error.message)
        .or_else(|_| serde_json::from_slice::<AwsError>(body).map(|e| e.message))
        .ok()
        .filter(|m| !m.is_empty())?;
    let aws_type = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(':').next())
        .filter(|t| !t.is_empty());
    Some(match aws_type {
        // AWS's words can quote ARNs, and with them the deployment's account id: a rejection
        // is shown to the client, so the id is not.
        Some(kind) => truncate(&hide_account_ids(&format!("{kind}: {message}"))),
        None => truncate(&message),
    })
}

/// Replaces every 12-digit run (an AWS account id, as ARNs quote it) with `************`.
fn hide_account_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.len() == 12 {
            out.push_str("************");
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

/// Both providers put a human-readable message at `error.message`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorEnvelope {
    pub(crate) error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ErrorDetail {
    #[serde(default)]
    pub(crate) message: String,
    #[serde(default, rename = "type")]
    pub(crate) kind: Option<String>,
}

const MAX_MESSAGE_CHARS: usize = 500;

pub(crate) fn truncate(message: &str) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message.to_owned(),
    }
}

/// A failure to connect never reached the provider; any other transport failure may have
/// happened after the request was written, so it counts as `started`.
fn transport_error(provider: ProviderKind, err: reqwest::Error) -> ProviderError {
    let kind = if err.is_timeout() {
        ProviderErrorKind::Timeout
    } else {
        ProviderErrorKind::Upstream
    };
    let started = !err.is_connect();
    // Without the URL (not secret, but noisy); with the cause chain, which says what failed.
    let err = err.without_url();
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    let err = ProviderError::new(provider, kind, message);
    if started { err.after_send() } else { err }
}

/// `retry-after-ms` (OpenAI, precise) wins over `retry-after` (seconds or an HTTP date).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    let value = header("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = date.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

struct StreamState<T: StreamTranslator> {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<Bytes>> + Send>>,
    framing: T::Framing,
    translator: T,
    pending: VecDeque<Result<StreamEvent, ProviderError>>,
    finished: bool,
    idle_timeout: Duration,
    /// The call's deadline: the stream is cut there, with a timeout error.
    deadline: Option<tokio::time::Instant>,
    errors: ErrorMaker,
}

impl<T: StreamTranslator> StreamState<T> {
    async fn next(mut self) -> Option<(Result<StreamEvent, ProviderError>, Self)> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some((item, self));
            }
            if self.finished {
                return None;
            }
            let mut out = Vec::new();
            let idle_end = tokio::time::Instant::now() + self.idle_timeout;
            let end_by = self.deadline.map_or(idle_end, |d| d.min(idle_end));
            let result = match tokio::time::timeout_at(end_by, self.body.next()).await {
                Err(_) if self.deadline == Some(end_by) => Err(self.errors.make(
                    ProviderErrorKind::Timeout,
                    "the stream was cut at the function's deadline".to_owned(),
                )),
                Err(_) => Err(self.errors.make(
                    ProviderErrorKind::Timeout,
                    format!("the stream stalled for {:?}", self.idle_timeout),
                )),
                Ok(Some(Ok(chunk))) => self.feed(&chunk, &mut out),
                Ok(Some(Err(err))) => Err(transport_error(self.errors.provider, err)),
                Ok(None) => {
                    self.finished = true;
                    self.translator.on_end(&mut out)
                }
            };
            self.pending.extend(out.into_iter().map(Ok));
            if let Err(err) = result {
                // Inside a stream the provider has started, whatever the error.
                let err = self.errors.make(err.kind, err.message).after_send();
                self.pending.push_back(Err(err));
                self.finished = true;
            }
        }
    }

    fn feed(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        let events = self
            .framing
            .decode(chunk)
            .map_err(|message| self.errors.make(ProviderErrorKind::Upstream, message))?;
        for event in events {
            if let Flow::Done = self.translator.on_event(event, out)? {
                self.finished = true;
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(base_url: &str) -> Result<HttpCore, ProviderSetupError> {
        HttpCore::new(
            ProviderKind::Openai,
            &ProviderSettings::new(base_url, "sk-secret-test-key"),
            "/chat/completions",
            Auth::bearer(),
            HeaderMap::new(),
        )
    }

    #[test]
    fn settings_debug_never_shows_the_api_key() {
        let settings = ProviderSettings::new("https://api.openai.com/v1", "sk-secret-test-key");
        let debug = format!("{settings:?}");
        assert!(!debug.contains("sk-secret"), "{debug}");
        assert!(debug.contains("REDACTED"));
    }

    #[test]
    fn settings_have_the_documented_defaults() {
        let s = ProviderSettings::new("https://api.anthropic.com", "k");
        assert_eq!(s.request_timeout, Duration::from_secs(60));
        assert_eq!(s.output_tokens_per_second, 20);
        assert_eq!(s.connect_timeout, Duration::from_secs(5));
        assert_eq!(s.stream_idle_timeout, Duration::from_secs(30));
        assert_eq!(s.cache_min_tokens, 1024);
        assert_eq!(s.default_max_tokens, 4096);
    }

    #[test]
    fn the_endpoint_is_joined_to_the_base_url_with_or_without_a_trailing_slash() {
        for base in ["https://api.openai.com/v1", "https://api.openai.com/v1/"] {
            let core = core(base).unwrap();
            assert_eq!(
                core.endpoint.as_str(),
                "https://api.openai.com/v1/chat/completions"
            );
        }
    }

    #[test]
    fn a_base_url_that_is_not_http_is_refused() {
        for base in ["api.openai.com/v1", "ftp://example.com", "", "mailto:x@y.z"] {
            assert!(
                matches!(core(base), Err(ProviderSetupError::InvalidBaseUrl { .. })),
                "{base}"
            );
        }
    }

    #[test]
    fn an_api_key_that_cannot_be_a_header_is_refused_without_echoing_it() {
        let err = secret_header(ProviderKind::Anthropic, "sk-bad\nkey").unwrap_err();
        assert!(!err.to_string().contains("sk-bad"));
        assert!(secret_header(ProviderKind::Anthropic, " ").is_err());
        assert!(
            secret_header(ProviderKind::Anthropic, "sk-ok")
                .unwrap()
                .is_sensitive()
        );
    }

    fn classify(status: u16, headers: &[(&str, &str)], body: &str) -> ProviderError {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        core("https://api.openai.com/v1").unwrap().status_error(
            StatusCode::from_u16(status).unwrap(),
            &map,
            body.as_bytes(),
        )
    }

    #[test]
    fn statuses_are_classified_by_what_retrying_could_change() {
        let body = r#"{"error":{"message":"bad things","type":"x"}}"#;
        assert_eq!(
            classify(401, &[], body).kind,
            ProviderErrorKind::Credentials
        );
        assert_eq!(
            classify(403, &[], body).kind,
            ProviderErrorKind::Credentials
        );
        for status in [400, 404, 413, 422] {
            let err = classify(status, &[], body);
            assert_eq!(err.kind, ProviderErrorKind::Rejected);
            assert_eq!(err.message, "bad things");
        }
        for status in [500, 502, 503, 529] {
            assert_eq!(
                classify(status, &[], body).kind,
                ProviderErrorKind::Upstream
            );
        }
        assert_eq!(classify(408, &[], "").kind, ProviderErrorKind::Timeout);
        assert_eq!(
            classify(500, &[], "<html>").kind,
            ProviderErrorKind::Upstream
        );
    }

    #[test]
    fn rate_limits_read_retry_after_in_seconds_or_milliseconds() {
        let wait = |headers: &[(&str, &str)]| match classify(429, headers, "{}").kind {
            ProviderErrorKind::RateLimited { retry_after } => retry_after,
            other => panic!("{other:?}"),
        };
        assert_eq!(wait(&[]), None);
        assert_eq!(wait(&[("retry-after", "7")]), Some(Duration::from_secs(7)));
        assert_eq!(
            wait(&[("retry-after", "1.5")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            wait(&[("retry-after", "2"), ("retry-after-ms", "250")]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(wait(&[("retry-after", "soon")]), None);
        assert_eq!(wait(&[("retry-after", "-3")]), None);
        let past = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(wait(&[("retry-after", past)]), Some(Duration::ZERO));
    }

    #[test]
    fn aws_errors_name_their_type_hide_account_ids_and_a_quota_is_a_rate_limit() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-amzn-errortype",
            HeaderValue::from_static("ValidationException:http://internal.amazon.com/coral/"),
        );
        let body = br#"{"message":"arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/x is in another region (request 1234)"}"#;
        assert_eq!(
            error_message(&headers, body).unwrap(),
            "ValidationException: arn:aws:bedrock:us-east-1:************:application-inference-profile/x is in another region (request 1234)"
        );
    }

    #[test]
    fn a_bedrock_service_quota_400_is_a_rate_limit_and_a_validation_400_a_rejection() {
        use aws_credential_types::Credentials;
        use aws_credential_types::provider::SharedCredentialsProvider;
        let signer = AwsSigner::new(
            "bedrock",
            "us-east-1",
            super::super::sigv4::CredentialSource::Provider(SharedCredentialsProvider::new(
                Credentials::new("AKID", "secret", None, None, "test"),
            )),
        );
        let core = HttpCore::signed(
            ProviderKind::Bedrock,
            &ProviderSettings::new("https://bedrock-runtime.us-east-1.amazonaws.com", ""),
            signer,
        )
        .unwrap();
        let classify = |kind: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-amzn-errortype", HeaderValue::from_static(kind));
            core.status_error(StatusCode::BAD_REQUEST, &headers, br#"{"message":"m"}"#)
        };
        let quota = classify("ServiceQuotaExceededException:http://internal.amazon.com/");
        assert_eq!(
            quota.kind,
            ProviderErrorKind::RateLimited { retry_after: None }
        );
        assert!(quota.is_retryable());
        assert_eq!(
            classify("ValidationException").kind,
            ProviderErrorKind::Rejected
        );
    }

    #[test]
    fn rejection_messages_are_truncated_to_500_characters() {
        let long = "é".repeat(600);
        let body = serde_json::json!({"error": {"message": long}}).to_string();
        let err = classify(400, &[], &body);
        assert_eq!(err.message.chars().count(), 501);
        assert!(err.message.ends_with('…'));
    }

    #[test]
    fn an_api_key_echoed_by_the_provider_is_scrubbed() {
        let body = r#"{"error":{"message":"your key sk-secret-test-key is odd"}}"#;
        let err = classify(400, &[], body);
        assert!(!err.to_string().contains("sk-secret-test-key"), "{err}");
        assert!(!format!("{err:?}").contains("sk-secret-test-key"));
        let err = classify(401, &[], body);
        assert!(!format!("{err:?}").contains("sk-secret"));
    }
}
