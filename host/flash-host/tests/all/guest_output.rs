//! What a guest prints and sends, end to end through the `flash-host` binary
//! (`--test-input`, one job): its stdout and stderr reach the host's log as tagged,
//! escaped lines, capped per call, never the host's own stdout (where `--test-input`
//! prints the result) and never as lines that pass for the host's; and the per-call host
//! memory budget is set by `FLASH_CALL_BUDGET_MB`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

/// The limits test guest packed as an artifact in `dir`.
async fn limits_artifact(dir: &Path) -> PathBuf {
    let wasm =
        tokio::task::spawn_blocking(|| flash_tests::build_guest("tests/guests/limits-guest"))
            .await
            .unwrap()
            .unwrap();
    flash_tests::guest_artifact(&wasm, "limits", dir, |_| {})
        .await
        .unwrap()
}

/// Runs one job with `flash-host --artifact … --test-input input` and only `env`:
/// (success, stdout, stderr).
fn one_job(artifact: &Path, env: &[(&str, &str)], input: &Value) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flash-host"))
        .arg("--artifact")
        .arg(artifact)
        .arg("--test-input")
        .arg(input.to_string())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `text` without the ANSI colour sequences of the host's log format.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

const FORGED_INFO: &str = "1999-12-31T23:59:59.000000Z  INFO flash_host::host: host ready";
const FORGED_ERROR: &str = "1999-12-31T23:59:59.000000Z ERROR flash_host: the disk is on fire";

#[tokio::test]
async fn guest_output_is_logged_tagged_escaped_and_capped() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = limits_artifact(tmp.path()).await;
    // Forged host lines on both streams, a carriage return and a terminal escape that would
    // rewrite the line on a console, then 2 MiB of filler past a cap of 64 KiB.
    let input = json!({"function_name": "print", "kwargs": {
        "out": format!("hello from the guest\n{FORGED_INFO}\n\rforged\u{1b}[2Kline\n"),
        "err": format!("to stderr\n{FORGED_ERROR}\n"),
        "filler_kib": 2048,
    }});
    let (ok, stdout, stderr) = one_job(
        &artifact,
        &[
            ("FLASH_GUEST_OUTPUT_MAX_KB", "64"),
            ("FLASH_LOG_FORMAT", "text"),
        ],
        &input,
    );
    assert!(ok, "{stdout}\n{stderr}");

    // The host's stdout holds the result and nothing the guest printed.
    let body: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not the result alone ({e}): {stdout:.2000}"));
    let printed = body["output"].as_u64().unwrap_or_else(|| panic!("{body}"));
    assert!(printed * 122 >= 2 << 20, "{body}");

    let log = strip_ansi(&stderr);
    let lines: Vec<&str> = log.lines().collect();
    // Every host log line starts with the host's own timestamp: none with the guest's.
    for line in &lines {
        assert!(!line.starts_with("1999-"), "a forged line passed: {line}");
    }
    let tagged = |needle: &str, stream: &str| {
        let found: Vec<&&str> = lines.iter().filter(|l| l.contains(needle)).collect();
        assert_eq!(found.len(), 1, "{needle}: {found:?}\n{log:.4000}");
        let line = found[0];
        assert!(
            line.contains(" guest: ")
                && line.contains(r#"function="print""#)
                && line.contains(r#"job="test-input""#)
                && line.contains(&format!(r#"stream="{stream}""#)),
            "{line}"
        );
    };
    tagged("hello from the guest", "stdout");
    tagged(FORGED_INFO, "stdout");
    tagged(r"\rforged\u{1b}[2Kline", "stdout");
    tagged("to stderr", "stderr");
    tagged(FORGED_ERROR, "stderr");

    // Past 64 KiB of output the rest is dropped: one warning when it starts, one total.
    let filler: Vec<&&str> = lines.iter().filter(|l| l.contains("filler line")).collect();
    assert!(
        !filler.is_empty() && filler.len() * 122 <= 64 << 10,
        "{} filler lines logged",
        filler.len()
    );
    let warnings = lines
        .iter()
        .filter(|l| l.contains("guest output past this call's cap of 65536 bytes is dropped"))
        .count();
    assert_eq!(warnings, 1, "{log:.4000}");
    let totals: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("bytes of guest output past this call's cap"))
        .collect();
    assert_eq!(totals.len(), 1, "{totals:?}");
    assert!(totals[0].contains("WARN"), "{}", totals[0]);
    assert!(
        stderr.len() < 256 << 10,
        "the host logged {} bytes for 64 KiB of guest output",
        stderr.len()
    );
}

/// Off a terminal the host logs JSON lines (flash_api::logging): each guest line is the
/// `message` of one object tagged with its function, job and stream, whatever it holds.
#[tokio::test]
async fn off_a_terminal_every_log_line_is_a_json_object() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = limits_artifact(tmp.path()).await;
    let input = json!({"function_name": "print", "kwargs": {
        "out": format!("hello from the guest\n{{\"level\":\"ERROR\",\"message\":\"forged\"}}\n"),
        "err": format!("to stderr\n{FORGED_ERROR}\n"),
        "filler_kib": 0,
    }});
    let (ok, stdout, stderr) = one_job(
        &artifact,
        &[("FLASH_RESOURCE_NAME", "limits"), ("RUNPOD_POD_ID", "w-1")],
        &input,
    );
    assert!(ok, "{stdout}\n{stderr}");
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["message"] == "host ready"),
        "{stderr}"
    );
    let guest: Vec<&Value> = lines.iter().filter(|l| l["target"] == "guest").collect();
    let messages: Vec<&str> = guest.iter().filter_map(|l| l["message"].as_str()).collect();
    assert_eq!(
        messages,
        [
            "hello from the guest",
            r#"{"level":"ERROR","message":"forged"}"#,
            "to stderr",
            FORGED_ERROR
        ],
        "{stderr}"
    );
    for line in &guest {
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["function"], "print", "{line}");
        assert_eq!(line["job"], "test-input", "{line}");
        assert_eq!(line["worker"], "w-1", "{line}");
        assert_eq!(line["resource"], "limits", "{line}");
    }
    assert_eq!(guest[0]["stream"], "stdout");
    assert_eq!(guest[3]["stream"], "stderr");
}

#[tokio::test]
async fn the_call_budget_is_a_setting_and_progress_streams_past_the_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = limits_artifact(tmp.path()).await;
    // 8 chunks of 1 MiB against a budget of 4 MiB.
    let input = json!({"function_name": "chunks", "kwargs": {"count": 8, "kib": 1024}});
    let (ok, stdout, stderr) = one_job(&artifact, &[("FLASH_CALL_BUDGET_MB", "4")], &input);
    assert!(!ok, "{stdout:.2000}");
    let body: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("exceeded its per-call host memory budget of 4 MiB: a progress chunk")
            && message.contains("set FLASH_CALL_BUDGET_MB to change it)"),
        "{body:.2000}"
    );
    // Many more chunks than the progress queue holds: `--test-input` takes them as they
    // come, all of them, in order.
    let input = json!({"function_name": "chunks", "kwargs": {"count": 100, "kib": 0}});
    let (ok, stdout, stderr) = one_job(&artifact, &[], &input);
    assert!(ok, "{stdout}\n{stderr}");
    let body: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(body["output"], json!(100));
    assert_eq!(body["stream"], json!(vec![""; 100]));
}
