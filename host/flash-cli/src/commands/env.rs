//! `flash env list/create/get/delete`: runpod-flash's environment commands, over the same
//! bodies as `flash deploy new/list/info/delete` ([`flash::deploy`]).

use anyhow::Result;
use clap::{Args, Subcommand};
use flash::deploy;
use serde_json::Value;

use super::output::{datetime, short_id, width};
use super::target::{ServerOpts, confirm, require_terminal};

/// Manage an app's deployment environments.
#[derive(Debug, Args)]
pub struct EnvArgs {
    #[command(flatten)]
    pub server: ServerOpts,

    /// Flash app [default: the project's name, from flash.toml].
    #[arg(long = "app", short = 'a', global = true, value_name = "APP")]
    pub app: Option<String>,

    #[command(subcommand)]
    pub command: EnvCommand,
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Show the app's environments: name, active build, created.
    List,
    /// Create an environment (and the app, if it does not exist yet) with its mothership
    /// endpoint; `flash deploy send <name>` then deploys to it. The same as `flash deploy
    /// new`.
    Create {
        /// Name of the environment to create, e.g. `dev` or `production`.
        name: String,
        /// Load-balanced endpoints require `Authorization: Bearer <key>`.
        #[arg(long)]
        require_auth: bool,
        /// Worker image the mothership's template names [default: the published
        /// flash-host image of this version].
        #[arg(long, env = "FLASH_HOST_IMAGE", value_name = "IMAGE")]
        image: Option<String>,
    },
    /// Show an environment: its app, active build, endpoints and network volumes
    /// (`flash deploy info` adds URLs and workers).
    Get {
        /// Name of the environment.
        name: String,
    },
    /// Delete an environment and every endpoint in it. Asks first; without a terminal,
    /// pass --yes.
    Delete {
        /// Name of the environment to delete.
        name: String,
        /// Do not ask for confirmation (for scripts).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

impl EnvArgs {
    pub async fn run(self) -> Result<()> {
        let opts = self.server;
        let app = opts.app_name(self.app.as_deref(), "--app")?;
        match self.command {
            EnvCommand::List => {
                let sm = opts.connect()?;
                let Some(found) = sm.app_by_name(&app).await? else {
                    println!("\n  no app named {app} found");
                    println!("  run flash env create <name> to create one\n");
                    return Ok(());
                };
                let rows = deploy::environment_rows(&found);
                if rows.is_empty() {
                    println!("\n  no environments for {app}");
                    println!("  run flash env create <name> to create one\n");
                    return Ok(());
                }
                println!("\n  {app}\n");
                let w = width(rows.iter().map(|r| r.name.as_str()));
                for r in &rows {
                    println!(
                        "  {:<w$}  {}  {}",
                        r.name,
                        short_id(r.active_build.as_deref()),
                        datetime(r.created_at.as_deref())
                    );
                }
                println!();
                Ok(())
            }
            EnvCommand::Create {
                name,
                require_auth,
                image,
            } => {
                let sm = opts.connect()?;
                let state = opts.state();
                let out = deploy::new_environment(
                    &sm,
                    state.as_ref(),
                    &app,
                    &name,
                    require_auth,
                    image.as_deref(),
                )
                .await?;
                if out.app_created {
                    println!("✓ created app {app}");
                }
                if out.environment_created {
                    println!("✓ created environment {name}");
                } else {
                    println!("environment {name} already exists (its mothership was re-saved)");
                }
                println!("  next: flash deploy send {name}");
                Ok(())
            }
            EnvCommand::Get { name } => {
                let sm = opts.connect()?;
                let env = deploy::find_environment(&sm, &app, &name).await?;
                let refs = |field: &str| -> Vec<(String, String)> {
                    env[field]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|r| {
                            let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
                            (s("name").to_string(), s("id").to_string())
                        })
                        .collect()
                };
                println!("\n  {}\n", env["name"].as_str().unwrap_or(&name));
                println!("  app     {app}");
                println!("  build   {}", short_id(env["activeBuildId"].as_str()));
                let endpoints = refs("endpoints");
                let volumes = refs("networkVolumes");
                for group in [&endpoints, &volumes] {
                    if group.is_empty() {
                        continue;
                    }
                    println!();
                    let w = width(group.iter().map(|(n, _)| n.as_str()));
                    for (n, id) in group {
                        let n = if n.is_empty() { "-" } else { n };
                        println!("  {n:<w$}  {id}");
                    }
                }
                if endpoints.is_empty() && volumes.is_empty() {
                    println!("\n  no resources. run flash deploy send {name}");
                }
                println!();
                Ok(())
            }
            EnvCommand::Delete { name, yes } => {
                if !yes {
                    require_terminal(&format!("environment `{name}`"))?;
                }
                let sm = opts.connect()?;
                // Fails early, before asking, when the app or environment does not exist.
                deploy::find_environment(&sm, &app, &name).await?;
                println!("\n  deleting {name}");
                if !yes
                    && !confirm(&format!(
                        "are you sure? this will delete all resources in '{name}'"
                    ))?
                {
                    println!("cancelled");
                    return Ok(());
                }
                let state = opts.state();
                let deleted = deploy::delete(&sm, state.as_ref(), &app, &name).await?;
                if !deleted.is_empty() {
                    println!(
                        "✓ undeployed {} resource{}",
                        deleted.len(),
                        if deleted.len() == 1 { "" } else { "s" }
                    );
                }
                println!("✓ deleted environment {name}");
                Ok(())
            }
        }
    }
}
