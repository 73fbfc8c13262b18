//! Connecting the CLI to a control plane: which one (RunPod or a local `flash server`,
//! always said on the first line a command prints), the API key, and the State Manager
//! client built with them.
//!
//! Key lookup follows runpod-flash for RunPod: `RUNPOD_API_KEY`, then `.env` from the
//! working directory up, then `~/.runpod/config.toml` (`[default].api_key`, or runpodctl's
//! top-level `apikey` when there is no `[default]`). For a local server: `RUNPOD_API_KEY`,
//! then that server's `<data dir>/api_key`; a RunPod key from `.env` or `config.toml` is
//! never sent to a local server, nor a local key to RunPod.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use flash_api::{
    API_BASE_URL_ENV, API_KEY_ENV, ClientConfig, DEFAULT_API_BASE_URL, DEFAULT_SERVER_URL,
    KeySource, StateManagerClient,
};

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
    /// is `runpod.io` or a subdomain of it).
    pub fn parse(server: &str, api_base_env: Option<&str>) -> Result<Self> {
        let server = server.trim();
        match server {
            "runpod" => Ok(Self::RunPod {
                url: api_base_env
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .unwrap_or(DEFAULT_API_BASE_URL)
                    .trim_end_matches('/')
                    .to_string(),
            }),
            "local" => Ok(Self::Local {
                url: DEFAULT_SERVER_URL.to_string(),
            }),
            url => {
                let parsed = reqwest::Url::parse(url).map_err(|e| {
                    anyhow!(
                        "--server `{url}` is not a URL ({e}): use `runpod`, `local`, or a URL such \
                         as {DEFAULT_SERVER_URL}"
                    )
                })?;
                let url = url.trim_end_matches('/').to_string();
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

    pub fn url(&self) -> &str {
        match self {
            Self::RunPod { url } | Self::Local { url } => url,
        }
    }

    /// The first line of every command that talks to a control plane.
    pub fn banner(&self) -> String {
        match self {
            Self::RunPod { url } => format!("→ RunPod ({url})"),
            Self::Local { url } => format!("→ local flash server ({url})"),
        }
    }
}

/// Where keys are looked up (the process env, the working directory, the home directory,
/// the local server's data dir); tests pass their own.
pub struct KeyLookup<'a> {
    pub env_key: Option<String>,
    pub cwd: &'a Path,
    pub home: Option<&'a Path>,
    pub local_data_dir: Option<&'a Path>,
}

impl KeyLookup<'_> {
    /// The API key for `target` and where it came from.
    pub fn find(&self, target: &Target) -> Result<(String, KeySource)> {
        if let Some(key) = self
            .env_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
        {
            return Ok((key.to_string(), KeySource::Env));
        }
        match target {
            Target::RunPod { .. } => {
                if let Some(found) = dot_env_key(self.cwd)? {
                    return Ok(found);
                }
                if let Some(home) = self.home
                    && let Some(found) = config_toml_key(&home.join(".runpod/config.toml"))?
                {
                    return Ok(found);
                }
                bail!(
                    "no RunPod API key: set {API_KEY_ENV}, put it in a .env file, or save it in \
                     ~/.runpod/config.toml ([default] api_key = \"...\"); create one at \
                     https://console.runpod.io/user/settings"
                )
            }
            Target::Local { .. } => {
                let Some(dir) = self.local_data_dir else {
                    bail!("no API key: set {API_KEY_ENV}, or set FLASH_HOME or HOME");
                };
                local_key(&flash_control::auth::api_key_path(dir))
            }
        }
    }
}

/// `RUNPOD_API_KEY` of the nearest `.env` from `cwd` up.
fn dot_env_key(cwd: &Path) -> Result<Option<(String, KeySource)>> {
    for dir in cwd.ancestors() {
        let path = dir.join(".env");
        if !path.is_file() {
            continue;
        }
        let entries = dotenvy::from_path_iter(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for entry in entries {
            let (key, value) = entry.with_context(|| format!("parsing {}", path.display()))?;
            if key == API_KEY_ENV && !value.trim().is_empty() {
                return Ok(Some((value.trim().to_string(), KeySource::File(path))));
            }
        }
        // The nearest .env decides, as load_dotenv does.
        return Ok(None);
    }
    Ok(None)
}

/// `[default].api_key` of `~/.runpod/config.toml`, or runpodctl's top-level `apikey` when
/// the file has no `[default]`.
fn config_toml_key(path: &Path) -> Result<Option<(String, KeySource)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let key = match doc.get("default") {
        Some(default) => default.get("api_key"),
        None => doc.get("apikey"),
    };
    Ok(key
        .and_then(|k| k.as_str())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| (k.to_string(), KeySource::File(path.to_path_buf()))))
}

fn local_key(path: &Path) -> Result<(String, KeySource)> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            Ok((text.trim().to_string(), KeySource::File(path.to_path_buf())))
        }
        Ok(_) => Err(anyhow!(
            "the API key file {} is empty: restart `flash server` or set {API_KEY_ENV}",
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(anyhow!(
            "no API key: set {API_KEY_ENV}, or start `flash server` (it writes {})",
            path.display()
        )),
        Err(e) => Err(e).with_context(|| format!("reading the API key from {}", path.display())),
    }
}

/// Connects to `server` (see [`Target::parse`]) with the key found for it, after saying on
/// stderr which control plane it is.
pub fn connect(server: &str) -> Result<StateManagerClient> {
    let target = Target::parse(server, std::env::var(API_BASE_URL_ENV).ok().as_deref())?;
    eprintln!("{}", target.banner());
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let data_dir = flash_control::cli::default_data_dir().ok();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn runpod() -> Target {
        Target::parse("runpod", None).unwrap()
    }

    #[test]
    fn targets_are_explicit() {
        assert_eq!(runpod().url(), "https://api.runpod.io");
        assert_eq!(
            Target::parse("runpod", Some("https://dev.runpod.io/")).unwrap(),
            Target::RunPod {
                url: "https://dev.runpod.io".into()
            }
        );
        assert!(matches!(
            Target::parse("https://api.runpod.io", None).unwrap(),
            Target::RunPod { .. }
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
        assert!(Target::parse("nonsense", None).is_err());
    }

    #[test]
    fn runpod_keys_come_from_the_env_then_dot_env_then_config_toml() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let project = tmp.path().join("work/app");
        std::fs::create_dir_all(home.join(".runpod")).unwrap();
        std::fs::create_dir_all(&project).unwrap();
        let lookup = |env_key: Option<&str>| KeyLookup {
            env_key: env_key.map(str::to_string),
            cwd: &project,
            home: Some(&home),
            local_data_dir: None,
        };
        assert!(
            lookup(None)
                .find(&runpod())
                .unwrap_err()
                .to_string()
                .contains("no RunPod API key")
        );

        std::fs::write(
            home.join(".runpod/config.toml"),
            "apikey = \"runpodctl-key\"\n",
        )
        .unwrap();
        assert_eq!(lookup(None).find(&runpod()).unwrap().0, "runpodctl-key");
        std::fs::write(
            home.join(".runpod/config.toml"),
            "apikey = \"runpodctl-key\"\n[default]\napi_key = \"config-key\"\n",
        )
        .unwrap();
        let (key, source) = lookup(None).find(&runpod()).unwrap();
        assert_eq!(key, "config-key");
        assert_eq!(source, KeySource::File(home.join(".runpod/config.toml")));

        // A .env above the working directory wins over config.toml.
        std::fs::write(
            tmp.path().join("work/.env"),
            "OTHER=1\nRUNPOD_API_KEY=\"dotenv-key\"\n",
        )
        .unwrap();
        let (key, source) = lookup(None).find(&runpod()).unwrap();
        assert_eq!(key, "dotenv-key");
        assert_eq!(source, KeySource::File(tmp.path().join("work/.env")));

        // The environment wins over everything.
        assert_eq!(
            lookup(Some("env-key")).find(&runpod()).unwrap(),
            ("env-key".into(), KeySource::Env)
        );
    }

    #[test]
    fn a_local_server_never_gets_a_runpod_key_from_files() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(".env"), "RUNPOD_API_KEY=rp-secret\n").unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let lookup = KeyLookup {
            env_key: None,
            cwd: tmp.path(),
            home: Some(tmp.path()),
            local_data_dir: Some(&data),
        };
        let local = Target::parse("local", None).unwrap();
        let err = lookup.find(&local).unwrap_err().to_string();
        assert!(err.contains("start `flash server`"), "{err}");
        std::fs::write(flash_control::auth::api_key_path(&data), "local-key\n").unwrap();
        assert_eq!(lookup.find(&local).unwrap().0, "local-key");
    }
}
