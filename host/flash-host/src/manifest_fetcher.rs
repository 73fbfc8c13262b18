//! `ManifestFetcher`: the current manifest of this deployment, cached, with a local fallback.
//!
//! The manifest a host booted with is a build-time snapshot; the State Manager holds the live
//! one (deploy adds `resources_endpoints`, the mothership records reconciliation state). The
//! fetcher answers "what is the manifest now?" in this order:
//!
//! 1. the cached copy, while it is younger than the TTL (default 300 s, like RunPod's Flash);
//! 2. the manifest persisted on the environment's active build in the State Manager
//!    (`getFlashEnvironment` → `activeBuildId` → `getFlashBuild`), which is then written back to
//!    the local file atomically so a later boot without the API still has it;
//! 3. the local `flash_manifest.json` when the State Manager is not configured, unreachable,
//!    or has nothing persisted yet.
//!
//! The cache sits behind one `tokio::sync::Mutex` held across the fetch, so when the TTL
//! expires under load, the first caller fetches and the others wait for its result instead of
//! stampeding the State Manager with one request each.
//!
//! A local-file fallback is cached for the TTL like a fetched manifest (the State Manager is
//! not hammered while it is down); a caller that misses a peer URL can [`ManifestFetcher::invalidate`]
//! to look again sooner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flash_manifest::{MANIFEST_FILE_NAME, Manifest};
use serde_json::Value;
use tokio::sync::Mutex;

use flash_api::{API_KEY_ENV, ClientConfig, StateManagerClient};

/// Env var naming the local manifest file.
pub const MANIFEST_PATH_ENV: &str = "FLASH_MANIFEST_PATH";
/// Env var naming the Flash environment whose active build holds the live manifest.
pub const ENVIRONMENT_ID_ENV: &str = "FLASH_ENVIRONMENT_ID";
/// Timeout of one State Manager request made for peer discovery. Discovery runs on a call's
/// path, so it gives up well before RunPod's 300 s and lets the retry policy take over.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fetched manifest is served before the next fetch.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Where a deployed worker finds its manifest when `FLASH_MANIFEST_PATH` is unset (reference
/// §5.5), in order; the last one is also where a fetched manifest is written when none exists.
pub const DEFAULT_MANIFEST_PATHS: [&str; 2] = ["/app/flash_manifest.json", MANIFEST_FILE_NAME];

/// Where the manifest being served came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestSource {
    /// Persisted on this build in the State Manager.
    StateManager { build_id: String },
    /// Read from this local file.
    LocalFile(PathBuf),
}

/// No manifest could be produced from any source.
#[derive(Debug, thiserror::Error)]
#[error("no Flash manifest available: {}", describe_failures(.remote.as_deref(), .local))]
pub struct ManifestUnavailable {
    /// Why the State Manager gave nothing (`None` when it is not configured).
    pub remote: Option<String>,
    /// Why the local file gave nothing.
    pub local: String,
}

fn describe_failures(remote: Option<&str>, local: &str) -> String {
    match remote {
        Some(remote) => format!(
            "the State Manager failed ({remote}) and the local fallback failed ({local}); fix either source"
        ),
        None => format!(
            "the State Manager is not configured (set {API_KEY_ENV} and {ENVIRONMENT_ID_ENV}) and the local file failed ({local}); set {MANIFEST_PATH_ENV} to a flash_manifest.json"
        ),
    }
}

struct Remote {
    client: StateManagerClient,
    environment_id: String,
}

struct Cached {
    manifest: Arc<Manifest>,
    source: ManifestSource,
    fetched_at: Instant,
}

/// TTL-cached access to the current manifest. Share it behind an `Arc`.
pub struct ManifestFetcher {
    remote: Option<Remote>,
    local_path: Option<PathBuf>,
    ttl: Duration,
    cache: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for ManifestFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestFetcher")
            .field(
                "environment_id",
                &self.remote.as_ref().map(|r| &r.environment_id),
            )
            .field("local_path", &self.local_path)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Default for ManifestFetcher {
    fn default() -> Self {
        Self::new()
    }
}

impl ManifestFetcher {
    /// A fetcher with no source yet; add them with [`Self::with_state_manager`] and
    /// [`Self::with_local_path`].
    pub fn new() -> Self {
        Self {
            remote: None,
            local_path: None,
            ttl: DEFAULT_TTL,
            cache: Mutex::new(None),
        }
    }

    /// Configured from the process env: see [`Self::from_lookup`].
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Local file: `FLASH_MANIFEST_PATH`, else the first existing of
    /// [`DEFAULT_MANIFEST_PATHS`], else `./flash_manifest.json`. State Manager: used when
    /// `RUNPOD_API_KEY` and `FLASH_ENVIRONMENT_ID` are set (a bad `RUNPOD_API_BASE_URL` is
    /// logged and leaves only the local file).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let non_blank = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let local_path = non_blank(MANIFEST_PATH_ENV)
            .map(PathBuf::from)
            .or_else(|| {
                DEFAULT_MANIFEST_PATHS
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.is_file())
            })
            .unwrap_or_else(|| PathBuf::from(MANIFEST_FILE_NAME));
        let mut fetcher = Self::new().with_local_path(local_path);
        if let Some(environment_id) = non_blank(ENVIRONMENT_ID_ENV)
            && non_blank(API_KEY_ENV).is_some()
        {
            let client = ClientConfig::from_lookup(&lookup)
                .map(|config| config.with_timeout(DISCOVERY_TIMEOUT))
                .and_then(StateManagerClient::new);
            match client {
                Ok(client) => fetcher = fetcher.with_state_manager(client, environment_id.trim()),
                Err(e) => {
                    tracing::warn!(error = %e, "State Manager disabled; using the local manifest only")
                }
            }
        }
        fetcher
    }

    /// Reads the live manifest of `environment_id` from the State Manager first.
    pub fn with_state_manager(
        mut self,
        client: StateManagerClient,
        environment_id: impl Into<String>,
    ) -> Self {
        self.remote = Some(Remote {
            client,
            environment_id: environment_id.into(),
        });
        self
    }

    /// The local manifest file: the fallback source and where fetched manifests are written.
    pub fn with_local_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.local_path = Some(path.into());
        self
    }

    /// How long a fetched manifest is served from the cache.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn local_path(&self) -> Option<&Path> {
        self.local_path.as_deref()
    }

    /// The current manifest.
    pub async fn get(&self) -> Result<Arc<Manifest>, ManifestUnavailable> {
        self.get_with_source().await.map(|(manifest, _)| manifest)
    }

    /// The current manifest and where it came from.
    pub async fn get_with_source(
        &self,
    ) -> Result<(Arc<Manifest>, ManifestSource), ManifestUnavailable> {
        // Held across the fetch on purpose: concurrent callers after expiry share one fetch.
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref()
            && cached.fetched_at.elapsed() < self.ttl
        {
            return Ok((cached.manifest.clone(), cached.source.clone()));
        }
        let (manifest, source) = self.fetch().await?;
        let manifest = Arc::new(manifest);
        *cache = Some(Cached {
            manifest: manifest.clone(),
            source: source.clone(),
            fetched_at: Instant::now(),
        });
        Ok((manifest, source))
    }

    /// Peer URLs of the current manifest (resource config name → endpoint URL); empty when
    /// nothing is deployed.
    pub async fn resources_endpoints(
        &self,
    ) -> Result<BTreeMap<String, String>, ManifestUnavailable> {
        Ok(self
            .get()
            .await?
            .resources_endpoints
            .clone()
            .unwrap_or_default())
    }

    /// Drops the cached manifest; the next [`Self::get`] fetches again.
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    /// One pass over the sources, without the cache.
    async fn fetch(&self) -> Result<(Manifest, ManifestSource), ManifestUnavailable> {
        let mut remote_failure = None;
        if let Some(remote) = &self.remote {
            match self.fetch_remote(remote).await {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => {
                    remote_failure = Some(format!(
                        "environment `{}` has no persisted manifest yet",
                        remote.environment_id
                    ));
                }
                Err(e) => {
                    tracing::warn!(
                        environment_id = %remote.environment_id,
                        error = %e,
                        "State Manager unavailable; falling back to the local manifest"
                    );
                    remote_failure = Some(e);
                }
            }
        }
        let Some(path) = &self.local_path else {
            return Err(ManifestUnavailable {
                remote: remote_failure,
                local: format!("no local manifest path configured ({MANIFEST_PATH_ENV})"),
            });
        };
        match read_manifest(path.clone()).await {
            Ok(manifest) => Ok((manifest, ManifestSource::LocalFile(path.clone()))),
            Err(local) => Err(ManifestUnavailable {
                remote: remote_failure,
                local,
            }),
        }
    }

    /// The persisted manifest, parsed, and written back to the local file. `Ok(None)` when
    /// the environment has none yet.
    async fn fetch_remote(
        &self,
        remote: &Remote,
    ) -> Result<Option<(Manifest, ManifestSource)>, String> {
        let Some((build_id, value)) = remote
            .client
            .persisted_manifest(&remote.environment_id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let manifest: Manifest = serde_json::from_value(value.clone()).map_err(|e| {
            format!(
                "the manifest persisted on build `{build_id}` is not a valid Flash manifest: {e}"
            )
        })?;
        if let Some(path) = &self.local_path
            && let Err(e) = write_back(path.clone(), value).await
        {
            // The fetched manifest is still good to serve; only the offline copy is stale.
            tracing::warn!(path = %path.display(), error = %e, "could not save the fetched manifest locally");
        }
        Ok(Some((manifest, ManifestSource::StateManager { build_id })))
    }
}

async fn read_manifest(path: PathBuf) -> Result<Manifest, String> {
    tokio::task::spawn_blocking(move || Manifest::read(&path).map_err(|e| format!("{e:#}")))
        .await
        .map_err(|e| format!("reading the local manifest: {e}"))?
}

/// Writes `value` as pretty JSON to `path` with [`flash_manifest::atomic::write`] (a crash
/// leaves the old file or the new one). Skips the write when the file already holds the same
/// document.
async fn write_back(path: PathBuf, value: Value) -> Result<(), String> {
    tokio::task::spawn_blocking(move || write_if_changed(&path, &value))
        .await
        .map_err(|e| format!("writing the local manifest: {e}"))?
}

fn write_if_changed(path: &Path, value: &Value) -> Result<(), String> {
    if let Ok(existing) = std::fs::read(path)
        && serde_json::from_slice::<Value>(&existing).is_ok_and(|old| &old == value)
    {
        return Ok(());
    }
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    flash_manifest::atomic::write(path, &bytes)
        .map_err(|e| format!("writing {}: {e}", path.display()))
}
