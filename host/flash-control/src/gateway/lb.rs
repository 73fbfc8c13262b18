//! The load-balanced proxy (reference §4): `/lb/{endpoint}/{path}` goes to a ready
//! worker's HTTP listener (one is started first if none runs), the request body streaming
//! to it as it arrives and the answer streaming back, the worker leased until it is done.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures::StreamExt;

use super::err;
use crate::admission::LbCaller;
use crate::state::AppState;
use crate::store::Endpoint;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/lb/{ep}", any(lb_root))
        .route("/lb/{ep}/{*path}", any(lb_proxy))
}

async fn lb_root(
    State(state): State<AppState>,
    caller: LbCaller,
    method: Method,
    headers: HeaderMap,
    query: RawQuery,
    body: Body,
) -> Response {
    lb_forward(state, caller, String::new(), method, headers, query.0, body).await
}

async fn lb_proxy(
    State(state): State<AppState>,
    caller: LbCaller,
    Path((_, path)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    query: RawQuery,
    body: Body,
) -> Response {
    lb_forward(state, caller, path, method, headers, query.0, body).await
}

/// `FLASH_DISABLE_RP_AUTH=true` in the endpoint's template env opens it without a key (§4).
pub(crate) fn lb_auth_disabled(state: &AppState, ep: &Endpoint) -> bool {
    ep.template_id
        .as_deref()
        .and_then(|t| state.store.get_template(t).ok().flatten())
        .is_some_and(|t| {
            t.env_value("FLASH_DISABLE_RP_AUTH")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        })
}

const HOP_HEADERS: [&str; 6] = [
    "host",
    "connection",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "content-length",
];

/// Forwards one request (see [`forward`]) and counts it in the server's metrics: its
/// status, the time until the answer's head, and its request id (the worker's
/// `x-request-id`, which tags the function's log lines).
async fn lb_forward(
    state: AppState,
    caller: LbCaller,
    path: String,
    method: Method,
    headers: HeaderMap,
    query: Option<String>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let ep_id = caller.endpoint.id.clone();
    let metrics = state.metrics.clone();
    let (response, gateway_error) =
        forward(state, caller, path, method, headers, query, body).await;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let request_id = header(REQUEST_ID_HEADER);
    let status = response.status();
    // What failed: the gateway's own message, else the worker's error kind and the status.
    let error = gateway_error.or_else(|| {
        status.is_server_error().then(|| {
            let reason = status.canonical_reason().unwrap_or("");
            match header(flash_api::data_plane::ERROR_KIND_HEADER) {
                Some(kind) => format!("{kind} (HTTP {} {reason})", status.as_u16()),
                None => format!("HTTP {} {reason}", status.as_u16()),
            }
        })
    });
    metrics.lb_request(
        &ep_id,
        request_id.as_deref(),
        status,
        started.elapsed(),
        error.as_deref(),
    );
    response
}

/// The header a `flash-host` worker names each request's id in.
const REQUEST_ID_HEADER: &str = "x-request-id";

/// Forwards one request to a leased worker of `caller`'s endpoint (whose key the extractor
/// checked). When the gateway answers itself (no worker, a timeout), its message comes
/// with the answer.
async fn forward(
    state: AppState,
    LbCaller { endpoint: ep, open }: LbCaller,
    path: String,
    method: Method,
    headers: HeaderMap,
    query: Option<String>,
    body: Body,
) -> (Response, Option<String>) {
    let ep_id = ep.id.clone();
    if !ep.is_lb() {
        return answer(
            StatusCode::BAD_REQUEST,
            format!("endpoint `{ep_id}` is queue-based: use /v2/{ep_id}/run"),
        );
    }
    let Some(lease) = state
        .supervisor
        .acquire_lb(&ep.id, state.config.lb_wait)
        .await
    else {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no worker of endpoint `{ep_id}` became ready within {:?}; see its worker logs",
                state.config.lb_wait
            ),
        );
    };
    let mut url = format!("http://{}/{}", lease.addr, path);
    if let Some(q) = query {
        url.push('?');
        url.push_str(&q);
    }
    // The body streams to the worker as it arrives; `crate::admission` bounds it. When the
    // caller's body goes over the limit mid-stream, the answer is 413, not the failed send.
    let too_large = Arc::new(AtomicBool::new(false));
    let flag = too_large.clone();
    let upload = body.into_data_stream().map(move |chunk| {
        if let Err(e) = &chunk
            && crate::admission::is_length_limit(e)
        {
            flag.store(true, Ordering::Relaxed);
        }
        chunk
    });
    let mut req = state
        .http
        .request(method, &url)
        .timeout(lb_timeout(&ep))
        .body(reqwest::Body::wrap_stream(upload));
    for (name, value) in &headers {
        if !HOP_HEADERS.contains(&name.as_str()) && name != axum::http::header::AUTHORIZATION {
            req = req.header(name, value);
        }
    }
    // The caller's credential was checked above; a worker that enforces auth (no
    // `FLASH_DISABLE_RP_AUTH`) checks the `RUNPOD_API_KEY` it holds, so that is what it is
    // handed: never the user key, which no worker holds (crate::auth).
    if !open
        && let Some(key) = state.auth.worker_api_key(
            ep.template_id
                .as_deref()
                .and_then(|t| state.store.get_template(t).ok().flatten())
                .as_ref(),
            &ep,
        )
    {
        req = req.bearer_auth(key);
    }
    // A length the caller declared travels with the streamed body (workers that cannot read
    // chunked bodies get one); the limit layer has already refused one over the limit.
    if let Some(length) = headers.get(axum::http::header::CONTENT_LENGTH) {
        req = req.header(axum::http::header::CONTENT_LENGTH, length);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            let mut out_headers = HeaderMap::new();
            for (name, value) in resp.headers() {
                if !HOP_HEADERS.contains(&name.as_str())
                    && let Ok(n) = HeaderName::from_bytes(name.as_str().as_bytes())
                {
                    out_headers.append(n, value.clone());
                }
            }
            // The answer streams back as the worker sends it, and the worker stays leased
            // until it is done. A worker that breaks off mid-body makes this response end
            // in an error too (the caller sees a cut connection, never a short 200).
            let download = resp.bytes_stream().map(move |chunk| {
                let _held = &lease;
                chunk
            });
            (
                (status, out_headers, Body::from_stream(download)).into_response(),
                None,
            )
        }
        Err(_) if too_large.load(Ordering::Relaxed) => answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than {} bytes, the most a load-balanced endpoint \
                 accepts",
                state.config.max_lb_body
            ),
        ),
        Err(e) if e.is_timeout() => answer(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "worker of endpoint `{ep_id}` did not answer within {:?}",
                lb_timeout(&ep)
            ),
        ),
        Err(e) => answer(
            StatusCode::BAD_GATEWAY,
            format!("worker of endpoint `{ep_id}` failed: {e}"),
        ),
    }
}

/// The gateway's own answer, with its message for the metrics.
fn answer(status: StatusCode, message: String) -> (Response, Option<String>) {
    (err(status, message.clone()).into_response(), Some(message))
}

/// The whole of one proxied request, answer included: the endpoint's execution timeout,
/// else ten minutes.
fn lb_timeout(ep: &Endpoint) -> Duration {
    match u64::try_from(ep.execution_timeout_ms) {
        Ok(ms) if ms > 0 => Duration::from_millis(ms),
        _ => Duration::from_secs(600),
    }
}
