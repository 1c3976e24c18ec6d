//! The monitor's section of the config file (`monitor:`).

use mindbus::config::Section;
use schemars::JsonSchema;
use secrecy::SecretString;
use serde::Deserialize;

/// The monitor: Postgres, batching and stream retention.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Postgres URL; may hold a password, so it is never logged. Env: `DATABASE_URL`.
    #[schemars(with = "String")]
    pub database_url: SecretString,
    /// Entries read and written per batch (per stream).
    #[schemars(range(min = 1, max = 100_000))]
    pub batch: usize,
    /// Longest blocking read, in milliseconds.
    #[schemars(range(min = 10, max = 60_000))]
    pub block_ms: u64,
    /// Entries of a dead monitor idle this long (ms) are reclaimed by a live one.
    #[schemars(range(min = 100))]
    pub lease_ms: u64,
    /// Keep about this many entries per stream (0: no length limit). Trimming never passes
    /// an entry that any consumer group has not yet acknowledged.
    pub retain_entries: u64,
    /// Keep entries this many seconds (0: no age limit), with the same guarantee.
    pub retain_secs: u64,
    /// How often streams are trimmed, in milliseconds.
    #[schemars(range(min = 100))]
    pub trim_every_ms: u64,
    /// An entry larger than this (names and values, in bytes) is recorded as a flagged
    /// preview: its field names and the start of each value. Batches are also cut to a few
    /// times this size, so Postgres never refuses one for its size.
    #[schemars(range(min = 1024))]
    pub max_row_bytes: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            database_url: SecretString::from("postgres://localhost/mindbus"),
            batch: 2_000,
            block_ms: 1_000,
            lease_ms: 30_000,
            retain_entries: 100_000,
            retain_secs: 0,
            trim_every_ms: 10_000,
            max_row_bytes: 16 << 20,
        }
    }
}

impl Section for MonitorConfig {
    const NAME: &'static str = "monitor";
    const ENV: &'static [(&'static str, &'static str)] = &[("DATABASE_URL", "database_url")];
}
