//! What a host counts, in Prometheus' text format (`GET /metrics`).
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `flash_host_calls_total` | `function`, `result` | calls of this host's functions, by outcome: `ok` or the WIT `error-kind` (`user-error`, `timeout`, …) |
//! | `flash_host_call_duration_seconds` | `function` | histogram of their durations, failures included |
//! | `flash_host_calls_in_flight` | `component` | calls running now |
//! | `flash_host_ready_instances` | `component` | fresh instances made ahead of their calls, waiting (see `flash_runtime::ready`) |
//! | `flash_host_peer_calls_total` | `function`, `resource`, `result` | calls this host made to functions of other resources |
//! | `flash_host_peer_call_duration_seconds` | `function`, `resource` | histogram of their durations |
//!
//! A load-balanced host serves `/metrics` on its own port, behind the same key as its
//! routes (unless the app has a route of that path: the app's wins). Any host also serves
//! it on `FLASH_METRICS_ADDR` when that is set, without auth: bind it to loopback or a
//! private network. Queue workers have no port of their own, so that is their only one.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use flash_runtime::CallError;

/// The media type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    function: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabels {
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    function: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerResultLabels {
    function: String,
    resource: String,
    result: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 0.5 ms to ~65 s, doubling: from a warm Rust call to a long inference.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// The metrics of one host.
pub struct HostMetrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    call_seconds: Histograms<FunctionLabels>,
    in_flight: Family<ComponentLabels, Gauge>,
    ready: Family<ComponentLabels, Gauge>,
    peer_calls: Family<PeerResultLabels, Counter>,
    peer_seconds: Histograms<PeerLabels>,
}

impl Default for HostMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "flash_host_calls",
            "Calls of this host's functions, by result (`ok` or the error kind)",
            calls.clone(),
        );
        let call_seconds = Histograms::<FunctionLabels>::new_with_constructor(duration_histogram);
        registry.register(
            "flash_host_call_duration_seconds",
            "Duration of calls of this host's functions",
            call_seconds.clone(),
        );
        let in_flight = Family::<ComponentLabels, Gauge>::default();
        registry.register(
            "flash_host_calls_in_flight",
            "Calls running now, by component",
            in_flight.clone(),
        );
        let ready = Family::<ComponentLabels, Gauge>::default();
        registry.register(
            "flash_host_ready_instances",
            "Fresh instances made ahead of their calls and waiting, by component",
            ready.clone(),
        );
        let peer_calls = Family::<PeerResultLabels, Counter>::default();
        registry.register(
            "flash_host_peer_calls",
            "Calls made to functions of other resources, by result",
            peer_calls.clone(),
        );
        let peer_seconds = Histograms::<PeerLabels>::new_with_constructor(duration_histogram);
        registry.register(
            "flash_host_peer_call_duration_seconds",
            "Duration of calls made to functions of other resources",
            peer_seconds.clone(),
        );
        Self {
            registry,
            calls,
            call_seconds,
            in_flight,
            ready,
            peer_calls,
            peer_seconds,
        }
    }
}

/// `ok`, or the error's kind as the WIT names it.
fn result_label<T>(result: &Result<T, CallError>) -> String {
    match result {
        Ok(_) => "ok".to_string(),
        Err(e) => e.kind.as_str().to_string(),
    }
}

impl HostMetrics {
    /// Counts a call of a local function that took `elapsed`.
    pub fn record_call<T>(&self, function: &str, result: &Result<T, CallError>, elapsed: Duration) {
        self.calls
            .get_or_create(&CallLabels {
                function: function.to_string(),
                result: result_label(result),
            })
            .inc();
        self.call_seconds
            .get_or_create(&FunctionLabels {
                function: function.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a call made to `function` on `resource` that took `elapsed`.
    pub fn record_peer_call<T>(
        &self,
        function: &str,
        resource: &str,
        result: &Result<T, CallError>,
        elapsed: Duration,
    ) {
        self.peer_calls
            .get_or_create(&PeerResultLabels {
                function: function.to_string(),
                resource: resource.to_string(),
                result: result_label(result),
            })
            .inc();
        self.peer_seconds
            .get_or_create(&PeerLabels {
                function: function.to_string(),
                resource: resource.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the instance gauges of `component`, read when metrics are scraped.
    pub fn set_instances(&self, component: &str, in_flight: usize, ready: usize) {
        let labels = ComponentLabels {
            component: component.to_string(),
        };
        self.in_flight.get_or_create(&labels).set(in_flight as i64);
        self.ready.get_or_create(&labels).set(ready as i64);
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Serves `GET /metrics` of `app` on `listener`, without auth, for as long as the process
/// runs (`FLASH_METRICS_ADDR`; bound by the caller, so that a bad address fails the boot).
pub async fn serve(
    app: Arc<crate::app::HostApp>,
    listener: tokio::net::TcpListener,
    header_read_timeout: Duration,
) {
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let app = Arc::clone(&app);
            async move { response(&app) }
        }),
    );
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics listening");
    }
    let forever = std::future::pending::<()>();
    if let Err(error) =
        flash_api::serve::serve(listener, router, header_read_timeout, forever).await
    {
        tracing::error!(%error, "serving metrics (FLASH_METRICS_ADDR) failed");
    }
}

/// The `/metrics` answer for `app`.
pub fn response(app: &crate::app::HostApp) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
        app.metrics_text(),
    )
        .into_response()
}
