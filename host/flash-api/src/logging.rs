//! The log of Flash's servers (`flash-host` workers and `flash server`): human lines on a
//! terminal, JSON lines anywhere else.
//!
//! A server's log is read by programs (`flash logs`, the platform's log collector) far more
//! often than by eyes on a terminal, so off a terminal every event is one JSON object per
//! line, as RunPod workers log:
//!
//! ```json
//! {"timestamp":"2026-12-04T14:30:00.123456Z","level":"INFO","target":"guest","message":"hello",
//!  "endpoint":"ep-1","worker":"w-2","resource":"api","function":"embed","job":"job-7","stream":"stdout"}
//! ```
//!
//! `endpoint`, `worker` and `resource` come from the platform's `RUNPOD_ENDPOINT_ID`,
//! `RUNPOD_POD_ID` and `FLASH_RESOURCE_NAME` (absent when unset); every field of the event
//! follows (`job` on a job's lines, the guest's own included; see
//! `flash_runtime::guest_log`). Field names of the event never replace the fixed ones.
//! `FLASH_LOG_FORMAT=json` or `text` overrides the choice; `RUST_LOG` filters as usual.

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How a server writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// `FLASH_LOG_FORMAT` if set, else text on a terminal and JSON elsewhere.
    pub fn from_env(stderr_is_terminal: bool) -> Result<Self, String> {
        match std::env::var("FLASH_LOG_FORMAT")
            .ok()
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("") => Ok(if stderr_is_terminal {
                Self::Text
            } else {
                Self::Json
            }),
            Some("json") => Ok(Self::Json),
            Some("text") => Ok(Self::Text),
            Some(other) => Err(format!(
                "FLASH_LOG_FORMAT=`{other}`: use `json` or `text` (unset: text on a terminal, \
                 json elsewhere)"
            )),
        }
    }
}

/// Installs a worker's global subscriber (stderr, `RUST_LOG`, default `info`), in the
/// format [`LogFormat::from_env`] chooses.
pub fn init() -> Result<(), String> {
    let format = LogFormat::from_env(std::io::stderr().is_terminal())?;
    init_with("info,wasmtime=warn,cranelift=warn", format);
    Ok(())
}

/// Installs the global subscriber: stderr, `RUST_LOG` else `default_filter`, `format`.
pub fn init_with(default_filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.event_format(JsonLines::from_process_env()).init(),
    }
}

/// One JSON object per event, with the worker's identity in every line.
#[derive(Debug, Clone, Default)]
pub struct JsonLines {
    identity: Map<String, Value>,
}

impl JsonLines {
    /// The identity from the platform's variables.
    pub fn from_process_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self::new(
            var("RUNPOD_ENDPOINT_ID").as_deref(),
            var("RUNPOD_POD_ID").as_deref(),
            var("FLASH_RESOURCE_NAME").as_deref(),
        )
    }

    pub fn new(endpoint: Option<&str>, worker: Option<&str>, resource: Option<&str>) -> Self {
        let mut identity = Map::new();
        for (key, value) in [
            ("endpoint", endpoint),
            ("worker", worker),
            ("resource", resource),
        ] {
            if let Some(value) = value {
                identity.insert(key.into(), value.into());
            }
        }
        Self { identity }
    }

    /// The JSON object of one event with `level`, `target`, its fields and `message`.
    fn object(&self, timestamp: String, event: &Event<'_>) -> Map<String, Value> {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        let mut fields = Fields::default();
        event.record(&mut fields);
        line.insert(
            "message".into(),
            fields.message.take().unwrap_or_default().into(),
        );
        for (key, value) in &self.identity {
            line.insert(key.clone(), value.clone());
        }
        for (key, value) in fields.other {
            line.entry(key).or_insert(value);
        }
        line
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let line = self.object(
            crate::log_time::format(time::OffsetDateTime::now_utc()),
            event,
        );
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    other: Map<String, Value>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.other.insert(field.name().to_string(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_event_is_one_json_object_with_the_workers_identity() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .event_format(JsonLines::new(Some("ep-1"), Some("w-2"), Some("api")))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "guest", function = "embed", job = "job-7", stream = "stdout", "hello\n\"there\"");
            tracing::warn!(job = %"job-8", attempt = 2u64, endpoint = "forged", "posting failed");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["message"], "hello\n\"there\"");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["target"], "guest");
        assert_eq!(lines[0]["endpoint"], "ep-1");
        assert_eq!(lines[0]["worker"], "w-2");
        assert_eq!(lines[0]["resource"], "api");
        assert_eq!(lines[0]["function"], "embed");
        assert_eq!(lines[0]["job"], "job-7");
        assert_eq!(lines[0]["stream"], "stdout");
        assert!(
            lines[0]["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.len() == 27),
            "{}",
            lines[0]["timestamp"]
        );
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["job"], "job-8");
        assert_eq!(lines[1]["attempt"], 2);
        // An event's field never replaces the worker's identity.
        assert_eq!(lines[1]["endpoint"], "ep-1");
    }
}
