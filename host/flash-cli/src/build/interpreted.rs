//! What the builds of interpreted guests (Python and JavaScript) share: both bundle an
//! interpreter that a toolchain pre-initialises and snapshots into the component, so both
//! need the same things to build reproducibly and not twice:
//!
//! - [`Preinit`]: the deterministic pre-initialisation (`preinit_shim.c`, preloaded into
//!   componentize-py or wizer), which fixes the random bytes, clocks and file identities
//!   the snapshot would otherwise capture;
//! - [`hash_tree`]: the sources' part of a build's fingerprint (an unchanged project is not
//!   rebuilt);
//! - [`cache_dir`], where toolchains and shims are kept, and [`run`] for toolchain commands.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// The pre-initialisation shim (`preinit_shim.c`, built by `build.rs` on x86_64 Linux).
#[cfg(flash_preinit_shim)]
const PREINIT_SHIM: Option<&[u8]> = Some(include_bytes!(concat!(
    env!("OUT_DIR"),
    "/libflash_preinit.so"
)));
#[cfg(not(flash_preinit_shim))]
const PREINIT_SHIM: Option<&[u8]> = None;

/// Feeds every file under `dir` (paths relative to `root`, in name order, with their
/// lengths) into `hasher`: the sources' part of a build fingerprint.
pub(super) fn hash_tree(root: &Path, dir: &Path, hasher: &mut Sha256) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            hash_tree(root, &path, hasher)?;
        } else {
            let relative = path.strip_prefix(root).expect("walked from root");
            hasher.update(relative.to_string_lossy().as_bytes());
            hasher.update([0]);
            let bytes = std::fs::read(&path)?;
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(&bytes);
        }
    }
    Ok(())
}

/// `FLASH_CACHE_DIR`, else `$XDG_CACHE_HOME/flash`, else `~/.cache/flash`.
pub(super) fn cache_dir() -> Result<PathBuf> {
    flash_runtime::aot_cache::default_dir()
        .map(|aot| aot.parent().map(Path::to_path_buf).unwrap_or(aot))
        .context("no cache directory: set FLASH_CACHE_DIR (or HOME)")
}

/// Deterministic random bytes, clocks and file metadata while a toolchain pre-initialises
/// a guest's interpreter (`preinit_shim.c`): componentize-py for Python, wizer for
/// JavaScript.
pub(super) enum Preinit {
    Shim(&'static [u8]),
    /// Not used, and why.
    Off(&'static str),
}

impl Preinit {
    pub(super) fn for_this_build() -> Self {
        if std::env::var_os("FLASH_PYTHON_REPRODUCIBLE").is_some_and(|v| v == "0") {
            return Self::Off(
                "FLASH_PYTHON_REPRODUCIBLE=0 turns Flash's deterministic pre-initialisation off",
            );
        }
        match PREINIT_SHIM {
            Some(library) => Self::Shim(library),
            None => Self::Off(
                "Flash makes componentize-py's pre-initialisation deterministic on x86_64 Linux only",
            ),
        }
    }

    /// What the fingerprint records of it.
    pub(super) fn recipe(&self) -> &'static str {
        match self {
            Self::Shim(_) => include_str!("preinit_shim.c"),
            Self::Off(_) => "no pre-initialisation shim",
        }
    }

    /// Writes the shim into `cache` (once per content) for a build whose inputs have the
    /// digest `seed`; its status file goes into `work`.
    pub(super) fn prepare(
        &self,
        cache: &Path,
        seed: &str,
        work: &Path,
        output: &dyn Fn(&str),
    ) -> Result<Option<PreloadedShim>> {
        let library = match self {
            Self::Off(why) => {
                output(&format!(
                    "note: {why}: another build of the same sources can give different \
                     component bytes (docs/python-sdk.md#reproducible-builds)"
                ));
                return Ok(None);
            }
            Self::Shim(bytes) => {
                let digest = hex::encode(Sha256::digest(bytes));
                let library = cache.join(format!("preinit-{}.so", &digest[..16]));
                if std::fs::read(&library).ok().as_deref() != Some(*bytes) {
                    std::fs::create_dir_all(cache)
                        .with_context(|| format!("creating {}", cache.display()))?;
                    flash_manifest::atomic::write(&library, bytes)
                        .with_context(|| format!("writing {}", library.display()))?;
                }
                library
            }
        };
        // LD_PRELOAD separates libraries with spaces and colons.
        if library.to_string_lossy().contains([' ', ':']) {
            output(&format!(
                "note: the cache directory's path ({}) has a space or a colon, which LD_PRELOAD \
                 cannot carry, so Flash's deterministic pre-initialisation is off: another \
                 build of the same sources can give different component bytes (set \
                 FLASH_CACHE_DIR to another directory)",
                cache.display()
            ));
            return Ok(None);
        }
        let stamp = work.join("preinit.status");
        let _ = std::fs::remove_file(&stamp);
        Ok(Some(PreloadedShim {
            library,
            seed: seed.to_string(),
            stamp,
        }))
    }
}

/// The shim, ready to be loaded into componentize-py.
pub(super) struct PreloadedShim {
    library: PathBuf,
    /// Seeds its random bytes: the digest of the build's inputs.
    seed: String,
    /// Where it writes `ok`, or why it could not take effect.
    stamp: PathBuf,
}

impl PreloadedShim {
    /// The environment that loads it into another program (wizer, for JavaScript
    /// components).
    pub(super) fn env(&self) -> [(&'static str, String); 3] {
        [
            ("LD_PRELOAD", self.library.to_string_lossy().into_owned()),
            ("FLASH_PREINIT_SEED", self.seed.clone()),
            (
                "FLASH_PREINIT_STAMP",
                self.stamp.to_string_lossy().into_owned(),
            ),
        ]
    }

    /// After the program that loaded it (`loader`, as a user reads it) ran: why the shim did
    /// not take effect, or `None` when it did.
    pub(super) fn failure(&self, loader: &str) -> Option<String> {
        match std::fs::read_to_string(&self.stamp) {
            Ok(status) if status.trim() == "ok" => None,
            Ok(status) => Some(status.trim().trim_start_matches("error: ").to_string()),
            Err(_) => Some(format!(
                "{} was not loaded into {loader} (a statically linked program ignores \
                 LD_PRELOAD; a cache directory on a noexec file system cannot be mapped)",
                self.library.display()
            )),
        }
    }

    /// Loads it into `command`, before any library the environment already preloads.
    pub(super) fn apply(&self, command: &mut Command) {
        let mut preload = self.library.as_os_str().to_owned();
        if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
            preload.push(" ");
            preload.push(existing);
        }
        command
            .env("LD_PRELOAD", preload)
            .env("FLASH_PREINIT_SEED", &self.seed)
            .env("FLASH_PREINIT_STAMP", &self.stamp);
    }
}

/// Runs `command` to completion; a failure names `what` and carries its output.
pub(super) fn run(command: &mut Command, what: &str) -> Result<()> {
    let result = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| what.to_string())?;
    if !result.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            result.status,
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        );
    }
    Ok(())
}
