//! Subcommands of `flash`, one module each.

mod app;
mod build;
mod cache;
mod call;
mod deploy;
mod env;
mod init;
mod login;
mod logs;
mod output;
mod preview;
mod run;
mod server;
mod target;

use clap::{Parser, Subcommand};

/// Deploy Rust and Python functions as WebAssembly components to serverless endpoints.
#[derive(Debug, Parser)]
#[command(name = "flash", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new Flash project.
    Init(init::InitArgs),
    /// Build the app's components, manifest and artifact.
    Build(build::BuildArgs),
    /// Run the local control plane: RunPod-compatible GraphQL, artifact store, serverless
    /// gateway and a provisioner that runs endpoints as local `flash-host` workers.
    Server(flash_control::cli::ServerArgs),
    /// Deploy to an environment (`new`, `send`) and manage environments (`list`, `info`,
    /// `delete`).
    Deploy(deploy::DeployArgs),
    /// Call a deployed function and print its result as JSON.
    Call(call::CallArgs),
    /// Print what an environment's workers logged (`--job`, `--resource`, `--since`, `-f`).
    Logs(logs::LogsArgs),
    /// Manage apps (`list`, `get`, `create`, `delete`), as runpod-flash's `flash app`.
    App(app::AppArgs),
    /// Manage an app's environments (`list`, `create`, `get`, `delete`), as runpod-flash's
    /// `flash env`.
    Env(env::EnvArgs),
    /// Get an API key by approving this CLI in a browser, and save it (RunPod:
    /// ~/.runpod/config.toml).
    Login(login::LoginArgs),
    /// Dev loop: build, start a local server, deploy to it, serve until Ctrl+C.
    Run(run::RunArgs),
    /// Show (`info`) or empty (`clean`) the cache of compiled components.
    Cache(cache::CacheArgs),
}

impl Command {
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Init(args) => args.run(),
            Command::Build(args) => args.run().await,
            Command::Server(args) => server::run(args).await,
            Command::Deploy(args) => args.run().await,
            Command::Call(args) => args.run().await,
            Command::Logs(args) => args.run().await,
            Command::App(args) => args.run().await,
            Command::Env(args) => args.run().await,
            Command::Login(args) => args.run().await,
            Command::Run(args) => args.run().await,
            Command::Cache(args) => args.run(),
        }
    }
}

/// Logs go to stderr so that command output on stdout stays machine-readable. `flash
/// server` is a server: off a terminal it logs JSON lines, as its workers do
/// (`flash_api::logging`; `FLASH_LOG_FORMAT=text|json` chooses); the other commands talk
/// to a person and always log text.
pub fn init_tracing(verbose: u8, command: &Command) -> Result<(), String> {
    use flash_api::logging::{LogFormat, init_with};
    use std::io::IsTerminal;
    let default = match verbose {
        0 => "warn,flash=info",
        1 => "debug",
        _ => "trace",
    };
    let format = match command {
        Command::Server(_) => LogFormat::from_env(std::io::stderr().is_terminal())?,
        _ => LogFormat::Text,
    };
    init_with(default, format);
    Ok(())
}
