//! Logging: readable text locally, one JSON object per line (Cloud Logging fields) in production.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber. `LOG_FORMAT=json` selects JSON; `RUST_LOG` overrides
/// `default_level`. Logs go to stderr so stdout stays free for `--json` output.
pub fn init(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            )
            .try_init()
    };
    // A second init (tests, benches) keeps the first subscriber.
    let _ = result;
}
