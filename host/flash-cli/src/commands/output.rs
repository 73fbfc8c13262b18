//! Small formatting rules shared by `flash app`, `flash env` and `flash deploy info`, as
//! runpod-flash prints.

use serde_json::Value;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// `n word`, with runpod-flash's padding: `1 env ` lines up with `2 envs`.
pub fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { " " } else { "s" })
}

/// The first 12 characters of an id, `-` when there is none.
pub fn short_id(id: Option<&str>) -> String {
    match id.filter(|i| !i.is_empty()) {
        Some(id) => id.chars().take(12).collect(),
        None => "-".to_string(),
    }
}

/// An RFC 3339 instant as runpod-flash shows it, `Thu, Feb 19 2026 9:33 PM UTC` (in UTC:
/// the local zone's name is not known without a time-zone database); `-` when absent; the
/// text itself when it does not parse.
pub fn datetime(value: Option<&str>) -> String {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return "-".to_string();
    };
    let Ok(at) = OffsetDateTime::parse(value, &Rfc3339) else {
        return value.to_string();
    };
    let at = at.to_offset(time::UtcOffset::UTC);
    let format = format_description!(
        "[weekday repr:short], [month repr:short] [day padding:none] [year] [hour repr:12 padding:none]:[minute] [period] UTC"
    );
    at.format(&format).unwrap_or_else(|_| value.to_string())
}

/// The width of the widest name, for a left-aligned column.
pub fn width<'a>(names: impl IntoIterator<Item = &'a str>) -> usize {
    names
        .into_iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
}

/// The cells `flash deploy info` shows for one endpoint, from its `/health` and its
/// `flash server` stats (`-` for what the control plane does not report).
#[derive(Debug, PartialEq, Eq)]
pub struct EndpointFigures {
    pub workers: String,
    pub queue: String,
    /// Calls in the window and their p50/p99 latency.
    pub recent: String,
    /// `<when> <status> <id>: <message>` of the last failure.
    pub last_error: Option<String>,
}

impl EndpointFigures {
    pub fn of(health: Option<&Value>, stats: Option<&Value>, load_balanced: bool) -> Self {
        let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        let workers = match health.and_then(|h| h.get("workers")) {
            Some(w) => format!(
                "{} ready, {} running, {} idle, {} initializing",
                n(w, "ready"),
                n(w, "running"),
                n(w, "idle"),
                n(w, "initializing")
            ),
            None => "unknown".into(),
        };
        let queue = match health.and_then(|h| h.get("jobs")) {
            Some(_) if load_balanced => "-".into(),
            Some(j) => format!(
                "{} waiting, {} running",
                n(j, "inQueue"),
                n(j, "inProgress")
            ),
            None => "-".into(),
        };
        let ms = |key: &str| match stats.and_then(|s| s.get(key)).and_then(Value::as_u64) {
            Some(ms) if ms < 1000 => format!("{ms} ms"),
            Some(ms) => format!("{:.2} s", ms as f64 / 1000.0),
            None => "-".into(),
        };
        let recent = match stats {
            None => "-".into(),
            Some(s) => {
                let count = n(s, "count");
                let noun = if load_balanced { "request" } else { "job" };
                let mut text = format!("{count} {noun}{}", if count == 1 { "" } else { "s" });
                if count > 0 {
                    text.push_str(&format!(", p50 {}, p99 {}", ms("p50Ms"), ms("p99Ms")));
                }
                let failed = n(s, "failed");
                if failed > 0 {
                    text.push_str(&format!(", {failed} failed"));
                }
                text
            }
        };
        let last_error = stats
            .and_then(|s| s.get("lastError"))
            .filter(|e| !e.is_null())
            .map(|e| {
                let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
                let id = s("id");
                format!(
                    "{} {}{}: {}",
                    datetime(Some(s("at"))),
                    s("status"),
                    if id.is_empty() {
                        String::new()
                    } else {
                        format!(" {id}")
                    },
                    s("error")
                )
            });
        Self {
            workers,
            queue,
            recent,
            last_error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deploy_info_figures_say_what_the_control_plane_reports() {
        let health = json!({
            "jobs": {"inQueue": 4, "inProgress": 1, "completed": 9},
            "workers": {"ready": 1, "running": 1, "idle": 0, "initializing": 2},
        });
        let stats = json!({
            "count": 12, "failed": 2, "p50Ms": 40, "p99Ms": 1250,
            "lastError": {"id": "job-1", "status": "FAILED", "at": "2026-12-04T10:00:00Z", "error": "boom"},
        });
        let f = EndpointFigures::of(Some(&health), Some(&stats), false);
        assert_eq!(f.workers, "1 ready, 1 running, 0 idle, 2 initializing");
        assert_eq!(f.queue, "4 waiting, 1 running");
        assert_eq!(f.recent, "12 jobs, p50 40 ms, p99 1.25 s, 2 failed");
        assert_eq!(
            f.last_error.as_deref(),
            Some("Fri, Dec 4 2026 10:00 AM UTC FAILED job-1: boom")
        );
        // RunPod: health only, no stats.
        let f = EndpointFigures::of(Some(&health), None, true);
        assert_eq!(
            (f.queue.as_str(), f.recent.as_str(), f.last_error),
            ("-", "-", None)
        );
        let f = EndpointFigures::of(
            None,
            Some(&json!({"count": 1, "p50Ms": 3, "p99Ms": 3, "lastError": null})),
            true,
        );
        assert_eq!(
            (f.workers.as_str(), f.recent.as_str()),
            ("unknown", "1 request, p50 3 ms, p99 3 ms")
        );
    }

    #[test]
    fn formats_follow_runpod_flash() {
        assert_eq!(plural(1, "env"), "1 env ");
        assert_eq!(plural(0, "build"), "0 builds");
        assert_eq!(short_id(Some("build-0123456789abcdef")), "build-012345");
        assert_eq!(short_id(Some("b1")), "b1");
        assert_eq!(short_id(None), "-");
        assert_eq!(
            datetime(Some("2026-02-19T21:33:00Z")),
            "Thu, Feb 19 2026 9:33 PM UTC"
        );
        assert_eq!(
            datetime(Some("2026-02-19T13:03:00-08:00")),
            "Thu, Feb 19 2026 9:03 PM UTC"
        );
        assert_eq!(datetime(None), "-");
        assert_eq!(datetime(Some("yesterday")), "yesterday");
    }
}
