//! The load-balanced handler end to end: a real `flash-host` serving the test guest's
//! routes on loopback, with and without auth.

use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::{Value, json};

async fn start_lb(
    dir: &std::path::Path,
    extra: &[(&str, &str)],
) -> (flash_tests::ChildGuard, String) {
    let artifact = rust_guest_artifact(dir, |_| {}).await;
    let port = flash_tests::free_port();
    let mut env = envs(&[("FLASH_RESOURCE_NAME", "test_lb")]);
    env.extend(envs(extra));
    env.push(("FLASH_LISTEN_ADDR".into(), format!("127.0.0.1:{port}")));
    env.push(("FLASH_ARTIFACT_URL".into(), artifact.display().to_string()));
    let host = spawn_host(dir, "lb", &env);
    let base = format!("http://127.0.0.1:{port}");
    let url = format!("{base}/ping");
    tokio::task::spawn_blocking(move || flash_tests::wait_for_http(&url, Duration::from_secs(30)))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{}", log(dir, "lb")));
    (host, base)
}

#[tokio::test]
async fn routes_ping_and_execute_without_auth() {
    let tmp = tempfile::tempdir().unwrap();
    let (_host, base) = start_lb(tmp.path(), &[("FLASH_DISABLE_RP_AUTH", "true")]).await;
    let http = reqwest::Client::new();

    let ping: Value = http
        .get(format!("{base}/ping"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ping["status"], "healthy");
    assert_eq!(ping["resource"], "test_lb");

    // POST route: JSON body → named arguments.
    let r = http
        .post(format!("{base}/lb/echo"))
        .json(&json!({"value": {"a": [1, 2]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"a": [1, 2]}));

    // GET route: query → named arguments; optional argument absent.
    let r = http
        .get(format!("{base}/lb/hello?name=Ada"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!("hello, Ada"));
    let r = http.get(format!("{base}/lb/hello")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // /execute runs a named function of the artifact.
    let r = http
        .post(format!("{base}/execute"))
        .json(&json!({"function_name": "lb_echo", "kwargs": {"value": 7}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"success": true, "result": 7})
    );

    // ...and never code sent in the request.
    let r = http
        .post(format!("{base}/execute"))
        .json(&json!({"function_name": "f", "function_code": "def f(): return 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("`function_code` is not accepted"),
        "{body}"
    );

    // Unknown function, a function of another resource, bad JSON, bad arguments.
    let r = http
        .post(format!("{base}/execute"))
        .json(&json!({"function_name": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["kind"], "unknown-function");
    let r = http
        .post(format!("{base}/execute"))
        .json(&json!({"function_name": "add", "args": [1, 2]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .post(format!("{base}/lb/echo"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["kind"], "invalid-input");
    let r = http
        .post(format!("{base}/lb/echo"))
        .json(&json!({"wrong": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Over 10 MiB → 413, answered from the declared length before the body is read.
    assert_eq!(
        raw_status_for_declared_length(&base, "/lb/echo", 11 << 20).await,
        413
    );
    assert_eq!(
        raw_status_for_declared_length(&base, "/execute", 11 << 20).await,
        413
    );

    // 16 concurrent requests all answer correctly.
    let calls = (0..16).map(|i| {
        let http = http.clone();
        let url = format!("{base}/lb/echo");
        async move {
            http.post(url)
                .json(&json!({"value": i}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    });
    let results = futures::future::join_all(calls).await;
    assert_eq!(results, (0..16).map(|i| json!(i)).collect::<Vec<_>>());
}

#[tokio::test]
async fn auth_is_required_unless_disabled() {
    let tmp = tempfile::tempdir().unwrap();
    let (_host, base) = start_lb(tmp.path(), &[("RUNPOD_API_KEY", "sekret")]).await;
    let http = reqwest::Client::new();
    // Health checks stay open.
    assert_eq!(
        http.get(format!("{base}/ping"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = http
        .post(format!("{base}/lb/echo"))
        .json(&json!({"value": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/lb/echo"))
        .bearer_auth("wrong")
        .json(&json!({"value": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/execute"))
        .json(&json!({"function_name": "lb_echo", "kwargs": {"value": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/lb/echo"))
        .bearer_auth("sekret")
        .json(&json!({"value": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The control plane's rule (flash_api::credential): the scheme in any case, or the raw
    // key as RunPod's worker SDK sends it; a prefix of the key is not the key.
    for (authorization, status) in [
        ("bearer sekret", 200),
        ("BEARER sekret", 200),
        ("sekret", 200),
        ("Bearer sekre", 401),
        ("Basic sekret", 401),
    ] {
        let r = http
            .post(format!("{base}/lb/echo"))
            .header("authorization", authorization)
            .json(&json!({"value": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{authorization}");
    }
}

/// Sends only the head of a POST declaring `len` body bytes and reads the status line.
async fn raw_status_for_declared_length(base: &str, path: &str, len: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response: {text}"))
}

/// `FLASH_CONCURRENCY` bounds the whole host, not each route: with 1, a request to another
/// route waits for the running one (it used to run beside it), and `/ping` never waits.
#[tokio::test]
async fn concurrency_is_one_bound_for_every_route() {
    let tmp = tempfile::tempdir().unwrap();
    let (host, base) = start_lb(
        tmp.path(),
        &[
            ("FLASH_DISABLE_RP_AUTH", "true"),
            ("FLASH_CONCURRENCY", "1"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let cpu_ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", host.0.id())).unwrap();
        // utime is field 14; the command name (field 2) has no spaces here.
        stat.split_whitespace().nth(13).unwrap().parse().unwrap()
    };
    let before = cpu_ticks();
    let busy = tokio::spawn({
        let http = http.clone();
        let url = format!("{base}/lb/busy");
        async move {
            let r = http
                .post(url)
                .json(&json!({"ms": 1500}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    });
    // The busy call is running once the host has burnt CPU on it (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(20);
    while cpu_ticks() < before + 20 {
        assert!(Instant::now() < deadline, "the busy call never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // /ping answers while the only slot is taken...
    let ping = http.get(format!("{base}/ping")).send().await.unwrap();
    assert_eq!(ping.status(), 200);
    // ...and another route waits for it: the busy call had at least ~1.3 s left (it ran
    // ~0.2 s of CPU when we looked), a hello alone takes about a millisecond.
    let asked = Instant::now();
    let hello = http.get(format!("{base}/lb/hello")).send().await.unwrap();
    let waited = asked.elapsed();
    assert_eq!(hello.status(), 200);
    assert!(
        waited >= Duration::from_millis(300),
        "GET /lb/hello took {waited:?}: it ran beside the busy call although FLASH_CONCURRENCY=1"
    );
    busy.await.unwrap();
}

/// A client that never finishes its request head (slowloris) is cut off after
/// `FLASH_HEADER_READ_TIMEOUT_S`, instead of holding a connection as long as it likes.
#[tokio::test(flavor = "multi_thread")]
async fn slow_request_heads_are_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let (_host, base) = start_lb(
        tmp.path(),
        &[
            ("FLASH_DISABLE_RP_AUTH", "true"),
            ("FLASH_HEADER_READ_TIMEOUT_S", "1"),
        ],
    )
    .await;
    let addr = base.trim_start_matches("http://").to_string();
    for head in ["", "GET /lb/hello HTTP/1.1\r\nHost: x\r\n"] {
        let probe = (addr.clone(), head.to_string());
        let took = tokio::task::spawn_blocking(move || {
            flash_tests::connection_closed_after(&probe.0, &probe.1)
        })
        .await
        .unwrap();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(10),
            "{head:?}: the connection ended after {took:?}"
        );
    }
    let hello = reqwest::get(format!("{base}/lb/hello")).await.unwrap();
    assert_eq!(hello.status(), 200);
}

/// Every request has an id: the caller's `x-request-id` when usable, else a new one. It
/// comes back in the answer and tags what the function printed, as its `job`.
#[tokio::test]
async fn requests_carry_an_id_that_tags_the_functions_log_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let (_host, base) = start_lb(tmp.path(), &[("FLASH_DISABLE_RP_AUTH", "true")]).await;
    let http = reqwest::Client::new();

    let r = http
        .get(format!("{base}/lb/hello?name=Ada"))
        .header("x-request-id", "trace-me-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "trace-me-1");
    // An id that is not one (spaces, too long) is replaced by a new one.
    let r = http
        .get(format!("{base}/lb/hello?name=Bob"))
        .header("x-request-id", "not an id")
        .send()
        .await
        .unwrap();
    let fresh = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(fresh.starts_with("req-") && fresh.len() == 36, "{fresh}");

    let lines: Vec<Value> = log(tmp.path(), "lb")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &Value| l["target"] == "guest")
        .collect();
    let job_of = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message)
            .map(|l| l["job"].clone())
            .unwrap_or_else(|| panic!("no `{message}` in {lines:?}"))
    };
    assert_eq!(job_of("greeting Ada"), "trace-me-1");
    assert_eq!(job_of("greeting Bob"), fresh.as_str());
}
