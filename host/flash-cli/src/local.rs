//! The embedded default: an in-process `flash server` with the project deployed to it.
//!
//! `flash run` (the dev loop, state under `.flash/server`) and `flash build --preview` (a
//! throwaway control plane) both start [`LocalDeployment`]: bind the server, create the
//! environment (with its mothership), send the build, and keep serving until
//! [`LocalDeployment::stop`], which stops the server and every worker process it started.
//! Each step is the library call the separate `flash server` / `flash deploy` commands make.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::deploy::resource_manager::ResourceManager;
use crate::deploy::{self, SendOptions, SendReport};
use crate::project::Project;
use flash_api::{ClientConfig, KeySource, StateManagerClient};

/// A running local control plane with the project's build active in one environment.
pub struct LocalDeployment {
    pub url: String,
    pub api_key: String,
    pub env: String,
    pub data_dir: PathBuf,
    pub report: SendReport,
    /// The environment's mothership endpoint.
    pub mothership_id: String,
    sm: StateManagerClient,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<Result<()>>>,
}

/// `deploy new` + `send` of the project's last build; returns the report and the
/// environment's mothership id.
async fn deploy(
    sm: &StateManagerClient,
    project: &Project,
    env: &str,
) -> Result<(SendReport, String)> {
    let state = ResourceManager::new(&project.flash_dir());
    let created =
        deploy::new_environment(sm, Some(&state), project.name(), env, false, None).await?;
    let report = deploy::send(
        sm,
        &project.flash_dir(),
        env,
        &SendOptions::default(),
        &deploy::Quiet,
    )
    .await?;
    Ok((report, created.mothership_id))
}

impl LocalDeployment {
    /// Starts a server on `listen` with its data in `data_dir`, then deploys the project's
    /// last build (`.flash/`) to environment `env`.
    pub async fn start(
        project: &Project,
        data_dir: &Path,
        listen: SocketAddr,
        env: &str,
    ) -> Result<Self> {
        let config = flash_control::server::Config::new(data_dir.to_path_buf(), listen);
        let server = flash_control::server::Server::bind(config)
            .await
            .with_context(|| {
                format!(
                    "starting the local server on {listen} (is `flash server` already running \
                     there? then use `flash deploy send {env}`; or pass --listen)"
                )
            })?;
        let url = server.url();
        let api_key = server.api_key().to_string();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(async {
            let _ = stop_rx.await;
        }));
        let deployed = async {
            let sm = StateManagerClient::new(ClientConfig::new(
                &url,
                api_key.clone(),
                KeySource::File(flash_control::auth::api_key_path(data_dir)),
            )?)?;
            let (report, mothership_id) = deploy(&sm, project, env).await?;
            anyhow::Ok((sm, report, mothership_id))
        }
        .await;
        match deployed {
            Ok((sm, report, mothership_id)) => Ok(Self {
                url,
                api_key,
                env: env.to_string(),
                data_dir: data_dir.to_path_buf(),
                report,
                mothership_id,
                sm,
                stop: Some(stop_tx),
                serving: Some(serving),
            }),
            Err(e) => {
                let _ = stop_tx.send(());
                let _ = serving.await;
                Err(e)
            }
        }
    }

    /// URL of the mothership's routes (`/ping`, `/manifest`, `/reconciliation`).
    pub fn mothership_url(&self) -> String {
        self.sm.data_plane().lb_url(&self.mothership_id)
    }

    /// Waits (bounded) for the mothership to finish reconciling; returns its report.
    pub async fn mothership_report(&self, wait: Duration) -> Result<Value> {
        let url = format!("{}/reconciliation", self.mothership_url());
        let deadline = Instant::now() + wait;
        loop {
            let last = match self
                .sm
                .request(reqwest::Method::GET, &url)
                .timeout(Duration::from_secs(30))
                .send()
                .await
            {
                Ok(resp) if resp.status().is_success() => {
                    return resp
                        .json()
                        .await
                        .context("the mothership's report is not JSON");
                }
                Ok(resp) => format!("HTTP {}", resp.status()),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                bail!(
                    "the mothership did not report within {}s ({last}); see its log under {}",
                    wait.as_secs(),
                    self.data_dir
                        .join("logs")
                        .join(&self.mothership_id)
                        .display()
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Sends the project's last build again (after a rebuild): the engine updates only the
    /// endpoints whose code or config changed, and their workers restart with the new
    /// artifact; the others keep serving.
    pub async fn redeploy(&mut self, project: &Project) -> Result<&SendReport> {
        self.report = deploy::send(
            &self.sm,
            &project.flash_dir(),
            &self.env,
            &SendOptions::default(),
            &deploy::Quiet,
        )
        .await?;
        Ok(&self.report)
    }

    /// Stops the server and every worker it started.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.serving.take() {
            Some(task) => task
                .await
                .context("the local server task panicked")?
                .context("the local server failed"),
            None => Ok(()),
        }
    }
}
