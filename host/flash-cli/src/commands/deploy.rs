//! `flash deploy new/send/list/info/delete`: thin wrappers over [`flash::deploy`].

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use flash::deploy::{self, SendOptions, SendProgress};
use indicatif::{ProgressBar, ProgressStyle};

use super::output;
use super::target::{ServerOpts, ask, require_terminal};

/// Deploy the app to an environment, and manage environments.
#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub server: ServerOpts,

    /// Worker image the endpoint templates name [default: the published flash-host image
    /// of this version, `ghcr.io/flash-rs/flash-host:<version>-cpu` or `-gpu` by compute].
    /// `flash server` runs its workers as local processes and ignores it.
    #[arg(long, global = true, env = "FLASH_HOST_IMAGE", value_name = "IMAGE")]
    pub image: Option<String>,

    #[command(subcommand)]
    pub command: DeployCommand,
}

#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// Create an environment (and the app, if it does not exist yet).
    New {
        /// Environment name, e.g. `dev` or `production`.
        env: String,
        /// App name [default: the project's name from flash.toml].
        #[arg(long, short = 'a', visible_alias = "app", value_name = "APP")]
        app_name: Option<String>,
        /// Load-balanced endpoints require `Authorization: Bearer <key>`.
        #[arg(long)]
        require_auth: bool,
    },
    /// Upload `.flash/artifact.tar.gz`, provision every endpoint, then activate the build.
    Send {
        /// Environment to deploy to (`flash deploy new <env>` creates it).
        env: String,
        /// App to deploy to [default: the build's project name]. The endpoints' FLASH_APP
        /// stays the build's name, as the mothership reads it from the artifact.
        #[arg(long, short = 'a', visible_alias = "app", value_name = "APP")]
        app_name: Option<String>,
        /// `saveEndpoint` calls in flight at once.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=32))]
        concurrency: u32,
    },
    /// List environments: name, id, active build, created.
    List {
        /// App name [default: the project's; every app outside a project].
        #[arg(long, short = 'a', visible_alias = "app", value_name = "APP")]
        app_name: Option<String>,
    },
    /// Show an environment: status, active build, endpoints with URLs and workers.
    Info {
        /// Environment to show.
        env: String,
        /// App name [default: the project's name from flash.toml].
        #[arg(long, short = 'a', visible_alias = "app", value_name = "APP")]
        app_name: Option<String>,
    },
    /// Delete an environment and every endpoint in it. Asks twice; without a terminal,
    /// pass --yes.
    Delete {
        /// Environment to delete.
        env: String,
        /// App name [default: the project's name from flash.toml].
        #[arg(long, short = 'a', visible_alias = "app", value_name = "APP")]
        app_name: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

impl DeployArgs {
    pub async fn run(self) -> Result<()> {
        let opts = self.server;
        let image = self.image;
        match self.command {
            DeployCommand::New {
                env,
                app_name,
                require_auth,
            } => {
                let app = opts.app_name(app_name.as_deref(), "--app-name")?;
                let sm = opts.connect()?;
                let state = opts.state();
                let out = deploy::new_environment(
                    &sm,
                    state.as_ref(),
                    &app,
                    &env,
                    require_auth,
                    image.as_deref(),
                )
                .await?;
                if out.app_created {
                    println!("Created app `{app}` ({})", out.app_id);
                }
                if out.environment_created {
                    println!("Created environment `{env}`: {}", out.environment_id);
                } else {
                    println!("Environment `{env}` already exists: {}", out.environment_id);
                }
                println!(
                    "Mothership endpoint: {} (reconciles the environment's endpoints each time a build is activated)",
                    out.mothership_id
                );
                if require_auth {
                    println!("  load-balanced endpoints will require the API key");
                }
                println!("Next: flash deploy send {env}");
                Ok(())
            }
            DeployCommand::Send {
                env,
                app_name,
                concurrency,
            } => {
                let project = opts.project()?;
                let sm = opts.connect()?;
                let progress = BarProgress::new();
                let options = SendOptions {
                    concurrency: concurrency as usize,
                    image,
                    app_name,
                    ..Default::default()
                };
                let report =
                    deploy::send(&sm, &project.flash_dir(), &env, &options, &progress).await;
                drop(progress);
                let report = report?;
                let mut table = Table::new();
                table.load_preset(UTF8_FULL_CONDENSED);
                table.set_header(vec!["resource", "type", "endpoint", "url", "change"]);
                for r in &report.resources {
                    table.add_row(vec![
                        r.resource.clone(),
                        if r.load_balanced { "LB" } else { "QB" }.to_string(),
                        r.endpoint_id.clone(),
                        r.url.clone(),
                        r.action.as_str().to_string(),
                    ]);
                }
                println!("{table}");
                if report.already_active {
                    println!(
                        "Already deployed: build {} of this artifact is active in `{env}` and every \
                         endpoint is up to date; nothing was uploaded or restarted",
                        report.build_id
                    );
                } else {
                    println!(
                        "Deployed build {} to `{env}` ({}, {:.1} KiB)",
                        report.build_id,
                        report.environment_id,
                        report.artifact_size as f64 / 1024.0
                    );
                }
                println!("Call a function: flash call <function> '<json kwargs>' --env {env}");
                Ok(())
            }
            DeployCommand::List { app_name } => {
                let app = match app_name {
                    Some(a) => Some(a),
                    None => opts.project().ok().map(|p| p.name().to_string()),
                };
                let sm = opts.connect()?;
                let rows = deploy::list(&sm, app.as_deref()).await?;
                if rows.is_empty() {
                    println!("No environments: create one with `flash deploy new <env>`");
                    return Ok(());
                }
                let mut table = Table::new();
                table.load_preset(UTF8_FULL_CONDENSED);
                table.set_header(vec!["app", "env", "id", "active build", "created"]);
                for r in rows {
                    table.add_row(vec![
                        r.app,
                        r.name,
                        r.id,
                        r.active_build.unwrap_or_else(|| "-".into()),
                        r.created_at.unwrap_or_default(),
                    ]);
                }
                println!("{table}");
                Ok(())
            }
            DeployCommand::Info { env, app_name } => {
                let app = opts.app_name(app_name.as_deref(), "--app-name")?;
                let sm = opts.connect()?;
                let info = deploy::info(&sm, &app, &env).await?;
                println!("environment  {} ({})", info.name, info.id);
                println!("app          {}", info.app);
                println!("status       {}", info.state.as_deref().unwrap_or("-"));
                println!(
                    "active build {}",
                    info.active_build
                        .as_deref()
                        .unwrap_or("- (nothing deployed yet)")
                );
                println!("created      {}", info.created_at.as_deref().unwrap_or("-"));
                println!("volumes      none");
                let mut table = Table::new();
                table.load_preset(UTF8_FULL_CONDENSED);
                table.set_header(vec![
                    "resource",
                    "type",
                    "endpoint",
                    "url",
                    "workers",
                    "queue",
                    "last 5 min",
                ]);
                let mut errors = Vec::new();
                for ep in &info.endpoints {
                    let row = output::EndpointFigures::of(
                        ep.health.as_ref(),
                        ep.stats.as_ref(),
                        ep.load_balanced,
                    );
                    if let Some(error) = row.last_error {
                        errors.push((ep.resource.clone(), error));
                    }
                    table.add_row(vec![
                        ep.resource.clone(),
                        if ep.load_balanced { "LB" } else { "QB" }.to_string(),
                        ep.endpoint_id.clone(),
                        ep.url.clone(),
                        row.workers,
                        row.queue,
                        row.recent,
                    ]);
                }
                println!("{table}");
                for (resource, error) in errors {
                    println!("last error   {resource}: {error}");
                }
                Ok(())
            }
            DeployCommand::Delete { env, app_name, yes } => {
                let app = opts.app_name(app_name.as_deref(), "--app-name")?;
                if !yes {
                    require_terminal(&format!("`{env}`"))?;
                }
                let sm = opts.connect()?;
                if !yes {
                    confirm_twice(&app, &env)?;
                }
                let state = opts.state();
                let deleted = deploy::delete(&sm, state.as_ref(), &app, &env).await?;
                println!(
                    "Deleted environment `{env}` of `{app}` and {} endpoint(s)",
                    deleted.len()
                );
                Ok(())
            }
        }
    }
}

fn confirm_twice(app: &str, env: &str) -> Result<()> {
    let question = format!("Delete environment `{env}` of `{app}` and all its endpoints? [y/N] ");
    if ask(&question)? != "y" {
        bail!("aborted: nothing was deleted");
    }
    if ask(&format!("Type the environment name (`{env}`) to confirm: "))? != env {
        bail!("aborted: the name did not match, nothing was deleted");
    }
    Ok(())
}

/// An upload progress bar plus step lines.
struct BarProgress {
    bar: ProgressBar,
}

impl BarProgress {
    fn new() -> Self {
        let bar = ProgressBar::hidden();
        Self { bar }
    }
}

impl SendProgress for BarProgress {
    fn upload_started(&self, bytes: u64) {
        self.bar
            .set_draw_target(indicatif::ProgressDrawTarget::stderr());
        self.bar.set_length(bytes);
        self.bar.set_position(0);
        if let Ok(style) = ProgressStyle::with_template(
            "  uploading {bar:30.cyan} {bytes}/{total_bytes} {elapsed}",
        ) {
            self.bar.set_style(style);
        }
    }
    fn uploaded(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
    fn upload_finished(&self) {
        self.bar.finish_and_clear();
    }
    fn step(&self, message: &str) {
        eprintln!("{message}…");
    }
}

impl Drop for BarProgress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
