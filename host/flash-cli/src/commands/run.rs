//! `flash run`: the one-command dev loop on the embedded default.
//!
//! `flash build` → an in-process `flash server` (its own data dir under `.flash/server`, so
//! it never touches `~/.flash`) → `flash deploy new` + `send` to it → print how to call
//! every function → serve until Ctrl+C, which stops the server and every worker it started.
//! With `--watch`, a source change rebuilds and re-sends ([`flash::watch`]); only the
//! endpoints whose code changed restart.
//! The server and deploy steps are [`flash::local::LocalDeployment`], shared with
//! `flash build --preview`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use flash::build::{self, BuildOutput};
use flash::deploy::Action;
use flash::local::LocalDeployment;
use flash::project::Project;
use flash::watch::{DEFAULT_DEBOUNCE, SourceWatcher, build_inputs};

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

    /// Rebuild and redeploy when a source file changes (debounced). Only the endpoints
    /// whose code or config changed restart; a failed build keeps the last one serving.
    #[arg(long)]
    pub watch: bool,
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
        let mut local = LocalDeployment::start(&project, &data_dir, self.listen, &self.env).await?;
        println!(
            "Serving {} on {} (environment `{}`, build {})",
            project.name(),
            local.url,
            self.env,
            local.report.build_id
        );
        print_calls(&output, &local);
        if self.watch {
            // Watching starts before "Ready", so no edit made after it is missed.
            let watcher =
                SourceWatcher::new(&project.root, &build_inputs(&project), DEFAULT_DEBOUNCE)?;
            println!("Ready; watching for changes. Ctrl+C stops the server and every worker.");
            let watched = watch(&project, &mut local, watcher).await;
            local.stop().await?;
            return watched;
        }
        println!("Ready. Ctrl+C stops the server and every worker.");

        flash_control::cli::shutdown_signal().await;
        local.stop().await
    }
}

/// The `--watch` loop: each burst of source changes → build → send; until Ctrl+C.
async fn watch(
    project: &Project,
    local: &mut LocalDeployment,
    mut watcher: SourceWatcher,
) -> Result<()> {
    let shutdown = flash_control::cli::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let changed = tokio::select! {
            changed = watcher.next_change() => changed,
            _ = &mut shutdown => return Ok(()),
        };
        let Some(changed) = changed else {
            return Ok(());
        };
        let names: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();
        println!("Changed: {}; rebuilding", names.join(", "));
        // flash.toml may be what changed: read the project again.
        let built = match Project::load(&project.root) {
            Ok(project) => {
                let reporter = SpinnerReporter::new();
                build::build(&project, &reporter).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = built {
            eprintln!(
                "error: {e:#}\nThe last good build keeps serving; waiting for the next change."
            );
            continue;
        }
        match local.redeploy(project).await {
            Ok(report) => {
                let restarted: Vec<&str> = report
                    .resources
                    .iter()
                    .filter(|r| r.action != Action::Unchanged)
                    .map(|r| r.resource.as_str())
                    .collect();
                if restarted.is_empty() {
                    println!("Redeployed: no endpoint changed");
                } else {
                    println!("Redeployed: {} restarted", restarted.join(", "));
                }
            }
            Err(e) => eprintln!("error: redeploying: {e:#}\nWaiting for the next change."),
        }
    }
}

/// Prints how to call each function of the deployed build.
pub(crate) fn print_calls(output: &BuildOutput, local: &LocalDeployment) {
    let env_flags = format!(
        "--env {} --server {}  (key: FLASH_HOME={})",
        local.env,
        local.url,
        local.data_dir.display()
    );
    for (name, resource) in &output.manifest.resources {
        let url = local
            .report
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
}
