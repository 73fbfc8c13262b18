//! `GET /v1/logs`: the log lines of endpoints' workers, filtered and followed, for
//! `flash logs`.
//!
//! Each worker writes its log to `<data_dir>/logs/<endpoint>/<worker>.log` (see
//! [`crate::supervisor`]); `flash-host` writes JSON lines there (`flash_host::logging`). This module
//! reads them back for the user key only:
//!
//! - `endpoint=<id>[,<id>…]` (required): whose workers;
//! - `job=<id>`: only the lines of that job (its `job` field, or its `trace` for the
//!   lines of peer calls made on its behalf);
//! - `since_ms=<unix ms>`: only lines from then on;
//! - `tail=<n>`: the last `n` lines that match (default 1000, at most 100,000);
//! - `follow=true`: then keep the answer open and send new lines as workers write them,
//!   until the client goes away or the server stops.
//!
//! The answer is NDJSON, one JSON object per line, in timestamp order (followed lines in the
//! order they are found). Lines that are not JSON (a crash's last words, an older worker)
//! come as `{"message": …}`. Every line carries `endpoint` and `worker`.
//!
//! Logs are bounded on disk by [`upkeep`], which the server runs every
//! [`UPKEEP_INTERVAL`]: a worker's log past `flash server --log-max-mb` is rotated to
//! `<worker>.log.1` (copied, then truncated in place, because the worker keeps writing to
//! the file it was started with, in append mode), so a worker holds at most twice that;
//! the logs of workers that are gone are deleted once untouched for
//! `--log-retention-hours`. Reading includes the rotated file, older lines first.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::state::AppState;

/// Where the logs API is served.
pub const LOGS_PATH: &str = "/v1/logs";

/// Lines sent when the request names no `tail`.
pub const DEFAULT_TAIL: usize = 1000;

/// Most lines one request may ask for.
pub const MAX_TAIL: usize = 100_000;

/// How often the server rotates and expires logs ([`upkeep`]).
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(30);

/// The suffix of a worker's rotated log (`<worker>.log.1`).
const ROTATED: &str = ".log.1";

/// How often a follow looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// Longest line read back; the rest of a longer one is cut.
const MAX_LINE: usize = 64 << 10;

/// The query of `GET /v1/logs`.
#[derive(Debug, Deserialize)]
pub struct LogQuery {
    pub endpoint: String,
    pub job: Option<String>,
    pub since_ms: Option<i64>,
    pub tail: Option<usize>,
    #[serde(default)]
    pub follow: bool,
}

/// What a line must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub job: Option<String>,
    /// RFC 3339 UTC timestamp, compared as text (the workers' fixed format sorts so).
    pub since: Option<String>,
}

impl Filter {
    pub fn matches(&self, line: &Map<String, Value>) -> bool {
        if let Some(job) = &self.job {
            let is = |key: &str| line.get(key).and_then(Value::as_str) == Some(job.as_str());
            if !is("job") && !is("trace") {
                return false;
            }
        }
        if let Some(since) = &self.since {
            match line.get("timestamp").and_then(Value::as_str) {
                Some(ts) if ts >= since.as_str() => {}
                _ => return false,
            }
        }
        true
    }
}

/// One log line as sent: the worker's JSON object, with `endpoint` and `worker` set.
pub fn parse_line(text: &str, endpoint: &str, worker: &str) -> Map<String, Value> {
    let mut line = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map,
        _ => {
            let mut map = Map::new();
            map.insert("message".into(), text.into());
            map
        }
    };
    line.entry("endpoint").or_insert_with(|| endpoint.into());
    line.entry("worker").or_insert_with(|| worker.into());
    line
}

/// The worker log files of `endpoint` under `logs_dir`: (worker id, path), each worker's
/// rotated file (when `rotated`) before its current one.
fn worker_files(logs_dir: &Path, endpoint: &str, rotated: bool) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(logs_dir.join(endpoint)) else {
        return Vec::new();
    };
    let mut files: BTreeMap<(String, bool), PathBuf> = BTreeMap::new();
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(worker) = name.strip_suffix(".log") {
            files.insert((worker.to_string(), true), path);
        } else if let Some(worker) = name.strip_suffix(ROTATED).filter(|_| rotated) {
            files.insert((worker.to_string(), false), path);
        }
    }
    files
        .into_iter()
        .map(|((worker, _), path)| (worker, path))
        .collect()
}

/// What one [`upkeep`] pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Upkeep {
    /// Logs rotated for being larger than the limit.
    pub rotated: usize,
    /// Logs deleted: their worker is gone and they were untouched for the retention.
    pub deleted: usize,
}

/// Bounds the worker logs under `logs_dir`: rotates each current log larger than
/// `max_bytes` and deletes the logs of workers not in `live` untouched since
/// `now - retention`, then endpoint directories left empty. Failures are logged and
/// skipped: the next pass tries again.
pub fn upkeep(
    logs_dir: &Path,
    max_bytes: u64,
    retention: Duration,
    live: &std::collections::HashSet<String>,
    now: std::time::SystemTime,
) -> Upkeep {
    let mut done = Upkeep::default();
    let Ok(endpoints) = std::fs::read_dir(logs_dir) else {
        return done;
    };
    let cutoff = now.checked_sub(retention);
    for endpoint in endpoints.filter_map(Result::ok) {
        let Some(name) = endpoint.file_name().to_str().map(str::to_string) else {
            continue;
        };
        for (worker, path) in worker_files(logs_dir, &name, true) {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let stale = cutoff.is_some_and(|cutoff| meta.modified().is_ok_and(|m| m < cutoff));
            if !live.contains(&worker) && stale {
                match std::fs::remove_file(&path) {
                    Ok(()) => done.deleted += 1,
                    Err(e) => {
                        tracing::warn!(log = %path.display(), error = %e, "deleting an old worker log")
                    }
                }
                continue;
            }
            let current = path.extension().is_some_and(|e| e == "log");
            if current && meta.len() > max_bytes {
                match rotate(&path) {
                    Ok(()) => done.rotated += 1,
                    Err(e) => {
                        tracing::warn!(log = %path.display(), error = %e, "rotating a worker log")
                    }
                }
            }
        }
        // Only an empty directory is removed.
        let _ = std::fs::remove_dir(endpoint.path());
    }
    done
}

/// Runs [`upkeep`] every [`UPKEEP_INTERVAL`] with the server's settings, until it stops.
pub async fn keep_bounded(state: AppState) {
    let mut shutdown = state.signals.shutdown();
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let logs_dir = state.supervisor.logs_dir().to_path_buf();
        let live = state.supervisor.live_workers();
        let (max_bytes, retention) = (
            state.config.worker_log_max_bytes,
            state.config.log_retention,
        );
        let done = tokio::task::spawn_blocking(move || {
            upkeep(
                &logs_dir,
                max_bytes,
                retention,
                &live,
                std::time::SystemTime::now(),
            )
        })
        .await
        .unwrap_or_default();
        if done != Upkeep::default() {
            tracing::info!(
                rotated = done.rotated,
                deleted = done.deleted,
                "worker logs rotated and expired"
            );
        }
    }
}

/// `<worker>.log` → `<worker>.log.1` (replacing it), then empties `<worker>.log` in place
/// for the worker that still writes to it.
fn rotate(path: &Path) -> std::io::Result<()> {
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    std::fs::copy(path, &rotated)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .set_len(0)
}

/// Hands each complete line of `path` from `offset` to `each`, and returns the offset after
/// the last complete one (a line still being written is read next time). Lines are read
/// one at a time: a large file costs time, not memory.
fn read_from(path: &Path, offset: u64, mut each: impl FnMut(&str)) -> u64 {
    let Ok(mut file) = std::fs::File::open(path) else {
        return offset;
    };
    // A file shorter than what was read of it was rotated (emptied in place): start over.
    let offset = match file.metadata() {
        Ok(meta) if meta.len() < offset => 0,
        _ => offset,
    };
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return offset;
    }
    let mut reader = BufReader::new(file);
    let mut position = offset;
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader
            .by_ref()
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buffer)
        {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if buffer.last() != Some(&b'\n') && n <= MAX_LINE {
                    break; // incomplete: the worker is still writing it
                }
                position += n as u64;
                each(String::from_utf8_lossy(&buffer).trim_end_matches(['\n', '\r']));
            }
        }
    }
    position
}

/// Where each followed file has been read up to.
#[derive(Debug, Default)]
pub struct Cursor {
    offsets: BTreeMap<PathBuf, u64>,
}

/// Reads what is new since `cursor` in the files of `endpoints`: the last `keep` matching
/// lines of each file, in file order.
fn read_matching(
    logs_dir: &Path,
    endpoints: &[String],
    filter: &Filter,
    cursor: &mut Cursor,
    keep: usize,
    rotated: bool,
) -> Vec<Map<String, Value>> {
    let mut out = Vec::new();
    for endpoint in endpoints {
        for (worker, path) in worker_files(logs_dir, endpoint, rotated) {
            let offset = cursor.offsets.get(&path).copied().unwrap_or(0);
            let mut kept = VecDeque::new();
            let next = read_from(&path, offset, |text| {
                let line = parse_line(text, endpoint, &worker);
                if filter.matches(&line) {
                    if kept.len() == keep {
                        kept.pop_front();
                    }
                    kept.push_back(line);
                }
            });
            cursor.offsets.insert(path, next);
            out.extend(kept);
        }
    }
    out
}

/// Reads what is new since `cursor` in the files of `endpoints`: matching lines, in file
/// order.
pub fn read_new(
    logs_dir: &Path,
    endpoints: &[String],
    filter: &Filter,
    cursor: &mut Cursor,
) -> Vec<Map<String, Value>> {
    // A rotated file holds lines already read from the current one: a follow reads only
    // current files.
    read_matching(logs_dir, endpoints, filter, cursor, usize::MAX, false)
}

/// The last `tail` matching lines of `endpoints` in timestamp order, and the cursor after
/// them for a follow. At most `tail` lines of each file are held at once.
pub fn read_tail(
    logs_dir: &Path,
    endpoints: &[String],
    filter: &Filter,
    tail: usize,
) -> (Vec<Map<String, Value>>, Cursor) {
    let mut cursor = Cursor::default();
    let mut lines = read_matching(logs_dir, endpoints, filter, &mut cursor, tail, true);
    // Stable: lines without a timestamp keep their place among their file's lines.
    lines.sort_by(|a, b| {
        let ts = |l: &Map<String, Value>| {
            l.get("timestamp")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        ts(a).cmp(&ts(b))
    });
    let skip = lines.len().saturating_sub(tail);
    (lines.split_off(skip), cursor)
}

fn error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// `GET /v1/logs`.
pub async fn handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if !state.auth.is_user(&headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "logs need the server's API key: send `Authorization: Bearer <key>`".into(),
        );
    }
    let Query(query) = match query {
        Ok(query) => query,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{e}: expected endpoint=<id>[,<id>…], and optionally job, since_ms, tail, follow"
                ),
            );
        }
    };
    let endpoints: Vec<String> = query
        .endpoint
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect();
    if endpoints.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "name at least one endpoint: endpoint=<id>".into(),
        );
    }
    // Known endpoints only: their ids are also the names of directories.
    for id in &endpoints {
        match state.store.get_endpoint(id) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return error(StatusCode::NOT_FOUND, format!("no endpoint `{id}`"));
            }
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        }
    }
    let tail = query.tail.unwrap_or(DEFAULT_TAIL).min(MAX_TAIL);
    let filter = Filter {
        job: query.job.filter(|j| !j.is_empty()),
        since: query.since_ms.map(flash_api::log_time::of_unix_ms),
    };
    let logs_dir = state.supervisor.logs_dir().to_path_buf();
    let (lines, cursor) = {
        let (dir, endpoints, filter) = (logs_dir.clone(), endpoints.clone(), filter.clone());
        match tokio::task::spawn_blocking(move || read_tail(&dir, &endpoints, &filter, tail)).await
        {
            Ok(read) => read,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    };
    let ndjson = |lines: Vec<Map<String, Value>>| -> String {
        lines
            .into_iter()
            .map(|l| Value::Object(l).to_string() + "\n")
            .collect()
    };
    let first = ndjson(lines);
    let content_type = [(header::CONTENT_TYPE, "application/x-ndjson")];
    if !query.follow {
        return (content_type, first).into_response();
    }
    let mut shutdown = state.signals.shutdown();
    let body = Body::from_stream(futures::StreamExt::take_until(
        follow(first, cursor, move |cursor| {
            ndjson(read_new(&logs_dir, &endpoints, &filter, cursor))
        }),
        async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        },
    ));
    (content_type, body).into_response()
}

/// `first`, then what `next` finds new after `cursor`, looked for on a blocking thread
/// every [`FOLLOW_POLL`] while there is nothing new (empty chunks are not sent).
fn follow(
    first: String,
    cursor: Cursor,
    next: impl Fn(&mut Cursor) -> String + Send + Sync + 'static,
) -> impl futures::Stream<Item = Result<String, std::convert::Infallible>> + Send {
    use futures::StreamExt;
    let next = std::sync::Arc::new(next);
    let rest = futures::stream::unfold(cursor, move |mut cursor| {
        let next = std::sync::Arc::clone(&next);
        async move {
            let (text, cursor) = tokio::task::spawn_blocking(move || (next(&mut cursor), cursor))
                .await
                .ok()?;
            if text.is_empty() {
                tokio::time::sleep(FOLLOW_POLL).await;
            }
            Some((Ok(text), cursor))
        }
    });
    futures::stream::once(async move { Ok(first) })
        .chain(rest)
        .filter(|chunk| std::future::ready(!matches!(chunk, Ok(text) if text.is_empty())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, endpoint: &str, worker: &str, text: &str) {
        let d = dir.join(endpoint);
        std::fs::create_dir_all(&d).unwrap();
        use std::io::Write;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join(format!("{worker}.log")))
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    fn line(ts: &str, job: Option<&str>, message: &str) -> String {
        let mut v = json!({ "timestamp": ts, "level": "INFO", "message": message });
        if let Some(job) = job {
            v["job"] = json!(job);
        }
        v.to_string() + "\n"
    }

    #[test]
    fn big_logs_rotate_and_read_back_whole_and_old_logs_of_gone_workers_expire() {
        use std::collections::HashSet;
        use std::time::SystemTime;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let eps = vec!["ep".to_string()];
        let every = Filter::default();
        for i in 0..10 {
            write(
                dir,
                "ep",
                "w-live",
                &line(
                    &format!("2026-01-01T00:00:0{i}Z"),
                    None,
                    &format!("old {i}"),
                ),
            );
        }
        let live: HashSet<String> = ["w-live".to_string()].into();
        let week = Duration::from_secs(7 * 24 * 3600);
        let now = SystemTime::now();
        let done = upkeep(dir, 100, week, &live, now);
        assert_eq!(
            done,
            Upkeep {
                rotated: 1,
                deleted: 0
            }
        );
        let current = dir.join("ep/w-live.log");
        assert_eq!(std::fs::metadata(&current).unwrap().len(), 0);
        assert!(dir.join("ep/w-live.log.1").is_file());
        // A follow that had read the file before it was rotated starts over on it.
        let (_, mut cursor) = read_tail(dir, &eps, &every, 5);
        write(
            dir,
            "ep",
            "w-live",
            &line("2026-01-01T00:00:10Z", None, "new 10"),
        );
        let followed = read_new(dir, &eps, &every, &mut cursor);
        assert_eq!(followed.len(), 1);
        assert_eq!(followed[0]["message"], "new 10");
        // Reading shows the rotated lines before the current ones.
        let (tail, _) = read_tail(dir, &eps, &every, 3);
        let messages: Vec<_> = tail
            .iter()
            .map(|l| l["message"].as_str().unwrap())
            .collect();
        assert_eq!(messages, ["old 8", "old 9", "new 10"]);
        // A small log is left alone.
        assert_eq!(upkeep(dir, 1 << 20, week, &live, now), Upkeep::default());

        // A gone worker's logs go once untouched for the retention, a live one's never.
        write(
            dir,
            "ep-gone",
            "w-gone",
            &line("2026-01-01T00:00:00Z", None, "bye"),
        );
        let later = now + week + Duration::from_secs(60);
        assert_eq!(
            upkeep(dir, 1 << 20, week, &HashSet::new(), now),
            Upkeep::default(),
            "not yet stale"
        );
        let done = upkeep(dir, 1 << 20, week, &live, later);
        assert_eq!(
            done,
            Upkeep {
                rotated: 0,
                deleted: 1
            }
        );
        assert!(
            !dir.join("ep-gone").exists(),
            "its empty directory goes too"
        );
        assert!(current.is_file() && dir.join("ep/w-live.log.1").is_file());
        let done = upkeep(dir, 1 << 20, week, &HashSet::new(), later);
        assert_eq!(
            done,
            Upkeep {
                rotated: 0,
                deleted: 2
            }
        );
    }

    #[test]
    fn lines_are_merged_in_time_filtered_tailed_and_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let eps = vec!["ep-a".to_string(), "ep-b".to_string()];
        write(
            dir,
            "ep-a",
            "w-1",
            &line("2026-01-01T00:00:01.000000Z", Some("j1"), "a1"),
        );
        write(
            dir,
            "ep-b",
            "w-2",
            &line("2026-01-01T00:00:00.500000Z", None, "b0"),
        );
        write(
            dir,
            "ep-a",
            "w-1",
            &line("2026-01-01T00:00:02.000000Z", Some("j2"), "a2"),
        );
        write(dir, "ep-a", "w-3", "thread 'main' panicked\n");
        write(
            dir,
            "ep-other",
            "w-9",
            &line("2026-01-01T00:00:03.000000Z", Some("j1"), "x"),
        );

        let all = Filter::default();
        let (lines, mut cursor) = read_tail(dir, &eps, &all, 100);
        let messages: Vec<&str> = lines
            .iter()
            .map(|l| l["message"].as_str().unwrap())
            .collect();
        // The crash line has no time: it sorts first; the others by timestamp.
        assert_eq!(messages, ["thread 'main' panicked", "b0", "a1", "a2"]);
        assert_eq!(lines[0]["worker"], "w-3");
        assert_eq!(lines[1]["endpoint"], "ep-b");

        let (tail, _) = read_tail(dir, &eps, &all, 2);
        assert_eq!(tail.len(), 2);
        assert_eq!(tail[1]["message"], "a2");

        let job = Filter {
            job: Some("j1".into()),
            since: None,
        };
        let (lines, _) = read_tail(dir, &eps, &job, 100);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let since = Filter {
            job: None,
            since: Some("2026-01-01T00:00:01.500000Z".into()),
        };
        let (lines, _) = read_tail(dir, &eps, &since, 100);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["message"], "a2");

        // Following: only what was written since, and a half-written line waits.
        write(
            dir,
            "ep-b",
            "w-2",
            &line("2026-01-01T00:00:04.000000Z", Some("j3"), "b4"),
        );
        write(dir, "ep-b", "w-2", "{\"timestamp\":\"2026-01-01T00:00:05");
        let new = read_new(dir, &eps, &all, &mut cursor);
        assert_eq!(new.len(), 1, "{new:?}");
        assert_eq!(new[0]["message"], "b4");
        write(dir, "ep-b", "w-2", ".000000Z\",\"message\":\"b5\"}\n");
        let new = read_new(dir, &eps, &all, &mut cursor);
        assert_eq!(new.len(), 1, "{new:?}");
        assert_eq!(new[0]["message"], "b5");
        assert!(read_new(dir, &eps, &all, &mut cursor).is_empty());
    }

    #[test]
    fn a_job_matches_its_own_lines_and_those_traced_to_it() {
        let on = |pairs: &[(&str, &str)]| -> Map<String, Value> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect()
        };
        let f = Filter {
            job: Some("j1".into()),
            since: None,
        };
        assert!(f.matches(&on(&[("job", "j1")])));
        assert!(f.matches(&on(&[("job", "peer-9"), ("trace", "j1")])));
        assert!(!f.matches(&on(&[("job", "j2")])));
        assert!(!f.matches(&on(&[])));
    }
}
