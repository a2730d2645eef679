//! Logs an operator can ship: `LOG_FORMAT=json` writes one JSON object per
//! line (`ts`, `level`, `event`, `region`, `machine`, then the event's
//! fields); `text` (the default) is for people. `LOG_LEVEL` filters
//! (`info` by default; `RUST_LOG` directives also work).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// One JSON object per event.
pub struct JsonLines {
    pub region: String,
    pub machine: String,
}

/// The event's fields, as JSON values.
struct Fields(serde_json::Map<String, serde_json::Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

/// `2026-12-03T10:00:00.123Z`.
fn now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = osaurus_relay_engine::time::iso8601(d.as_secs());
    format!("{}.{:03}Z", secs.trim_end_matches('Z'), d.subsec_millis())
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields(serde_json::Map::new());
        event.record(&mut fields);
        let message = fields.0.remove("message").unwrap_or_default();
        let mut line = serde_json::Map::new();
        line.insert("ts".into(), now().into());
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        line.insert("level".into(), level.into());
        line.insert("event".into(), message);
        line.insert("region".into(), self.region.clone().into());
        line.insert("machine".into(), self.machine.clone().into());
        for (k, v) in fields.0 {
            line.entry(k).or_insert(v);
        }
        writeln!(w, "{}", serde_json::Value::Object(line))
    }
}

/// Sets up logging from `LOG_FORMAT` and `LOG_LEVEL`; `Err` names a bad value.
pub fn init() -> Result<(), String> {
    let level = std::env::var("LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .map_err(|e| format!("LOG_LEVEL {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => {
            let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            let region = var("FLY_REGION").unwrap_or_else(|| "local".into());
            let machine = (var("FLY_MACHINE_ID").or_else(|| var("INSTANCE_ID")))
                .unwrap_or_else(|| "local".into());
            builder.event_format(JsonLines { region, machine }).init();
        }
        Ok("text") | Err(_) => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        Ok(other) => return Err(format!("LOG_FORMAT {other:?}: expected json or text")),
    }
    Ok(())
}
