//! A State Manager stand-in on 127.0.0.1 for tests (feature `stub`): it recognises
//! operations by name, answers canned JSON from in-memory environments and builds, counts
//! requests, records what it saw, and can be told to misbehave for the next N requests.
//! It serves the operations a worker sends (`getFlashEnvironment`, `getFlashBuild`,
//! `updateFlashBuildManifest`) and `flash login`'s (`createFlashAuthRequest`,
//! `flashAuthRequestStatus`, answered from a script); `flash server` is the full
//! implementation. Like RunPod's API, it does not know `flash server`'s extensions (the
//! environment lease mutations) and refuses them as unknown fields.
//!
//! [`FaultyProxy`] sits in front of a real State Manager (`flash server`) instead, and loses
//! or delays chosen operations *after* the server received them: the way to test what a
//! client does when a mutation was applied but its answer never came back.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// How the stand-in misbehaves for one request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// HTTP 503 with a JSON body.
    Http503,
    /// HTTP 401 with a JSON body.
    Http401,
    /// HTTP 200 with `{"errors":[{"message": …}]}`.
    GraphQl(&'static str),
    /// HTTP 200, `text/html` body.
    NonJson,
    /// The normal answer plus an `errors` key with two messages.
    ErrorsWithData,
    /// Sleeps this long, then answers normally.
    Slow(Duration),
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub operation: String,
    pub body: Value,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
}

#[derive(Default)]
pub struct Stub {
    requests: AtomicUsize,
    /// One fault is consumed per request, front first.
    faults: Mutex<VecDeque<Fault>>,
    /// Added to every answer (to make concurrent callers overlap).
    delay: Mutex<Duration>,
    /// environment id → `flashEnvironment` object.
    environments: Mutex<HashMap<String, Value>>,
    /// build id → manifest.
    builds: Mutex<HashMap<String, Value>>,
    seen: Mutex<Vec<Seen>>,
    /// `flashAuthRequestStatus` answers (`{status, apiKey}`), front first; the last repeats.
    auth_statuses: Mutex<VecDeque<Value>>,
    /// `expiresAt` of the auth request (`null` when unset).
    auth_expires_at: Mutex<Option<String>>,
}

impl Stub {
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn fail_next(&self, n: usize, fault: Fault) {
        let mut faults = self.faults.lock().expect("faults lock");
        faults.extend(std::iter::repeat_n(fault, n));
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().expect("delay lock") = delay;
    }

    pub fn add_environment(&self, id: &str, active_build: Option<&str>) {
        self.environments.lock().expect("env lock").insert(
            id.to_owned(),
            json!({
                "id": id,
                "name": "production",
                "state": "HEALTHY",
                "activeBuildId": active_build,
                "createdAt": "2026-11-28T00:00:00Z",
                "endpoints": [{"id": "ep-1", "name": "gpu_worker"}],
                "networkVolumes": null,
            }),
        );
    }

    pub fn set_build(&self, id: &str, manifest: Value) {
        self.builds
            .lock()
            .expect("builds lock")
            .insert(id.to_owned(), manifest);
    }

    pub fn build(&self, id: &str) -> Option<Value> {
        self.builds.lock().expect("builds lock").get(id).cloned()
    }

    /// Scripts `flash login`: `createFlashAuthRequest` answers `PENDING` with `expires_at`,
    /// then each `flashAuthRequestStatus` answers the next `(status, apiKey)`; the last one
    /// repeats.
    pub fn script_auth(&self, expires_at: Option<&str>, answers: &[(&str, Option<&str>)]) {
        *self.auth_expires_at.lock().expect("auth lock") = expires_at.map(str::to_owned);
        *self.auth_statuses.lock().expect("auth lock") = answers
            .iter()
            .map(|(status, key)| json!({ "status": status, "apiKey": key }))
            .collect();
    }

    fn next_auth_status(&self) -> Value {
        let mut statuses = self.auth_statuses.lock().expect("auth lock");
        if statuses.len() > 1 {
            statuses.pop_front().unwrap_or_default()
        } else {
            statuses
                .front()
                .cloned()
                .unwrap_or_else(|| json!({ "status": "PENDING", "apiKey": null }))
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }

    /// The normal answer to one operation.
    fn answer(&self, operation: &str, variables: &Value) -> Value {
        match operation {
            "getFlashEnvironment" => {
                let id = variables["flashEnvironmentId"].as_str().unwrap_or_default();
                let env = self.environments.lock().expect("env lock").get(id).cloned();
                json!({ "data": { "flashEnvironment": env } })
            }
            "getFlashBuild" => {
                let id = variables["input"].as_str().unwrap_or_default();
                let build = self
                    .build(id)
                    .map(|manifest| json!({ "id": id, "manifest": manifest }));
                json!({ "data": { "flashBuild": build } })
            }
            "updateFlashBuildManifest" => {
                let id = variables["input"]["flashBuildId"]
                    .as_str()
                    .unwrap_or_default();
                let manifest = variables["input"]["manifest"].clone();
                if self.build(id).is_none() {
                    return json!({ "data": { "updateFlashBuildManifest": null } });
                }
                self.set_build(id, manifest.clone());
                json!({ "data": { "updateFlashBuildManifest": { "id": id, "manifest": manifest } } })
            }
            "createFlashAuthRequest" => {
                let expires_at = self.auth_expires_at.lock().expect("auth lock").clone();
                json!({ "data": { "createFlashAuthRequest": {
                    "id": "auth-1", "status": "PENDING", "expiresAt": expires_at,
                } } })
            }
            "flashAuthRequestStatus" => {
                let id = variables["flashAuthRequestId"].as_str().unwrap_or_default();
                if id != "auth-1" {
                    return json!({ "errors": [{ "message": format!("auth request not found: `{id}`") }] });
                }
                let expires_at = self.auth_expires_at.lock().expect("auth lock").clone();
                let mut answer = self.next_auth_status();
                answer["id"] = json!(id);
                answer["expiresAt"] = json!(expires_at);
                json!({ "data": { "flashAuthRequestStatus": answer } })
            }
            // RunPod's API has no environment leases: it refuses the document at validation.
            "acquireFlashEnvironmentLease" => json!({ "errors": [{ "message":
                "Cannot query field \"acquireFlashEnvironmentLease\" on type \"Mutation\"." }] }),
            other => json!({ "errors": [{ "message": format!("unknown operation `{other}`") }] }),
        }
    }
}

/// `query getFlashBuild(...)` → `getFlashBuild`.
fn operation_name(query: &str) -> String {
    let rest = query.trim_start();
    let rest = rest
        .strip_prefix("query")
        .or_else(|| rest.strip_prefix("mutation"))
        .unwrap_or(rest)
        .trim_start();
    rest.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn graphql(State(stub): State<Arc<Stub>>, headers: HeaderMap, body: Bytes) -> Response {
    stub.requests.fetch_add(1, Ordering::SeqCst);
    let delay = *stub.delay.lock().expect("delay lock");
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({ "errors": [{ "message": "body is not JSON" }] }),
        );
    };
    let operation = operation_name(body["query"].as_str().unwrap_or_default());
    let header_text = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    stub.seen.lock().expect("seen lock").push(Seen {
        operation: operation.clone(),
        body: body.clone(),
        authorization: header_text(header::AUTHORIZATION),
        content_type: header_text(header::CONTENT_TYPE),
    });
    let fault = stub.faults.lock().expect("faults lock").pop_front();
    let normal = || json_response(StatusCode::OK, stub.answer(&operation, &body["variables"]));
    match fault {
        None => normal(),
        Some(Fault::Http503) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "errors": [{ "message": "Service Unavailable" }] }),
        ),
        Some(Fault::Http401) => json_response(
            StatusCode::UNAUTHORIZED,
            json!({ "errors": [{ "message": "Unauthorized" }] }),
        ),
        Some(Fault::GraphQl(message)) => json_response(
            StatusCode::OK,
            json!({ "errors": [{ "message": message }] }),
        ),
        Some(Fault::NonJson) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>upstream is warming up</body></html>",
        )
            .into_response(),
        Some(Fault::ErrorsWithData) => {
            let mut answer = stub.answer(&operation, &body["variables"]);
            answer["errors"] =
                json!([{ "message": "partial failure" }, { "message": "second problem" }]);
            json_response(StatusCode::OK, answer)
        }
        Some(Fault::Slow(wait)) => {
            tokio::time::sleep(wait).await;
            normal()
        }
    }
}

/// Starts the stand-in; returns its base URL (no trailing `/graphql`).
pub async fn start(stub: Arc<Stub>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the stand-in");
    let addr = listener.local_addr().expect("stand-in address");
    let app = Router::new()
        .route("/graphql", post(graphql))
        .with_state(stub);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A base URL on which nothing listens (bound, then released).
pub async fn dead_base_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a port");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    format!("http://{addr}")
}

/// What [`FaultyProxy`] does to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyFault {
    /// Forward the request, let the server answer (and commit), then close the client's
    /// connection without sending a byte of the answer.
    DropAnswer,
    /// Hold the request this long, then forward it.
    Delay(Duration),
}

/// A proxy on 127.0.0.1 in front of a State Manager: forwards every request (HTTP/1.1 with
/// `Content-Length`, one request per connection) and applies the faults set per GraphQL
/// operation name.
#[derive(Default)]
pub struct FaultyProxy {
    /// (operation, fault, how many more requests it applies to).
    rules: Mutex<Vec<(String, ProxyFault, usize)>>,
    /// Operation names of the GraphQL requests forwarded, in order.
    seen: Mutex<Vec<String>>,
}

impl FaultyProxy {
    /// Applies `fault` to the next `times` requests of `operation`.
    pub fn fault(&self, operation: &str, fault: ProxyFault, times: usize) {
        self.rules
            .lock()
            .expect("rules lock")
            .push((operation.to_owned(), fault, times));
    }

    /// Operation names of the GraphQL requests that reached the proxy, in order.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("seen lock").clone()
    }

    fn take_fault(&self, operation: &str) -> Option<ProxyFault> {
        let mut rules = self.rules.lock().expect("rules lock");
        let rule = rules
            .iter_mut()
            .find(|(op, _, left)| op == operation && *left > 0)?;
        rule.2 -= 1;
        Some(rule.1.clone())
    }
}

/// Starts `proxy` in front of `upstream` (a base URL); returns the proxy's base URL.
pub async fn start_proxy(proxy: Arc<FaultyProxy>, upstream: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let addr = listener.local_addr().expect("proxy address");
    let upstream = upstream.trim_end_matches('/').to_owned();
    let http = reqwest::Client::new();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (proxy, upstream, http) = (proxy.clone(), upstream.clone(), http.clone());
            tokio::spawn(async move {
                let _ = proxy_one(&proxy, &upstream, &http, socket).await;
            });
        }
    });
    format!("http://{addr}")
}

/// One request: read it, forward it, answer (or not).
async fn proxy_one(
    proxy: &FaultyProxy,
    upstream: &str,
    http: &reqwest::Client,
    mut socket: tokio::net::TcpStream,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 8192];
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split_whitespace();
    let method = request_line.next().unwrap_or("GET").to_owned();
    let path = request_line.next().unwrap_or("/").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = vec![0u8; (length - body.len()).min(64 * 1024)];
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }

    let operation = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("query").and_then(Value::as_str).map(operation_name));
    let fault = operation.as_deref().and_then(|op| proxy.take_fault(op));
    if let Some(op) = &operation {
        proxy.seen.lock().expect("seen lock").push(op.clone());
    }
    if let Some(ProxyFault::Delay(wait)) = &fault {
        tokio::time::sleep(*wait).await;
    }

    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut request = http.request(method, format!("{upstream}{path}")).body(body);
    for (k, v) in &headers {
        if !matches!(
            k.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding"
        ) {
            request = request.header(k.as_str(), v.as_str());
        }
    }
    let Ok(response) = request.send().await else {
        return socket
            .write_all(
                b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await;
    };
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let answer = response.bytes().await.unwrap_or_default();
    if fault == Some(ProxyFault::DropAnswer) {
        // The server has answered (and committed); the client hears nothing.
        return Ok(());
    }
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        answer.len()
    );
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(&answer).await?;
    socket.shutdown().await
}

/// A client of `base` with `key` for tests: a 10 s timeout and three attempts 10 ms apart,
/// so that retries are exercised without slowing the suite.
pub fn quick_client(base: &str, key: &str) -> crate::StateManagerClient {
    let config = crate::ClientConfig::new(base, key, crate::KeySource::Env)
        .expect("client config")
        .with_timeout(Duration::from_secs(10))
        .with_backoff_base(Duration::from_millis(10))
        .with_max_attempts(3);
    crate::StateManagerClient::new(config).expect("client")
}
