//! Watching a project's sources for `flash run --watch`, Spin's `spin watch` loop.
//!
//! File-system events are debounced (an editor's save is several events; a `git checkout`
//! is hundreds) and filtered: what builds write (`.flash/`, `target/`, `__pycache__/`) and
//! hidden files never trigger a rebuild, or every build would trigger the next.
//! [`SourceWatcher::next_change`] yields the changed source files of one burst.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use tokio::sync::mpsc;

/// How long a burst of events must be quiet before it counts as one change.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(300);

/// Directory names whose contents are build output or tooling state, never sources.
const IGNORED_DIRS: &[&str] = &[
    ".flash",
    "target",
    "__pycache__",
    "node_modules",
    ".git",
    ".venv",
    "venv",
];

/// Debounced changes to a project's source files.
pub struct SourceWatcher {
    root: PathBuf,
    changes: mpsc::UnboundedReceiver<Vec<PathBuf>>,
    _debouncer: Debouncer<RecommendedWatcher>,
}

impl SourceWatcher {
    /// Watches `root` recursively.
    pub fn new(root: &Path, debounce: Duration) -> Result<Self> {
        let root = root
            .canonicalize()
            .with_context(|| format!("resolving {}", root.display()))?;
        let (tx, changes) = mpsc::unbounded_channel();
        let filter_root = root.clone();
        let mut debouncer =
            new_debouncer(debounce, move |result: DebounceEventResult| match result {
                Ok(events) => {
                    let mut paths: Vec<PathBuf> = events
                        .into_iter()
                        .map(|e| e.path)
                        .filter(|p| is_source(&filter_root, p))
                        .collect();
                    paths.sort();
                    paths.dedup();
                    if !paths.is_empty() {
                        let _ = tx.send(paths);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watching the project's files"),
            })
            .context("starting the file watcher")?;
        debouncer
            .watcher()
            .watch(&root, RecursiveMode::Recursive)
            .with_context(|| format!("watching {}", root.display()))?;
        Ok(Self {
            root,
            changes,
            _debouncer: debouncer,
        })
    }

    /// The next burst of changed source files, relative to the project root; `None` when
    /// the watcher stopped.
    pub async fn next_change(&mut self) -> Option<Vec<PathBuf>> {
        let paths = self.changes.recv().await?;
        Some(
            paths
                .into_iter()
                .map(|p| {
                    p.strip_prefix(&self.root)
                        .map(Path::to_path_buf)
                        .unwrap_or(p)
                })
                .collect(),
        )
    }
}

/// Whether a change to `path` (under `root`) can change what `flash build` produces.
pub fn is_source(root: &Path, path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(root) else {
        return false;
    };
    relative.components().all(|c| {
        let name = c.as_os_str().to_string_lossy();
        !name.starts_with('.') && !IGNORED_DIRS.contains(&name.as_ref())
    }) && !relative.as_os_str().is_empty()
        && !relative.to_string_lossy().ends_with('~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_output_and_hidden_files_are_not_sources() {
        let root = Path::new("/p");
        for source in [
            "/p/src/lib.rs",
            "/p/main.py",
            "/p/flash.toml",
            "/p/pkg/util.py",
        ] {
            assert!(is_source(root, Path::new(source)), "{source}");
        }
        for not_source in [
            "/p/.flash/artifact.tar.gz",
            "/p/target/debug/x",
            "/p/pkg/__pycache__/util.cpython-314.pyc",
            "/p/.git/index",
            "/p/.main.py.swp",
            "/p/main.py~",
            "/elsewhere/main.py",
            "/p",
        ] {
            assert!(!is_source(root, Path::new(not_source)), "{not_source}");
        }
    }

    #[tokio::test]
    async fn an_edit_is_reported_once_and_build_output_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.py"), "x = 1\n").unwrap();
        std::fs::create_dir(dir.path().join(".flash")).unwrap();
        let mut watcher = SourceWatcher::new(dir.path(), Duration::from_millis(100)).unwrap();
        std::fs::write(dir.path().join(".flash").join("artifact.tar.gz"), "out").unwrap();
        std::fs::write(dir.path().join("main.py"), "x = 2\n").unwrap();
        let change = tokio::time::timeout(Duration::from_secs(10), watcher.next_change())
            .await
            .expect("a change within 10 s")
            .expect("the watcher runs");
        assert_eq!(change, [PathBuf::from("main.py")]);
    }
}
