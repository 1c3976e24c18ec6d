//! An LLM role as an agent [`Handler`]: renders its prompts from the command's data, asks
//! its models through the [`Caller`], checks JSON answers against the role's schema, and
//! reports every call's usage as a `mindbus.llm.usage` event.

use std::sync::Arc;

use mindbus::runtime::{Context, Handler, HandlerError};
use mindbus::wire::{ErrorType, EventKind, LlmUsage, TextChunk, UsageReport};
use serde_json::{Value, json};

use super::cache::{Cache, Cached};
use super::call::{Answer, CallError, Caller, Observer, Prompt, Spent};
use super::config::{LlmConfig, Output, RoleConfig};
use super::measure;
use super::models::ModelRef;
use super::spend::{Payer, Usage};

/// One configured role.
#[derive(Debug)]
pub struct LlmRole {
    config: Arc<LlmConfig>,
    name: String,
    role: RoleConfig,
    models: Vec<ModelRef>,
    caller: Caller,
    cache: Option<Cache>,
    templates: minijinja::Environment<'static>,
    validator: Option<jsonschema::Validator>,
}

impl LlmRole {
    /// The role `name` of `config`.
    pub fn new(
        config: Arc<LlmConfig>,
        name: &str,
        caller: Caller,
        cache: Option<Cache>,
    ) -> anyhow::Result<Self> {
        let role = config
            .roles
            .get(name)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no role `{name}` in the LLM config"))?;
        let models = std::iter::once(&role.model)
            .chain(&role.fallbacks)
            .map(|m| m.parse().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<ModelRef>>>()?;
        let mut templates = minijinja::Environment::new();
        templates.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        templates.add_template_owned("system", role.system.clone())?;
        templates.add_template_owned("prompt", role.prompt.clone())?;
        let validator = match &role.output {
            Output::Text => None,
            Output::Json { schema, .. } => Some(jsonschema::validator_for(schema)?),
        };
        let cache = cache.filter(|_| role.temperature == 0.0);
        Ok(Self {
            config,
            name: name.to_owned(),
            role,
            models,
            caller,
            cache,
            templates,
            validator,
        })
    }

    /// Commands one process handles at once.
    pub fn concurrency(&self) -> usize {
        self.role.concurrency
    }

    fn render(&self, name: &str, data: &Value) -> Result<String, HandlerError> {
        self.templates
            .get_template(name)
            .and_then(|t| t.render(data))
            .map_err(|e| {
                HandlerError::fatal(format!("rendering the {name} prompt: {e}"))
                    .with_type(ErrorType::Other("bad_input".into()))
            })
    }

    fn prompt(&self, data: &Value) -> Result<Prompt, HandlerError> {
        Ok(Prompt {
            system: self.render("system", data)?,
            user: self.render("prompt", data)?,
            temperature: self.role.temperature,
            max_tokens: self.role.max_tokens,
            schema: match &self.role.output {
                Output::Json { schema, .. } => Some(schema.clone()),
                Output::Text => None,
            },
        })
    }

    /// The answer's JSON, or what is wrong with it.
    fn check(&self, text: &str) -> Result<Option<Value>, String> {
        let Some(validator) = &self.validator else {
            return Ok(None);
        };
        let value = parse_json(text)?;
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{} at `{}`", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(Some(value))
        } else {
            Err(errors.join("; "))
        }
    }

    async fn ask(
        &self,
        ctx: &Context,
        prompt: &Prompt,
        payer: &Payer,
    ) -> Result<(Answer, Option<Value>), HandlerError> {
        let attempts = match &self.role.output {
            Output::Json { attempts, .. } => *attempts,
            Output::Text => 1,
        };
        let mut prompt = prompt.clone();
        let original = prompt.user.clone();
        let reporter = Reporter(ctx);
        let mut last = String::new();
        for _ in 0..attempts.max(1) {
            let answer = self
                .caller
                .call(
                    &self.config,
                    &self.models,
                    &prompt,
                    payer,
                    &reporter,
                    &ctx.cancel,
                )
                .await
                .map_err(to_handler_error)?;
            match self.check(&answer.text) {
                Ok(json) => return Ok((answer, json)),
                Err(why) => {
                    last = why;
                    prompt.user = format!(
                        "{original}\n\nYour last answer was not valid ({last}). Answer again with only the JSON object."
                    );
                }
            }
        }
        Err(HandlerError::fatal(format!(
            "the answer did not match the output schema after {attempts} calls: {last}"
        ))
        .with_type(ErrorType::Other("invalid_output".into())))
    }
}

impl Handler for LlmRole {
    async fn handle(&self, ctx: Context) -> Result<Value, HandlerError> {
        let command = &ctx.command;
        if let Some(known) = &self.config.tenants
            && !command
                .tenant()
                .is_some_and(|t| known.iter().any(|k| k == t))
        {
            return Err(HandlerError::fatal(format!(
                "the command's tenant ({}) is not one this deployment knows",
                command.tenant().unwrap_or("none")
            ))
            .with_type(ErrorType::Other("unknown_tenant".into())));
        }
        let prompt = self.prompt(ctx.data())?;
        let payer = Payer {
            run: command.runid.clone(),
            tenant: command.tenant().unwrap_or("default").to_owned(),
        };
        let names: Vec<String> = self.models.iter().map(ToString::to_string).collect();
        let key = self.cache.as_ref().map(|c| {
            c.key(
                &names,
                &prompt.system,
                &prompt.user,
                prompt.max_tokens,
                prompt.schema.as_ref(),
            )
        });
        let hit = match (&self.cache, &key) {
            (Some(cache), Some(key)) => {
                let hit = cache.get(key).await.ok().flatten();
                let hit = hit.and_then(|hit| Some((self.check(&hit.text).ok()?, hit)));
                measure::cache(&self.name, hit.is_some());
                hit
            }
            _ => None,
        };
        if let Some((json, hit)) = hit {
            let chunk = TextChunk {
                chunk: hit.text.clone(),
                model: Some(hit.model.clone()),
                cached: true,
            };
            ctx.progress(serde_json::to_value(chunk).unwrap_or_default())
                .await;
            let hit_usage = UsageEvent {
                model: &hit.model,
                usage: Usage::default(),
                latency_ms: 0,
                cachehit: true,
                estimated: false,
                failed: false,
            };
            hit_usage.emit(&ctx).await;
            return Ok(output(&hit.text, &hit.model, Usage::default(), true, json));
        }
        let (answer, json) = self.ask(&ctx, &prompt, &payer).await?;
        if let (Some(cache), Some(key)) = (&self.cache, &key) {
            let cached = Cached {
                text: answer.text.clone(),
                model: answer.model.to_string(),
            };
            if let Err(e) = cache.put(key, &cached).await {
                tracing::warn!(error = %e, "could not cache an answer");
            }
        }
        Ok(output(
            &answer.text,
            &answer.model.to_string(),
            answer.usage,
            false,
            json,
        ))
    }
}

/// The result's data: `text`, `model`, `usage`, `cached`, and a JSON answer's fields.
fn output(text: &str, model: &str, usage: Usage, cached: bool, json: Option<Value>) -> Value {
    let mut out = match json {
        Some(Value::Object(fields)) => Value::Object(fields),
        Some(other) => json!({ "value": other }),
        None => json!({}),
    };
    out["text"] = json!(text);
    out["model"] = json!(model);
    out["cached"] = json!(cached);
    out["usage"] = serde_json::to_value(UsageReport::from(usage)).unwrap_or_default();
    out
}

/// One `mindbus.llm.usage` event: a call that reached a provider (answered, or `failed`
/// after the provider took it), or a cache hit.
struct UsageEvent<'a> {
    model: &'a str,
    usage: Usage,
    latency_ms: u64,
    cachehit: bool,
    estimated: bool,
    failed: bool,
}

impl UsageEvent<'_> {
    async fn emit(&self, ctx: &Context) {
        let data = LlmUsage {
            report: self.usage.into(),
            model: self.model.to_owned(),
            latency_ms: self.latency_ms,
            cachehit: self.cachehit,
            estimated: self.estimated,
            failed: self.failed,
        };
        ctx.emit(
            EventKind::LlmUsage,
            serde_json::to_value(data).unwrap_or_default(),
        )
        .await;
    }
}

/// Streams text out as `mindbus.command.progress` events `{"chunk": ..., "model": ...}`,
/// and every call's usage as a `mindbus.llm.usage` event.
struct Reporter<'a>(&'a Context);

impl Observer for Reporter<'_> {
    async fn chunk(&self, model: &ModelRef, text: &str) {
        if !text.is_empty() {
            let chunk = TextChunk {
                chunk: text.to_owned(),
                model: Some(model.to_string()),
                cached: false,
            };
            self.0
                .progress(serde_json::to_value(chunk).unwrap_or_default())
                .await;
        }
    }

    async fn spent(&self, spent: &Spent) {
        let model = spent.model.to_string();
        let event = UsageEvent {
            model: &model,
            usage: spent.usage,
            latency_ms: spent.latency.as_millis() as u64,
            cachehit: false,
            estimated: spent.estimated,
            failed: spent.failed,
        };
        event.emit(self.0).await;
    }
}

fn to_handler_error(e: CallError) -> HandlerError {
    match e {
        CallError::BudgetExceeded(why) => {
            HandlerError::fatal(why).with_type(ErrorType::Other("budget_exceeded".into()))
        }
        CallError::Canceled => HandlerError::retryable("cancelled").with_type(ErrorType::Canceled),
        CallError::Failed(why) => {
            HandlerError::fatal(why).with_type(ErrorType::Other("llm_error".into()))
        }
        CallError::Redis(e) => HandlerError::retryable(format!("redis: {e}")),
    }
}

/// The JSON object in an answer: the whole text, or the part between the first `{` and
/// the last `}` (small models wrap JSON in prose or code fences).
fn parse_json(text: &str) -> Result<Value, String> {
    if let Ok(value) = serde_json::from_str(text.trim()) {
        return Ok(value);
    }
    let (Some(start), Some(end)) = (text.find('{'), text.rfind('}')) else {
        return Err("the answer holds no JSON object".into());
    };
    if end < start {
        return Err("the answer holds no JSON object".into());
    }
    serde_json::from_str(&text[start..=end]).map_err(|e| format!("not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_found_inside_prose_and_fences() {
        let text = "Sure!\n```json\n{\"approved\": true, \"issues\": []}\n```";
        assert_eq!(parse_json(text).unwrap()["approved"], json!(true));
        assert!(parse_json("no json here").is_err());
        assert!(parse_json("} backwards {").is_err());
    }
}
