//! Local fakes of the model providers, speaking each one's real streaming wire format:
//! OpenAI chat completions, Anthropic messages and Gemini streamGenerateContent (SSE).
//!
//! The model name picks the behaviour, so one role's fallback chain walks every path:
//! - `ok`: streams "Hello from the fake." in three chunks, with usage 10 in, 5 out;
//! - `ratelimit`: the first call gets a 429 with `Retry-After: 1`, later calls `ok`;
//! - `down`: 500 every time;
//! - `toolong`: the provider's context-length error;
//! - `malformed`: a 200 stream whose data is not JSON;
//! - `verdict`: streams the JSON verdict `{"approved": false, "issues": ["too short"]}`;
//! - `slow` (OpenAI only): streams a chunk every 100 ms for a minute, and records when the
//!   client hangs up;
//! - `echokey`: a 401 whose body and headers echo the request's key back;
//! - `echokeystream`: a 200 stream whose broken data line holds the key;
//! - `cutoff`: two chunks of an answer, then the stream closes without the provider's end
//!   (no finish reason, no `[DONE]`, no `message_stop`).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};

pub const ANSWER: [&str; 3] = ["Hello ", "from the ", "fake."];

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub provider: &'static str,
    pub model: String,
    /// The key as the provider's header carried it.
    pub key: String,
    pub at: Instant,
}

#[derive(Clone, Default)]
pub struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
    hung_up: Arc<std::sync::atomic::AtomicBool>,
}

/// Sets its flag when dropped: the server drops a streamed body when the client goes away.
struct HangUp(Arc<std::sync::atomic::AtomicBool>);

impl Drop for HangUp {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Fake {
    /// Serves all three providers on a free port; returns the fake and its base URL.
    pub async fn start() -> (Self, String) {
        let fake = Fake::default();
        let app = Router::new()
            .route("/openai/v1/chat/completions", post(openai))
            .route("/anthropic/v1/messages", post(anthropic))
            .route("/gemini/v1beta/models/{call}", post(gemini))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (fake, url)
    }

    /// Whether a client hung up on a `slow` stream.
    pub fn hung_up(&self) -> bool {
        self.hung_up.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Calls of one provider's model.
    pub fn calls(&self, provider: &str, model: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.provider == provider && s.model == model)
            .collect()
    }

    /// Records the call; `true` when it is the first of its provider and model.
    fn record(&self, provider: &'static str, model: &str, key: String) -> bool {
        let mut seen = self.seen.lock().unwrap();
        let first = !seen
            .iter()
            .any(|s| s.provider == provider && s.model == model);
        seen.push(Seen {
            provider,
            model: model.to_string(),
            key,
            at: Instant::now(),
        });
        first
    }
}

/// What a model name asks the fake to do on this call.
enum Act {
    Stream(Vec<String>),
    Status(StatusCode, Value, Option<&'static str>),
    Malformed,
    /// A 401 echoing the key in its body and headers.
    EchoKey,
    /// A broken stream line holding the key.
    EchoKeyStream,
    /// Some of an answer, without the provider's end.
    Cutoff(Vec<String>),
}

fn act(model: &str, first: bool, too_long: Value, error: fn(u16, &str) -> Value) -> Act {
    let text = |parts: &[&str]| Act::Stream(parts.iter().map(|p| p.to_string()).collect());
    match model {
        "echokey" => Act::EchoKey,
        "echokeystream" => Act::EchoKeyStream,
        "cutoff" => Act::Cutoff(ANSWER[..2].iter().map(|p| p.to_string()).collect()),
        "ratelimit" if first => Act::Status(
            StatusCode::TOO_MANY_REQUESTS,
            error(429, "rate limit reached"),
            Some("1"),
        ),
        "down" => Act::Status(
            StatusCode::INTERNAL_SERVER_ERROR,
            error(500, "the server had an error"),
            None,
        ),
        "toolong" => Act::Status(StatusCode::BAD_REQUEST, too_long, None),
        "malformed" => Act::Malformed,
        "verdict" => text(&[r#"{"approved": false, "#, r#""issues": ["too short"]}"#]),
        _ => text(&ANSWER),
    }
}

fn sse(events: impl IntoIterator<Item = (Option<&'static str>, Value)>, done: bool) -> Response {
    let mut body = String::new();
    for (name, data) in events {
        if let Some(name) = name {
            body.push_str(&format!("event: {name}\n"));
        }
        body.push_str(&format!("data: {data}\n\n"));
    }
    if done {
        body.push_str("data: [DONE]\n\n");
    }
    stream_response(body)
}

fn stream_response(body: String) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from(body))
        .unwrap()
}

fn failure(status: StatusCode, body: Value, retry_after: Option<&str>) -> Response {
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(after) = retry_after {
        response = response.header("retry-after", after);
    }
    response.body(Body::from(body.to_string())).unwrap()
}

/// A 401 whose JSON body, message and headers carry `key` back, as some providers and
/// proxies do.
fn echo_key(key: &str) -> Response {
    // Padded so the key straddles the 300th character, where failure texts are cut short.
    let pad = "x".repeat(250);
    let body = json!({"error": {"message": format!("{pad}Invalid API key: Bearer {key}"),
        "type": "invalid_request_error", "code": "invalid_api_key", "key": key}});
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header("content-type", "application/json")
        .header("x-echoed-key", key)
        .header("www-authenticate", format!("Bearer realm=\"{key}\""))
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// A 200 stream whose one line is broken JSON holding `key`.
fn echo_key_stream(key: &str) -> Response {
    stream_response(format!("data: {{\"key\": \"{key}\", oops\n\n"))
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn openai(State(fake): State<Fake>, headers: HeaderMap, body: axum::Json<Value>) -> Response {
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let key = header(&headers, "authorization")
        .trim_start_matches("Bearer ")
        .to_string();
    let first = fake.record("openai", &model, key.clone());
    let too_long = json!({"error": {
        "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
        "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}});
    let error = |_, message: &str| json!({"error": {"message": message, "type": "server_error", "code": null}});
    if model == "slow" {
        return slow_stream(HangUp(fake.hung_up.clone()));
    }
    match act(&model, first, too_long, error) {
        Act::Status(status, body, after) => failure(status, body, after),
        Act::Malformed => stream_response("data: {\"choices\": [ not json\n\n".into()),
        Act::EchoKey => echo_key(&key),
        Act::EchoKeyStream => echo_key_stream(&key),
        Act::Cutoff(parts) => {
            let events = parts.iter().map(|p| {
                (None, json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                    "model": model, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]}))
            });
            sse(events.collect::<Vec<_>>(), false)
        }
        Act::Stream(parts) => {
            let chunk = |delta: Value, finish: Value| {
                json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                       "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            };
            let mut events = vec![(
                None,
                chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            )];
            events.extend(
                parts
                    .iter()
                    .map(|p| (None, chunk(json!({"content": p}), Value::Null))),
            );
            events.push((None, chunk(json!({}), json!("stop"))));
            events.push((
                None,
                json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                "model": model, "choices": [],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}),
            ));
            sse(events, true)
        }
    }
}

async fn anthropic(
    State(fake): State<Fake>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> Response {
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let key = header(&headers, "x-api-key");
    let first = fake.record("anthropic", &model, key.clone());
    let too_long = json!({"type": "error", "error": {"type": "invalid_request_error",
        "message": "prompt is too long: 250000 tokens > 200000 maximum"}});
    let error = |status, message: &str| {
        let kind = if status == 429 {
            "rate_limit_error"
        } else {
            "api_error"
        };
        json!({"type": "error", "error": {"type": kind, "message": message}})
    };
    match act(&model, first, too_long, error) {
        Act::Status(status, body, after) => failure(status, body, after),
        Act::Malformed => stream_response("event: message_start\ndata: {not json\n\n".into()),
        Act::EchoKey => echo_key(&key),
        Act::EchoKeyStream => echo_key_stream(&key),
        Act::Cutoff(parts) => {
            let mut events = vec![(
                Some("message_start"),
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
                    "role": "assistant", "content": [], "model": model, "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 10, "output_tokens": 1}}}),
            )];
            events.extend(parts.iter().map(|p| {
                (
                    Some("content_block_delta"),
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": p}}),
                )
            }));
            sse(events, false)
        }
        Act::Stream(parts) => {
            let mut events = vec![
                (
                    Some("message_start"),
                    json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
                    "role": "assistant", "content": [], "model": model, "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 10, "output_tokens": 1}}}),
                ),
                (
                    Some("content_block_start"),
                    json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
                ),
                (Some("ping"), json!({"type": "ping"})),
            ];
            events.extend(parts.iter().map(|p| {
                (
                    Some("content_block_delta"),
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": p}}),
                )
            }));
            events.push((
                Some("content_block_stop"),
                json!({"type": "content_block_stop", "index": 0}),
            ));
            events.push((Some("message_delta"), json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 5}})));
            events.push((Some("message_stop"), json!({"type": "message_stop"})));
            sse(events, false)
        }
    }
}

async fn gemini(
    State(fake): State<Fake>,
    Path(call): Path<String>,
    headers: HeaderMap,
    _body: axum::Json<Value>,
) -> Response {
    let model = call.split(':').next().unwrap_or_default().to_string();
    let key = header(&headers, "x-goog-api-key");
    let first = fake.record("gemini", &model, key.clone());
    let too_long = json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
        "message": "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."}});
    let error = |status: u16, message: &str| {
        let name = if status == 429 {
            "RESOURCE_EXHAUSTED"
        } else {
            "INTERNAL"
        };
        json!({"error": {"code": status, "message": message, "status": name}})
    };
    match act(&model, first, too_long, error) {
        Act::Status(status, body, after) => failure(status, body, after),
        Act::Malformed => stream_response("data: {\"candidates\": [oops\n\n".into()),
        Act::EchoKey => echo_key(&key),
        Act::EchoKeyStream => echo_key_stream(&key),
        Act::Cutoff(parts) => {
            let events = parts.iter().map(|p| {
                (None, json!({"candidates": [{"content": {"parts": [{"text": p}], "role": "model"}, "index": 0}],
                    "modelVersion": model}))
            });
            sse(events.collect::<Vec<_>>(), false)
        }
        Act::Stream(parts) => {
            let last = parts.len() - 1;
            let events = parts.iter().enumerate().map(|(i, p)| {
                let mut candidate = json!({"content": {"parts": [{"text": p}], "role": "model"}, "index": 0});
                if i == last {
                    candidate["finishReason"] = json!("STOP");
                }
                (None, json!({"candidates": [candidate],
                    "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": if i == last { 5 } else { i + 1 },
                                      "totalTokenCount": if i == last { 15 } else { 10 + i + 1 }},
                    "modelVersion": model}))
            });
            sse(events.collect::<Vec<_>>(), false)
        }
    }
}

/// An OpenAI stream that goes on for a minute, a chunk each 100 ms; `guard` drops with it.
fn slow_stream(guard: HangUp) -> Response {
    let chunks = futures::stream::unfold((0, guard), |(n, guard)| async move {
        if n == 600 {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let chunk = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
            "model": "slow", "choices": [{"index": 0, "delta": {"content": "word "}, "finish_reason": null}]});
        let frame = format!("data: {chunk}\n\n");
        Some((Ok::<_, std::convert::Infallible>(frame), (n + 1, guard)))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(chunks))
        .unwrap()
}
