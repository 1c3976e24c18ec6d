//! Logging for the binaries: `tracing` with fields, as text or JSON lines.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Crates whose logs are off whatever the level: genai logs provider response bodies,
/// which may echo an API key (the LLM layer reports failures itself, keys scrubbed).
const SILENCED: [&str; 1] = ["genai=off"];

/// Installs the global subscriber; `RUST_LOG` overrides the configured level. Logs go to
/// standard error so that standard output stays the command's own output.
pub fn init(config: &LogConfig) {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    for directive in SILENCED {
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    // Colour codes only on a terminal: a log file or a collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
