//! Log output. `json`: one flat JSON object per line with `timestamp` (epoch seconds, a number), `level`
//! (syslog severity: 3 error, 4 warn, 6 info, 7 debug/trace), `message` (always present), `target`, `role`
//! and the event's fields as flat scalars — the shape fluent-bit's GELF output and Graylog keep intact.
//! `text`: human-readable lines for a terminal.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keys the log line owns; an event field with one of these names is written as `field_<name>`.
/// (`id` is also renamed: Graylog drops a GELF field called `id`.)
const RESERVED: [&str; 8] = [
    "timestamp",
    "level",
    "message",
    "target",
    "role",
    "host",
    "id",
    "version",
];

/// Installs the global subscriber. `format` is `json` or `text`; `filter` uses `tracing` env-filter syntax.
/// Calling it again (tests) keeps the first subscriber.
pub fn init(format: &str, filter: &str, role: &'static str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _already_set = if format == "text" {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init()
    } else {
        registry.with(JsonLayer { role }).try_init()
    };
}

/// An error and its sources on one line: "outer: inner: root".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Checks a `tracing` filter such as `info,reporting_aggregator=debug`.
///
/// A bare word that is not a level (`warning`, `verbose`) is refused too: tracing would read it as a target
/// name and log nothing else, errors included.
pub fn check_filter(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', '[', ':']);
        if bare && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "`{directive}` is not a level ({}); to set the level of one target write `target=level`",
                LEVELS.join(", ")
            ));
        }
    }
    EnvFilter::try_new(filter)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Writes each event as one flat JSON line on stdout.
pub struct JsonLayer {
    /// Value of the `role` field on every line.
    pub role: &'static str,
}

/// Syslog severity of a tracing level.
pub fn syslog_severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Renders one event as a JSON line (without the newline).
pub fn render(event: &Event<'_>, role: &str, now: SystemTime) -> String {
    let mut fields = FieldMap(Map::new());
    event.record(&mut fields);
    let mut line = Map::new();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    line.insert(
        "timestamp".into(),
        Value::from((secs * 1000.0).round() / 1000.0),
    );
    line.insert(
        "level".into(),
        Value::from(syslog_severity(event.metadata().level())),
    );
    let message = match fields.0.remove("message") {
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    line.insert("message".into(), Value::from(message));
    line.insert("target".into(), Value::from(event.metadata().target()));
    line.insert("role".into(), Value::from(role));
    for (k, v) in fields.0 {
        let key = if RESERVED.contains(&k.as_str()) {
            format!("field_{k}")
        } else {
            k
        };
        line.insert(key, v);
    }
    Value::Object(line).to_string()
}

impl<S: Subscriber> Layer<S> for JsonLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut line = render(event, self.role, SystemTime::now());
        line.push('\n');
        let _ignored = std::io::stdout().lock().write_all(line.as_bytes());
    }
}

struct FieldMap(Map<String, Value>);

impl Visit for FieldMap {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::from(value.to_string()), Value::Number);
        self.0.insert(field.name().into(), v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Value::from(error_chain(value)));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Capture(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let now = UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_250);
            self.0
                .lock()
                .expect("lock")
                .push(render(event, "ingest", now));
        }
    }

    #[test]
    fn json_line_is_flat_with_numeric_level_and_time() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(lines.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let err = std::io::Error::other("disk full");
            tracing::error!(
                partition = 3,
                id = "x",
                error = &err as &dyn std::error::Error,
                "append failed"
            );
        });
        let lines = lines.lock().expect("lock");
        let v: Value = serde_json::from_str(&lines[0]).expect("valid JSON");
        assert_eq!(v["message"], "append failed");
        assert_eq!(v["level"], 3);
        assert_eq!(v["timestamp"], 1_700_000_000.25);
        assert_eq!(v["role"], "ingest");
        assert_eq!(v["partition"], 3);
        assert_eq!(v["field_id"], "x");
        assert!(v.get("id").is_none());
        assert_eq!(v["error"], "disk full");
        assert!(v
            .as_object()
            .expect("object")
            .values()
            .all(|x| !x.is_object() && !x.is_array()));
    }

    #[test]
    fn a_bare_word_that_is_not_a_level_is_refused_with_the_levels_named() {
        let err = check_filter("warning").expect_err("warning is not a level");
        assert!(
            err.contains("`warning` is not a level") && err.contains("warn"),
            "{err}"
        );
        assert!(check_filter("info,verbose").is_err());
        for ok in [
            "warn",
            "INFO",
            "info,reporting_store=debug",
            "off",
            "reporting_aggregator[batch]=trace",
        ] {
            assert_eq!(check_filter(ok), Ok(()), "{ok}");
        }
    }
}
