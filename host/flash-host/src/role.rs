//! The roles a host plays: one [`Role`] trait, in the spirit of Spin's `Trigger`.
//!
//! A `flash-host` process boots the same way whatever it serves (env, artifact, components),
//! then hands over to one role until shutdown:
//!
//! - [`crate::queue::QueueWorker`]: takes jobs with RunPod's worker protocol;
//! - [`crate::lb::LbServer`]: serves the resource's HTTP routes (load-balanced endpoints);
//! - [`crate::mothership::Mothership`]: reconciles the environment's child endpoints.
//!
//! [`serve`] is the part they share: it turns SIGTERM / Ctrl+C into the stop signal every
//! role watches, so each one finishes what it is doing before the process exits.

use std::future::Future;

use anyhow::Result;
use tokio::sync::watch;

/// One way of serving, run until `stop` turns true.
pub trait Role: Send {
    /// The role's name in logs.
    fn name(&self) -> &'static str;

    /// Serves until `stop` turns true, then finishes in-flight work and returns. The future
    /// is awaited on the main task, so it need not be `Send`.
    fn serve(self, stop: watch::Receiver<bool>) -> impl Future<Output = Result<()>>;
}

/// Runs `role` until the process is asked to stop (SIGTERM or Ctrl+C).
pub async fn serve(role: impl Role) -> Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        let _ = stop_tx.send(true);
    });
    tracing::info!(role = role.name(), "serving");
    role.serve(stop_rx).await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
