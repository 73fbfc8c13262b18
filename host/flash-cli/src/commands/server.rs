//! `flash server`: runs the local control plane (all of it lives in `flash-control`).

/// Runs the server until Ctrl-C or `SIGTERM`.
pub async fn run(args: flash_control::cli::ServerArgs) -> anyhow::Result<()> {
    flash_control::cli::serve(args).await
}
