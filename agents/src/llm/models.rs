//! Model names (`provider/name`) and how each provider is reached through genai.

use std::fmt;
use std::str::FromStr;

use genai::adapter::AdapterKind;
use genai::resolver::{AuthData, Endpoint};
use genai::{ModelIden, ServiceTarget};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::config::ProviderConfig;

/// The providers MindBus speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// OpenAI chat completions.
    Openai,
    /// Anthropic messages.
    Anthropic,
    /// Google Gemini generateContent.
    Gemini,
    /// Any OpenAI-compatible server (llama.cpp, Ollama, vLLM); needs no key.
    Local,
}

impl Provider {
    const ALL: [(Provider, &'static str); 4] = [
        (Provider::Openai, "openai"),
        (Provider::Anthropic, "anthropic"),
        (Provider::Gemini, "gemini"),
        (Provider::Local, "local"),
    ];

    /// The name used in model names and config keys.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(p, _)| *p == self)
            .map_or("", |(_, name)| name)
    }

    fn adapter(self) -> AdapterKind {
        match self {
            Provider::Openai | Provider::Local => AdapterKind::OpenAI,
            Provider::Anthropic => AdapterKind::Anthropic,
            Provider::Gemini => AdapterKind::Gemini,
        }
    }

    fn default_base_url(self) -> &'static str {
        match self {
            Provider::Openai => "https://api.openai.com/v1/",
            Provider::Anthropic => "https://api.anthropic.com/v1/",
            Provider::Gemini => "https://generativelanguage.googleapis.com/v1beta/",
            Provider::Local => "http://127.0.0.1:8089/v1/",
        }
    }

    fn default_key_env(self) -> Option<&'static str> {
        match self {
            Provider::Openai => Some("OPENAI_API_KEY"),
            Provider::Anthropic => Some("ANTHROPIC_API_KEY"),
            Provider::Gemini => Some("GEMINI_API_KEY"),
            Provider::Local => None,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(p, _)| *p)
            .ok_or_else(|| {
                format!("unknown provider `{s}` (known: openai, anthropic, gemini, local)")
            })
    }
}

/// A model: `provider/name`, e.g. `anthropic/claude-3-5-haiku-latest` or `local/smollm2`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    /// Who serves it.
    pub provider: Provider,
    /// The provider's name for it.
    pub name: String,
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.name)
    }
}

impl FromStr for ModelRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (provider, name) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not `provider/model`"))?;
        if name.is_empty() {
            return Err(format!("`{s}` names no model"));
        }
        Ok(Self {
            provider: provider.parse()?,
            name: name.to_string(),
        })
    }
}

/// Where a model is called, with its key read from the environment.
#[derive(Debug, Clone)]
pub struct Target {
    base_url: String,
    key: Option<SecretString>,
}

impl Target {
    /// The target of `model`, or why it cannot be used (its key is not set).
    pub fn resolve(model: &ModelRef, config: Option<&ProviderConfig>) -> Result<Self, String> {
        let provider = model.provider;
        let base_url = config
            .and_then(|c| c.base_url.clone())
            .unwrap_or_else(|| provider.default_base_url().to_string());
        let key_env = key_env(provider, config);
        let key = key_env.and_then(read_key);
        match (key_env, &key, provider) {
            (Some(name), None, p) if p != Provider::Local => {
                Err(format!("{model} needs its key in {name}"))
            }
            _ => Ok(Self {
                base_url: with_slash(base_url),
                key,
            }),
        }
    }

    /// The genai target: endpoint, key and adapter.
    pub fn service_target(&self, model: &ModelRef) -> ServiceTarget {
        let key = self
            .key
            .as_ref()
            .map_or("none", |k| k.expose_secret())
            .to_string();
        ServiceTarget {
            endpoint: Endpoint::from_owned(self.base_url.clone()),
            auth: AuthData::from_single(key),
            model: ModelIden::new(model.provider.adapter(), model.name.clone()),
        }
    }
}

/// The environment variable holding `provider`'s key, if it takes one.
fn key_env(provider: Provider, config: Option<&ProviderConfig>) -> Option<&str> {
    config
        .and_then(|c| c.api_key_env.as_deref())
        .or(provider.default_key_env())
}

fn read_key(name: &str) -> Option<SecretString> {
    std::env::var(name)
        .ok()
        .filter(|k| !k.is_empty())
        .map(SecretString::from)
}

/// Every provider key the environment holds for `providers`: what must never leave the
/// process.
pub fn keys(providers: &std::collections::BTreeMap<Provider, ProviderConfig>) -> Vec<SecretString> {
    Provider::ALL
        .iter()
        .filter_map(|(provider, _)| key_env(*provider, providers.get(provider)))
        .filter_map(read_key)
        .collect()
}

fn with_slash(mut url: String) -> String {
    if !url.ends_with('/') {
        url.push('/');
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_parse() {
        let m: ModelRef = "anthropic/claude-3-5-haiku-latest".parse().unwrap();
        assert_eq!(m.provider, Provider::Anthropic);
        assert_eq!(m.to_string(), "anthropic/claude-3-5-haiku-latest");
        assert!(
            "gpt-4o"
                .parse::<ModelRef>()
                .unwrap_err()
                .contains("provider/model")
        );
        assert!(
            "acme/x"
                .parse::<ModelRef>()
                .unwrap_err()
                .contains("unknown provider")
        );
        assert!("local/".parse::<ModelRef>().is_err());
    }

    #[test]
    fn a_missing_key_is_named() {
        let config = ProviderConfig {
            base_url: None,
            api_key_env: Some("MINDBUS_TEST_NO_SUCH_KEY".into()),
        };
        let model: ModelRef = "openai/gpt-4o-mini".parse().unwrap();
        let err = Target::resolve(&model, Some(&config)).unwrap_err();
        assert!(err.contains("MINDBUS_TEST_NO_SUCH_KEY"), "{err}");
        let local: ModelRef = "local/smollm2".parse().unwrap();
        assert!(Target::resolve(&local, None).is_ok());
    }
}
