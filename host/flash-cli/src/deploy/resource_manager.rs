//! Local state of deployed resources: `.flash/resources.json`.
//!
//! For each environment of the project: its id, whether load-balanced endpoints require the
//! API key, and per resource config the endpoint it is deployed to with the `config_hash`
//! and source hash it was last saved with. `flash deploy send` compares these with the new
//! build to reuse, update or delete endpoints.
//!
//! The file is plain JSON (the reference keeps a pickle). Readers take a shared lock and
//! writers an exclusive one on `resources.json.lock`, held across the whole
//! read-modify-write, so two `flash` processes never lose each other's update; the file is
//! replaced atomically (temp file, fsync, rename), so a crash leaves the old or the new
//! state, never half of one.
//!
//! The server is the source of truth where it can be: `deploy send` also reads endpoint ids
//! from the active build's manifest (where it publishes them), so a deploy from another
//! machine, without this file, still reuses endpoints instead of creating duplicates.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// File name of the state, under `.flash/`.
pub const STATE_FILE: &str = "resources.json";
const STATE_VERSION: u32 = 1;

/// The whole state file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub version: u32,
    /// environment name → its state.
    #[serde(default)]
    pub environments: BTreeMap<String, EnvironmentState>,
}

/// One environment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentState {
    pub environment_id: String,
    #[serde(default)]
    pub app: String,
    /// Load-balanced endpoints require `Authorization` (`flash deploy new --require-auth`).
    #[serde(default)]
    pub require_auth: bool,
    /// resource config name → deployed endpoint.
    #[serde(default)]
    pub resources: BTreeMap<String, DeployedResource>,
}

/// One deployed resource config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeployedResource {
    pub endpoint_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    pub config_hash: String,
    /// sha256 over the digests of the components serving this resource.
    pub source_hash: String,
    pub url: String,
}

/// Reads and updates `.flash/resources.json` of one project.
#[derive(Debug, Clone)]
pub struct ResourceManager {
    path: PathBuf,
}

impl ResourceManager {
    /// The state of the project whose `.flash` directory is `flash_dir`.
    pub fn new(flash_dir: &Path) -> Self {
        Self {
            path: flash_dir.join(STATE_FILE),
        }
    }

    /// Path of the state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_file(&self) -> Result<File> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let lock = self.path.with_extension("json.lock");
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .with_context(|| format!("opening the lock file {}", lock.display()))
    }

    fn read_unlocked(&self) -> Result<State> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                let state: State = serde_json::from_slice(&bytes).with_context(|| {
                    format!(
                        "{} is not valid deploy state: fix or delete it (the next `flash deploy \
                         send` rebuilds it from the server)",
                        self.path.display()
                    )
                })?;
                Ok(state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
                version: STATE_VERSION,
                ..Default::default()
            }),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.path.display())),
        }
    }

    /// A consistent snapshot (shared lock).
    pub fn load(&self) -> Result<State> {
        let lock = self.lock_file()?;
        lock.lock_shared()
            .with_context(|| format!("locking {}", self.path.display()))?;
        let state = self.read_unlocked();
        let _ = lock.unlock();
        state
    }

    /// The state of environment `name`, if recorded.
    pub fn environment(&self, name: &str) -> Result<Option<EnvironmentState>> {
        Ok(self.load()?.environments.remove(name))
    }

    /// Read-modify-write under an exclusive lock, then an atomic replace.
    pub fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> Result<T> {
        let lock = self.lock_file()?;
        lock.lock()
            .with_context(|| format!("locking {}", self.path.display()))?;
        let result = (|| {
            let mut state = self.read_unlocked()?;
            let out = change(&mut state);
            state.version = STATE_VERSION;
            self.write_atomic(&state)?;
            Ok(out)
        })();
        let _ = lock.unlock();
        result
    }

    fn write_atomic(&self, state: &State) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(state).context("serialising deploy state")?;
        bytes.push(b'\n');
        let tmp = self
            .path
            .with_extension(format!("json.tmp.{}", std::process::id()));
        let mut file = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("replacing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_empty_state_and_updates_persist() {
        let dir = tempfile::tempdir().unwrap();
        let rm = ResourceManager::new(dir.path());
        assert!(rm.load().unwrap().environments.is_empty());
        rm.update(|s| {
            s.environments.insert(
                "dev".into(),
                EnvironmentState {
                    environment_id: "env-1".into(),
                    ..Default::default()
                },
            );
        })
        .unwrap();
        let env = rm.environment("dev").unwrap().unwrap();
        assert_eq!(env.environment_id, "env-1");
        assert_eq!(rm.load().unwrap().version, STATE_VERSION);
    }

    #[test]
    fn concurrent_writers_keep_every_update() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let rm = ResourceManager::new(dir.path());
                std::thread::spawn(move || {
                    for j in 0..10 {
                        rm.update(|s| {
                            s.environments
                                .entry(format!("env{i}"))
                                .or_default()
                                .resources
                                .insert(format!("r{j}"), DeployedResource::default());
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let state = ResourceManager::new(dir.path()).load().unwrap();
        assert_eq!(state.environments.len(), 8);
        assert!(state.environments.values().all(|e| e.resources.len() == 10));
    }

    #[test]
    fn corrupt_state_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        let err = ResourceManager::new(dir.path()).load().unwrap_err();
        assert!(format!("{err:#}").contains("fix or delete it"), "{err:#}");
    }
}
