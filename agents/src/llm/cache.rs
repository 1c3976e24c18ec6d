//! The cache of deterministic calls (temperature 0), shared by every agent process.
//!
//! The key is a SHA-256 of everything that shapes the answer: the models in order, the
//! rendered prompts, the token limit and the output schema.

use mindbus::keys::Keys;
use mindbus::streams::Connection;
use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A cached answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cached {
    /// The answer's text.
    pub text: String,
    /// The model that gave it.
    pub model: String,
}

/// The cache of one deployment.
#[derive(Debug, Clone)]
pub struct Cache {
    conn: Connection,
    keys: Keys,
    ttl_secs: u64,
}

impl Cache {
    /// A cache on `conn`, keyed under `prefix`.
    pub fn new(conn: Connection, prefix: &str, ttl_secs: u64) -> Self {
        Self {
            conn,
            keys: Keys::new(prefix),
            ttl_secs,
        }
    }

    /// The key of a call.
    pub fn key(
        &self,
        models: &[String],
        system: &str,
        prompt: &str,
        max_tokens: u32,
        schema: Option<&Value>,
    ) -> String {
        let shape = json!([models, system, prompt, max_tokens, schema]);
        let digest = Sha256::digest(shape.to_string().as_bytes());
        self.keys.llm_cache(&hex::encode(digest))
    }

    /// The cached answer, if any. A broken entry counts as a miss.
    pub async fn get(&self, key: &str) -> redis::RedisResult<Option<Cached>> {
        let text: Option<String> = self.conn.clone().get(key).await?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Stores an answer.
    pub async fn put(&self, key: &str, answer: &Cached) -> redis::RedisResult<()> {
        let text = serde_json::to_string(answer).unwrap_or_default();
        self.conn.clone().set_ex(key, text, self.ttl_secs).await
    }
}
