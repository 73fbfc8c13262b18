//! Connecting the CLI to a control plane: the API key (`RUNPOD_API_KEY`, else the local
//! `flash server`'s key file) and the State Manager client built with it.

use anyhow::{Context, Result, anyhow};
use flash_api::{ClientConfig, KeySource, StateManagerClient};

/// Finds the API key: `RUNPOD_API_KEY`, else the local server's `<data dir>/api_key`.
pub fn discover_api_key() -> Result<(String, KeySource)> {
    if let Ok(key) = std::env::var("RUNPOD_API_KEY")
        && !key.trim().is_empty()
    {
        return Ok((key.trim().to_string(), KeySource::Env));
    }
    let data_dir = flash_control::cli::default_data_dir()?;
    let path = flash_control::auth::api_key_path(&data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok((text.trim().to_string(), KeySource::File(path))),
        Ok(_) => Err(anyhow!(
            "the API key file {} is empty: restart `flash server` or set RUNPOD_API_KEY",
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(anyhow!(
            "no API key: set RUNPOD_API_KEY, or start `flash server` (it writes {})",
            path.display()
        )),
        Err(e) => Err(e).with_context(|| format!("reading the API key from {}", path.display())),
    }
}

/// Connects to the server at `url` with the discovered API key.
pub fn connect(url: &str) -> Result<StateManagerClient> {
    let (key, source) = discover_api_key()?;
    Ok(StateManagerClient::new(ClientConfig::new(
        url, key, source,
    )?)?)
}
