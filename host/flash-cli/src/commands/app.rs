//! `flash app list/get/create/delete`: runpod-flash's app commands.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use flash::deploy;

use super::output::{datetime, plural, short_id, width};
use super::target::{ServerOpts, confirm, require_terminal};

/// Manage apps: list them, show one, create one, delete one with everything in it.
#[derive(Debug, Args)]
pub struct AppArgs {
    #[command(flatten)]
    pub server: ServerOpts,

    #[command(subcommand)]
    pub command: AppCommand,
}

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// List the apps of your account, with how many environments and builds each has.
    List,
    /// Show an app: its environments (active build, created) and its latest builds.
    Get {
        /// Name of the app.
        name: String,
    },
    /// Create an app (`flash env create` and `flash deploy new` create it when needed).
    Create {
        /// Name for the new app.
        name: String,
    },
    /// Delete an app: every endpoint of every environment, then the app (kept if any
    /// endpoint could not be deleted). Asks first; without a terminal, pass --yes.
    Delete {
        /// Name of the app to delete.
        name: String,
        /// Do not ask for confirmation (for scripts).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

impl AppArgs {
    pub async fn run(self) -> Result<()> {
        let opts = self.server;
        match self.command {
            AppCommand::List => {
                let sm = opts.connect()?;
                let apps = deploy::list_apps(&sm).await?;
                if apps.is_empty() {
                    println!("\n  no apps found");
                    println!(
                        "  run flash env create <name> (or flash deploy new <name>) to create one\n"
                    );
                    return Ok(());
                }
                let w = width(apps.iter().map(|a| a.name.as_str()));
                println!();
                for a in &apps {
                    println!(
                        "  {:<w$}  {}  {}",
                        a.name,
                        plural(a.environments, "env"),
                        plural(a.builds, "build")
                    );
                }
                println!();
                Ok(())
            }
            AppCommand::Get { name } => {
                let sm = opts.connect()?;
                let app = deploy::get_app(&sm, &name).await?;
                println!("\n  {}\n", app.name);
                if app.environments.is_empty() {
                    println!("  no environments");
                } else {
                    let w = width(app.environments.iter().map(|e| e.name.as_str()));
                    for e in &app.environments {
                        println!(
                            "  {:<w$}  {}  {}",
                            e.name,
                            short_id(e.active_build.as_deref()),
                            datetime(e.created_at.as_deref())
                        );
                    }
                }
                if !app.builds.is_empty() {
                    println!("\n  {}", plural(app.builds.len(), "build").trim_end());
                    for b in app.builds.iter().take(3) {
                        println!(
                            "  {}  {}",
                            short_id(Some(&b.id)),
                            datetime(b.created_at.as_deref())
                        );
                    }
                    if app.builds.len() > 3 {
                        println!("  + {} more", app.builds.len() - 3);
                    }
                }
                println!();
                Ok(())
            }
            AppCommand::Create { name } => {
                let sm = opts.connect()?;
                deploy::create_app(&sm, &name).await?;
                println!("✓ created app {name}");
                Ok(())
            }
            AppCommand::Delete { name, yes } => {
                if !yes {
                    require_terminal(&format!("app `{name}`"))?;
                }
                let sm = opts.connect()?;
                let app = deploy::get_app(&sm, &name).await?;
                if !yes
                    && !confirm(&format!(
                        "delete app '{name}' with its {} and every endpoint in them?",
                        plural(app.environments.len(), "environment").trim_end()
                    ))?
                {
                    println!("cancelled");
                    return Ok(());
                }
                let state = opts.state();
                let deletion = deploy::delete_app(&sm, state.as_ref(), &name).await?;
                for r in &deletion.removed {
                    let label = if r.endpoint.name.is_empty() {
                        &r.endpoint.id
                    } else {
                        &r.endpoint.name
                    };
                    println!(
                        "✓ deleted endpoint {label}  {}  ({})",
                        r.endpoint.id, r.environment
                    );
                }
                if !deletion.failed.is_empty() {
                    let failures: Vec<String> = deletion
                        .failed
                        .iter()
                        .map(|(r, e)| {
                            format!(
                                "endpoint {} ({}) of environment `{}` not removed: {e}",
                                r.endpoint.id, r.endpoint.name, r.environment
                            )
                        })
                        .collect();
                    bail!(
                        "could not remove every endpoint of app `{name}`, so the app was not \
                         deleted; run `flash app delete {name}` again (endpoints already gone \
                         count as deleted):\n  {}",
                        failures.join("\n  ")
                    );
                }
                println!("✓ deleted app {name}");
                Ok(())
            }
        }
    }
}
