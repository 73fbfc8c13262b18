//! The handles every request handler shares, cloned into each axum handler.

use std::sync::Arc;

use crate::artifacts::ArtifactStore;
use crate::auth::Auth;
use crate::server::Config;
use crate::signals::Signals;
use crate::store::Store;
use crate::supervisor::Supervisor;

/// Shared state of the running server.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub auth: Auth,
    pub config: Arc<Config>,
    pub artifacts: Arc<ArtifactStore>,
    pub signals: Arc<Signals>,
    pub supervisor: Arc<Supervisor>,
    /// What the server counts ([`crate::metrics`]).
    pub metrics: Arc<crate::metrics::ServerMetrics>,
    /// `flash login` requests waiting for approval (in memory).
    pub logins: Arc<crate::login::LoginRequests>,
    /// Client for webhooks and the load-balancer proxy.
    pub http: reqwest::Client,
}
