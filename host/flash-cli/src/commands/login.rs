//! `flash login`: get an API key by approving the CLI in a browser, and save it.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use flash::connect::{self, connect_anonymous};
use flash::credentials::save_key;
use flash::login::{self, Wait};
use indicatif::{ProgressBar, ProgressStyle};

use super::target::ServerOpts;

/// Authenticate in a browser and save the API key: for RunPod (`--server runpod`) in
/// ~/.runpod/config.toml `[default].api_key` (mode 0600, the rest of the file kept), where
/// runpod-flash and runpodctl read it; for a `flash server`, in its `<data dir>/api_key`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    #[command(flatten)]
    pub server: ServerOpts,

    /// Do not open the browser; only print the page to open.
    #[arg(long)]
    pub no_open: bool,

    /// Wait at most this many seconds for approval (the request's own expiry may end the
    /// wait sooner).
    #[arg(long, default_value_t = login::DEFAULT_TIMEOUT.as_secs_f64(), value_name = "S")]
    pub timeout: f64,
}

impl LoginArgs {
    pub async fn run(self) -> Result<()> {
        let timeout = Duration::try_from_secs_f64(self.timeout)
            .ok()
            .filter(|t| !t.is_zero())
            .context("--timeout must be a positive number of seconds")?;
        let target = self.server.target()?;
        target.announce();
        let console = target.console_url_from_env()?;
        let sm = connect_anonymous(&target)?;
        let open = !self.no_open;
        let spinner = ProgressBar::hidden();
        let key = login::obtain_key(
            &sm,
            &console,
            Wait {
                timeout,
                ..Wait::default()
            },
            |url| {
                println!();
                println!("Authorize flash in your browser:");
                println!("  {url}");
                println!();
                if open && let Err(e) = open_browser(url) {
                    eprintln!("could not open a browser ({e:#}); open the page above yourself");
                }
                spinner.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
                    spinner.set_style(style);
                }
                spinner.set_message("Waiting for authorization...");
                spinner.enable_steady_tick(Duration::from_millis(120));
            },
        )
        .await;
        spinner.finish_and_clear();
        let key = key?;
        let home = connect::home_dir();
        let data_dir = connect::local_data_dir();
        let saved = save_key(&target, &key, home.as_deref(), data_dir.as_deref())?;
        if let Some(backup) = &saved.backup {
            eprintln!(
                "warning: {} was not valid TOML; it is kept as {}",
                saved.path.display(),
                backup.display()
            );
        }
        if saved.unchanged {
            println!("Logged in. {} already holds this key", saved.path.display());
        } else {
            println!("Logged in. Credentials saved to {}", saved.path.display());
        }
        println!();
        Ok(())
    }
}

/// Opens `url` with the desktop's handler, without waiting for it.
fn open_browser(url: &str) -> Result<()> {
    let (program, args): (&str, Vec<&str>) = if cfg!(target_os = "macos") {
        ("open", vec![url])
    } else if cfg!(windows) {
        ("cmd", vec!["/C", "start", "", url])
    } else {
        ("xdg-open", vec![url])
    };
    let mut child = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    // Reap it in the background; a failure to open is only worth a line.
    std::thread::spawn(move || {
        if let Ok(status) = child.wait()
            && !status.success()
        {
            eprintln!("{program} could not open a browser; open the page above yourself");
        }
    });
    Ok(())
}
