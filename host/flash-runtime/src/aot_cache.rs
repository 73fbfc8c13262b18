//! The AOT cache: compiled components on disk, so that a host boots by mapping code it
//! compiled before instead of compiling again (seconds for a Python component).
//!
//! - **Entries**: `<dir>/<component sha256>-<engine compatibility hash>.cwasm`, written
//!   atomically. The component's sha256 is the one its manifest pins, so a host whose cache
//!   holds it does not even unpack the component (see `flash_host::app::needed_files`).
//! - **Trust**: loading an entry runs its native code, so an entry is used only when the
//!   directory and the file belong to this user and nobody else can write them.
//! - **Size**: bounded by [`AotCache::max_bytes`] (`FLASH_CACHE_MAX_MB`, default
//!   [`DEFAULT_MAX_BYTES`]). Each hit marks its entry as used (its modification time); each
//!   store then removes the least recently used entries until the cache fits again. Every
//!   changed component leaves a new entry behind (≈ 36 MB for Python), so without this the
//!   cache grows without bound. Removing an entry that another process has mapped is safe
//!   on Unix (the mapping keeps the file alive); a host that finds an entry gone compiles.
//! - `flash cache info` and `flash cache clean` show and empty it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

/// Default size bound of the cache: about 55 Python components, or thousands of Rust ones.
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;

/// Temporary files older than this are left over from a writer that died mid-write.
const STALE_TEMP_AGE: Duration = Duration::from_secs(600);

const ENTRY_SUFFIX: &str = ".cwasm";

/// An AOT cache directory and its size bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AotCache {
    dir: PathBuf,
    max_bytes: u64,
}

/// What a cache holds, or what a clean removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheUsage {
    pub entries: usize,
    pub bytes: u64,
}

/// `FLASH_CACHE_DIR`, else `$XDG_CACHE_HOME/flash`, else `~/.cache/flash`, plus `/aot`,
/// read from the process environment.
pub fn default_dir() -> Option<PathBuf> {
    dir_from(process_var)
}

/// Like [`default_dir`], reading variables through `var` (blank means unset).
pub fn dir_from(var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let base = var("FLASH_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| var("XDG_CACHE_HOME").map(|v| PathBuf::from(v).join("flash")))
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache").join("flash")))?;
    Some(base.join("aot"))
}

/// `FLASH_CACHE_MAX_MB` in bytes, else [`DEFAULT_MAX_BYTES`]; a value that is not a number
/// of MiB is an error naming the variable.
pub fn max_bytes_from(var: impl Fn(&str) -> Option<String>) -> Result<u64> {
    match var("FLASH_CACHE_MAX_MB") {
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(|mb| mb.saturating_mul(1 << 20))
            .with_context(|| {
                format!(
                    "FLASH_CACHE_MAX_MB=`{v}` is not a whole number of MiB (the AOT cache's size \
                     bound)"
                )
            }),
        None => Ok(DEFAULT_MAX_BYTES),
    }
}

fn process_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl AotCache {
    pub fn new(dir: PathBuf, max_bytes: u64) -> Self {
        Self { dir, max_bytes }
    }

    /// The cache of this user, from the process environment (see [`dir_from`] and
    /// [`max_bytes_from`]); `Ok(None)` when no cache directory can be named.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(process_var)
    }

    /// Like [`from_env`](Self::from_env), reading variables through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let max_bytes = max_bytes_from(&var)?;
        Ok(dir_from(var).map(|dir| Self::new(dir, max_bytes)))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Where the entry of the component with sha256 `sha256` compiled by an engine with
    /// compatibility key `compat` lives.
    pub fn entry_path(&self, sha256: &str, compat: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{compat}{ENTRY_SUFFIX}"))
    }

    /// The path of the entry for `sha256`, if there is one this user alone could have
    /// written; marks it as used. An untrusted entry is skipped with a warning.
    pub fn lookup(&self, sha256: &str, compat: &str) -> Option<PathBuf> {
        let path = self.entry_path(sha256, compat);
        if !path.is_file() {
            return None;
        }
        if let Err(why) = trusted_entry(&self.dir, &path) {
            tracing::warn!(
                "not using AOT cache entry {}: {why}; compiling instead",
                path.display()
            );
            return None;
        }
        // Recency for eviction. Failing to record it only makes the entry look older.
        if let Ok(file) = std::fs::File::options().write(true).open(&path) {
            let _ = file.set_modified(SystemTime::now());
        }
        Some(path)
    }

    /// Writes the entry for `sha256`, then evicts least recently used entries (never this
    /// one) until the cache fits its bound.
    pub fn store(&self, sha256: &str, compat: &str, bytes: &[u8]) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700));
        }
        let path = self.entry_path(sha256, compat);
        flash_manifest::atomic::write(&path, bytes)?;
        match self.evict_to(self.max_bytes, Some(&path)) {
            Ok(freed) if freed.entries > 0 => tracing::info!(
                entries = freed.entries,
                mib = freed.bytes >> 20,
                "evicted least recently used AOT cache entries (bound: FLASH_CACHE_MAX_MB={})",
                self.max_bytes >> 20
            ),
            Ok(_) => {}
            Err(err) => tracing::warn!("could not evict AOT cache entries: {err:#}"),
        }
        Ok(path)
    }

    /// Entries and bytes the cache holds now.
    pub fn usage(&self) -> Result<CacheUsage> {
        let entries = self.entries()?;
        Ok(CacheUsage {
            entries: entries.len(),
            bytes: entries.iter().map(|e| e.bytes).sum(),
        })
    }

    /// Removes least recently used entries (never `keep`) until at most `max_bytes` remain,
    /// and temporary files left by writers that died; returns what was removed.
    pub fn evict_to(&self, max_bytes: u64, keep: Option<&Path>) -> Result<CacheUsage> {
        let mut entries = self.entries()?;
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        let mut freed = CacheUsage::default();
        // Oldest first.
        entries.sort_by_key(|e| e.used);
        for entry in entries {
            if total <= max_bytes {
                break;
            }
            if keep == Some(entry.path.as_path()) {
                continue;
            }
            match std::fs::remove_file(&entry.path) {
                Ok(()) => {
                    total -= entry.bytes;
                    freed.entries += 1;
                    freed.bytes += entry.bytes;
                }
                // Another process evicted it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => total -= entry.bytes,
                Err(e) => {
                    return Err(e).with_context(|| format!("removing {}", entry.path.display()));
                }
            }
        }
        self.remove_stale_temp_files();
        Ok(freed)
    }

    /// Removes every entry; returns what was removed.
    pub fn clear(&self) -> Result<CacheUsage> {
        self.evict_to(0, None)
    }

    /// The `.cwasm` entries (a missing directory holds none).
    fn entries(&self) -> Result<Vec<Entry>> {
        let read = match std::fs::read_dir(&self.dir) {
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.dir.display())),
        };
        let mut entries = Vec::new();
        for item in read {
            let item = item.with_context(|| format!("reading {}", self.dir.display()))?;
            if !item.file_name().to_string_lossy().ends_with(ENTRY_SUFFIX) {
                continue;
            }
            // Entries removed meanwhile by another process are skipped.
            let Ok(meta) = item.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            entries.push(Entry {
                path: item.path(),
                bytes: meta.len(),
                used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        Ok(entries)
    }

    /// Temporary files of atomic writes (`.tmp*`) older than [`STALE_TEMP_AGE`].
    fn remove_stale_temp_files(&self) {
        let Ok(read) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for item in read.flatten() {
            let stale = item.file_name().to_string_lossy().starts_with(".tmp")
                && item
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_TEMP_AGE);
            if stale {
                let _ = std::fs::remove_file(item.path());
            }
        }
    }
}

struct Entry {
    path: PathBuf,
    bytes: u64,
    used: SystemTime,
}

/// Whether a cache entry can only have been written by this user: the directory and the
/// file belong to us, and neither is writable by group or others.
fn trusted_entry(dir: &Path, path: &Path) -> std::result::Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let me = std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .map_err(|e| format!("cannot tell which user this process runs as ({e})"))?;
        for item in [dir, path] {
            let meta = std::fs::metadata(item)
                .map_err(|e| format!("cannot read {} ({e})", item.display()))?;
            if meta.uid() != me {
                return Err(format!("{} belongs to another user", item.display()));
            }
            if meta.mode() & 0o022 != 0 {
                return Err(format!(
                    "{} is writable by other users (mode {:o})",
                    item.display(),
                    meta.mode() & 0o777
                ));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (dir, path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aged(path: &Path, seconds_ago: u64) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(seconds_ago))
            .unwrap();
    }

    #[test]
    fn a_store_past_the_bound_evicts_the_least_recently_used_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = AotCache::new(dir.path().join("aot"), 250);
        for (sha, age) in [("a", 300), ("b", 200), ("c", 100)] {
            let path = cache.store(sha, "k", &[0u8; 100]).unwrap();
            aged(&path, age);
        }
        // Storing `c` made three entries of 100 bytes under a bound of 250: `a`, the
        // oldest, went. Using `b` now makes it the most recent.
        assert!(!cache.entry_path("a", "k").exists());
        assert!(cache.lookup("b", "k").is_some());
        cache.store("d", "k", &[0u8; 100]).unwrap();
        assert!(
            !cache.entry_path("c", "k").exists(),
            "c was the least recently used"
        );
        assert!(cache.entry_path("b", "k").exists());
        assert!(cache.entry_path("d", "k").exists());
        assert_eq!(
            cache.usage().unwrap(),
            CacheUsage {
                entries: 2,
                bytes: 200
            }
        );
    }

    #[test]
    fn an_entry_larger_than_the_bound_is_kept_until_the_next_store() {
        let dir = tempfile::tempdir().unwrap();
        let cache = AotCache::new(dir.path().to_path_buf(), 10);
        cache.store("big", "k", &[0u8; 100]).unwrap();
        assert!(cache.lookup("big", "k").is_some());
        cache.store("next", "k", &[0u8; 100]).unwrap();
        assert!(cache.lookup("big", "k").is_none());
    }

    #[test]
    fn clear_removes_every_entry_and_only_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = AotCache::new(dir.path().to_path_buf(), DEFAULT_MAX_BYTES);
        cache.store("a", "k", &[1u8; 10]).unwrap();
        cache.store("b", "k", &[1u8; 20]).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not an entry").unwrap();
        let stale = dir.path().join(".tmpdead");
        std::fs::write(&stale, "half written").unwrap();
        aged(&stale, 3600);
        assert_eq!(
            cache.clear().unwrap(),
            CacheUsage {
                entries: 2,
                bytes: 30
            }
        );
        assert_eq!(cache.usage().unwrap(), CacheUsage::default());
        assert!(dir.path().join("notes.txt").exists());
        assert!(!stale.exists());
        // A cache that was never written is empty, not an error.
        let none = AotCache::new(dir.path().join("never"), 1);
        assert_eq!(none.clear().unwrap(), CacheUsage::default());
    }

    #[cfg(unix)]
    #[test]
    fn entries_others_could_write_are_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let entry = dir.path().join("x.cwasm");
        std::fs::write(&entry, b"native code").unwrap();
        let mode = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        mode(dir.path(), 0o700);
        mode(&entry, 0o644);
        assert_eq!(trusted_entry(dir.path(), &entry), Ok(()));
        mode(&entry, 0o666);
        let why = trusted_entry(dir.path(), &entry).unwrap_err();
        assert!(why.contains("writable by other users"), "{why}");
        mode(&entry, 0o644);
        mode(dir.path(), 0o777);
        assert!(trusted_entry(dir.path(), &entry).is_err());
        mode(dir.path(), 0o700);
    }
}
