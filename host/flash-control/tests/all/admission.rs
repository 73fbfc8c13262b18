//! What a request may cost `flash server` (crate::admission, #13 items 2 and 5): without a
//! valid key no body is read, with one every body is bounded as it streams (with and
//! without `Content-Length`), and the load-balanced proxy streams both ways, answers 413
//! itself and never turns a worker's broken answer into a short 200.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::TestServer;
use serde_json::json;

const HUNDRED_MB: usize = 100 << 20;
const CHUNK: usize = 64 << 10;

/// POSTs `total` bytes of JSON whitespace to `path` over a raw connection, with a
/// `Content-Length` or chunked, writing only as fast as the server takes them, and reads the
/// status line of the answer (which may come before the body is done). Returns the status
/// and how many body bytes the server let in.
async fn send(
    s: &TestServer,
    path: &str,
    key: Option<&str>,
    total: usize,
    declare_length: bool,
    content_type: &str,
) -> (Option<u16>, usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.url.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (mut read, mut write) = stream.into_split();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let framing = if declare_length {
        format!("Content-Length: {total}\r\n")
    } else {
        "Transfer-Encoding: chunked\r\n".to_string()
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n{auth}{framing}\r\n"
    );
    write.write_all(head.as_bytes()).await.expect("head");
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let writer = tokio::spawn(async move {
        let data = vec![b' '; CHUNK];
        let mut chunk = Vec::with_capacity(CHUNK + 16);
        if declare_length {
            chunk.extend_from_slice(&data);
        } else {
            chunk.extend_from_slice(format!("{CHUNK:x}\r\n").as_bytes());
            chunk.extend_from_slice(&data);
            chunk.extend_from_slice(b"\r\n");
        }
        while counter.load(Ordering::Relaxed) < total {
            if write.write_all(&chunk).await.is_err() {
                return;
            }
            counter.fetch_add(CHUNK, Ordering::Relaxed);
        }
        if !declare_length {
            let _ = write.write_all(b"0\r\n\r\n").await;
        }
    });
    let mut buf = vec![0u8; 1024];
    let status = match tokio::time::timeout(Duration::from_secs(60), read.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => String::from_utf8_lossy(&buf[..n])
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok()),
        _ => None,
    };
    writer.abort();
    (status, sent.load(Ordering::Relaxed))
}

async fn lb_endpoint(s: &TestServer) -> String {
    let python = flash_tests::python().expect("venv");
    let worker = common::package_dir().join("tests/fixtures/lb_worker.py");
    let data = s
        .gql(
            common::SAVE_ENDPOINT,
            json!({ "input": { "name": "api", "type": "LB", "workersMin": 0, "workersMax": 1,
            "template": { "env": [{ "key": "FLASH_WORKER_COMMAND", "value": json!([python, worker]).to_string() }] } } }),
        )
        .await;
    data["saveEndpoint"]["id"].as_str().expect("id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_key_no_body_is_read() {
    let s = TestServer::start().await;
    let queue = s.python_endpoint("q", "echo", json!({})).await;
    let queue = queue["id"].as_str().expect("id").to_string();
    let lb = lb_endpoint(&s).await;
    for (path, content_type) in [
        (format!("/v2/{queue}/run"), "application/json"),
        (format!("/v2/{queue}/runsync"), "application/json"),
        ("/v2/no-such-endpoint/run".to_string(), "application/json"),
        (format!("/lb/{lb}/items"), "application/json"),
        ("/graphql".to_string(), "application/json"),
        ("/graphql".to_string(), "multipart/form-data; boundary=x"),
    ] {
        for declare_length in [true, false] {
            for key in [None, Some("fl_wrong")] {
                let (status, pulled) =
                    send(&s, &path, key, HUNDRED_MB, declare_length, content_type).await;
                let what = format!(
                    "{path} ({content_type}, key {key:?}, content-length {declare_length})"
                );
                // Refused before the body is read (what did go in sits in socket buffers).
                assert_eq!(status, Some(401), "{what}");
                assert!(pulled < HUNDRED_MB / 2, "{what}: {pulled} bytes taken");
            }
        }
    }
    // A small anonymous GraphQL request is still answered: flash login's operations...
    let login = s
        .http
        .post(format!("{}/graphql", s.url))
        .json(&json!({ "query": "mutation { createFlashAuthRequest { id status } }" }))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 200);
    // ...and a large one is not, even when it claims to be one.
    let padded = format!(
        "{{\"query\": \"mutation {{ createFlashAuthRequest {{ id }} }}\", \"pad\": \"{}\"}}",
        "x".repeat(64 << 10)
    );
    let r = s
        .http
        .post(format!("{}/graphql", s.url))
        .header("content-type", "application/json")
        .body(padded)
        .send()
        .await
        .expect("padded");
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_key_bodies_are_bounded_as_they_stream() {
    let s = TestServer::start().await;
    let queue = s.python_endpoint("q", "echo", json!({})).await;
    let queue = queue["id"].as_str().expect("id").to_string();
    let lb = lb_endpoint(&s).await;
    for path in [
        format!("/v2/{queue}/run"),
        "/graphql".to_string(),
        format!("/lb/{lb}/items"),
    ] {
        for declare_length in [true, false] {
            let (status, pulled) = send(
                &s,
                &path,
                Some(&s.key),
                HUNDRED_MB,
                declare_length,
                "application/json",
            )
            .await;
            let what = format!("{path} (content-length {declare_length})");
            assert_eq!(status, Some(413), "{what}");
            assert!(pulled < HUNDRED_MB / 2, "{what}: {pulled} bytes taken");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_load_balanced_proxy_streams_and_reports_broken_answers() {
    let s = TestServer::start().await;
    let lb = lb_endpoint(&s).await;
    // Just under the 10 MiB limit goes through, streamed, with and without a length the
    // worker can use (the fixture reads Content-Length).
    let body = serde_json::to_vec(&json!({ "blob": "y".repeat((10 << 20) - 64) })).unwrap();
    let r = s
        .http
        .post(format!("{}/lb/{lb}/items", s.url))
        .bearer_auth(&s.key)
        .header("content-type", "application/json")
        .body(body.clone())
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("proxy");
    assert_eq!(r.status(), 200);
    let echoed: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        echoed["body"]["blob"].as_str().map(str::len),
        Some((10 << 20) - 64)
    );
    // Just over it is 413 from the proxy itself (11 MB used to come back as 502).
    let (status, _) = send(
        &s,
        &format!("/lb/{lb}/items"),
        Some(&s.key),
        11_000_000,
        true,
        "application/json",
    )
    .await;
    assert_eq!(status, Some(413));

    // A worker that hangs up mid-answer: the caller never gets a complete 200.
    let r = s
        .http
        .get(format!("{}/lb/{lb}/broken", s.url))
        .bearer_auth(&s.key)
        .timeout(Duration::from_secs(60))
        .send()
        .await;
    match r {
        Ok(r) if r.status() == 200 => {
            let body = r.bytes().await;
            assert!(body.is_err(), "a broken answer read as complete: {body:?}");
        }
        Ok(r) => assert_eq!(r.status(), 502),
        Err(_) => {}
    }
}

/// A client that never finishes its request head (slowloris) is cut off after the
/// header-read timeout, instead of holding a connection for as long as it likes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_request_heads_are_cut_off() {
    let s = TestServer::start_with(|c| c.header_read_timeout = Duration::from_secs(1)).await;
    let addr = s.url.trim_start_matches("http://").to_string();
    for head in ["", "GET /ping HTTP/1.1\r\nHost: x\r\n"] {
        let probe = (addr.clone(), head.to_string());
        let took = tokio::task::spawn_blocking(move || {
            flash_tests::connection_closed_after(&probe.0, &probe.1)
        })
        .await
        .expect("probe");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(10),
            "{head:?}: the connection ended after {took:?}"
        );
    }
    // Whole requests are served as before.
    let (status, _) = s.get("/ping").await;
    assert_eq!(status, 200);
}
