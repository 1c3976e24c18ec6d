//! What went wrong with a provider call, in the terms the retry and fallback policy needs.

use std::time::Duration;

use http::HeaderMap;
use http::StatusCode;

use super::secrets::Scrubber;

/// A failed call, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// 429: retry after the delay the provider asked for, then fall back.
    RateLimited(Option<Duration>),
    /// 5xx, a connection failure or a timeout: retry, then fall back.
    Unavailable(String),
    /// The prompt does not fit the model: fall back at once, never retry the same model.
    ContextLength(String),
    /// The answer could not be read: retry, then fall back.
    Malformed(String),
    /// The provider refused this model or key (401, 403, 404): try the next model, never
    /// this one again.
    Refused(String),
    /// Anything else (a bad request): retrying or falling back will not help.
    Fatal(String),
}

impl Failure {
    /// Its name, as a trace's `error.type` shows it.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::RateLimited(_) => "rate_limited",
            Failure::Unavailable(_) => "unavailable",
            Failure::ContextLength(_) => "context_length",
            Failure::Malformed(_) => "malformed",
            Failure::Refused(_) => "refused",
            Failure::Fatal(_) => "fatal",
        }
    }

    /// Whether this model may be tried again.
    pub fn retry_same_model(&self) -> bool {
        matches!(
            self,
            Failure::RateLimited(_) | Failure::Unavailable(_) | Failure::Malformed(_)
        )
    }

    /// A short description for errors and logs (never the request, which holds no key
    /// either, but may be long).
    pub fn describe(&self) -> String {
        match self {
            Failure::RateLimited(Some(after)) => {
                format!("rate limited (retry after {} ms)", after.as_millis())
            }
            Failure::RateLimited(None) => "rate limited".into(),
            Failure::Unavailable(why) => format!("unavailable: {why}"),
            Failure::ContextLength(why) => format!("context length exceeded: {why}"),
            Failure::Refused(why) => format!("refused: {why}"),
            Failure::Malformed(why) => format!("malformed answer: {why}"),
            Failure::Fatal(why) => why.clone(),
        }
    }
}

/// Classifies a genai error by the HTTP status and body behind it, wherever genai keeps
/// them. Every key is scrubbed out of the text (before it is cut short, so no part of one
/// survives): a provider's error body may echo the request's headers.
pub fn classify(err: &genai::Error, scrubber: &Scrubber) -> Failure {
    if let Some((status, headers, body)) = http_failure(err) {
        return from_status(status, headers, &scrubber.scrub(body));
    }
    let first_line = |err: &genai::Error| truncate(&scrubber.scrub(&err.to_string()), 300);
    match err {
        genai::Error::StreamParse { .. }
        | genai::Error::ChatResponseGeneration { .. }
        | genai::Error::InvalidJsonResponseElement { .. }
        | genai::Error::NoChatResponse { .. }
        | genai::Error::ChatResponse { .. } => Failure::Malformed(first_line(err)),
        genai::Error::WebStream { error, .. }
            if error.downcast_ref::<serde_json::Error>().is_some() =>
        {
            Failure::Malformed(first_line(err))
        }
        genai::Error::WebStream { .. }
        | genai::Error::WebModelCall { .. }
        | genai::Error::WebAdapterCall { .. } => Failure::Unavailable(first_line(err)),
        _ => Failure::Fatal(first_line(err)),
    }
}

/// The status, headers and body of a failed HTTP response; a streamed call keeps them
/// inside its `WebStream` error.
fn http_failure(err: &genai::Error) -> Option<(StatusCode, &HeaderMap, &str)> {
    match err {
        genai::Error::HttpError {
            status,
            headers,
            body,
            ..
        } => Some((*status, headers, body)),
        genai::Error::WebModelCall { webc_error, .. }
        | genai::Error::WebAdapterCall { webc_error, .. } => match webc_error {
            genai::webc::Error::ResponseFailedStatus {
                status,
                body,
                headers,
            } => Some((*status, headers, body)),
            _ => None,
        },
        genai::Error::WebStream { error, .. } => {
            error.downcast_ref::<genai::Error>().and_then(http_failure)
        }
        _ => None,
    }
}

fn from_status(status: StatusCode, headers: &HeaderMap, body: &str) -> Failure {
    let summary = format!("HTTP {status}: {}", truncate(body, 300));
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Failure::RateLimited(retry_after(headers));
    }
    if is_context_length(body) {
        return Failure::ContextLength(summary);
    }
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        return Failure::Unavailable(summary);
    }
    if [
        StatusCode::UNAUTHORIZED,
        StatusCode::FORBIDDEN,
        StatusCode::NOT_FOUND,
    ]
    .contains(&status)
    {
        return Failure::Refused(summary);
    }
    Failure::Fatal(summary)
}

/// The phrases OpenAI, Anthropic, Gemini and llama.cpp use for a prompt that is too long.
fn is_context_length(body: &str) -> bool {
    const MARKERS: [&str; 7] = [
        "context_length_exceeded",
        "maximum context length",
        "prompt is too long",
        "exceeds the maximum number of tokens",
        "exceeds the context size",
        "exceeds the available context size",
        "exceed_context_size_error",
    ];
    let body = body.to_ascii_lowercase();
    MARKERS.iter().any(|m| body.contains(m))
}

/// `retry-after-ms` (OpenAI), else `retry-after` in seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms.max(0.0) / 1000.0).ok();
    }
    let value = text("retry-after")?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs.max(0.0)).ok();
    }
    let when = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait = when.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(wait).unwrap_or_default())
}

fn truncate(text: &str, max: usize) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    match line.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_milliseconds() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(150)));
    }

    #[test]
    fn statuses_classify() {
        let none = HeaderMap::new();
        assert_eq!(
            from_status(StatusCode::TOO_MANY_REQUESTS, &none, ""),
            Failure::RateLimited(None)
        );
        let openai = r#"{"error":{"code":"context_length_exceeded","message":"too long"}}"#;
        assert!(matches!(
            from_status(StatusCode::BAD_REQUEST, &none, openai),
            Failure::ContextLength(_)
        ));
        let llama = r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_prompt_tokens":9000,"n_ctx":8192}}"#;
        assert!(matches!(
            from_status(StatusCode::BAD_REQUEST, &none, llama),
            Failure::ContextLength(_)
        ));
        assert!(matches!(
            from_status(StatusCode::BAD_GATEWAY, &none, "oops"),
            Failure::Unavailable(_)
        ));
        assert!(matches!(
            from_status(StatusCode::UNAUTHORIZED, &none, "bad key"),
            Failure::Refused(_)
        ));
        assert!(matches!(
            from_status(StatusCode::UNPROCESSABLE_ENTITY, &none, "bad field"),
            Failure::Fatal(_)
        ));
    }
}
