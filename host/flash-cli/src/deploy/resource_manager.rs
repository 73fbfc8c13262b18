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
//!
//! # Layout versions
//!
//! - **1** (flash 0.1 before the mothership): environments with their resources.
//! - **2**: each environment also records its mothership endpoint, and each resource the
//!   keys of the user env it was deployed with (so the §1.5 template merge can tell a key
//!   the user removed from one the platform injected).
//!
//! An older file is migrated when it is read under the write lock: the original is kept as
//! `resources.json.v<N>.bak`, then the file is rewritten in the current layout. A file from a
//! newer flash is refused (rather than silently dropping what this version does not know).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flash_deploy::DeployedResource;
use serde::{Deserialize, Serialize};

/// File name of the state, under `.flash/`.
pub const STATE_FILE: &str = "resources.json";
/// The layout this version writes (see the module docs).
pub const STATE_VERSION: u32 = 2;

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
    /// The environment's mothership endpoint (layout 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mothership: Option<String>,
    /// resource config name → deployed endpoint.
    #[serde(default)]
    pub resources: BTreeMap<String, DeployedResource>,
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

    /// Reads the file (any supported layout) without migrating it on disk.
    fn read_unlocked(&self) -> Result<State> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State {
                    version: STATE_VERSION,
                    ..Default::default()
                });
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        let state: State = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not valid deploy state: fix or delete it (the next `flash deploy \
                 send` rebuilds it from the server)",
                self.path.display()
            )
        })?;
        if state.version > STATE_VERSION {
            bail!(
                "{} has layout version {}, written by a newer flash (this one knows up to {}): \
                 upgrade flash",
                self.path.display(),
                state.version,
                STATE_VERSION
            );
        }
        // Layout 1 → 2 adds only defaulted fields: serde already filled them in.
        Ok(state)
    }

    /// Migrates an older layout on disk (under the exclusive lock): keeps a backup and
    /// rewrites the file in the current layout.
    fn migrate_unlocked(&self, state: &mut State) -> Result<()> {
        if !self.path.exists() || state.version == STATE_VERSION {
            return Ok(());
        }
        let backup = self
            .path
            .with_extension(format!("json.v{}.bak", state.version));
        std::fs::copy(&self.path, &backup).with_context(|| {
            format!(
                "keeping a backup of {} before migrating it",
                self.path.display()
            )
        })?;
        tracing::info!(
            from = state.version,
            to = STATE_VERSION,
            backup = %backup.display(),
            "migrated the deploy state layout"
        );
        state.version = STATE_VERSION;
        self.write_state(state)
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
            self.migrate_unlocked(&mut state)?;
            let out = change(&mut state);
            state.version = STATE_VERSION;
            self.write_state(&state)?;
            Ok(out)
        })();
        let _ = lock.unlock();
        result
    }

    /// Replaces the state file with `state` ([`flash_manifest::atomic::write`]).
    fn write_state(&self, state: &State) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(state).context("serialising deploy state")?;
        bytes.push(b'\n');
        flash_manifest::atomic::write(&self.path, &bytes)
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
    fn layout_1_is_read_then_migrated_with_a_backup_on_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = r#"{ "version": 1, "environments": { "dev": { "environment_id": "env-1",
            "app": "app", "require_auth": true, "resources": { "gpu": { "endpoint_id": "ep-1",
            "config_hash": "h", "source_hash": "s", "url": "http://x/v2/ep-1" } } } } }"#;
        std::fs::write(dir.path().join(STATE_FILE), v1).unwrap();
        let rm = ResourceManager::new(dir.path());
        let env = rm.environment("dev").unwrap().unwrap();
        assert_eq!(env.resources["gpu"].endpoint_id, "ep-1");
        assert!(env.require_auth);
        assert_eq!(env.mothership, None);
        assert!(env.resources["gpu"].env_keys.is_empty());

        rm.update(|s| {
            s.environments.get_mut("dev").unwrap().mothership = Some("ep-m".into());
        })
        .unwrap();
        let backup = std::fs::read_to_string(dir.path().join("resources.json.v1.bak")).unwrap();
        assert_eq!(backup, v1, "the original layout is kept as it was");
        let state = rm.load().unwrap();
        assert_eq!(state.version, STATE_VERSION);
        assert_eq!(
            state.environments["dev"].mothership.as_deref(),
            Some("ep-m")
        );
        assert_eq!(
            state.environments["dev"].resources["gpu"].url,
            "http://x/v2/ep-1"
        );
    }

    #[test]
    fn a_newer_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(STATE_FILE),
            br#"{ "version": 99, "environments": {} }"#,
        )
        .unwrap();
        let err = ResourceManager::new(dir.path()).load().unwrap_err();
        assert!(format!("{err:#}").contains("upgrade flash"), "{err:#}");
    }

    #[test]
    fn corrupt_state_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        let err = ResourceManager::new(dir.path()).load().unwrap_err();
        assert!(format!("{err:#}").contains("fix or delete it"), "{err:#}");
    }
}
