//! Watching a deployed app: `flash server`'s `/metrics`, `/v1/stats` and
//! `flash deploy info` count real traffic exactly, the server logs JSON lines, and its web
//! console, driven in a real
//! headless Chromium (Debian's `chromium`; `scripts/test.sh` installs it), signs in, shows
//! the deployed endpoints, shows a job run while the page is open, and that job's log line.
//!
//! Set `FLASH_CONSOLE_SCREENSHOT=<file.png>` to keep the screenshot the test takes (the
//! README's comes from there).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use flash_tests::control_plane::{Server, fails, flash, ok};
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use serde_json::Value;

use crate::deploy::{call, quickstart_copy};

/// Debian's Chromium, or `FLASH_TEST_CHROMIUM`.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("FLASH_TEST_CHROMIUM") {
        return PathBuf::from(path);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        for name in ["chromium", "chromium-browser"] {
            if dir.join(name).is_file() {
                return dir.join(name);
            }
        }
    }
    panic!(
        "no chromium on PATH: run scripts/test.sh (it installs Debian's chromium as root), \
         `apt-get install chromium`, or set FLASH_TEST_CHROMIUM"
    );
}

/// The value of one sample of the metrics text, `None` when it is absent.
fn sample(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    let head = format!("{name}{{{labels}}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&head))
        .map(|v| v.trim().parse().unwrap())
}

fn get(server: &Server, path: &str, key: Option<&str>) -> reqwest::blocking::Response {
    let mut request = reqwest::blocking::Client::new().get(format!("{}{path}", server.url));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().unwrap()
}

/// Waits until `selector` matches an element whose text contains `text`, reloading
/// nothing: the page's own script refreshes it.
fn wait_for_text(tab: &Tab, selector: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = tab
            .find_elements(selector)
            .ok()
            .into_iter()
            .flatten()
            .any(|e| e.get_inner_text().is_ok_and(|t| t.contains(text)));
        if found {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no `{selector}` with `{text}` within 30 s; the page:\n{}",
            tab.get_content().unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_console_and_metrics_show_a_deployed_app_and_its_jobs() {
    let project = quickstart_copy();
    let dir = project.path();
    let server = Server::start();
    let home = server.data_dir.path().to_path_buf();
    let run = |args: &[&str]| ok(&flash(dir, &server.url, &home, args), Some(&server));
    run(&["build"]);
    run(&["deploy", "new", "dev"]);
    run(&["deploy", "send", "dev"]);
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join(".flash/resources.json")).unwrap()).unwrap();
    let resources = &state["environments"]["dev"]["resources"];
    let gpu = resources["gpu_config"]["endpoint_id"].as_str().unwrap();
    let api = resources["api"]["endpoint_id"].as_str().unwrap();

    // Known traffic: three jobs that succeed and one that fails on the queue endpoint, two
    // requests on the load-balanced one.
    for text in ["one", "two words", "three words here"] {
        call(
            dir,
            &server,
            "embed",
            &format!(r#"{{"text": "{text}", "dims": 4}}"#),
        );
    }
    fails(&flash(
        dir,
        &server.url,
        &home,
        &["call", "embed", r#"{"text": "x", "dims": 0}"#],
    ));
    for _ in 0..2 {
        assert_eq!(call(dir, &server, "stats", "{}")["served_by"], "api");
    }

    // `/metrics`: the user key only, and counts that match.
    assert_eq!(get(&server, "/metrics", None).status(), 401);
    let key = server.key();
    let response = get(&server, "/metrics", Some(&key));
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let metrics = response.text().unwrap();
    let gpu_label = format!(r#"endpoint="{gpu}""#);
    let api_label = format!(r#"endpoint="{api}""#);
    let at = |name: &str, labels: &str| sample(&metrics, name, labels);
    assert_eq!(
        at("flash_server_jobs_submitted_total", &gpu_label),
        Some(4.0),
        "{metrics}"
    );
    for (status, n) in [("COMPLETED", 3.0), ("FAILED", 1.0)] {
        assert_eq!(
            at(
                "flash_server_jobs_finished_total",
                &format!(r#"{gpu_label},status="{status}""#)
            ),
            Some(n),
            "{metrics}"
        );
    }
    assert_eq!(
        at("flash_server_job_latency_seconds_count", &gpu_label),
        Some(4.0)
    );
    assert_eq!(
        at("flash_server_job_queue_seconds_count", &gpu_label),
        Some(4.0)
    );
    assert_eq!(at("flash_server_queue_depth", &gpu_label), Some(0.0));
    assert_eq!(at("flash_server_jobs_in_progress", &gpu_label), Some(0.0));
    assert_eq!(
        at(
            "flash_server_lb_requests_total",
            &format!(r#"{api_label},code="200""#)
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        at("flash_server_lb_request_seconds_count", &api_label),
        Some(2.0)
    );
    assert_eq!(
        at("flash_server_queue_depth", &api_label),
        None,
        "LB has no queue"
    );
    assert!(
        at(
            "flash_server_workers",
            &format!(r#"{gpu_label},state="ready""#)
        ) >= Some(1.0)
    );
    assert!(
        at(
            "flash_server_scale_events_total",
            &format!(r#"{gpu_label},direction="up""#)
        ) >= Some(1.0)
    );
    assert!(
        metrics.contains(&format!(
            r#"flash_server_endpoint_info{{endpoint="{gpu}",name="gpu_config",type="QB","#
        )),
        "{metrics}"
    );

    // `/v1/stats` and `flash deploy info`: the same counts, latency and the last error.
    let stats: Value = get(
        &server,
        &format!("/v1/stats?endpoint={gpu},{api}"),
        Some(&key),
    )
    .json()
    .unwrap();
    let g = &stats["endpoints"][gpu];
    assert_eq!(
        (g["count"].as_u64(), g["failed"].as_u64()),
        (Some(4), Some(1)),
        "{stats}"
    );
    assert!(g["p50Ms"].as_u64().is_some() && g["p99Ms"].as_u64() >= g["p50Ms"].as_u64());
    assert_eq!(g["queue"]["waiting"], 0, "{stats}");
    assert_eq!(
        g["lastError"]["error"], "invalid-input: dims must be in 1..=4096, got 0",
        "{stats}"
    );
    assert_eq!(stats["endpoints"][api]["count"], 2, "{stats}");
    let info = run(&["deploy", "info", "dev"]);
    assert!(info.contains("4 jobs, p50 "), "{info}");
    assert!(info.contains("1 failed"), "{info}");
    assert!(info.contains("2 requests, p50 "), "{info}");
    assert!(info.contains("0 waiting, 0 running"), "{info}");
    assert!(
        info.contains("last error   gpu_config: ")
            && info.contains("FAILED ")
            && info.contains(": invalid-input: dims must be in 1..=4096, got 0"),
        "{info}"
    );

    // flash server's own log, off a terminal, is JSON lines, as its workers' are.
    let log = server.log();
    let started: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "worker started")
        .collect();
    assert!(
        started.iter().any(|l| l["endpoint"] == gpu
            && l["level"] == "INFO"
            && l["timestamp"].as_str().is_some_and(|t| t.ends_with('Z'))),
        "{log}"
    );

    // The console, in a real browser.
    let browser = Browser::new(
        LaunchOptions::default_builder()
            .path(Some(chromium()))
            .sandbox(false)
            .window_size(Some((1280, 1000)))
            .idle_browser_timeout(Duration::from_secs(120))
            .build()
            .unwrap(),
    )
    .expect("starting headless chromium");
    let tab = browser.new_tab().unwrap();
    tab.navigate_to(&format!("{}/console", server.url))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    // Signed out: only the sign-in form, and a wrong key is refused.
    let page = tab.get_content().unwrap();
    assert!(
        page.contains("Sign in") && !page.contains("gpu_config"),
        "{page}"
    );
    tab.wait_for_element("input#key").unwrap().click().unwrap();
    tab.type_str("not-the-key")
        .unwrap()
        .press_key("Enter")
        .unwrap();
    wait_for_text(&tab, "p.error", "not this server's API key");
    tab.wait_for_element("input#key").unwrap().click().unwrap();
    tab.type_str(&key).unwrap().press_key("Enter").unwrap();
    // Signed in: the app, its environment and both endpoints with their figures.
    wait_for_text(&tab, "table.endpoints", "gpu_config");
    let overview = tab.get_content().unwrap();
    for expected in [
        "quickstart",
        "dev",
        "api",
        "load-balanced",
        "4 (",
        "1 failed",
    ] {
        assert!(
            overview.contains(expected),
            "no `{expected}` in:\n{overview}"
        );
    }
    tab.find_element(&format!(r#"a[href="/console/endpoints/{gpu}"]"#))
        .unwrap()
        .click()
        .unwrap();
    wait_for_text(&tab, "h1", "gpu_config");

    // A job run while the page is open appears in it, then its page shows its log line.
    let out = run(&[
        "call",
        "embed",
        r#"{"text": "seen in the console", "dims": 8}"#,
        "--json",
    ]);
    let job: Value = serde_json::from_str(&out).unwrap();
    let job_id = job["id"].as_str().unwrap().to_string();
    wait_for_text(&tab, "#jobs tbody", &job_id);
    wait_for_text(&tab, "#summary", "5 jobs");
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    if let Some(path) = std::env::var_os("FLASH_CONSOLE_SCREENSHOT") {
        std::fs::write(path, &png).unwrap();
    }
    tab.find_element(&format!(r#"#jobs a[href$="/jobs/{job_id}"]"#))
        .unwrap()
        .click()
        .unwrap();
    wait_for_text(&tab, "table.logs", "embedding 4 words into 8 dimensions");
    let page = tab.get_content().unwrap();
    assert!(page.contains("COMPLETED"), "{page}");
    assert!(
        !page.contains("embedding 3 words"),
        "another job's line:\n{page}"
    );

    // Signing out ends the session.
    tab.find_element("form.logout button")
        .unwrap()
        .click()
        .unwrap();
    wait_for_text(&tab, "h1", "Sign in");
    assert_eq!(
        get(&server, &format!("/console/api/endpoints/{gpu}"), None).status(),
        401
    );
}
