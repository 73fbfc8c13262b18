//! `flash logs <env>`: what an environment's workers logged, their functions' output included.

use anyhow::Result;
use clap::Args;
use flash::deploy::{self, LogRequest};

use super::target::ServerOpts;

/// Print the log lines of an environment's workers (a `flash server`'s): what the host
/// logged and what the functions printed, tagged with resource, worker and job.
///
/// Examples: `flash logs dev --job 3f2a…` shows one job's lines, peer calls made for it
/// included; `flash logs dev --resource api --since 10m -f` follows one resource.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Environment [default: the app's only environment].
    pub env: Option<String>,

    /// Only this resource's workers (repeat for several).
    #[arg(long, short = 'r', value_name = "RESOURCE")]
    pub resource: Vec<String>,

    /// Only the lines of this job (its id, as `flash call --json` and `/run` print it).
    #[arg(long, value_name = "ID")]
    pub job: Option<String>,

    /// Only lines newer than this, e.g. 30s, 10m, 2h.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub since: Option<std::time::Duration>,

    /// The last this many lines [default: 1000].
    #[arg(long, short = 'n', value_name = "N")]
    pub tail: Option<usize>,

    /// Keep printing new lines as workers write them (Ctrl+C to stop).
    #[arg(long, short = 'f')]
    pub follow: bool,

    /// Print each line as the JSON object the worker wrote.
    #[arg(long)]
    pub json: bool,

    /// App name [default: the project's name from flash.toml].
    #[arg(long, short = 'a', visible_alias = "app", value_name = "APP")]
    pub app_name: Option<String>,

    #[command(flatten)]
    pub server: ServerOpts,
}

impl LogsArgs {
    pub async fn run(self) -> Result<()> {
        let (sm, app, env) = self
            .server
            .connect_to_environment(self.app_name.as_deref(), self.env)
            .await?;
        let request = LogRequest {
            app,
            env,
            resources: self.resource,
            job: self.job,
            since: self.since,
            tail: self.tail,
            follow: self.follow,
        };
        let mut stdout = std::io::stdout();
        let printed = deploy::logs(&sm, &request, self.json, &mut stdout).await?;
        if printed == 0 && !request.follow {
            eprintln!("no log lines match");
        }
        Ok(())
    }
}
