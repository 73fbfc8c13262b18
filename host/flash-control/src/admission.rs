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
//!
//! The gate of `/v2` and `/lb` ([`endpoint`]) reads the endpoint the path names once and
//! leaves what the key may do with it ([`Admitted`]) to the handlers, which say what they
//! need with an extractor taken before their body: [`Caller`] (the user key or the key of
//! the endpoint's environment: submitting, cancelling, purging), [`CallerOrWorker`] (or the
//! endpoint's own `aiKey`: the worker protocol, `/status`, `/stream`, `/health`,
//! `/metrics`) and [`LbCaller`] (or nothing, for an open load-balanced endpoint). An unknown
//! endpoint is 404 for the user and 401 for anyone else, so that only the user learns which
//! endpoints exist.

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::gateway;
use crate::state::AppState;
use crate::store::Endpoint;
use crate::util::ApiError;

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
/// (the user key, the key of the endpoint's environment, or the endpoint's `aiKey`; nothing
/// for an open load-balanced endpoint), or 401 before the body is touched. What the key may
/// do goes to the handler's extractor ([`Caller`], [`CallerOrWorker`], [`LbCaller`]).
pub async fn endpoint(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let admitted = Admitted::assess(&state, request.headers(), request.uri().path());
    if admitted.may_enter() {
        request.extensions_mut().insert(admitted);
        next.run(request).await
    } else {
        unauthorized("unauthorized: invalid or missing API key")
    }
}

/// What a request's key may do with the endpoint its path names (`/v2/{id}/…`,
/// `/lb/{id}/…`), found once by the gate ([`endpoint`]).
#[derive(Clone, Debug)]
pub struct Admitted {
    id: String,
    /// The endpoint, `None` when there is none, or why it could not be read.
    endpoint: Result<Option<Endpoint>, String>,
    /// The user key.
    user: bool,
    /// The user key or the key of the endpoint's environment.
    caller: bool,
    /// The endpoint's own `aiKey`.
    worker: bool,
    /// A load-balanced route to an endpoint open without a key (`FLASH_DISABLE_RP_AUTH`).
    open: bool,
}

/// The access a handler needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Caller,
    CallerOrWorker,
    LoadBalanced,
}

impl Admitted {
    fn assess(state: &AppState, headers: &HeaderMap, path: &str) -> Self {
        let mut segments = path.trim_start_matches('/').split('/');
        let (kind, id) = (segments.next(), segments.next().unwrap_or_default());
        let endpoint = state.store.get_endpoint(id).map_err(|e| e.to_string());
        let ep = endpoint.as_ref().ok().and_then(Option::as_ref);
        Self {
            id: id.to_string(),
            user: state.auth.is_user(headers),
            caller: ep.is_some_and(|ep| state.auth.may_call(headers, ep)),
            worker: ep.is_some_and(|ep| state.auth.may_call_or_worker(headers, ep)),
            open: kind == Some("lb") && ep.is_some_and(|ep| gateway::lb_auth_disabled(state, ep)),
            endpoint,
        }
    }

    /// Whether the gate lets the request in: the user always (an unknown endpoint is then
    /// the handler's 404), anyone else only to an endpoint their key reaches.
    fn may_enter(&self) -> bool {
        self.user || self.caller || self.worker || self.open
    }

    /// The endpoint, if the key gives `access` to it.
    fn grant(self, access: Access) -> Result<Endpoint, ApiError> {
        let unauthorized = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized: invalid or missing API key",
            )
        };
        let ep = match self.endpoint {
            Ok(Some(ep)) => ep,
            // Do not reveal which endpoints exist to anyone but the user.
            _ if !self.user => return Err(unauthorized()),
            Ok(None) => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("endpoint `{}` not found", self.id),
                ));
            }
            Err(e) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e)),
        };
        let allowed = match access {
            Access::Caller => self.caller,
            Access::CallerOrWorker => self.caller || self.worker,
            Access::LoadBalanced => self.caller || self.worker || self.open,
        };
        if allowed { Ok(ep) } else { Err(unauthorized()) }
    }

    /// What the gate found, or (on a route it does not guard) the same assessment now.
    fn of(parts: &mut Parts, state: &AppState) -> Self {
        parts
            .extensions
            .remove::<Admitted>()
            .unwrap_or_else(|| Self::assess(state, &parts.headers, parts.uri.path()))
    }
}

/// The endpoint of a request whose key may call it: the user key, or the key of the
/// endpoint's environment ([`Auth::may_call`](crate::auth::Auth::may_call)).
pub struct Caller(pub Endpoint);

/// The endpoint of a request whose key may call it or is the endpoint's own `aiKey`.
pub struct CallerOrWorker(pub Endpoint);

/// The endpoint of a load-balanced request: a key that may call it, its `aiKey`, or none
/// when the endpoint is open (`open` then tells the proxy to hand the worker no key).
pub struct LbCaller {
    pub endpoint: Endpoint,
    pub open: bool,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Admitted::of(parts, state).grant(Access::Caller).map(Self)
    }
}

impl FromRequestParts<AppState> for CallerOrWorker {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Admitted::of(parts, state)
            .grant(Access::CallerOrWorker)
            .map(Self)
    }
}

impl FromRequestParts<AppState> for LbCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let admitted = Admitted::of(parts, state);
        let open = admitted.open;
        admitted
            .grant(Access::LoadBalanced)
            .map(|endpoint| Self { endpoint, open })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(endpoint: Option<Endpoint>) -> Admitted {
        Admitted {
            id: "ep1".into(),
            endpoint: Ok(endpoint),
            user: false,
            caller: false,
            worker: false,
            open: false,
        }
    }

    fn ep() -> Option<Endpoint> {
        Some(Endpoint {
            id: "ep1".into(),
            ..Default::default()
        })
    }

    fn status(admitted: Admitted, access: Access) -> StatusCode {
        admitted
            .grant(access)
            .map_or_else(|e| e.status, |_| StatusCode::OK)
    }

    #[test]
    fn each_access_takes_its_keys() {
        use Access::*;
        const OK: StatusCode = StatusCode::OK;
        const NO: StatusCode = StatusCode::UNAUTHORIZED;
        let caller = Admitted {
            caller: true,
            ..admitted(ep())
        };
        let worker = Admitted {
            worker: true,
            ..admitted(ep())
        };
        let open = Admitted {
            open: true,
            ..admitted(ep())
        };
        let table = [
            (&caller, [OK, OK, OK]),
            (&worker, [NO, OK, OK]),
            (&open, [NO, NO, OK]),
            (&admitted(ep()), [NO, NO, NO]),
        ];
        for (who, expected) in table {
            assert!(who.may_enter() == (expected != [NO, NO, NO]), "{who:?}");
            for (access, want) in [Caller, CallerOrWorker, LoadBalanced]
                .into_iter()
                .zip(expected)
            {
                assert_eq!(status(who.clone(), access), want, "{who:?} {access:?}");
            }
        }
    }

    #[test]
    fn only_the_user_learns_that_an_endpoint_does_not_exist() {
        let user = Admitted {
            user: true,
            ..admitted(None)
        };
        assert!(user.may_enter(), "the handler answers 404");
        let err = user.grant(Access::CallerOrWorker).expect_err("refused");
        assert_eq!(err.status, StatusCode::NOT_FOUND);
        assert_eq!(err.message, "endpoint `ep1` not found");
        assert!(!admitted(None).may_enter());
        assert_eq!(
            status(admitted(None), Access::Caller),
            StatusCode::UNAUTHORIZED
        );
        let broken = Admitted {
            endpoint: Err("store failure: disk".into()),
            ..admitted(None)
        };
        assert_eq!(
            status(broken.clone(), Access::Caller),
            StatusCode::UNAUTHORIZED
        );
        let broken_for_user = Admitted {
            user: true,
            ..broken
        };
        assert_eq!(
            status(broken_for_user, Access::Caller),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
