//! Where the State Manager is, which key to send, and how patiently to talk to it.
//!
//! The settings have one default for every caller, taken from RunPod's own client (reference
//! §1.1): a 300 s total timeout and up to 4 attempts for queries. A caller on a request path
//! (peer discovery in a worker) shortens the timeout explicitly with
//! [`ClientConfig::with_timeout`] rather than getting a different client.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::data_plane::{DataPlane, ENDPOINT_BASE_URL_ENV};
use crate::error::ApiError;

/// Env var overriding the control-plane base URL.
pub const API_BASE_URL_ENV: &str = "RUNPOD_API_BASE_URL";
/// Env var holding the API key sent as `Authorization: Bearer <key>`.
pub const API_KEY_ENV: &str = "RUNPOD_API_KEY";
/// The control plane RunPod's Flash talks to when nothing overrides it.
pub const DEFAULT_API_BASE_URL: &str = "https://api.runpod.io";
/// Default URL of a local `flash server` (its `--listen` default).
pub const DEFAULT_SERVER_URL: &str = "http://127.0.0.1:8765";

/// Total timeout of one request (RunPod's client allows 300 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Connect timeout of one request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts for a query; mutations are always sent once.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;
/// First backoff; attempt `n` (0-based) waits `base × 2^n`, capped at [`MAX_BACKOFF`].
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Upper bound of one backoff wait, before jitter.
pub const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// Where the API key came from, so that a rejected key can be traced to its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `RUNPOD_API_KEY` in the process environment.
    Env,
    /// `RUNPOD_API_KEY` in a `.env` file (the nearest one from the working directory up).
    DotEnv(PathBuf),
    /// RunPod's credentials file, `~/.runpod/config.toml` (`[default].api_key`, or
    /// runpodctl's top-level `apikey`), where `flash login` saves the key.
    RunPodConfig(PathBuf),
    /// Another key file: a `flash server`'s `<data dir>/api_key`.
    File(PathBuf),
    /// No key at all: the request is sent without `Authorization` (`flash login`'s
    /// `createFlashAuthRequest` and `flashAuthRequestStatus`).
    Anonymous,
}

impl KeySource {
    /// What to do when the server rejects a key from this source.
    pub fn remedy(&self) -> &'static str {
        match self {
            KeySource::Env => {
                "correct or unset RUNPOD_API_KEY (a local `flash server`'s key is in its \
                 `<data dir>/api_key`; a RunPod key comes from `flash login --server runpod`)"
            }
            KeySource::DotEnv(_) => {
                "correct RUNPOD_API_KEY in that file, or remove it there to use \
                 ~/.runpod/config.toml (`flash login --server runpod` saves a new key)"
            }
            KeySource::RunPodConfig(_) => {
                "run `flash login --server runpod` to save a new key there, or set RUNPOD_API_KEY"
            }
            KeySource::File(_) => {
                "that file holds the key of the `flash server` using that data dir: point \
                 FLASH_HOME at the data dir of the server you are talking to, or set \
                 RUNPOD_API_KEY"
            }
            KeySource::Anonymous => {
                "this request carries no key by design (`flash login`), so this server does \
                 not offer `flash login`: set RUNPOD_API_KEY instead"
            }
        }
    }
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env => write!(f, "{API_KEY_ENV}"),
            KeySource::DotEnv(p) => write!(f, "{API_KEY_ENV} in {}", p.display()),
            KeySource::RunPodConfig(p) | KeySource::File(p) => write!(f, "{}", p.display()),
            KeySource::Anonymous => write!(f, "no key (an anonymous request)"),
        }
    }
}

/// Where and how to reach the State Manager.
#[derive(Clone)]
pub struct ClientConfig {
    /// Base URL without a trailing `/`; GraphQL goes to `{base_url}/graphql`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <api_key>`; empty, and not sent, for
    /// [`KeySource::Anonymous`].
    pub api_key: String,
    /// Where the key came from (named when it is rejected).
    pub key_source: KeySource,
    /// Where endpoints are reached.
    pub data_plane: DataPlane,
    /// Total timeout of one HTTP request.
    pub timeout: Duration,
    /// Attempts for a query; mutations are always sent once. At least 1.
    pub max_attempts: u32,
    /// First backoff wait; later ones double.
    pub backoff_base: Duration,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("key_source", &self.key_source)
            .field("data_plane", &self.data_plane)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_base", &self.backoff_base)
            .finish()
    }
}

impl ClientConfig {
    /// The control plane at `base_url` with `api_key` (from `key_source`), the default
    /// timeout and retry policy, and the data plane that `base_url` and the process's
    /// `RUNPOD_ENDPOINT_BASE_URL` imply (as runpod-python reads it).
    pub fn new(
        base_url: &str,
        api_key: impl Into<String>,
        key_source: KeySource,
    ) -> Result<Self, ApiError> {
        let base_url = normalize_base_url(base_url)?;
        let data_plane = DataPlane::from_env(&base_url)?;
        Ok(Self {
            base_url,
            api_key: api_key.into(),
            key_source,
            data_plane,
            timeout: DEFAULT_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff_base: DEFAULT_BACKOFF_BASE,
        })
    }

    /// A client that sends no key ([`KeySource::Anonymous`]), for the operations that
    /// obtain one (`flash login`).
    pub fn anonymous(base_url: &str) -> Result<Self, ApiError> {
        Self::new(base_url, "", KeySource::Anonymous)
    }

    /// Whether requests go without `Authorization`.
    pub fn is_anonymous(&self) -> bool {
        self.key_source == KeySource::Anonymous
    }

    /// A worker's view: `RUNPOD_API_BASE_URL` (RunPod's API when unset or blank),
    /// `RUNPOD_API_KEY` (required) and `RUNPOD_ENDPOINT_BASE_URL`, read through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ApiError> {
        let non_blank = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let base = non_blank(API_BASE_URL_ENV).unwrap_or_else(|| DEFAULT_API_BASE_URL.to_owned());
        let Some(key) = non_blank(API_KEY_ENV) else {
            return Err(ApiError::Config(format!(
                "{API_KEY_ENV} is not set; the State Manager needs the deployer's API key"
            )));
        };
        let base_url = normalize_base_url(&base)?;
        let data_plane =
            DataPlane::resolve(&base_url, non_blank(ENDPOINT_BASE_URL_ENV).as_deref())?;
        Ok(Self {
            data_plane,
            ..Self::new(&base_url, key.trim(), KeySource::Env)?
        })
    }

    /// [`Self::from_lookup`] over the process environment.
    pub fn from_env() -> Result<Self, ApiError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Sets the total timeout of one request.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the number of attempts for queries (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets the first backoff wait (tests use milliseconds).
    pub fn with_backoff_base(mut self, base: Duration) -> Self {
        self.backoff_base = base;
        self
    }

    /// `{base_url}/graphql`.
    pub fn graphql_url(&self) -> String {
        format!("{}/graphql", self.base_url)
    }
}

/// Trims, strips trailing `/`, and insists on an http(s) URL.
fn normalize_base_url(raw: &str) -> Result<String, ApiError> {
    let trimmed = raw.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(trimmed).map_err(|e| {
        ApiError::Config(format!(
            "the State Manager URL `{raw}` is not a valid URL ({e}); expected e.g. \
             {DEFAULT_SERVER_URL} (`flash server`) or {DEFAULT_API_BASE_URL} (RunPod)"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ApiError::Config(format!(
            "the State Manager URL `{raw}` must start with http:// or https://"
        )));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn from_lookup_defaults_strips_and_validates() {
        let config = ClientConfig::from_lookup(env(&[(API_KEY_ENV, "k")])).unwrap();
        assert_eq!(config.graphql_url(), "https://api.runpod.io/graphql");
        assert_eq!(
            config.data_plane.queue_url("e"),
            "https://api.runpod.ai/v2/e"
        );
        let config = ClientConfig::from_lookup(env(&[
            (API_KEY_ENV, "k"),
            (API_BASE_URL_ENV, "http://127.0.0.1:9/"),
        ]))
        .unwrap();
        assert_eq!(config.base_url, "http://127.0.0.1:9");
        assert_eq!(config.data_plane.queue_url("e"), "http://127.0.0.1:9/v2/e");
        let config =
            ClientConfig::from_lookup(env(&[(API_KEY_ENV, "k"), (API_BASE_URL_ENV, "  ")]))
                .unwrap();
        assert_eq!(config.base_url, DEFAULT_API_BASE_URL);
        let err = ClientConfig::from_lookup(env(&[])).unwrap_err();
        assert!(err.to_string().contains("RUNPOD_API_KEY"), "{err}");
        let err =
            ClientConfig::from_lookup(env(&[(API_KEY_ENV, "k"), (API_BASE_URL_ENV, "ftp://x")]))
                .unwrap_err();
        assert!(err.to_string().contains("http"), "{err}");
        assert!(!format!("{config:?}").contains("\"k\""));
    }
}
