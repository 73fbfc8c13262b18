//! `flash`: the Flash command-line tool.
//!
//! A thin layer over the library crates: each subcommand lives in its own module under
//! `commands/`, parses its flags with clap and calls into `flash-manifest`,
//! `flash-runtime` or `flash-control`.

mod commands;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = commands::Cli::parse();
    if let Err(error) = commands::init_tracing(cli.verbose, &cli.command) {
        eprintln!("error: {error}");
        return std::process::ExitCode::from(2);
    }
    match cli.command.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            // A function that failed remotely: its traceback, and an exit code by class.
            match err.downcast_ref::<flash::deploy::CallFailed>() {
                Some(failed) => {
                    if let Some(traceback) = &failed.traceback {
                        eprintln!("\n{}", traceback.trim_end());
                    }
                    if let Some(id) = &failed.id {
                        let env = failed.env.as_deref().unwrap_or("<env>");
                        eprintln!("\nits log lines: flash logs {env} --job {id}");
                    }
                    std::process::ExitCode::from(failed.exit_code())
                }
                None => std::process::ExitCode::FAILURE,
            }
        }
    }
}
