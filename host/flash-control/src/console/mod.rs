//! `/console`: a small web console that shows what runs on this server.
//!
//! Pages are rendered here, on the server, as plain HTML (maud escapes everything they
//! show); one small script ([`SCRIPT`]) redraws an endpoint's chart and recent jobs every
//! two seconds from [`api_endpoint`]. Assets are served from the binary: nothing comes from a
//! CDN, so the console works offline and on a locked-down network.
//!
//! - `/console`: apps, their environments with the active build, and each environment's
//!   endpoints with workers, queue depth, throughput, latency and the last error;
//! - `/console/endpoints/{id}`: one endpoint: its URL and workers, a live chart of
//!   throughput and median latency ([`crate::metrics::ServerMetrics::series`]), and its
//!   recent jobs (queue-based: from the job store; load-balanced: requests by their
//!   `x-request-id`);
//! - `/console/endpoints/{id}/jobs/{job}`: one job's status, result and log lines from
//!   every worker of its environment that ran it, peer hops included (as `flash logs --job`).
//!
//! Signing in takes the server's API key once, in a form; the answer is a cookie that holds
//! an expiry and an HMAC of it under the key ([`session_token`]), so it needs no session
//! table, survives restarts, and ends when it expires or the key changes. The cookie is
//! `HttpOnly` and `SameSite=Strict`, and every page forbids scripts and styles from
//! anywhere but the server itself (`Content-Security-Policy`).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::Sha256;

use crate::logs::{self, Filter};
use crate::metrics::{Outcome, Summary};
use crate::state::AppState;
use crate::store::{Endpoint, Job};
use crate::util::{now_ms, rfc3339};

/// Where the console is served.
pub const CONSOLE_PATH: &str = "/console";

/// The session cookie's name.
pub const COOKIE: &str = "flash_console";

/// How long a sign-in lasts.
const SESSION: Duration = Duration::from_secs(12 * 3600);

/// The span of the summaries and the chart.
const WINDOW: Duration = Duration::from_secs(5 * 60);

/// One step of the chart.
const STEP: Duration = Duration::from_secs(5);

/// Jobs listed on an endpoint's page.
const RECENT_JOBS: usize = 50;

/// Log lines shown for one job.
const JOB_LINES: usize = 1000;

/// The console's stylesheet and script, served from the binary.
const STYLE: &str = include_str!("console.css");
const SCRIPT: &str = include_str!("console.js");

/// The console's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(CONSOLE_PATH, get(overview))
        .route("/console/login", post(sign_in))
        .route("/console/logout", post(sign_out))
        .route("/console/endpoints/{id}", get(endpoint_page))
        .route("/console/endpoints/{id}/jobs/{job}", get(job_page))
        .route("/console/api/endpoints/{id}", get(api_endpoint))
        .route(
            "/console/assets/console.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/console/assets/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .layer(axum::middleware::map_response(secure_headers))
}

async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

// Sessions.

fn mac(key: &str, expires_ms: i64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("flash-console:{expires_ms}").as_bytes());
    mac
}

/// A session cookie's value: `<expiry ms>.<hex HMAC-SHA256 of the expiry under the key>`.
pub fn session_token(key: &str, expires_ms: i64) -> String {
    let tag = mac(key, expires_ms).finalize().into_bytes();
    format!("{expires_ms}.{}", hex::encode(tag))
}

/// Whether `token` is a session of `key` that has not expired at `now_ms`.
pub fn session_is_valid(key: &str, token: &str, now_ms: i64) -> bool {
    let Some((expires, tag)) = token.split_once('.') else {
        return false;
    };
    let (Ok(expires_ms), Ok(tag)) = (expires.parse::<i64>(), hex::decode(tag)) else {
        return false;
    };
    expires_ms > now_ms && mac(key, expires_ms).verify_slice(&tag).is_ok()
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

fn signed_in(state: &AppState, headers: &HeaderMap) -> bool {
    cookie(headers, COOKIE)
        .is_some_and(|token| session_is_valid(state.auth.user_key(), token, now_ms()))
}

#[derive(Deserialize)]
struct SignIn {
    key: String,
}

async fn sign_in(State(state): State<AppState>, Form(form): Form<SignIn>) -> Response {
    if !flash_api::credential::keys_match(form.key.trim(), state.auth.user_key()) {
        return (
            StatusCode::UNAUTHORIZED,
            sign_in_page(Some("That is not this server's API key.")),
        )
            .into_response();
    }
    let expires = now_ms() + SESSION.as_millis() as i64;
    let value = format!(
        "{COOKIE}={}; Path={CONSOLE_PATH}; Max-Age={}; HttpOnly; SameSite=Strict",
        session_token(state.auth.user_key(), expires),
        SESSION.as_secs()
    );
    let mut response = Redirect::to(CONSOLE_PATH).into_response();
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn sign_out() -> Response {
    let mut response = Redirect::to(CONSOLE_PATH).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "flash_console=; Path=/console; Max-Age=0; HttpOnly; SameSite=Strict",
        ),
    );
    response
}

// Pages.

fn layout(title: &str, signed_in: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Flash console" }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body {
                header {
                    a.brand href=(CONSOLE_PATH) { "Flash" }
                    span.muted { "console" }
                    @if signed_in {
                        form.logout method="post" action="/console/logout" {
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
                script src="/console/assets/console.js" {}
            }
        }
    }
}

fn sign_in_page(error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        false,
        html! {
            h1 { "Sign in" }
            p {
                "Enter this server's API key. "
                span.muted { "It is in " code { "<data dir>/api_key" } "; " code { "flash server" } " prints where." }
            }
            @if let Some(error) = error {
                p.error role="alert" { (error) }
            }
            form.signin method="post" action="/console/login" {
                label for="key" { "API key" }
                input #key name="key" type="password" autocomplete="current-password" required autofocus;
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// A server error as a page that says what failed.
fn failure(what: &str, error: impl std::fmt::Display) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        layout(
            "Error",
            true,
            html! { h1 { "Something failed" } p.error { (what) ": " (error.to_string()) } },
        ),
    )
        .into_response()
}

fn not_found(what: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        layout(
            "Not found",
            true,
            html! { h1 { "Not found" } p { (what) } p { a href=(CONSOLE_PATH) { "Back to the overview" } } },
        ),
    )
        .into_response()
}

fn ms(value: Option<u64>) -> String {
    match value {
        None => "–".into(),
        Some(ms) if ms < 1000 => format!("{ms} ms"),
        Some(ms) => format!("{:.2} s", ms as f64 / 1000.0),
    }
}

fn kind(ep: &Endpoint) -> &'static str {
    if ep.is_lb() { "load-balanced" } else { "queue" }
}

fn endpoint_url(ep: &Endpoint) -> String {
    if ep.is_lb() {
        format!("/lb/{}", ep.id)
    } else {
        format!("/v2/{}", ep.id)
    }
}

fn workers_text(state: &AppState, ep: &Endpoint) -> String {
    let w = state.supervisor.worker_counts(&ep.id);
    let total = w.ready + w.initializing + w.unhealthy;
    let mut text = format!("{total}");
    let mut parts = Vec::new();
    if w.running > 0 {
        parts.push(format!("{} busy", w.running));
    }
    if w.initializing > 0 {
        parts.push(format!("{} starting", w.initializing));
    }
    if w.unhealthy > 0 {
        parts.push(format!("{} unhealthy", w.unhealthy));
    }
    if !parts.is_empty() {
        text.push_str(&format!(" ({})", parts.join(", ")));
    }
    text
}

fn queue_text(state: &AppState, ep: &Endpoint) -> String {
    if ep.is_lb() {
        return "–".into();
    }
    match state.store.queue_depth(&ep.id) {
        Ok(c) => format!("{} waiting, {} running", c.in_queue, c.in_progress),
        Err(e) => format!("unreadable: {e}"),
    }
}

fn last_error(summary: &Summary) -> Markup {
    html! {
        @match &summary.last_error {
            Some(o) => span.error title=(o.error.clone().unwrap_or_default()) {
                (o.status) " " (rfc3339(o.finished_at_ms)) ": " (o.error.as_deref().unwrap_or(""))
            },
            None => span.muted { "none" },
        }
    }
}

fn endpoint_rows(state: &AppState, endpoints: &[&Endpoint]) -> Markup {
    let since = now_ms() - WINDOW.as_millis() as i64;
    html! {
        table.endpoints {
            thead { tr {
                th { "endpoint" } th { "type" } th { "workers" } th { "queue" }
                th.num { "jobs (5 min)" } th.num { "p50" } th.num { "p99" } th { "last error" }
            } }
            tbody {
                @for ep in endpoints {
                    @let s = state.metrics.summary(&ep.id, since);
                    tr data-endpoint=(ep.id) {
                        td { a href=(format!("/console/endpoints/{}", ep.id)) { (ep.name) } br; span.muted.mono { (ep.id) } }
                        td { (kind(ep)) }
                        td { (workers_text(state, ep)) }
                        td { (queue_text(state, ep)) }
                        td.num { (s.count) @if s.failed > 0 { " (" span.error { (s.failed) " failed" } ")" } }
                        td.num { (ms(s.p50_ms)) }
                        td.num { (ms(s.p99_ms)) }
                        td.lasterror { (last_error(&s)) }
                    }
                }
            }
        }
    }
}

async fn overview(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !signed_in(&state, &headers) {
        return sign_in_page(None).into_response();
    }
    let store = state.store.as_ref();
    let (apps, endpoints) = match (store.list_apps(), store.list_endpoints()) {
        (Ok(apps), Ok(endpoints)) => (apps, endpoints),
        (Err(e), _) | (_, Err(e)) => return failure("reading apps and endpoints", e),
    };
    let mut by_environment: BTreeMap<Option<&str>, Vec<&Endpoint>> = BTreeMap::new();
    for ep in &endpoints {
        by_environment
            .entry(ep.flash_environment_id.as_deref())
            .or_default()
            .push(ep);
    }
    let mut sections = Vec::new();
    for app in &apps {
        let environments = match store.list_environments(&app.id) {
            Ok(environments) => environments,
            Err(e) => return failure("reading environments", e),
        };
        sections.push((app, environments));
    }
    let others = by_environment.get(&None).cloned().unwrap_or_default();
    let body = html! {
        h1 { "Apps" }
        @if apps.is_empty() && others.is_empty() {
            p.muted { "Nothing is deployed yet: run " code { "flash deploy new dev" } " and " code { "flash deploy send dev" } " in a project." }
        }
        @for (app, environments) in &sections {
            section.app {
                h2 { (app.name) " " span.muted.mono { (app.id) } }
                @if environments.is_empty() {
                    p.muted { "No environments." }
                }
                @for env in environments {
                    div.environment {
                        h3 {
                            (env.name) " "
                            span.muted { "active build " }
                            span.mono { (env.active_build_id.as_deref().unwrap_or("none yet")) }
                        }
                        @match by_environment.get(&Some(env.id.as_str())) {
                            Some(eps) => (endpoint_rows(&state, eps)),
                            None => p.muted { "No endpoints." },
                        }
                    }
                }
            }
        }
        @if !others.is_empty() {
            section.app {
                h2 { "Endpoints outside Flash apps" }
                (endpoint_rows(&state, &others))
            }
        }
    };
    layout("Apps", true, body).into_response()
}

/// One row of an endpoint's recent jobs.
#[derive(Debug, Clone, serde::Serialize)]
struct JobRow {
    id: String,
    status: String,
    ok: bool,
    /// From submission to the final status, or until now for a job still waiting or running.
    duration_ms: Option<u64>,
    at: String,
}

fn job_row(job: &Job, now: i64) -> JobRow {
    let end = job.completed_at.unwrap_or(now);
    JobRow {
        id: job.id.clone(),
        status: job.status.as_str().to_string(),
        ok: !matches!(job.status.as_str(), "FAILED" | "TIMED_OUT"),
        duration_ms: u64::try_from(end - job.created_at).ok(),
        at: rfc3339(job.created_at),
    }
}

fn outcome_row(o: &Outcome) -> JobRow {
    JobRow {
        id: o.id.clone(),
        status: o.status.clone(),
        ok: o.ok,
        duration_ms: Some(o.duration_ms),
        at: rfc3339(o.finished_at_ms),
    }
}

fn recent_jobs(state: &AppState, ep: &Endpoint) -> Result<Vec<JobRow>, String> {
    if ep.is_lb() {
        return Ok(state
            .metrics
            .latest(&ep.id, RECENT_JOBS)
            .iter()
            .map(outcome_row)
            .collect());
    }
    let now = now_ms();
    state
        .store
        .recent_jobs(&ep.id, RECENT_JOBS)
        .map(|jobs| jobs.iter().map(|j| job_row(j, now)).collect())
        .map_err(|e| e.to_string())
}

/// The endpoint, or the page that says why there is none.
fn find_endpoint(state: &AppState, id: &str) -> Result<Endpoint, Box<Response>> {
    match state.store.get_endpoint(id) {
        Ok(Some(ep)) => Ok(ep),
        Ok(None) => Err(Box::new(not_found(format!(
            "No endpoint `{id}` on this server (it may have been deleted)."
        )))),
        Err(e) => Err(Box::new(failure("reading the endpoint", e))),
    }
}

async fn endpoint_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !signed_in(&state, &headers) {
        return Redirect::to(CONSOLE_PATH).into_response();
    }
    let ep = match find_endpoint(&state, &id) {
        Ok(ep) => ep,
        Err(page) => return *page,
    };
    let summary = state
        .metrics
        .summary(&ep.id, now_ms() - WINDOW.as_millis() as i64);
    let jobs = recent_jobs(&state, &ep);
    let mut workers = state.supervisor.worker_pids(&ep.id);
    workers.sort();
    let noun = if ep.is_lb() { "requests" } else { "jobs" };
    let body = html! {
        p.crumbs { a href=(CONSOLE_PATH) { "Apps" } " / " (ep.name) }
        h1 { (ep.name) " " span.muted { (kind(&ep)) } }
        dl.facts {
            dt { "id" } dd.mono { (ep.id) }
            dt { "URL" } dd.mono { (endpoint_url(&ep)) }
            dt { "workers" } dd { (workers_text(&state, &ep)) " of " (ep.workers_min) "–" (ep.workers_max) }
            dt { "queue" } dd { (queue_text(&state, &ep)) }
            dt { "last error" } dd #lasterror { (last_error(&summary)) }
        }
        @if !workers.is_empty() {
            details {
                summary { "worker processes: " (workers.len()) }
                ul.mono { @for (worker, pid) in &workers { li { (worker) " (pid " (pid) ")" } } }
            }
        }
        section.chart {
            h2 { "Last 5 minutes" }
            p.legend {
                span.swatch.throughput {} " " (noun) " per second "
                span.swatch.latency {} " median latency"
                span.muted { " · " span #summary {
                    (summary.count) " " (noun) ", p50 " (ms(summary.p50_ms)) ", p99 " (ms(summary.p99_ms))
                } }
            }
            canvas #chart width="900" height="220" data-endpoint=(ep.id) aria-label="throughput and latency" {}
        }
        section {
            h2 { "Recent " (noun) }
            @match &jobs {
                Err(e) => p.error { "Could not read jobs: " (e) },
                Ok(rows) => table #jobs data-endpoint=(ep.id) {
                    thead { tr { th { "id" } th { "status" } th.num { "duration" } th { "at" } } }
                    tbody {
                        @if rows.is_empty() {
                            tr.empty { td colspan="4" { span.muted { "None yet." } } }
                        }
                        @for row in rows {
                            tr {
                                td.mono { a href=(format!("/console/endpoints/{}/jobs/{}", ep.id, row.id)) { (row.id) } }
                                td { span class=(if row.ok { "status" } else { "status error" }) { (row.status) } }
                                td.num { (ms(row.duration_ms)) }
                                td.muted { (row.at) }
                            }
                        }
                    }
                },
            }
        }
    };
    layout(&ep.name, true, body).into_response()
}

/// The endpoints a job's lines can be in: its own and, for peer hops, the others of its
/// environment.
fn related_endpoints(state: &AppState, ep: &Endpoint) -> Vec<Endpoint> {
    let mut related = vec![ep.clone()];
    if let (Some(env), Ok(all)) = (&ep.flash_environment_id, state.store.list_endpoints()) {
        related.extend(
            all.into_iter()
                .filter(|e| e.id != ep.id && e.flash_environment_id.as_ref() == Some(env)),
        );
    }
    related
}

fn pretty(value: &Value) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    match text.char_indices().nth(10_000) {
        Some((at, _)) => format!("{}\n… (cut)", &text[..at]),
        None => text,
    }
}

fn log_line(line: &Map<String, Value>, names: &BTreeMap<String, String>) -> Markup {
    let s = |key: &str| line.get(key).and_then(Value::as_str).unwrap_or("");
    let level = s("level");
    let endpoint = s("endpoint");
    let resource = names.get(endpoint).map_or(endpoint, String::as_str);
    html! {
        tr class=(format!("level-{}", level.to_ascii_lowercase())) {
            td.muted.mono { (s("timestamp")) }
            td { (level) }
            td.mono { (resource) }
            td.message { (s("message")) }
        }
    }
}

async fn job_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, job_id)): Path<(String, String)>,
) -> Response {
    if !signed_in(&state, &headers) {
        return Redirect::to(CONSOLE_PATH).into_response();
    }
    let ep = match find_endpoint(&state, &id) {
        Ok(ep) => ep,
        Err(page) => return *page,
    };
    let job = if ep.is_lb() {
        None
    } else {
        match state.store.get_job(&job_id) {
            Ok(Some(job)) if job.endpoint_id == ep.id => Some(job),
            Ok(_) => None,
            Err(e) => return failure("reading the job", e),
        }
    };
    let outcome = state.metrics.find(&ep.id, &job_id);
    let related = related_endpoints(&state, &ep);
    let names: BTreeMap<String, String> = related
        .iter()
        .map(|e| (e.id.clone(), e.name.clone()))
        .collect();
    let ids: Vec<String> = related.iter().map(|e| e.id.clone()).collect();
    let logs_dir = state.supervisor.logs_dir().to_path_buf();
    let filter = Filter {
        job: Some(job_id.clone()),
        since: None,
    };
    let lines =
        tokio::task::spawn_blocking(move || logs::read_tail(&logs_dir, &ids, &filter, JOB_LINES).0)
            .await
            .unwrap_or_default();
    let now = now_ms();
    let body = html! {
        p.crumbs {
            a href=(CONSOLE_PATH) { "Apps" } " / "
            a href=(format!("/console/endpoints/{}", ep.id)) { (ep.name) } " / " (job_id)
        }
        h1 { "Job " span.mono { (job_id) } }
        @if let Some(job) = &job {
            @let row = job_row(job, now);
            dl.facts {
                dt { "status" } dd { span class=(if row.ok { "status" } else { "status error" }) { (row.status) } }
                dt { "submitted" } dd { (rfc3339(job.created_at)) }
                dt { "duration" } dd { (ms(row.duration_ms)) }
                dt { "worker" } dd.mono { (job.worker_id.as_deref().unwrap_or("–")) }
                @if job.retries > 0 { dt { "retries" } dd { (job.retries) } }
            }
            @if let Some(error) = &job.error {
                h2 { "Error" }
                pre.error { (error) }
            }
            @if let Some(output) = &job.output {
                h2 { "Output" }
                pre { (pretty(output)) }
            }
        } @else if let Some(o) = &outcome {
            dl.facts {
                dt { "status" } dd { span class=(if o.ok { "status" } else { "status error" }) { (o.status) } }
                dt { "answered" } dd { (rfc3339(o.finished_at_ms)) }
                dt { "duration" } dd { (ms(Some(o.duration_ms))) }
            }
            @if let Some(error) = &o.error { pre.error { (error) } }
        } @else {
            p.muted { "This server no longer keeps this job's status (finished jobs are kept for the retention window); its log lines are below if any are left." }
        }
        h2 { "Log lines" }
        @if lines.is_empty() {
            p.muted { "No log lines for this job." }
        } @else {
            table.logs {
                thead { tr { th { "time" } th { "level" } th { "resource" } th { "message" } } }
                tbody { @for line in &lines { (log_line(line, &names)) } }
            }
        }
    };
    layout(&format!("Job {job_id}"), true, body).into_response()
}

/// What an endpoint's page redraws: the summary, the chart's series and recent jobs.
async fn api_endpoint(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !signed_in(&state, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "error": "sign in at /console first" })),
        )
            .into_response();
    }
    let ep = match state.store.get_endpoint(&id) {
        Ok(Some(ep)) => ep,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(json!({ "error": format!("no endpoint `{id}`") })),
            )
                .into_response();
        }
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({ "error": e.to_string() })),
            )
                .into_response();
        }
    };
    let now = now_ms();
    let summary = state
        .metrics
        .summary(&ep.id, now - WINDOW.as_millis() as i64);
    let jobs = recent_jobs(&state, &ep).unwrap_or_default();
    axum::Json(json!({
        "summary": {
            "count": summary.count,
            "failed": summary.failed,
            "p50": ms(summary.p50_ms),
            "p99": ms(summary.p99_ms),
            "lastError": summary.last_error.as_ref().map(|o| json!({
                "status": o.status,
                "at": rfc3339(o.finished_at_ms),
                "error": o.error,
            })),
        },
        "stepMs": STEP.as_millis() as u64,
        "series": state.metrics.series(&ep.id, now, WINDOW, STEP),
        "jobs": jobs
            .iter()
            .map(|row| json!({
                "id": row.id,
                "status": row.status,
                "ok": row.ok,
                "duration": ms(row.duration_ms),
                "at": row.at,
            }))
            .collect::<Vec<_>>(),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_hold_until_they_expire_or_the_key_changes() {
        let token = session_token("k1", 2_000);
        assert!(session_is_valid("k1", &token, 1_999));
        assert!(!session_is_valid("k1", &token, 2_000));
        assert!(!session_is_valid("k2", &token, 1_000));
        // The expiry cannot be moved without the key.
        let (_, tag) = token.split_once('.').unwrap();
        assert!(!session_is_valid("k1", &format!("9999999.{tag}"), 1_000));
        for bad in ["", ".", "abc", "2000.zz", "2000."] {
            assert!(!session_is_valid("k1", bad, 0), "{bad}");
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; flash_console=t.x"),
        );
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&headers, COOKIE), Some("t.x"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn what_pages_show_is_escaped() {
        let page = sign_in_page(Some("<script>alert(1)</script>")).into_string();
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
        assert!(!page.contains("<script>alert"), "{page}");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(ms(None), "–");
        assert_eq!(ms(Some(12)), "12 ms");
        assert_eq!(ms(Some(1500)), "1.50 s");
    }
}
