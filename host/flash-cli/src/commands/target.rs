//! What every command that talks to a control plane shares: `--server` (RunPod or a `flash
//! server`), the project, and asking before deleting.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use flash::connect::{LOCAL, Target};
use flash::deploy::resource_manager::ResourceManager;
use flash::project::Project;
use flash_api::StateManagerClient;

/// Where the control plane is (shared by `deploy`, `call`, `app`, `env` and `login`).
#[derive(Debug, Clone, Args)]
pub struct ServerOpts {
    /// Control plane: `runpod` (RunPod's API: RUNPOD_API_BASE_URL, else
    /// https://api.runpod.io), `local` (a `flash server` on this machine,
    /// http://127.0.0.1:8765), or a URL (RunPod's when its host is runpod.io, else a `flash
    /// server`'s). The first line of output names it. The API key is RUNPOD_API_KEY; else,
    /// for RunPod, RUNPOD_API_KEY in the nearest `.env` (working directory up), then
    /// ~/.runpod/config.toml (`flash login --server runpod` writes it); for a `flash server`,
    /// its `<data dir>/api_key` (FLASH_HOME, default ~/.flash).
    #[arg(
        long,
        global = true,
        env = "FLASH_SERVER_URL",
        default_value = LOCAL,
        value_name = "runpod|local|URL"
    )]
    pub server: String,

    /// Project directory (default: the nearest directory with a flash.toml).
    #[arg(long, short = 'C', global = true, value_name = "DIR")]
    pub project: Option<PathBuf>,
}

impl ServerOpts {
    /// The control plane `--server` names, not yet announced.
    pub fn target(&self) -> Result<Target> {
        Target::from_env(&self.server)
    }

    /// Names the control plane on stderr (the first line of output), then connects with
    /// the key found for it.
    pub fn connect(&self) -> Result<StateManagerClient> {
        flash::connect::connect(&self.server)
    }

    fn start(&self) -> PathBuf {
        self.project.clone().unwrap_or_else(|| PathBuf::from("."))
    }

    /// Connects (see [`Self::connect`]) and resolves the app (`app_name` given with
    /// `--app-name`, else the project's) and the environment (`env`, else the app's only
    /// one): what `flash call` and `flash logs` act on.
    pub async fn connect_to_environment(
        &self,
        app_name: Option<&str>,
        env: Option<String>,
    ) -> Result<(StateManagerClient, String, String)> {
        let app = self.app_name(app_name, "--app-name")?;
        let sm = self.connect()?;
        let env = match env {
            Some(env) => env,
            None => flash::deploy::default_environment(&sm, &app).await?,
        };
        Ok((sm, app, env))
    }

    /// The project (required).
    pub fn project(&self) -> Result<Project> {
        Project::discover(&self.start())
    }

    /// The app name: `explicit` (given with `flag`), else the project's.
    pub fn app_name(&self, explicit: Option<&str>, flag: &str) -> Result<String> {
        match explicit {
            Some(name) => Ok(name.to_string()),
            None => Ok(self
                .project()
                .with_context(|| format!("pass {flag} <APP>, or run inside a Flash project"))?
                .name()
                .to_string()),
        }
    }

    /// Local deploy state, when inside a project.
    pub fn state(&self) -> Option<ResourceManager> {
        Project::discover(&self.start())
            .ok()
            .map(|p| ResourceManager::new(&p.flash_dir()))
    }
}

/// Fails unless there is a terminal to ask on: a deletion without `--yes` needs one.
pub fn require_terminal(what: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to delete {what} without confirmation: there is no terminal to ask on; \
             pass --yes"
        );
    }
    Ok(())
}

/// Asks `question` on stderr and reads one line from the terminal.
pub fn ask(question: &str) -> Result<String> {
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the answer")?;
    Ok(line.trim().to_string())
}

/// Asks a yes/no `question` (default no).
pub fn confirm(question: &str) -> Result<bool> {
    let answer = ask(&format!("{question} [y/N] "))?;
    Ok(matches!(answer.to_ascii_lowercase().as_str(), "y" | "yes"))
}
