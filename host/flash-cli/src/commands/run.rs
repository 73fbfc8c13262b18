//! `flash run`: the one-command dev loop on the embedded default.
//!
//! `flash build` → an in-process `flash server` (its own data dir under `.flash/server`, so
//! it never touches `~/.flash`) → `flash deploy new` + `send` to it → print how to call
//! every function → serve until Ctrl+C, which stops the server and every worker it started.
//! Each step is the library call the separate commands make; nothing here is run-specific.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use flash::build;
use flash::deploy::client::KeySource;
use flash::deploy::resource_manager::ResourceManager;
use flash::deploy::{self, SendOptions, StateManager};
use flash::project::Project;

use super::build::{SpinnerReporter, print_summary};

/// Build, serve on a local control plane, deploy, and print how to call each function.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Project directory (default: the nearest directory with a flash.toml).
    #[arg(long, short = 'C', value_name = "DIR")]
    pub project: Option<PathBuf>,

    /// Address of the local server.
    #[arg(long, default_value = "127.0.0.1:8765", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Data dir of the local server [default: <project>/.flash/server].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Environment to deploy to.
    #[arg(long, default_value = "dev")]
    pub env: String,
}

impl RunArgs {
    pub async fn run(self) -> Result<()> {
        let start = self.project.unwrap_or_else(|| PathBuf::from("."));
        let project = Project::discover(&start)?;
        let output = {
            let reporter = SpinnerReporter::new();
            build::build(&project, &reporter).await?
        };
        print_summary(&project, &output);

        let data_dir = self
            .data_dir
            .unwrap_or_else(|| project.flash_dir().join("server"));
        let config = flash_control::server::Config::new(data_dir.clone(), self.listen);
        let server = flash_control::server::Server::bind(config)
            .await
            .with_context(|| {
                format!(
                    "starting the local server on {} (is `flash server` already running there? \
                     then use `flash deploy send {}`; or pass --listen)",
                    self.listen, self.env
                )
            })?;
        let url = server.url();
        let key = server.api_key().to_string();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(async {
            let _ = stop_rx.await;
        }));

        let deployed = async {
            let source = KeySource::File(flash_control::auth::api_key_path(&data_dir));
            let sm = StateManager::new(&url, key, &source)?;
            let state = ResourceManager::new(&project.flash_dir());
            deploy::new_environment(&sm, Some(&state), project.name(), &self.env, false).await?;
            deploy::send(
                &sm,
                &project.flash_dir(),
                &self.env,
                &SendOptions::default(),
                &deploy::Quiet,
            )
            .await
        }
        .await;
        let report = match deployed {
            Ok(r) => r,
            Err(e) => {
                let _ = stop_tx.send(());
                let _ = serving.await;
                return Err(e);
            }
        };

        println!(
            "Serving {} on {url} (environment `{}`, build {})",
            project.name(),
            self.env,
            report.build_id
        );
        let env_flags = format!(
            "--env {} --server {url}  (key: FLASH_HOME={})",
            self.env,
            data_dir.display()
        );
        for (name, resource) in &output.manifest.resources {
            let url = report
                .resources
                .iter()
                .find(|r| &r.resource == name)
                .map(|r| r.url.clone())
                .unwrap_or_default();
            for f in &resource.functions {
                match (&f.http_method, &f.http_path) {
                    (Some(m), Some(p)) => println!("  {m} {url}{p}"),
                    _ => println!("  flash call {} '<json kwargs>' {env_flags}", f.name),
                }
            }
        }
        println!("Ready. Ctrl+C stops the server and every worker.");

        flash_control::cli::shutdown_signal().await;
        let _ = stop_tx.send(());
        serving
            .await
            .context("the local server task panicked")?
            .context("the local server failed")
    }
}
