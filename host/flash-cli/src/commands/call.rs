//! `flash call <function> [json]`: invoke a deployed function through its endpoint.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use flash::deploy::{self, CallFailed};

use super::target::ServerOpts;

/// Call a function of an environment's active build and print its result as JSON.
///
/// A failure prints `error: `<function>` failed: <kind>: <message>` and the function's
/// traceback, and exits by class: 1 the function failed as it ran (an exception in its
/// code, an internal error, a failed peer); 2 the call was refused (bad arguments, no such
/// function, a call cycle, no permission); 3 nothing could serve it (no worker, a worker
/// gone); 4 out of time (the endpoint's execution timeout, or --timeout).
#[derive(Debug, Args)]
pub struct CallArgs {
    /// Function name (as in the build summary).
    pub function: String,

    /// Keyword arguments as a JSON object, e.g. '{"text": "hello", "dims": 8}'.
    #[arg(default_value = "{}", value_name = "JSON")]
    pub kwargs: String,

    /// Environment [default: the app's only environment].
    #[arg(long)]
    pub env: Option<String>,

    /// App name [default: the project's name from flash.toml].
    #[arg(long, short = 'a', visible_alias = "app", value_name = "APP")]
    pub app_name: Option<String>,

    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,

    /// Print the answer as received (the final job of a queue endpoint, the body of a
    /// route), failures included, instead of the result alone.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub server: ServerOpts,
}

impl CallArgs {
    pub async fn run(self) -> Result<()> {
        let kwargs: serde_json::Value = serde_json::from_str(&self.kwargs).with_context(|| {
            format!(
                "the arguments `{}` are not JSON: pass an object of keyword arguments, e.g. \
                 '{{\"text\": \"hi\"}}'",
                self.kwargs
            )
        })?;
        let (sm, app, env) = self
            .server
            .connect_to_environment(self.app_name.as_deref(), self.env)
            .await?;
        let result = deploy::call(
            &sm,
            &app,
            &env,
            &self.function,
            &kwargs,
            Duration::from_secs(self.timeout),
        )
        .await;
        let shown = match &result {
            Ok(done) if self.json => &done.raw,
            Ok(done) => &done.output,
            Err(err) => match err.downcast_ref::<CallFailed>() {
                Some(failed) if self.json => &failed.raw,
                _ => return result.map(drop),
            },
        };
        println!(
            "{}",
            serde_json::to_string_pretty(shown).context("printing the result")?
        );
        result.map(drop)
    }
}
