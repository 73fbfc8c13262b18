//! The load-balanced handler: an HTTP server for the resource's routes.
//!
//! - every `"METHOD /path"` route of this resource from the manifest; the payload is the
//!   JSON body (an object of named arguments, or an array) for POST/PUT/PATCH/DELETE, and
//!   the query string (each value parsed as JSON, else kept as a string) for GET; `{name}`
//!   path segments become named arguments too;
//! - `GET /ping`: `200 {"status":"healthy",…}` (never behind auth: it is the platform's
//!   health check), with `inference`: per preloaded model the requested target and the
//!   device serving it;
//! - `POST /execute`: runs a function **of the artifact** named in the body
//!   (`{"function_name", "input"|"args"|"kwargs"}`) — never code sent in the request —
//!   answering `{"success":true,"result":…}` or a typed error with a matching HTTP status;
//! - `GET /metrics`: the host's metrics ([`crate::metrics`]), unless the app has a route
//!   of that path;
//! - every request has an id (the caller's `x-request-id`, else a new one), sent back in
//!   `x-request-id`: it tags the function's log lines as their `job`, and its peer calls;
//! - `Authorization: Bearer <RUNPOD_API_KEY>` unless `FLASH_DISABLE_RP_AUTH=true`;
//! - bodies over 10 MiB → 413; at most `concurrency` requests run at once (others wait);
//!   graceful shutdown lets running requests finish.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, get, on, post};
use flash_runtime::{CallError, ErrorKind};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::app::{CallTag, decode_output};
use crate::job_input;
use crate::registry::ServiceRegistry;
use crate::role::Role;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 10 << 20;

/// Where a load-balanced host serves its metrics ([`crate::metrics`]).
pub const METRICS_PATH: &str = "/metrics";

/// Settings of the HTTP server.
#[derive(Debug, Clone)]
pub struct LbConfig {
    pub listen: SocketAddr,
    /// `None` disables auth (`FLASH_DISABLE_RP_AUTH=true`).
    pub api_key: Option<String>,
    pub concurrency: usize,
    /// How long a client may take to send a request head (`FLASH_HEADER_READ_TIMEOUT_S`).
    pub header_read_timeout: std::time::Duration,
}

#[derive(Clone)]
struct AppState {
    registry: Arc<ServiceRegistry>,
    api_key: Option<Arc<str>>,
}

/// Builds the router for the resource served by `registry`'s app.
pub fn router(
    registry: Arc<ServiceRegistry>,
    api_key: Option<String>,
    concurrency: usize,
) -> Result<Router> {
    let app = Arc::clone(registry.app());
    let state = AppState {
        registry,
        api_key: api_key.map(Into::into),
    };
    let mut routes = Router::new();
    let resource = app
        .resource
        .clone()
        .context("a load-balanced host serves exactly one resource config")?;
    let table = app
        .manifest
        .routes
        .get(&resource)
        .cloned()
        .unwrap_or_default();
    for (route, function) in table {
        let Some((method, path)) = route.split_once(' ') else {
            bail!("manifest route `{route}` of resource `{resource}` is not `METHOD /path`");
        };
        let filter = match method {
            "GET" => MethodFilter::GET,
            "POST" => MethodFilter::POST,
            "PUT" => MethodFilter::PUT,
            "DELETE" => MethodFilter::DELETE,
            "PATCH" => MethodFilter::PATCH,
            other => bail!("manifest route `{route}` has unsupported method `{other}`"),
        };
        let function: Arc<str> = function.into();
        routes = routes.route(
            path,
            on(
                filter,
                move |State(state): State<AppState>,
                      Extension(id): Extension<RequestId>,
                      method: Method,
                      params: Option<Path<BTreeMap<String, String>>>,
                      Query(query): Query<Vec<(String, String)>>,
                      body: Bytes| {
                    let function = Arc::clone(&function);
                    async move {
                        let params = params.map(|Path(p)| p).unwrap_or_default();
                        route_call(state, id, &function, method, params, query, body).await
                    }
                },
            ),
        );
    }
    // One bound for all the routes of the host: `Router::layer` wraps each route on its
    // own, so a plain `ConcurrencyLimitLayer` allowed `concurrency` per route and method.
    // Auth comes first, so waiting callers hold no permit; `/ping` is never held up.
    // `/metrics`, behind the same key as the routes, unless the app has a route there.
    if !app.manifest.routes.get(&resource).is_some_and(|table| {
        table.keys().any(|route| {
            route
                .split_once(' ')
                .is_some_and(|(_, path)| path == METRICS_PATH)
        })
    }) {
        routes = routes.route(
            METRICS_PATH,
            get(|State(state): State<AppState>| async move {
                crate::metrics::response(state.registry.app())
            }),
        );
    }
    let protected = routes
        .route("/execute", post(execute))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(
            Arc::new(tokio::sync::Semaphore::new(concurrency.max(1))),
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn(request_id));
    Ok(Router::new()
        .route("/ping", get(ping))
        .merge(protected)
        .layer(DefaultBodyLimit::disable())
        // Checks Content-Length up front (413 before reading) and bounds streamed bodies.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            MAX_BODY_BYTES,
        ))
        .with_state(state))
}

/// The load-balanced role: the resource's routes, served by `registry`.
pub struct LbServer {
    pub registry: Arc<ServiceRegistry>,
    pub config: LbConfig,
}

impl Role for LbServer {
    fn name(&self) -> &'static str {
        "load-balanced server"
    }

    async fn serve(self, mut stop: watch::Receiver<bool>) -> Result<()> {
        serve(self.registry, self.config, async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .await
    }
}

/// Serves until `shutdown` resolves, then finishes running requests.
pub async fn serve(
    registry: Arc<ServiceRegistry>,
    config: LbConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let router = router(registry, config.api_key, config.concurrency)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {} (FLASH_LISTEN_ADDR / PORT)", config.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "load-balanced handler listening");
    flash_api::serve::serve(listener, router, config.header_read_timeout, shutdown)
        .await
        .context("serving HTTP")
}

/// The id of one request: the caller's `x-request-id` when it is a usable one, else a new
/// `req-<uuid>`. It tags the function's log lines (`job`) and the peer calls it makes
/// (`trace`), and comes back in the answer's `x-request-id`: `flash logs --job <id>`.
#[derive(Debug, Clone)]
struct RequestId(String);

/// Header of [`RequestId`].
pub const REQUEST_ID_HEADER: &str = "x-request-id";

async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| format!("req-{}", uuid::Uuid::new_v4().simple()));
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = axum::http::HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

async fn auth(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    match denied(state.api_key.as_deref(), &headers) {
        None => next.run(request).await,
        Some(answer) => answer,
    }
}

/// The 401 answer when a key is required and the request does not present it (the rule of
/// every Flash server: [`flash_api::credential`]); `None` lets the request through. Shared
/// by the app's routes and the mothership's.
pub fn denied(key: Option<&str>, headers: &HeaderMap) -> Option<Response> {
    let key = key?;
    if flash_api::credential::presents(headers, key) {
        return None;
    }
    Some((
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": "missing or invalid API key: send `Authorization: Bearer <RUNPOD_API_KEY>`", "kind": "unauthorized"})),
    )
        .into_response())
}

async fn ping(State(state): State<AppState>) -> Response {
    let app = state.registry.app();
    let mut body = json!({
        "status": "healthy",
        "resource": app.resource,
        "functions": app.local_functions().collect::<Vec<_>>(),
    });
    // Which device serves each preloaded model (e.g. `gpu` requested, `cpu` serving).
    if !app.inference.is_empty() {
        body["inference"] = json!(app.inference.status());
    }
    axum::Json(body).into_response()
}

fn error_response(err: &CallError) -> Response {
    let status =
        StatusCode::from_u16(err.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(flash_api::data_plane::ERROR_KIND_HEADER, err.kind.as_str())],
        axum::Json(json!({
            "success": false,
            "error": err.message,
            "kind": err.kind,
            "traceback": err.traceback,
            "origin": err.origin,
        })),
    )
        .into_response()
}

async fn execute(
    State(state): State<AppState>,
    Extension(RequestId(id)): Extension<RequestId>,
    body: Bytes,
) -> Response {
    let input: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error_response(&CallError::new(
                ErrorKind::InvalidInput,
                format!("request body is not JSON: {e}"),
            ));
        }
    };
    if input.get("function_code").is_some() {
        return error_response(&CallError::new(
            ErrorKind::InvalidInput,
            "`function_code` is not accepted: /execute runs only functions built into the deployed artifact",
        ));
    }
    let app = state.registry.app();
    let served: Vec<&str> = app.local_functions().collect();
    let call = match job_input::resolve(&input, None, &served) {
        Ok(call) => call,
        Err(e) => return error_response(&e),
    };
    if !app.is_local(&call.function) {
        return error_response(&app.unknown(&call.function));
    }
    match state
        .registry
        .call(
            &call.function,
            call.payload,
            call.depth,
            CallTag {
                job: Some(id),
                trace: call.trace,
            },
        )
        .await
    {
        Ok(output) => match decode_output(&call.function, &output) {
            Ok(result) => axum::Json(json!({"success": true, "result": result})).into_response(),
            Err(e) => error_response(&e),
        },
        Err(e) => error_response(&e),
    }
}

async fn route_call(
    state: AppState,
    RequestId(id): RequestId,
    function: &str,
    method: Method,
    params: BTreeMap<String, String>,
    query: Vec<(String, String)>,
    body: Bytes,
) -> Response {
    let payload = match route_payload(&method, params, query, &body) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    match state
        .registry
        .call(
            function,
            payload.to_string(),
            0,
            CallTag {
                job: Some(id),
                trace: None,
            },
        )
        .await
    {
        Ok(output) => match decode_output(function, &output) {
            Ok(result) => axum::Json(result).into_response(),
            Err(e) => error_response(&e),
        },
        Err(e) => error_response(&e),
    }
}

fn route_payload(
    method: &Method,
    params: BTreeMap<String, String>,
    query: Vec<(String, String)>,
    body: &[u8],
) -> Result<Value, CallError> {
    let invalid = |m: String| CallError::new(ErrorKind::InvalidInput, m);
    let mut map = Map::new();
    for (k, v) in query {
        map.insert(k, serde_json::from_str(&v).unwrap_or(Value::String(v)));
    }
    let has_body = !body.iter().all(u8::is_ascii_whitespace);
    if has_body && *method != Method::GET {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(fields)) => map.extend(fields),
            Ok(Value::Array(items)) if map.is_empty() && params.is_empty() => {
                return Ok(Value::Array(items));
            }
            Ok(_) => {
                return Err(invalid(
                    "the request body must be a JSON object of named arguments".into(),
                ));
            }
            Err(e) => return Err(invalid(format!("request body is not JSON: {e}"))),
        }
    }
    for (k, v) in params {
        map.insert(k, serde_json::from_str(&v).unwrap_or(Value::String(v)));
    }
    Ok(Value::Object(map))
}
