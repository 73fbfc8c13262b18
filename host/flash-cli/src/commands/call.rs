//! `flash call <function> [json]`: invoke a deployed function through its endpoint.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use flash::deploy;

use super::target::ServerOpts;

/// Call a function of an environment's active build and print its result as JSON.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// Function name (as in the build summary).
    pub function: String,

    /// Keyword arguments as a JSON object, e.g. '{"text": "hello", "dims": 8}'.
    #[arg(default_value = "{}")]
    pub json: String,

    /// Environment [default: the app's only environment].
    #[arg(long)]
    pub env: Option<String>,

    /// App name [default: the project's name from flash.toml].
    #[arg(long, short = 'a', visible_alias = "app", value_name = "APP")]
    pub app_name: Option<String>,

    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,

    #[command(flatten)]
    pub server: ServerOpts,
}

impl CallArgs {
    pub async fn run(self) -> Result<()> {
        let kwargs: serde_json::Value = serde_json::from_str(&self.json).with_context(|| {
            format!(
                "the arguments `{}` are not JSON: pass an object of keyword arguments, e.g. \
                 '{{\"text\": \"hi\"}}'",
                self.json
            )
        })?;
        let app = self
            .server
            .app_name(self.app_name.as_deref(), "--app-name")?;
        let sm = self.server.connect()?;
        let env = match self.env {
            Some(env) => env,
            None => deploy::default_environment(&sm, &app).await?,
        };
        let result = deploy::call(
            &sm,
            &app,
            &env,
            &self.function,
            &kwargs,
            Duration::from_secs(self.timeout),
        )
        .await?;
        println!(
            "{}",
            serde_json::to_string_pretty(&result).context("printing the result")?
        );
        Ok(())
    }
}
