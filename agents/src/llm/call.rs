//! One model call, written once for every provider: shared rate limit, then a budget
//! reservation, a streamed answer that counts only when the provider ends it properly,
//! retries that honour `Retry-After`, and fallback to the next model. Every call that
//! reached a provider is charged and reported, answered or not.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backon::BackoffBuilder as _;
use futures::StreamExt as _;
use genai::chat::{
    ChatMessage, ChatOptions, ChatRequest, ChatResponseFormat, ChatStreamEvent, JsonSpec,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, Span, info, warn};

use super::config::LlmConfig;
use super::failure::{Failure, classify};
use super::limits::Limiter;
use super::measure;
use super::models::{ModelRef, Provider, Target};
use super::secrets::Scrubber;
use super::spend::{BudgetError, Ledger, Payer, Usage};

/// What to ask.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// The system prompt.
    pub system: String,
    /// The user message.
    pub user: String,
    /// Sampling temperature.
    pub temperature: f64,
    /// Most answer tokens.
    pub max_tokens: u32,
    /// A JSON Schema the answer must follow, passed to providers that can constrain it.
    pub schema: Option<Value>,
}

/// A model's answer and what it cost.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The whole text.
    pub text: String,
    /// The model that answered.
    pub model: ModelRef,
    /// Tokens and cost.
    pub usage: Usage,
    /// Whether the provider did not report tokens and they were estimated (4 chars each).
    pub estimated: bool,
    /// From the request to the last token.
    pub latency: Duration,
}

/// Why no model answered.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// A budget is spent; nothing was called.
    #[error("{0}")]
    BudgetExceeded(String),
    /// The command was cancelled (the call was aborted).
    #[error("cancelled")]
    Canceled,
    /// Every model failed, or one failed in a way no other model would fix.
    #[error("{0}")]
    Failed(String),
    /// Redis could not be reached for limits or budgets.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// One call that reached a provider, and what it cost.
#[derive(Debug, Clone)]
pub struct Spent {
    /// The model called.
    pub model: ModelRef,
    /// Tokens and cost.
    pub usage: Usage,
    /// Whether tokens were estimated (the provider did not report them).
    pub estimated: bool,
    /// From the request to the last token (or to the failure).
    pub latency: Duration,
    /// Whether the call failed or was cancelled after the provider took it.
    pub failed: bool,
}

/// Receives what a call produces as it goes.
pub trait Observer: Send + Sync {
    /// One piece of text from `model`.
    fn chunk(&self, model: &ModelRef, text: &str) -> impl Future<Output = ()> + Send;
    /// A call that reached a provider is over (answered, failed or cancelled).
    fn spent(&self, spent: &Spent) -> impl Future<Output = ()> + Send;
}

/// The provider-agnostic caller.
#[derive(Debug, Clone)]
pub struct Caller {
    client: genai::Client,
    limiter: Limiter,
    ledger: Ledger,
    scrubber: Scrubber,
}

impl Caller {
    /// A caller that limits through `limiter`, spends through `ledger` and scrubs every
    /// text a provider sends back with `scrubber`.
    pub fn new(limiter: Limiter, ledger: Ledger, scrubber: Scrubber) -> Result<Self, genai::Error> {
        Ok(Self {
            client: genai::Client::new()?,
            limiter,
            ledger,
            scrubber,
        })
    }

    /// Asks `models` in order until one answers; each is retried while its failure may pass.
    pub async fn call(
        &self,
        config: &LlmConfig,
        models: &[ModelRef],
        prompt: &Prompt,
        payer: &Payer,
        observer: &impl Observer,
        cancel: &CancellationToken,
    ) -> Result<Answer, CallError> {
        let mut tried = Vec::new();
        for model in models {
            let target = match Target::resolve(model, config.providers.get(&model.provider)) {
                Ok(target) => target,
                Err(why) => {
                    tried.push(why);
                    continue;
                }
            };
            match self
                .call_model(config, model, &target, prompt, payer, observer, cancel)
                .await
            {
                Ok(answer) => return Ok(answer),
                Err(Attempted::Stop(e)) => return Err(e),
                Err(Attempted::Next(failure)) => {
                    warn!(%model, failure = %failure.describe(), "falling back to the next model");
                    tried.push(format!("{model}: {}", failure.describe()));
                }
            }
        }
        Err(CallError::Failed(format!(
            "no model answered: {}",
            tried.join("; ")
        )))
    }

    #[allow(clippy::too_many_arguments)]
    async fn call_model(
        &self,
        config: &LlmConfig,
        model: &ModelRef,
        target: &Target,
        prompt: &Prompt,
        payer: &Payer,
        observer: &impl Observer,
        cancel: &CancellationToken,
    ) -> Result<Answer, Attempted> {
        let retry = config.retry;
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(retry.base_ms))
            .with_max_delay(Duration::from_millis(retry.max_ms))
            .with_jitter()
            .without_max_times()
            .build();
        let prompt_tokens = (prompt.system.len() + prompt.user.len()) as u64 / 4;
        let estimate = prompt_tokens + u64::from(prompt.max_tokens);
        let price = config.price(model);
        for attempt in 1..=retry.attempts.max(1) {
            let waiting = Instant::now();
            let admitted = self
                .limiter
                .acquire(config, model, estimate, cancel)
                .await
                .map_err(|e| Attempted::Stop(e.into()))?;
            measure::rate_limit_wait(model, waiting.elapsed());
            if !admitted {
                return Err(Attempted::Stop(CallError::Canceled));
            }
            // Charged now that it may start: calls let through together see each other.
            let most = price.cost_micros(prompt_tokens, u64::from(prompt.max_tokens));
            let mut reservation = self
                .ledger
                .reserve(&config.budgets, payer, most)
                .await
                .map_err(|e| match e {
                    BudgetError::Exceeded(why) => {
                        measure::budget_refused(model);
                        Attempted::Stop(CallError::BudgetExceeded(why))
                    }
                    BudgetError::Redis(e) => Attempted::Stop(e.into()),
                    BudgetError::Interrupted(_) => Attempted::Stop(CallError::Canceled),
                })?;
            let started = Instant::now();
            // Dropped with its command once the provider took it, the call is charged its
            // prompt.
            let prompt_only = Usage {
                tokens_in: prompt_tokens,
                tokens_out: 0,
                cost_micros: price.cost_micros(prompt_tokens, 0),
            };
            let mut progress = Progress {
                sent: reservation.if_taken(prompt_only),
                text: String::new(),
            };
            let meter = measure::Meter::start(model, Arc::clone(&progress.sent), prompt_only);
            let timeout = config.timeout(model);
            let span = chat_span(model, prompt.max_tokens, attempt);
            let streamed = tokio::time::timeout(
                timeout,
                self.stream(
                    config,
                    model,
                    target,
                    prompt,
                    observer,
                    cancel,
                    &mut progress,
                ),
            )
            .instrument(span.clone())
            .await
            .unwrap_or_else(|_| {
                Err(Streamed::Failed(Failure::Unavailable(format!(
                    "no whole answer within {} ms",
                    timeout.as_millis()
                ))))
            });
            // What the provider bills: its own count for an answer, else an estimate for a
            // call it took (an answer cut off, cancelled or out of time).
            let spent = match &streamed {
                Ok(answer) => Some((answer.usage, answer.estimated, false)),
                Err(_) if progress.sent.load(Ordering::SeqCst) => {
                    let tokens_out = progress.text.len() as u64 / 4;
                    let usage = Usage {
                        tokens_in: prompt_tokens,
                        tokens_out,
                        cost_micros: price.cost_micros(prompt_tokens, tokens_out),
                    };
                    Some((usage, true, true))
                }
                Err(_) => None,
            };
            let failure = streamed.as_ref().err().map(|failed| match failed {
                Streamed::Canceled => "canceled",
                Streamed::Failed(failure) => failure.kind(),
            });
            let usage = spent.map(|(usage, ..)| usage);
            record_call(&span, usage, failure);
            meter.finish(usage, failure);
            let ledger = match spent {
                Some((usage, estimated, failed)) => {
                    observer
                        .spent(&Spent {
                            model: model.clone(),
                            usage,
                            estimated,
                            latency: started.elapsed(),
                            failed,
                        })
                        .await;
                    self.ledger.settle(reservation, usage).await
                }
                None => self.ledger.release(reservation).await,
            };
            if let Err(e) = ledger {
                // The money is spent either way: the answer is kept, the estimate stays
                // counted, and the call is not made again for want of a ledger entry.
                warn!(%model, error = %e, "could not settle a call's cost; its estimate stays charged");
            }
            let failure = match streamed {
                Ok(answer) => return Ok(answer),
                Err(Streamed::Canceled) => return Err(Attempted::Stop(CallError::Canceled)),
                Err(Streamed::Failed(failure)) => failure,
            };
            match &failure {
                Failure::Fatal(why) => {
                    return Err(Attempted::Stop(CallError::Failed(format!(
                        "{model}: {why}"
                    ))));
                }
                f if !f.retry_same_model() || attempt >= retry.attempts => {
                    return Err(Attempted::Next(failure));
                }
                _ => {}
            }
            let delay = match &failure {
                Failure::RateLimited(Some(after)) => *after,
                _ => delays.next().unwrap_or_default(),
            };
            if delay > Duration::from_millis(retry.max_ms) {
                return Err(Attempted::Next(failure));
            }
            info!(%model, attempt, delay_ms = delay.as_millis() as u64, failure = %failure.describe(), "retrying the model");
            tokio::select! {
                () = cancel.cancelled() => return Err(Attempted::Stop(CallError::Canceled)),
                () = tokio::time::sleep(delay) => {}
            }
        }
        Err(Attempted::Next(Failure::Unavailable("no attempts".into())))
    }

    /// One streamed call. `progress` keeps, past a timeout that drops this future, whether
    /// the provider took the call and the text it sent.
    #[allow(clippy::too_many_arguments)]
    async fn stream(
        &self,
        config: &LlmConfig,
        model: &ModelRef,
        target: &Target,
        prompt: &Prompt,
        observer: &impl Observer,
        cancel: &CancellationToken,
        progress: &mut Progress,
    ) -> Result<Answer, Streamed> {
        let started = Instant::now();
        let request = ChatRequest::new(vec![ChatMessage::user(prompt.user.clone())])
            .with_system(prompt.system.clone());
        let mut options = ChatOptions::default()
            .with_temperature(prompt.temperature)
            .with_max_tokens(prompt.max_tokens)
            .with_capture_usage(true);
        options = match (&prompt.schema, model.provider) {
            (None, _) => options,
            // llama.cpp's server (and Ollama's) constrain output with `json_object` and a
            // `schema`; they refuse OpenAI's `json_schema` form.
            (Some(schema), Provider::Local) => options.with_extra_body(serde_json::json!({
                "response_format": { "type": "json_object", "schema": schema }
            })),
            (Some(schema), _) => options.with_response_format(ChatResponseFormat::JsonSpec(
                JsonSpec::new("answer", schema.clone()),
            )),
        };
        let service = target.service_target(model);
        let scrubber = &self.scrubber;
        let response = tokio::select! {
            () = cancel.cancelled() => return Err(Streamed::Canceled),
            response = self.client.exec_chat_stream(service, request, Some(&options)) => response,
        };
        let mut stream = response
            .map_err(|e| Streamed::Failed(classify(&e, scrubber)))?
            .stream;
        let mut end = None;
        loop {
            let event = tokio::select! {
                () = cancel.cancelled() => return Err(Streamed::Canceled),
                event = stream.next() => event,
            };
            match event {
                None => break,
                Some(Err(e)) => {
                    // An answer that cannot be read came in a stream the provider opened (and
                    // bills); an error status or a failed connection took nothing.
                    let failure = classify(&e, scrubber);
                    if matches!(failure, Failure::Malformed(_)) {
                        progress.sent.store(true, Ordering::SeqCst);
                    }
                    return Err(Streamed::Failed(failure));
                }
                // `Start` comes before the request is even sent; anything after it means
                // the provider is answering.
                Some(Ok(ChatStreamEvent::Start)) => {}
                Some(Ok(ChatStreamEvent::Chunk(chunk))) => {
                    progress.sent.store(true, Ordering::SeqCst);
                    progress.text.push_str(&chunk.content);
                    observer.chunk(model, &chunk.content).await;
                }
                Some(Ok(ChatStreamEvent::End(stream_end))) => {
                    progress.sent.store(true, Ordering::SeqCst);
                    end = Some(stream_end);
                }
                Some(Ok(_)) => progress.sent.store(true, Ordering::SeqCst),
            }
        }
        // An answer counts only when the provider ended it: a stream cut off midway (no
        // end, or an end without a stop reason) is a failure worth retrying, never an
        // answer to cache.
        let Some(end) = end.filter(|e| e.captured_stop_reason.is_some()) else {
            return Err(Streamed::Failed(Failure::Malformed(
                "the answer stream stopped before the provider finished it".into(),
            )));
        };
        let reported = end.captured_usage;
        let text = std::mem::take(&mut progress.text);
        let tokens = |n: Option<i32>| n.and_then(|n| u64::try_from(n).ok());
        let reported_in = reported.as_ref().and_then(|u| tokens(u.prompt_tokens));
        let reported_out = reported.as_ref().and_then(|u| tokens(u.completion_tokens));
        let tokens_in = reported_in.unwrap_or((prompt.system.len() + prompt.user.len()) as u64 / 4);
        let tokens_out = reported_out.unwrap_or(text.len() as u64 / 4);
        Ok(Answer {
            usage: Usage {
                tokens_in,
                tokens_out,
                cost_micros: config.price(model).cost_micros(tokens_in, tokens_out),
            },
            estimated: reported_in.is_none() || reported_out.is_none(),
            text,
            model: model.clone(),
            latency: started.elapsed(),
        })
    }
}

enum Attempted {
    /// Try the next model.
    Next(Failure),
    /// Give up on every model.
    Stop(CallError),
}

enum Streamed {
    Canceled,
    Failed(Failure),
}

/// How far one call got.
#[derive(Debug)]
struct Progress {
    /// The provider took the call: its answer is coming (and so it bills for it). Shared
    /// with the call's reservation, which charges for it if the call is dropped.
    sent: Arc<AtomicBool>,
    /// The text streamed so far.
    text: String,
}

/// A client span for one call to a model, after OpenTelemetry's conventions for generative
/// AI: usage and cost are recorded when it ends ([`record_call`]).
fn chat_span(model: &ModelRef, max_tokens: u32, attempt: u32) -> Span {
    if !mindbus::telemetry::tracing_on() {
        return Span::none();
    }
    tracing::info_span!(
        "chat",
        otel.name = format!("chat {}", model.name),
        otel.kind = "client",
        gen_ai.operation.name = "chat",
        gen_ai.system = model.provider.as_str(),
        gen_ai.request.model = model.name.as_str(),
        gen_ai.request.max_tokens = max_tokens,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        mindbus.llm.attempt = attempt,
        mindbus.llm.cost_usd = tracing::field::Empty,
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Records what a call used, or why it failed (the failure's kind), on its span.
fn record_call(span: &Span, usage: Option<Usage>, failed: Option<&str>) {
    if let Some(usage) = usage {
        span.record("gen_ai.usage.input_tokens", usage.tokens_in);
        span.record("gen_ai.usage.output_tokens", usage.tokens_out);
        span.record("mindbus.llm.cost_usd", usage.cost_micros as f64 / 1e6);
    }
    if let Some(kind) = failed {
        span.record("error.type", kind);
        span.record("otel.status_code", "ERROR");
    }
}
