//! Local stand-ins for the OpenAI, Anthropic and Bedrock (Converse) APIs.
//!
//! Each stand-in is an axum server on `127.0.0.1:<random port>` that answers the provider's
//! chat endpoint in its real wire format: JSON replies, SSE streams (split across body frames,
//! as a network would), usage with prompt-cache fields, and the provider's error bodies. It
//! checks what the real API checks first (credentials header, required fields) and records
//! every request so a test can assert what went upstream.
//!
//! Faults are scripted: [`StandIn::push`] queues [`Behavior`]s, and each request consumes one.
//! An empty queue means a normal reply ([`Behavior::default_reply`]).
//!
//! ```no_run
//! # async fn example() {
//! use std::time::Duration;
//! use tollgate_tests::{Behavior, OpenAiStandIn};
//!
//! let openai = OpenAiStandIn::start().await;
//! openai.push(Behavior::rate_limited(Duration::from_secs(1)));
//! // ... point an OpenAI client at openai.base_url() (it ends in /v1) ...
//! assert_eq!(openai.requests().len(), 0);
//! # }
//! ```

mod anthropic;
pub mod bedrock;
mod openai;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::post;
use futures_util::StreamExt;
use serde_json::Value;
use tollgate::domain::usage::TokenUsage;

/// What the stand-in does with the next request.
#[derive(Debug, Clone, PartialEq)]
pub enum Behavior {
    /// A successful reply: JSON, or an SSE stream when the request asked for one. The text is
    /// streamed a word at a time. The served model is the requested one. When an Anthropic
    /// request forces a tool (structured output) and the text is a JSON object, the reply is
    /// a `tool_use` block with that input (streamed as `input_json_delta` fragments).
    ///
    /// `usage` is in Tollgate's (OpenAI's) convention and rendered in the provider's own:
    /// OpenAI reports `prompt_tokens` with `prompt_tokens_details.cached_tokens` and has no
    /// cache writes (so `cache_write_tokens` is not sent); Anthropic reports
    /// `input_tokens = prompt - cached - cache_write`, `cache_read_input_tokens` and
    /// `cache_creation_input_tokens`.
    Reply { text: String, usage: TokenUsage },
    /// An error status with the provider's canned message for it. With `retry_after`, a 429
    /// carries `retry-after` (whole seconds, rounded up) and, for OpenAI, `retry-after-ms`.
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// An error status with the provider's error body around `message`.
    Error { status: u16, message: String },
    /// Waits this long before answering (nothing is sent meanwhile), then replies normally.
    Delay(Duration),
    /// Sends the headers and the first chunk (the first SSE event, or the start of the JSON
    /// body), then never another byte.
    StallStream,
    /// A 200 whose body is not the provider's format.
    Malformed,
    /// Writes until the request's own cap (`max_completion_tokens`, `max_tokens`), as a
    /// model with a lot to say does: exactly that many completion tokens, reported as such.
    /// A request with no cap gets [`UNCAPPED_REPLY_TOKENS`], the most the model would write.
    WriteUntilCap,
    /// Streams one word every `every` until the request's cap, then finishes normally; a
    /// buffered request waits for the whole reply. For deadline tests.
    Trickle { every: Duration },
    /// The model calls the client's tools: `text` (may be empty) then one call per (name,
    /// arguments object), with ids `call_standin{i}` (OpenAI) or `toolu_standin{i}`
    /// (Anthropic), `i` counting the reply's calls from 0. The finish is `tool_calls` /
    /// `tool_use`. Streamed in each provider's own pieces: OpenAI's tool-call deltas (id and
    /// name, then argument fragments), Anthropic's `tool_use` blocks with `input_json_delta`s.
    CallTools {
        text: String,
        calls: Vec<(String, Value)>,
        usage: TokenUsage,
    },
    /// Streams `text` after a start that reports `usage`'s input side (Anthropic: input,
    /// cache-read and cache-write tokens in `message_start`), then fails with the provider's
    /// mid-stream error event (Anthropic `overloaded_error`; OpenAI an error chunk) instead of
    /// finishing: the final usage never comes.
    StreamThenError { text: String, usage: TokenUsage },
    /// [`Behavior::StreamThenError`] whose error event carries `message` (OpenAI: a 500
    /// error chunk; Anthropic: an `overloaded_error` event).
    StreamThenErrorSaying {
        text: String,
        usage: TokenUsage,
        message: String,
    },
}

/// What [`Behavior::WriteUntilCap`] writes when the request sets no cap: a model's maximum
/// output, as OpenAI applies when `max_completion_tokens` is absent.
pub const UNCAPPED_REPLY_TOKENS: u64 = 16_384;

/// The text of [`Behavior::default_reply`].
pub const DEFAULT_REPLY_TEXT: &str = "Hello from the stand-in.";

/// The usage of [`Behavior::default_reply`].
pub const DEFAULT_USAGE: TokenUsage = TokenUsage {
    prompt_tokens: 20,
    completion_tokens: 6,
    cached_tokens: 0,
    cache_write_tokens: 0,
};

impl Behavior {
    /// What an empty queue does: [`DEFAULT_REPLY_TEXT`] with [`DEFAULT_USAGE`].
    pub fn default_reply() -> Self {
        Self::reply(DEFAULT_REPLY_TEXT, DEFAULT_USAGE)
    }

    pub fn reply(text: impl Into<String>, usage: TokenUsage) -> Self {
        Self::Reply {
            text: text.into(),
            usage,
        }
    }

    /// [`Behavior::CallTools`] without text.
    pub fn call_tools(calls: Vec<(&str, Value)>, usage: TokenUsage) -> Self {
        Self::CallTools {
            text: String::new(),
            calls: calls
                .into_iter()
                .map(|(name, arguments)| (name.to_owned(), arguments))
                .collect(),
            usage,
        }
    }

    pub fn status(status: u16) -> Self {
        Self::Status {
            status,
            retry_after: None,
        }
    }

    /// A 429 asking the client to wait `retry_after`.
    pub fn rate_limited(retry_after: Duration) -> Self {
        Self::Status {
            status: 429,
            retry_after: Some(retry_after),
        }
    }

    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self::Error {
            status,
            message: message.into(),
        }
    }
}

/// One request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub path: String,
    pub headers: HeaderMap,
    /// The parsed JSON body, or `Value::Null` if it was not JSON.
    pub body: Value,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether the request asked for a stream (Bedrock: by calling `converse-stream`).
    pub fn is_stream(&self) -> bool {
        self.body["stream"] == Value::Bool(true) || self.path.ends_with("/converse-stream")
    }
}

/// The provider a stand-in imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    OpenAi,
    Anthropic,
    Bedrock,
}

/// A running stand-in. Dropping it stops accepting connections.
pub struct StandIn {
    addr: SocketAddr,
    dialect: Dialect,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

struct Shared {
    dialect: Dialect,
    queue: Mutex<VecDeque<Behavior>>,
    /// What a request gets when the queue is empty (`None`: the default reply).
    always: Mutex<Option<Behavior>>,
    requests: Mutex<Vec<RecordedRequest>>,
    embedding_requests: Mutex<Vec<RecordedRequest>>,
    embedding_queue: Mutex<VecDeque<Behavior>>,
    ids: AtomicU64,
}

impl StandIn {
    async fn start(dialect: Dialect) -> Self {
        let shared = Arc::new(Shared {
            dialect,
            queue: Mutex::new(VecDeque::new()),
            always: Mutex::new(None),
            requests: Mutex::new(Vec::new()),
            embedding_requests: Mutex::new(Vec::new()),
            embedding_queue: Mutex::new(VecDeque::new()),
            ids: AtomicU64::new(1),
        });
        let path = match dialect {
            Dialect::OpenAi => "/v1/chat/completions",
            Dialect::Anthropic => "/v1/messages",
            Dialect::Bedrock => "/model/{model}/{operation}",
        };
        let mut app = Router::new().route(path, post(handle));
        if dialect == Dialect::OpenAi {
            app = app.route("/v1/embeddings", post(embeddings));
        }
        let app = app.fallback(not_found).with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a stand-in port");
        let addr = listener.local_addr().expect("stand-in address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("stand-in server");
        });
        Self {
            addr,
            dialect,
            shared,
            server,
        }
    }

    /// The base URL in the provider SDK's convention: `http://127.0.0.1:<port>/v1` for OpenAI,
    /// `http://127.0.0.1:<port>` for Anthropic and Bedrock (its runtime endpoint).
    pub fn base_url(&self) -> String {
        match self.dialect {
            Dialect::OpenAi => format!("http://{}/v1", self.addr),
            Dialect::Anthropic | Dialect::Bedrock => format!("http://{}", self.addr),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What every request gets once the queue is empty, until changed (`None`: the default
    /// reply). For runs driven from outside, such as a 529 storm for the `standins` binary.
    pub fn always(&self, behavior: Option<Behavior>) {
        *self.shared.always.lock().unwrap() = behavior;
    }

    /// Queues a behaviour for a later request (first in, first out).
    pub fn push(&self, behavior: Behavior) {
        self.shared.queue.lock().unwrap().push_back(behavior);
    }

    /// Queues a behaviour for a later `POST /v1/embeddings` request (OpenAI only; a queue of
    /// its own, apart from chat's). `Status`, `Error` and `Malformed` answer as for chat,
    /// `Delay` waits and then answers normally; any other behaviour answers normally.
    pub fn push_embeddings(&self, behavior: Behavior) {
        self.shared
            .embedding_queue
            .lock()
            .unwrap()
            .push_back(behavior);
    }

    /// Every `POST /v1/embeddings` request (OpenAI only), in arrival order, refused ones
    /// included. Chat requests are in [`StandIn::requests`].
    pub fn embedding_requests(&self) -> Vec<RecordedRequest> {
        self.shared.embedding_requests.lock().unwrap().clone()
    }

    /// Every chat request received so far, in arrival order, including refused ones.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The most recent request. Panics if there was none.
    pub fn last_request(&self) -> RecordedRequest {
        self.requests()
            .pop()
            .expect("the stand-in received no request")
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A stand-in for `POST {base}/chat/completions` on the OpenAI API.
pub struct OpenAiStandIn(StandIn);

impl OpenAiStandIn {
    pub async fn start() -> Self {
        Self(StandIn::start(Dialect::OpenAi).await)
    }
}

impl Deref for OpenAiStandIn {
    type Target = StandIn;
    fn deref(&self) -> &StandIn {
        &self.0
    }
}

/// A stand-in for `POST {base}/v1/messages` on the Anthropic API.
pub struct AnthropicStandIn(StandIn);

impl AnthropicStandIn {
    pub async fn start() -> Self {
        Self(StandIn::start(Dialect::Anthropic).await)
    }
}

impl Deref for AnthropicStandIn {
    type Target = StandIn;
    fn deref(&self) -> &StandIn {
        &self.0
    }
}

/// A stand-in for Bedrock's runtime (`POST /model/{modelId}/converse` and
/// `/converse-stream`), checking SigV4 signatures made with [`bedrock::credentials`].
pub struct BedrockStandIn(StandIn);

impl BedrockStandIn {
    pub async fn start() -> Self {
        Self(StandIn::start(Dialect::Bedrock).await)
    }
}

impl Deref for BedrockStandIn {
    type Target = StandIn;
    fn deref(&self) -> &StandIn {
        &self.0
    }
}

/// What a dialect needs to render a reply.
struct ReplyContext<'a> {
    id: String,
    model: &'a str,
    text: &'a str,
    usage: TokenUsage,
    /// OpenAI only sends the usage chunk when `stream_options.include_usage` is set.
    include_usage: bool,
    /// Anthropic: the tool `tool_choice` forces. A reply text that is a JSON object is then
    /// that tool's `input` (a `tool_use` block); any other text stays a text block, as from a
    /// model that did not call the tool.
    forced_tool: Option<&'a str>,
    /// Calls of the client's tools the reply makes ([`Behavior::CallTools`]).
    calls: &'a [(String, Value)],
}

/// `POST /v1/embeddings` in OpenAI's format. Vectors come from Tollgate's local embedder (so
/// texts sharing words are close), `dimensions` is honoured, usage counts real tokens.
/// Recorded apart from chat requests ([`StandIn::embedding_requests`]).
async fn embeddings(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared
        .embedding_requests
        .lock()
        .unwrap()
        .push(RecordedRequest {
            path: uri.path().to_owned(),
            headers: headers.clone(),
            body: body.clone(),
        });
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "));
    if !authorized {
        return error_response(Dialect::OpenAi, 401, "missing key", None);
    }
    // Each input as (the text its vector is made from, its token count): texts are counted
    // with the tokenizer, token-id arrays (OpenAI's other input shape) by their length.
    let token_array = |ids: &[Value]| {
        let words: Vec<String> = ids.iter().map(|id| format!("t{id}")).collect();
        (words.join(" "), ids.len())
    };
    let inputs: Vec<(String, usize)> = match &body["input"] {
        Value::String(s) => vec![(s.clone(), tollgate::tokenizer::count_tokens(s))],
        Value::Array(items) if items.iter().all(Value::is_number) && !items.is_empty() => {
            vec![token_array(items)]
        }
        Value::Array(items) => items
            .iter()
            .filter_map(|v| match v {
                Value::String(s) => Some((s.clone(), tollgate::tokenizer::count_tokens(s))),
                Value::Array(ids) => Some(token_array(ids)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if inputs.is_empty() {
        return error_response(Dialect::OpenAi, 400, "'input' is required", None);
    }
    let behavior = shared.embedding_queue.lock().unwrap().pop_front();
    match behavior {
        Some(Behavior::Status {
            status,
            retry_after,
        }) => {
            return error_response(
                Dialect::OpenAi,
                status,
                openai::canned_message(status),
                retry_after,
            );
        }
        Some(Behavior::Error { status, message }) => {
            return error_response(Dialect::OpenAi, status, &message, None);
        }
        Some(Behavior::Malformed) => {
            return Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("<html>upstream proxy error</html>"))
                .expect("malformed response");
        }
        Some(Behavior::Delay(wait)) => tokio::time::sleep(wait).await,
        _ => {}
    }
    let dims = body["dimensions"].as_u64().unwrap_or(1536) as usize;
    let embedder = tollgate::adapters::embeddings::LocalEmbedder::exact(dims);
    let tokens: usize = inputs.iter().map(|(_, n)| n).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, (t, _))| serde_json::json!({"object": "embedding", "index": i, "embedding": embedder.vector(t)}))
        .collect();
    let reply = serde_json::json!({
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(reply.to_string()))
        .unwrap()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    shared.requests.lock().unwrap().push(RecordedRequest {
        path: uri.path().to_owned(),
        headers: headers.clone(),
        body: body.clone(),
    });
    let dialect = shared.dialect;
    let checked = match dialect {
        Dialect::OpenAi => openai::check(&headers, &body),
        Dialect::Anthropic => anthropic::check(&headers, &body),
        Dialect::Bedrock => bedrock::check(&method, &uri, &headers, &raw, &body),
    };
    if let Err((status, message)) = checked {
        return error_response(dialect, status, &message, None);
    }
    let behavior = shared.queue.lock().unwrap().pop_front();
    let behavior = behavior
        .or_else(|| shared.always.lock().unwrap().clone())
        .unwrap_or_else(Behavior::default_reply);
    let (model, stream) = match dialect {
        Dialect::Bedrock => bedrock::route(uri.path()).unwrap_or_default(),
        _ => (
            body["model"].as_str().unwrap_or_default().to_owned(),
            body["stream"] == Value::Bool(true),
        ),
    };
    let model = model.as_str();
    let id = shared.ids.fetch_add(1, Ordering::Relaxed);
    let id = match dialect {
        Dialect::OpenAi => format!("chatcmpl-standin{id}"),
        Dialect::Anthropic => format!("msg_standin{id}"),
        Dialect::Bedrock => format!("bedrock-standin{id}"),
    };
    let include_usage = body["stream_options"]["include_usage"] == Value::Bool(true);
    let forced_tool = match dialect {
        Dialect::Anthropic if body["tool_choice"]["type"] == "tool" => {
            body["tool_choice"]["name"].as_str()
        }
        Dialect::Bedrock => bedrock::forced_tool(&body),
        _ => None,
    };
    let reply_calling = |text: &str, usage: TokenUsage, calls: &[(String, Value)]| {
        let cx = ReplyContext {
            id: id.clone(),
            model,
            text,
            usage,
            include_usage,
            forced_tool,
            calls,
        };
        if stream {
            let events = match dialect {
                Dialect::OpenAi => openai::stream_events(&cx),
                Dialect::Anthropic => anthropic::stream_events(&cx),
                Dialect::Bedrock => {
                    return event_stream_response(bedrock::stream_frames(&cx, false), false);
                }
            };
            sse_response(events, false)
        } else {
            let json = match dialect {
                Dialect::OpenAi => openai::reply_json(&cx),
                Dialect::Anthropic => anthropic::reply_json(&cx),
                Dialect::Bedrock => bedrock::reply_json(&cx),
            };
            json_response(StatusCode::OK, &json)
        }
    };
    let reply = |text: &str, usage: TokenUsage| reply_calling(text, usage, &[]);
    match behavior {
        Behavior::Reply { text, usage } => reply(&text, usage),
        Behavior::CallTools { text, calls, usage } => reply_calling(&text, usage, &calls),
        Behavior::Delay(wait) => {
            tokio::time::sleep(wait).await;
            reply(DEFAULT_REPLY_TEXT, DEFAULT_USAGE)
        }
        Behavior::Status {
            status,
            retry_after,
        } => {
            let message = match dialect {
                Dialect::OpenAi => openai::canned_message(status),
                Dialect::Anthropic => anthropic::canned_message(status),
                Dialect::Bedrock => bedrock::canned_message(status),
            };
            error_response(dialect, status, message, retry_after)
        }
        Behavior::Error { status, message } => error_response(dialect, status, &message, None),
        Behavior::StallStream if stream => {
            let cx = ReplyContext {
                id,
                model,
                text: DEFAULT_REPLY_TEXT,
                usage: DEFAULT_USAGE,
                include_usage,
                forced_tool: None,
                calls: &[],
            };
            let mut events = match dialect {
                Dialect::OpenAi => openai::stream_events(&cx),
                Dialect::Anthropic => anthropic::stream_events(&cx),
                Dialect::Bedrock => {
                    let mut frames = bedrock::stream_frames(&cx, false);
                    frames.truncate(1);
                    return event_stream_response(frames, true);
                }
            };
            events.truncate(1);
            sse_response(events, true)
        }
        Behavior::StallStream => {
            let first = Bytes::from_static(b"{\"id\": ");
            let body = futures_util::stream::iter([Ok::<_, Infallible>(first)])
                .chain(futures_util::stream::pending());
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(body))
                .expect("stalled response")
        }
        Behavior::Malformed if stream && dialect == Dialect::Bedrock => {
            event_stream_response(vec![b"this is not an event stream at all".to_vec()], false)
        }
        Behavior::Malformed if stream => {
            sse_response(vec!["data: {this is not json\n\n".to_owned()], false)
        }
        Behavior::WriteUntilCap => {
            let cap = request_cap(&body).unwrap_or(UNCAPPED_REPLY_TOKENS);
            let prompt = prompt_tokens(&body);
            // One word per token; the usage says exactly `cap`, as the provider would.
            let text = " tok".repeat(usize::try_from(cap.min(100_000)).unwrap_or(0));
            reply(
                &text,
                TokenUsage {
                    prompt_tokens: prompt,
                    completion_tokens: cap,
                    ..TokenUsage::default()
                },
            )
        }
        Behavior::Trickle { every } => {
            let cap = request_cap(&body).unwrap_or(UNCAPPED_REPLY_TOKENS);
            let text = " word".repeat(usize::try_from(cap.min(100_000)).unwrap_or(0));
            let usage = TokenUsage {
                prompt_tokens: prompt_tokens(&body),
                completion_tokens: cap,
                ..TokenUsage::default()
            };
            if !stream {
                tokio::time::sleep(every.saturating_mul(u32::try_from(cap).unwrap_or(u32::MAX)))
                    .await;
                return reply(&text, usage);
            }
            let cx = ReplyContext {
                id,
                model,
                text: &text,
                usage,
                include_usage,
                forced_tool: None,
                calls: &[],
            };
            let (events, content_type): (Vec<Vec<u8>>, _) = match dialect {
                Dialect::OpenAi => (
                    openai::stream_events(&cx)
                        .into_iter()
                        .map(String::into_bytes)
                        .collect(),
                    "text/event-stream; charset=utf-8",
                ),
                Dialect::Anthropic => (
                    anthropic::stream_events(&cx)
                        .into_iter()
                        .map(String::into_bytes)
                        .collect(),
                    "text/event-stream; charset=utf-8",
                ),
                Dialect::Bedrock => (bedrock::stream_frames(&cx, false), EVENT_STREAM),
            };
            let paced = futures_util::stream::iter(events).then(move |event| async move {
                tokio::time::sleep(every).await;
                Ok::<_, Infallible>(Bytes::from(event))
            });
            Response::builder()
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from_stream(paced))
                .expect("trickled response")
        }
        Behavior::StreamThenError { text, usage } => {
            let message = match dialect {
                Dialect::OpenAi => "The server had an error while processing your request.",
                Dialect::Anthropic => "Overloaded",
                Dialect::Bedrock => "The model stream was interrupted.",
            };
            stream_then_error(dialect, &id, model, &text, usage, include_usage, message)
        }
        Behavior::StreamThenErrorSaying {
            text,
            usage,
            message,
        } => stream_then_error(dialect, &id, model, &text, usage, include_usage, &message),
        Behavior::Malformed => Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("<html>upstream proxy error</html>"))
            .expect("malformed response"),
    }
}

/// A stream that sends `text` after its start, then the provider's mid-stream error event
/// with `message` instead of finishing.
fn stream_then_error(
    dialect: Dialect,
    id: &str,
    model: &str,
    text: &str,
    usage: TokenUsage,
    include_usage: bool,
    message: &str,
) -> Response {
    let cx = ReplyContext {
        id: id.to_owned(),
        model,
        text,
        usage,
        include_usage,
        forced_tool: None,
        calls: &[],
    };
    let events = match dialect {
        Dialect::OpenAi => {
            let mut events = openai::stream_events(&cx);
            // Role and word chunks only; then OpenAI's in-stream error.
            events.truncate(1 + deltas(text).len());
            events.push(format!("data: {}\n\n", openai::error_body(500, message)));
            events
        }
        Dialect::Anthropic => {
            let mut events = anthropic::stream_events(&cx);
            // Through the last text delta (message_start, block start, ping, words).
            events.truncate(3 + deltas(text).len());
            events.push(format!(
                "event: error\ndata: {}\n\n",
                anthropic::error_body(529, message)
            ));
            events
        }
        Dialect::Bedrock => {
            let mut frames = bedrock::stream_frames(&cx, true);
            frames.push(bedrock::exception("modelStreamErrorException", message));
            return event_stream_response(frames, false);
        }
    };
    sse_response(events, false)
}

/// The reply cap a chat request sets, in either dialect.
fn request_cap(body: &Value) -> Option<u64> {
    body["max_completion_tokens"]
        .as_u64()
        .or_else(|| body["max_tokens"].as_u64())
        .or_else(|| bedrock::request_cap(body))
}

/// The request's prompt as Tollgate's tokenizer counts it (system and messages).
fn prompt_tokens(body: &Value) -> u64 {
    let mut total = 0;
    if let Some(system) = body["system"].as_str() {
        total += tollgate::tokenizer::count_tokens(system);
    } else if let Some(blocks) = body["system"].as_array() {
        for block in blocks {
            total += tollgate::tokenizer::count_tokens(block["text"].as_str().unwrap_or_default());
        }
    }
    for message in body["messages"].as_array().into_iter().flatten() {
        let text = match &message["content"] {
            Value::Array(blocks) => blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join(""),
            content => content.as_str().unwrap_or_default().to_owned(),
        };
        total += 4 + tollgate::tokenizer::count_tokens(&text);
    }
    total as u64
}

async fn not_found(uri: Uri) -> Response {
    let body = serde_json::json!({
        "error": {"message": format!("Unknown request URL: {}", uri.path()), "type": "invalid_request_error"}
    });
    json_response(StatusCode::NOT_FOUND, &body)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("json response")
}

fn error_response(
    dialect: Dialect,
    status: u16,
    message: &str,
    retry_after: Option<Duration>,
) -> Response {
    let status = StatusCode::from_u16(status).expect("a valid status code");
    let body = match dialect {
        Dialect::OpenAi => openai::error_body(status.as_u16(), message),
        Dialect::Anthropic => anthropic::error_body(status.as_u16(), message),
        Dialect::Bedrock => bedrock::error_body(message),
    };
    let mut response = json_response(status, &body);
    if dialect == Dialect::Bedrock {
        let kind = bedrock::error_type(status.as_u16());
        response.headers_mut().insert(
            "x-amzn-errortype",
            format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/")
                .parse()
                .expect("a header value"),
        );
        // Bedrock sends no retry-after: throttled callers back off on their own.
        return response;
    }
    if let Some(wait) = retry_after {
        let headers = response.headers_mut();
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        headers.insert("retry-after", secs.into());
        if dialect == Dialect::OpenAi {
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            headers.insert("retry-after-ms", ms.into());
        }
    }
    response
}

/// An SSE response, each event sent as two body frames split mid-event (as TCP may deliver
/// them), optionally hanging after the last one.
fn sse_response(events: Vec<String>, then_hang: bool) -> Response {
    let frames: Vec<Result<Bytes, Infallible>> = events
        .into_iter()
        .flat_map(|event| {
            let mut cut = event.len() / 2;
            while !event.is_char_boundary(cut) {
                cut -= 1;
            }
            let (head, tail) = event.split_at(cut);
            [head.to_owned(), tail.to_owned()]
        })
        .filter(|frame| !frame.is_empty())
        .map(|frame| Ok(Bytes::from(frame)))
        .collect();
    let frames = futures_util::stream::iter(frames);
    let body = if then_hang {
        Body::from_stream(frames.chain(futures_util::stream::pending()))
    } else {
        Body::from_stream(frames)
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .expect("sse response")
}

const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// An event-stream response, each frame sent as two body frames split in its middle (as TCP
/// may deliver them), optionally hanging after the last one.
fn event_stream_response(frames: Vec<Vec<u8>>, then_hang: bool) -> Response {
    let chunks: Vec<Result<Bytes, Infallible>> = frames
        .into_iter()
        .flat_map(|mut frame| {
            let tail = frame.split_off(frame.len() / 2);
            [frame, tail]
        })
        .filter(|chunk| !chunk.is_empty())
        .map(|chunk| Ok(Bytes::from(chunk)))
        .collect();
    let chunks = futures_util::stream::iter(chunks);
    let body = if then_hang {
        Body::from_stream(chunks.chain(futures_util::stream::pending()))
    } else {
        Body::from_stream(chunks)
    };
    Response::builder()
        .header(header::CONTENT_TYPE, EVENT_STREAM)
        .body(body)
        .expect("event-stream response")
}

/// Splits a reply into stream deltas the way a tokenizer would: each word with its leading
/// space.
fn deltas(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c == ' ' && i > start {
            out.push(&text[start..i]);
            start = i;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_concatenate_back_to_the_text() {
        for text in [
            "Hello from the stand-in.",
            "",
            "one",
            " leading and  double",
            "héllo wörld",
        ] {
            assert_eq!(deltas(text).concat(), text);
        }
        assert_eq!(deltas("a b c"), vec!["a", " b", " c"]);
    }
}
