//! Admission: what a request may cost the server before anyone knows who sent it.
//!
//! Every route that needs a key has it checked from the headers **before its body is
//! read**, so an unauthenticated client cannot make the server buffer a body, spool a
//! multipart upload to disk, or hold a connection open while it trickles bytes in. Bodies
//! are then bounded as they stream, with or without `Content-Length`
//! (tower-http's `RequestBodyLimitLayer`, set up in [`crate::server`]):
//!
//! | route | without a valid key | body limit |
//! |---|---|---|
//! | `POST /graphql` | only `flash login`'s two operations, JSON only, [`ANONYMOUS_BODY_LIMIT`] | `max_request_body` |
//! | `/v2/{endpoint}/…` | 401 (the user key, the key of the endpoint's environment, or the endpoint's `aiKey`; each handler then checks which routes take an `aiKey`) | `max_request_body` |
//! | `/lb/{endpoint}/…` | 401 unless the endpoint is open (`FLASH_DISABLE_RP_AUTH=true`) | `max_lb_body` |
//! | `PUT /artifacts/…` | its signed URL is checked first ([`crate::artifacts`]) | the size declared when the upload was prepared |

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::gateway;
use crate::state::AppState;

/// The largest body `/graphql` reads without a key: `flash login`'s operations are a few
/// hundred bytes.
pub const ANONYMOUS_BODY_LIMIT: usize = 16 * 1024;

fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({ "errors": [{ "message": message }], "error": message })),
    )
        .into_response()
}

/// `POST /graphql`: with the user key, a body up to `max_request_body`; without it, only
/// a small JSON body (the login operations, checked on the parsed query by the handler),
/// never multipart. The body is read here, within its limit, so that going over it is the
/// same answer whether or not a length was declared (413 with a key, 401 without).
pub async fn graphql(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let authorized = state.auth.is_user(request.headers());
    let refused = || {
        unauthorized(
            "unauthorized: send `Authorization: Bearer <key>` with the key from \
             <data_dir>/api_key (without a key only `flash login`'s small JSON requests are \
             answered)",
        )
    };
    let limit = if authorized {
        state.config.max_request_body
    } else {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if !is_json || declared.is_some_and(|n| n > ANONYMOUS_BODY_LIMIT as u64) {
            return refused();
        }
        ANONYMOUS_BODY_LIMIT
    };
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(e) if is_length_limit(&e) && !authorized => refused(),
        Err(e) if is_length_limit(&e) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            axum::Json(json!({ "errors": [{ "message": format!(
                "the request body is larger than {limit} bytes"
            ) }] })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "errors": [{ "message": format!("reading the request: {e}") }] })),
        )
            .into_response(),
    }
}

/// Whether `error` comes from a body limit (`RequestBodyLimitLayer`, `to_bytes`).
pub fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// `/v2/{endpoint}/…` and `/lb/{endpoint}/…`: a key this server accepts for the endpoint
/// (the user key, or the endpoint's `aiKey`; nothing for an open load-balanced endpoint),
/// or 401 before the body is touched. Handlers still decide what an `aiKey` may do.
pub async fn endpoint(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if state.auth.is_user(headers) {
        return next.run(request).await;
    }
    let mut segments = request.uri().path().trim_start_matches('/').split('/');
    let (kind, id) = (segments.next(), segments.next());
    let admitted = id
        .and_then(|id| state.store.get_endpoint(id).ok().flatten())
        .is_some_and(|ep| {
            state.auth.may_call_or_worker(headers, &ep)
                || (kind == Some("lb") && gateway::lb_auth_disabled(&state, &ep))
        });
    if admitted {
        next.run(request).await
    } else {
        unauthorized("unauthorized: invalid or missing API key")
    }
}
