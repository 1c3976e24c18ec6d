//! The `echo` role: answers with the `data` it was sent.
//!
//! Its input may also hold, to drive the runtime's paths:
//! - `"sleep_ms": N`: work for N milliseconds first (stops early when cancelled);
//! - `"fail": "retryable"` or `"fail": "fatal"`: fail that way;
//! - `"fail_attempts": N`: fail retryably on the first N attempts, then answer;
//! - `"panic": true`: panic;
//! - `"chunks": ["a", "b"]`: stream each as a progress event `{"chunk": "a"}` first (as an LLM
//!   role streams its text).

use std::time::Duration;

use mindbus::runtime::{Context, Handler, HandlerError};
use mindbus::wire::TextChunk;
use serde_json::Value;

/// The echo handler.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Handler for Echo {
    async fn handle(&self, ctx: Context) -> Result<Value, HandlerError> {
        let data = ctx.data();
        if let Some(ms) = data.get("sleep_ms").and_then(Value::as_u64) {
            tokio::select! {
                _ = ctx.cancel.cancelled() => return Err(HandlerError::retryable("cancelled while sleeping")),
                _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
            }
        }
        if let Some(chunks) = data.get("chunks").and_then(Value::as_array) {
            for chunk in chunks {
                let chunk = TextChunk {
                    chunk: chunk
                        .as_str()
                        .map_or_else(|| chunk.to_string(), str::to_owned),
                    model: None,
                    cached: false,
                };
                ctx.progress(serde_json::to_value(chunk).unwrap_or_default())
                    .await;
            }
        }
        if data
            .get("fail_attempts")
            .and_then(Value::as_u64)
            .is_some_and(|n| u64::from(ctx.attempt) <= n)
        {
            return Err(HandlerError::retryable(format!(
                "asked to fail attempt {}",
                ctx.attempt
            )));
        }
        match data.get("fail").and_then(Value::as_str) {
            Some("retryable") => return Err(HandlerError::retryable("asked to fail (retryable)")),
            Some("fatal") => return Err(HandlerError::fatal("asked to fail (fatal)")),
            _ => {}
        }
        if data.get("panic").and_then(Value::as_bool) == Some(true) {
            panic!("echo was asked to panic");
        }
        Ok(data.clone())
    }
}
