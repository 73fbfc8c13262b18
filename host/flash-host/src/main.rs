//! `flash-host`: serves one resource config of a Flash artifact (see `flash_host::host`).

use clap::Parser;

/// Serve a Flash app's functions: a RunPod queue worker or a load-balanced HTTP server,
/// chosen by the resource config (`FLASH_RESOURCE_NAME`). Configuration is by environment
/// variables (see the docs of `flash_host::host`); flags override them.
#[derive(Debug, Parser)]
#[command(name = "flash-host", version)]
struct Cli {
    /// Artifact URL or path (else FLASH_ARTIFACT_URL, FLASH_BUILD_ARTIFACT_PATH, ...).
    #[arg(long, value_name = "URL|PATH")]
    artifact: Option<String>,
    /// Manifest of an unpacked artifact (else FLASH_MANIFEST_PATH).
    #[arg(long, value_name = "PATH")]
    manifest: Option<std::path::PathBuf>,
    /// Resource config to serve (else FLASH_RESOURCE_NAME).
    #[arg(long, value_name = "NAME")]
    resource: Option<String>,
    /// Run one job with this input (JSON), print the result and exit: a local debugging
    /// aid. Without a resource name, every resource runs locally.
    #[arg(long, value_name = "JSON")]
    test_input: Option<String>,
    /// With --test-input: run the job this many times (after one warm-up run) and print
    /// the time per job to stderr; used by `scripts/gpu-check.sh`.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "test_input")]
    repeat: u32,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if let Err(error) = flash_api::logging::init() {
        eprintln!("error: {error}");
        return std::process::ExitCode::from(2);
    }
    let cli = Cli::parse();
    let test_input = match cli.test_input.as_deref().map(serde_json::from_str) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            eprintln!("error: --test-input is not valid JSON: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let args = flash_host::host::HostArgs {
        artifact: cli.artifact,
        manifest: cli.manifest,
        resource: cli.resource,
        test_input,
        repeat: cli.repeat,
    };
    match flash_host::host::run(args).await {
        Ok(0) => std::process::ExitCode::SUCCESS,
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
