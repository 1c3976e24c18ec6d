//! What a role implements: the [`Handler`] trait, its [`Context`] and its errors.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::writer::Write;
use crate::wire::{Command, ErrorType, EventKind};

/// Serves one agent role: turns a command into its result's `data`.
///
/// A handler may be called again for the same command (after a crash, a reclaim or a
/// retry); MindBus keeps only the first accepted result, so handlers need not be idempotent
/// in their output, only in their side effects.
pub trait Handler: Send + Sync + 'static {
    /// Handles one command. Return quickly when `ctx.cancel` fires; the future is dropped
    /// anyway on cancellation, deadline or shutdown.
    fn handle(&self, ctx: Context) -> impl Future<Output = Result<Value, HandlerError>> + Send;
}

/// Everything a handler knows about the command it is handling.
#[derive(Debug, Clone)]
pub struct Context {
    /// The command, decoded.
    pub command: Arc<Command>,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// Fires when the command is cancelled, its deadline passes or the process must stop.
    pub cancel: CancellationToken,
    pub(crate) progress: Progress,
}

impl Context {
    /// The command's decoded `data`.
    pub fn data(&self) -> &Value {
        &self.command.envelope.data.value
    }

    /// Publishes a `mindbus.command.progress` event (for example a chunk of streamed text).
    pub async fn progress(&self, data: Value) {
        self.emit(EventKind::Progress, data).await;
    }

    /// Publishes an event of `kind` about this command (progress, LLM usage), in order
    /// with its other events.
    pub async fn emit(&self, kind: EventKind, data: Value) {
        self.progress
            .send(kind, &self.command, self.attempt, data)
            .await;
    }
}

/// Sends progress events through the agent's ordered writer.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    pub writes: mpsc::Sender<Write>,
    pub source: Arc<str>,
    pub role: Arc<str>,
}

impl Progress {
    async fn send(&self, kind: EventKind, command: &Command, attempt: u32, data: Value) {
        let event = super::outcome::event(kind, &self.source, &self.role, command, attempt, data);
        if let Ok(fields) = event.encode_compact_packed() {
            let _ = self.writes.send(Write::Event(fields)).await;
        }
    }
}

/// A handler's failure: what kind, why, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{errortype}: {message}")]
pub struct HandlerError {
    /// The category reported in the result's `errortype`.
    pub errortype: ErrorType,
    /// The message reported in the result's `error`.
    pub message: String,
    /// Retryable failures are tried again with backoff, up to `maxattempts`.
    pub retryable: bool,
}

impl HandlerError {
    /// A failure worth retrying (a timeout, a rate limit, an outage).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            errortype: ErrorType::HandlerError,
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure that will not go away by retrying (bad input).
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            errortype: ErrorType::HandlerError,
            message: message.into(),
            retryable: false,
        }
    }

    /// The same failure under another `errortype`.
    pub fn with_type(mut self, errortype: ErrorType) -> Self {
        self.errortype = errortype;
        self
    }
}

/// The result of one handler call.
pub type HandlerResult = Result<Value, HandlerError>;

/// [`Handler`] with its future boxed, so the runtime can hold any handler behind one type.
pub(crate) trait DynHandler: Send + Sync {
    fn call(&self, ctx: Context) -> Pin<Box<dyn Future<Output = HandlerResult> + Send + '_>>;
}

impl<H: Handler> DynHandler for H {
    fn call(&self, ctx: Context) -> Pin<Box<dyn Future<Output = HandlerResult> + Send + '_>> {
        Box::pin(self.handle(ctx))
    }
}
