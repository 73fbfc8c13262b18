//! `flash build --preview`: the app running locally exactly as it would be deployed.
//!
//! A throwaway control plane (an in-process `flash server` on a free loopback port, its
//! data in a temporary directory) gets the build deployed to environment `preview`: one
//! `flash-host` worker process per resource config, plus the environment's mothership,
//! which reconciles the endpoints on boot as it does on RunPod. The mothership's routes are
//! served on `localhost:<--preview-port>` (8000 by default) through a small proxy, so
//! `curl localhost:8000/reconciliation` shows what it found. Ctrl+C (or SIGTERM) stops the
//! proxy, the server and every worker, and deletes the temporary directory.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use flash::build::BuildOutput;
use flash::local::LocalDeployment;
use flash::project::Project;
use serde_json::Value;

use super::run::print_calls;

/// Where the proxy forwards: the mothership's load-balanced URL on the local server.
#[derive(Clone)]
struct Upstream {
    base: String,
    key: String,
    http: reqwest::Client,
}

/// Largest request body the proxy forwards.
const MAX_BODY: usize = 10 << 20;

async fn forward(State(up): State<Upstream>, request: Request) -> Response {
    let target = format!(
        "{}{}",
        up.base,
        request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let method = request.method().clone();
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).into_response(),
    };
    let answer = up
        .http
        .request(method, &target)
        .bearer_auth(&up.key)
        .body(body)
        .send()
        .await;
    match answer {
        Ok(resp) => {
            let status = resp.status();
            let content_type = resp.headers().get(reqwest::header::CONTENT_TYPE).cloned();
            let bytes = resp.bytes().await.unwrap_or_default();
            let mut out = Response::new(Body::from(bytes));
            *out.status_mut() = status;
            if let Some(ct) = content_type {
                out.headers_mut().insert(reqwest::header::CONTENT_TYPE, ct);
            }
            out
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("the mothership did not answer: {e}"),
        )
            .into_response(),
    }
}

/// Runs the preview until Ctrl+C. See the module docs.
pub async fn run(project: &Project, output: &BuildOutput, port: u16) -> Result<()> {
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    // Bind the mothership's port first: a busy port fails before anything starts.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("binding {listen} for the mothership (in use? pass --preview-port)")
        })?;
    let data = tempfile::Builder::new()
        .prefix("flash-preview-")
        .tempdir()
        .context("creating the preview's temporary directory")?;
    println!("Starting the preview (control plane, workers, mothership)…");
    let mut local = LocalDeployment::start(
        project,
        data.path(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        "preview",
    )
    .await?;

    let upstream = Upstream {
        base: local.mothership_url(),
        key: local.api_key.clone(),
        http: reqwest::Client::new(),
    };
    let router = axum::Router::new().fallback(forward).with_state(upstream);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let proxy = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });

    let reported = local.mothership_report(Duration::from_secs(180)).await;
    match &reported {
        Ok(report) => print_report(report),
        Err(e) => eprintln!("warning: {e:#}"),
    }
    println!("Mothership: http://localhost:{port}  (/ping, /manifest, /reconciliation)");
    print_calls(output, &local);
    println!(
        "Control plane: {} (key in {}). Ctrl+C stops every process.",
        local.url,
        flash_control::auth::api_key_path(data.path()).display()
    );

    flash_control::cli::shutdown_signal().await;
    println!("Stopping the preview…");
    let _ = stop_tx.send(());
    let _ = proxy.await;
    local.stop().await?;
    drop(data);
    Ok(())
}

/// The mothership's reconciliation as a table.
fn print_report(report: &Value) {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec!["resource", "endpoint", "url", "reconciled", "healthy"]);
    let health = |id: &str| {
        report["health"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|h| h["endpoint_id"] == id)
            .map(|h| if h["healthy"] == true { "yes" } else { "no" })
            .unwrap_or("-")
    };
    for r in report["resources"].as_array().into_iter().flatten() {
        let id = r["endpoint_id"].as_str().unwrap_or("");
        table.add_row(vec![
            r["resource"].as_str().unwrap_or(""),
            id,
            r["url"].as_str().unwrap_or(""),
            r["action"].as_str().unwrap_or(""),
            health(id),
        ]);
    }
    println!("{table}");
}
