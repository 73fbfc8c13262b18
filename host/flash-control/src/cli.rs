//! `flash server`: its flags and entry point.
//!
//! The `flash` binary embeds [`ServerArgs`] as a subcommand and calls [`serve`]. Other `flash`
//! commands find a local server's key with [`default_data_dir`] and
//! [`crate::auth::api_key_path`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::auth::api_key_path;
use crate::server::{Config, Server};

/// Flags of `flash server`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Where the database, artifacts, logs and API key live [default: $FLASH_HOME or ~/.flash].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address to listen on. Keep it on loopback unless you front it with TLS.
    #[arg(long, default_value = "127.0.0.1:8765", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Program started for each worker [default: $FLASH_HOST_BIN, else `flash-host` next to
    /// `flash`, else on PATH].
    #[arg(long, value_name = "PROGRAM")]
    pub worker_command: Option<String>,

    /// Argument for the worker program (repeat for several).
    #[arg(long = "worker-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub worker_args: Vec<String>,

    /// Honour a per-endpoint worker command (`FLASH_WORKER_COMMAND` in the template env, a
    /// JSON argv). Lets any API-key holder run programs on this machine: development only.
    #[arg(long)]
    pub allow_worker_command_override: bool,

    /// How long an empty `job-take` long poll is held, in seconds.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub take_hold: f64,

    /// How long `/runsync` waits before answering with a non-final status, in seconds.
    #[arg(long, default_value_t = 90.0, value_name = "SECS")]
    pub runsync_wait: f64,

    /// Lease of a taken job in seconds: a job whose worker sends no heartbeat for this long
    /// is requeued.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub lease: f64,

    /// Heartbeat interval handed to workers (`RUNPOD_PING_INTERVAL`), in milliseconds.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub ping_interval: u64,

    /// Requeues of a job whose worker was lost before it is marked FAILED.
    #[arg(long, default_value_t = 3)]
    pub max_retries: i32,

    /// A worker's log larger than this many MiB is rotated to `<worker>.log.1`, so a
    /// worker's logs take at most twice this.
    #[arg(long, default_value_t = 64, value_name = "MB")]
    pub log_max_mb: u64,

    /// The logs of workers that are gone are deleted this many hours after their last line.
    #[arg(long, default_value_t = 168.0, value_name = "HOURS")]
    pub log_retention_hours: f64,
}

/// `$FLASH_HOME`, else `~/.flash`.
pub fn default_data_dir() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("FLASH_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("neither FLASH_HOME nor HOME is set: pass --data-dir")?;
    Ok(PathBuf::from(home).join(".flash"))
}

fn secs(value: f64, flag: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("--{flag} must be a non-negative number of seconds"))
}

impl ServerArgs {
    /// The server configuration these flags describe.
    pub fn config(&self) -> Result<Config> {
        let data_dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => default_data_dir()?,
        };
        let mut config = Config::new(data_dir, self.listen);
        config.worker_command = self.worker_command.as_ref().map(|program| {
            let mut argv = vec![program.clone()];
            argv.extend(self.worker_args.iter().cloned());
            argv
        });
        config.allow_worker_command_override = self.allow_worker_command_override;
        config.take_hold = secs(self.take_hold, "take-hold")?;
        config.runsync_wait = secs(self.runsync_wait, "runsync-wait")?;
        config.lease = secs(self.lease, "lease")?;
        config.ping_interval_ms = self.ping_interval.max(1000);
        config.max_retries = self.max_retries.max(0);
        config.worker_log_max_bytes = self.log_max_mb.max(1).saturating_mul(1 << 20);
        config.log_retention = Duration::try_from_secs_f64(self.log_retention_hours * 3600.0)
            .context("--log-retention-hours must be a non-negative number of hours")?;
        Ok(config)
    }
}

/// Runs `flash server` until Ctrl-C or `SIGTERM`.
pub async fn serve(args: ServerArgs) -> Result<()> {
    let config = args.config()?;
    let data_dir = config.data_dir.clone();
    let server = Server::bind(config).await?;
    let url = server.url();
    println!("flash server listening on {url}");
    println!("  data dir:  {}", data_dir.display());
    println!(
        "  API key:   {} (send as `Authorization: Bearer <key>`)",
        api_key_path(&data_dir).display()
    );
    println!("  GraphQL:   {url}/graphql   (RUNPOD_API_BASE_URL={url})");
    println!("  queue API: {url}/v2         (RUNPOD_ENDPOINT_BASE_URL={url}/v2)");
    println!("  console:   {url}/console    (sign in with the API key)");
    println!("  metrics:   {url}/metrics    (Prometheus text, with the API key)");
    server.run(shutdown_signal()).await
}

/// Resolves on Ctrl-C or `SIGTERM` (also used by `flash run`).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
