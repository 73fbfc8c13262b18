//! Connecting the CLI to a control plane: which one (RunPod or a `flash server`, always said
//! on the first line a command prints), the key for it ([`crate::credentials`]), and the
//! State Manager client built with them.
//!
//! `--server` / `FLASH_SERVER_URL` chooses: `runpod` is RunPod's API (`RUNPOD_API_BASE_URL`,
//! else `https://api.runpod.io`), `local` is a `flash server` on this machine
//! (`http://127.0.0.1:8765`, the default), and a URL is RunPod's when its host is
//! `runpod.io` or below it, else a `flash server`'s.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use flash_api::{
    API_BASE_URL_ENV, API_KEY_ENV, ClientConfig, DEFAULT_API_BASE_URL, DEFAULT_SERVER_URL,
    StateManagerClient,
};

use crate::credentials::KeyLookup;

/// The console users open to approve `flash login` on RunPod.
pub const DEFAULT_CONSOLE_URL: &str = "https://console.runpod.io";
/// Overrides [`DEFAULT_CONSOLE_URL`] (runpod-flash's variable).
pub const CONSOLE_URL_ENV: &str = "RUNPOD_CONSOLE_URL";
/// runpod-flash's deprecated name for [`CONSOLE_URL_ENV`], still honoured.
pub const LEGACY_CONSOLE_URL_ENV: &str = "CONSOLE_BASE_URL";
/// The `--server` value meaning RunPod's API.
pub const RUNPOD: &str = "runpod";
/// The `--server` value meaning a `flash server` on this machine at its default address.
pub const LOCAL: &str = "local";

/// Which control plane a command talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// RunPod's API (`https://api.runpod.io`, or `RUNPOD_API_BASE_URL`).
    RunPod { url: String },
    /// A `flash server` (or any other RunPod-compatible control plane).
    Local { url: String },
}

impl Target {
    /// `--server` / `FLASH_SERVER_URL`: `runpod`, `local`, or a URL (RunPod's when its host
    /// is `runpod.io` or a subdomain of it). `api_base_env` is `RUNPOD_API_BASE_URL`.
    pub fn parse(server: &str, api_base_env: Option<&str>) -> Result<Self> {
        let server = server.trim();
        match server {
            RUNPOD => {
                let url = non_blank(api_base_env).unwrap_or(DEFAULT_API_BASE_URL);
                Ok(Self::RunPod {
                    url: http_url(url, API_BASE_URL_ENV)?,
                })
            }
            LOCAL => Ok(Self::Local {
                url: DEFAULT_SERVER_URL.to_string(),
            }),
            url => {
                let parsed = reqwest::Url::parse(url).map_err(|e| {
                    anyhow!(
                        "--server `{url}` is not a URL ({e}): use `{RUNPOD}`, `{LOCAL}`, or a \
                         URL such as {DEFAULT_SERVER_URL}"
                    )
                })?;
                let url = http_url(url, "--server / FLASH_SERVER_URL")?;
                let is_runpod = parsed
                    .host_str()
                    .is_some_and(|h| h == "runpod.io" || h.ends_with(".runpod.io"));
                Ok(if is_runpod {
                    Self::RunPod { url }
                } else {
                    Self::Local { url }
                })
            }
        }
    }

    /// [`Self::parse`] with `RUNPOD_API_BASE_URL` from the process environment.
    pub fn from_env(server: &str) -> Result<Self> {
        Self::parse(server, std::env::var(API_BASE_URL_ENV).ok().as_deref())
    }

    pub fn url(&self) -> &str {
        match self {
            Self::RunPod { url } | Self::Local { url } => url,
        }
    }

    pub fn is_runpod(&self) -> bool {
        matches!(self, Self::RunPod { .. })
    }

    /// The first line of every command that talks to a control plane.
    pub fn banner(&self) -> String {
        match self {
            Self::RunPod { url } => format!("→ RunPod ({url})"),
            Self::Local { url } => format!("→ local flash server ({url})"),
        }
    }

    /// Says on stderr which control plane this is (the first line a command prints).
    pub fn announce(&self) {
        eprintln!("{}", self.banner());
    }

    /// Where a person approves `flash login`: RunPod's console (`RUNPOD_CONSOLE_URL`, or
    /// the legacy `CONSOLE_BASE_URL`, else `https://console.runpod.io`), or the `flash
    /// server` itself. `console_env` is the first of those variables that is set.
    pub fn console_url(&self, console_env: Option<&str>) -> Result<String> {
        match self {
            Self::RunPod { .. } => http_url(
                non_blank(console_env).unwrap_or(DEFAULT_CONSOLE_URL),
                CONSOLE_URL_ENV,
            ),
            Self::Local { url } => Ok(url.clone()),
        }
    }

    /// [`Self::console_url`] with the console variables of the process environment.
    pub fn console_url_from_env(&self) -> Result<String> {
        let env = [CONSOLE_URL_ENV, LEGACY_CONSOLE_URL_ENV]
            .into_iter()
            .filter_map(|name| std::env::var(name).ok())
            .find(|v| !v.trim().is_empty());
        self.console_url(env.as_deref())
    }
}

fn non_blank(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// `value` without its trailing `/`; an error naming `setting` unless it is an http(s) URL.
fn http_url(value: &str, setting: &str) -> Result<String> {
    let value = value.trim();
    let parsed = reqwest::Url::parse(value)
        .map_err(|e| anyhow!("{setting} `{value}` is not a URL ({e}): use an http(s) URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        bail!("{setting} `{value}` must be an http:// or https:// URL");
    }
    Ok(value.trim_end_matches('/').to_string())
}

/// `HOME`, where `~/.runpod/config.toml` lives.
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// The local `flash server`'s data dir (`FLASH_HOME`, else `~/.flash`), if either is set.
pub fn local_data_dir() -> Option<PathBuf> {
    flash_control::cli::default_data_dir().ok()
}

/// Connects to `server` (see [`Target::parse`]) with the key found for it, after saying on
/// stderr which control plane it is.
pub fn connect(server: &str) -> Result<StateManagerClient> {
    let target = Target::from_env(server)?;
    target.announce();
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let home = home_dir();
    let data_dir = local_data_dir();
    let (key, source) = KeyLookup {
        env_key: std::env::var(API_KEY_ENV).ok(),
        cwd: &cwd,
        home: home.as_deref(),
        local_data_dir: data_dir.as_deref(),
    }
    .find(&target)?;
    Ok(StateManagerClient::new(ClientConfig::new(
        target.url(),
        key,
        source,
    )?)?)
}

/// A client for `target` that sends no key (`flash login`).
pub fn connect_anonymous(target: &Target) -> Result<StateManagerClient> {
    Ok(StateManagerClient::new(ClientConfig::anonymous(
        target.url(),
    )?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_explicit() {
        let runpod = Target::parse("runpod", None).unwrap();
        assert_eq!(runpod.url(), "https://api.runpod.io");
        assert_eq!(runpod.banner(), "→ RunPod (https://api.runpod.io)");
        assert_eq!(
            Target::parse("runpod", Some("https://dev.runpod.io/")).unwrap(),
            Target::RunPod {
                url: "https://dev.runpod.io".into()
            }
        );
        // Blank means unset.
        assert_eq!(Target::parse(" runpod ", Some("  ")).unwrap(), runpod);
        let err = Target::parse("runpod", Some("ftp://x")).unwrap_err();
        assert!(err.to_string().contains("RUNPOD_API_BASE_URL"), "{err}");
        assert!(matches!(
            Target::parse("https://api.runpod.io", None).unwrap(),
            Target::RunPod { .. }
        ));
        assert!(matches!(
            Target::parse("https://notrunpod.io", None).unwrap(),
            Target::Local { .. }
        ));
        let local = Target::parse("local", None).unwrap();
        assert_eq!(
            local.banner(),
            "→ local flash server (http://127.0.0.1:8765)"
        );
        assert!(matches!(
            Target::parse("http://127.0.0.1:9/", None).unwrap(),
            Target::Local { ref url } if url == "http://127.0.0.1:9"
        ));
        let err = Target::parse("nonsense", None).unwrap_err().to_string();
        assert!(err.contains("`runpod`") && err.contains("`local`"), "{err}");
    }

    #[test]
    fn the_login_page_is_runpods_console_or_the_server_itself() {
        let runpod = Target::parse("runpod", None).unwrap();
        assert_eq!(runpod.console_url(None).unwrap(), DEFAULT_CONSOLE_URL);
        assert_eq!(
            runpod.console_url(Some("http://127.0.0.1:3000/")).unwrap(),
            "http://127.0.0.1:3000"
        );
        assert!(runpod.console_url(Some("console")).is_err());
        let local = Target::parse("http://127.0.0.1:9", None).unwrap();
        assert_eq!(
            local.console_url(Some("https://ignored")).unwrap(),
            "http://127.0.0.1:9"
        );
    }
}
