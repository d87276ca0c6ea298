//! Logging: readable text locally, one JSON object per line (Cloud Logging fields) in production.
//!
//! tracing-subscriber's own JSON formatter names the level `level` and nests span fields, but
//! Cloud Logging reads `severity`, `message`, `time` and `logging.googleapis.com/trace` from the
//! top level of each line, so the JSON output comes from the small [`JsonLayer`] below.

use std::io::Write;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::{self, MakeWriter};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, prelude::*};

/// The key under which Cloud Logging links a log line to a Cloud Trace trace.
const TRACE_KEY: &str = "logging.googleapis.com/trace";

/// Installs the global subscriber. `LOG_FORMAT=json` selects JSON; `RUST_LOG` overrides
/// `default_level`. Logs go to stderr so stdout stays free for `--json` output.
pub fn init(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry.with(json_layer(std::io::stderr)).try_init()
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

/// Turns an `X-Cloud-Trace-Context` header value (`TRACE_ID/SPAN_ID;o=1`, the `/SPAN_ID` and
/// `;o=…` parts optional) into the value Cloud Logging links to a trace:
/// `projects/<project>/traces/<TRACE_ID>`.
///
/// Returns `None` when `project` is `None` or empty (Cloud Logging only links the full form),
/// and when the trace id is not exactly 32 hex characters.
pub fn cloud_trace(header: &str, project: Option<&str>) -> Option<String> {
    let project = project.filter(|p| !p.is_empty())?;
    let trace_id = header.trim().split(['/', ';']).next()?;
    let valid = trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| format!("projects/{project}/traces/{trace_id}"))
}

/// The JSON layer `init` installs, writing to `make_writer` (injectable so tests can capture it).
fn json_layer<W: for<'w> MakeWriter<'w> + 'static>(make_writer: W) -> JsonLayer<W> {
    JsonLayer { make_writer }
}

/// Writes each event as one line of JSON with Cloud Logging's field names.
struct JsonLayer<W> {
    make_writer: W,
}

/// A span's fields as JSON, kept in the span's extensions so events inside it can copy them.
struct SpanFields(Map<String, Value>);

/// Records tracing fields into a JSON map, keeping numbers and bools as JSON numbers and bools.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

/// Cloud Logging's severity names; it has no TRACE, so TRACE logs as DEBUG.
fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(SpanFields(fields)) = span.extensions_mut().get_mut::<SpanFields>() {
            values.record(&mut JsonVisitor(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut line = Map::new();
        // Span fields first, outermost to innermost, so inner spans and then the event win.
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>() {
                    for (key, value) in fields {
                        match value {
                            Value::String(s) if key == "trace" && !s.is_empty() => {
                                line.insert(TRACE_KEY.into(), value.clone())
                            }
                            _ => line.insert(key.clone(), value.clone()),
                        };
                    }
                }
                line.insert("span".into(), span.name().into());
            }
        }
        event.record(&mut JsonVisitor(&mut line));
        let meta = event.metadata();
        line.insert("severity".into(), severity(meta.level()).into());
        line.insert("target".into(), meta.target().into());
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        line.insert("time".into(), now.into());

        let mut buf = serde_json::to_vec(&line).unwrap_or_default();
        buf.push(b'\n');
        // One write per line so concurrent lines do not interleave; a failed log write is dropped.
        let _ = self.make_writer.make_writer_for(meta).write_all(&buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer that appends into a shared buffer the test reads afterwards.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs `f` under the JSON layer and returns the lines it logged, parsed.
    fn capture(f: impl FnOnce()) -> Vec<Value> {
        let buf = Capture::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::registry().with(json_layer(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn severity_message_and_field_types() {
        let lines = capture(|| {
            tracing::warn!(
                attempts = 3,
                ratio = 0.5,
                ok = false,
                name = "a",
                "slow {}",
                1
            );
            tracing::error!(err = ?"boom", "failed");
            tracing::info!("done");
            tracing::trace!("fine");
        });
        let severities: Vec<_> = lines.iter().map(|l| l["severity"].as_str()).collect();
        assert_eq!(
            severities,
            [Some("WARNING"), Some("ERROR"), Some("INFO"), Some("DEBUG")]
        );
        let warn = &lines[0];
        assert_eq!(warn["message"], "slow 1");
        assert_eq!(warn["attempts"], 3);
        assert_eq!(warn["ratio"], 0.5);
        assert_eq!(warn["ok"], false);
        assert_eq!(warn["name"], "a");
        assert_eq!(warn["target"], module_path!());
        assert!(chrono::DateTime::parse_from_rfc3339(warn["time"].as_str().unwrap()).is_ok());
        assert_eq!(lines[1]["err"], "\"boom\"");
        assert!(warn.get("span").is_none());
    }

    #[test]
    fn span_fields_and_trace() {
        let trace = "projects/p/traces/0123456789abcdef0123456789abcdef";
        let lines = capture(|| {
            let request = tracing::info_span!("request", method = "POST", trace = trace);
            let _r = request.enter();
            let job = tracing::info_span!("job", video_id = 42, method = tracing::field::Empty);
            job.record("method", "inner");
            let _j = job.enter();
            tracing::info!("started");
        });
        let line = &lines[0];
        assert_eq!(line["video_id"], 42);
        assert_eq!(line["method"], "inner");
        assert_eq!(line["span"], "job");
        assert_eq!(line[TRACE_KEY], trace);
        assert!(line.get("trace").is_none());
    }

    #[test]
    fn cloud_trace_parsing() {
        let id = "105445aa7843bc8bf206b12000100000";
        let full = format!("projects/proj/traces/{id}");
        assert_eq!(
            cloud_trace(&format!("{id}/1;o=1"), Some("proj")),
            Some(full.clone())
        );
        assert_eq!(cloud_trace(id, Some("proj")), Some(full));
        assert!(cloud_trace(&format!("{id};o=1"), Some("proj")).is_some());
        assert_eq!(cloud_trace(&format!("{id}/1;o=1"), None), None);
        assert_eq!(cloud_trace("105445aa/1;o=1", Some("proj")), None);
        assert_eq!(cloud_trace(&format!("{}x/1", &id[1..]), Some("proj")), None);
        assert_eq!(cloud_trace("", Some("proj")), None);
    }
}
