//! Watching a project's sources for `flash run --watch`, Spin's `spin watch` loop.
//!
//! File-system events are debounced (an editor's save is several events; a `git checkout`
//! is hundreds) and filtered: only the build's inputs count (`flash.toml`, each component's
//! directory, the model files), and never what builds write (`.flash/`, `target/`,
//! `__pycache__/`) or hidden files, or every build would trigger the next. A file counts as
//! changed only when its content did: builds open and read every source (and the
//! file-system reports reads and `touch`es as events too), which must not start a rebuild.
//! [`SourceWatcher::next_change`] yields the changed source files of one burst.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use sha2::{Digest, Sha256};
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

/// The files and directories (relative to the project root) whose changes can change what
/// `flash build` produces.
pub fn build_inputs(project: &crate::project::Project) -> Vec<PathBuf> {
    let mut inputs = vec![PathBuf::from(crate::project::PROJECT_FILE)];
    inputs.extend(project.file.components.iter().map(|c| c.path.clone()));
    inputs.extend(project.file.models.iter().map(|m| m.path.clone()));
    inputs
}

impl SourceWatcher {
    /// Watches `inputs` (relative to `root`; a directory counts with everything in it).
    pub fn new(root: &Path, inputs: &[PathBuf], debounce: Duration) -> Result<Self> {
        let root = root
            .canonicalize()
            .with_context(|| format!("resolving {}", root.display()))?;
        let (tx, changes) = mpsc::unbounded_channel();
        let filter_root = root.clone();
        let inputs: Vec<PathBuf> = inputs.iter().map(|i| normalize(i)).collect();
        let mut contents = ContentIndex::scan(&root, &inputs);
        let mut debouncer =
            new_debouncer(debounce, move |result: DebounceEventResult| match result {
                Ok(events) => {
                    let mut paths: Vec<PathBuf> = events
                        .into_iter()
                        .map(|e| e.path)
                        .filter(|p| is_source(&filter_root, &inputs, p))
                        .collect();
                    paths.sort();
                    paths.dedup();
                    paths.retain(|p| contents.changed(p));
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

/// The sha256 of every source file, to tell an edit from a read or a `touch`.
struct ContentIndex(HashMap<PathBuf, [u8; 32]>);

impl ContentIndex {
    /// Hashes every source file under `inputs`.
    fn scan(root: &Path, inputs: &[PathBuf]) -> Self {
        let mut index = HashMap::new();
        let mut pending: Vec<PathBuf> = inputs.iter().map(|i| root.join(i)).collect();
        while let Some(path) = pending.pop() {
            if path.is_dir() {
                if let Ok(entries) = std::fs::read_dir(&path) {
                    pending.extend(entries.flatten().map(|e| e.path()));
                }
            } else if is_source(root, inputs, &path)
                && let Some(hash) = hash_file(&path)
            {
                index.insert(path, hash);
            }
        }
        Self(index)
    }

    /// Whether `path`'s content differs from what was last seen (created and deleted files
    /// count); records the new content. Directories never count themselves.
    fn changed(&mut self, path: &Path) -> bool {
        if path.is_dir() {
            return false;
        }
        let now = hash_file(path);
        let before = match now {
            Some(hash) => self.0.insert(path.to_path_buf(), hash),
            None => self.0.remove(path),
        };
        before != now
    }
}

fn hash_file(path: &Path) -> Option<[u8; 32]> {
    let bytes = std::fs::read(path).ok()?;
    Some(Sha256::digest(&bytes).into())
}

/// `./python` → `python`; `.` → `` (the whole project).
fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

/// Whether a change to `path` (under `root`) can change what `flash build` produces: it is
/// one of `inputs` or inside one, and not build output, tooling state or a hidden file.
pub fn is_source(root: &Path, inputs: &[PathBuf], path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(root) else {
        return false;
    };
    !relative.as_os_str().is_empty()
        && inputs.iter().any(|input| relative.starts_with(input))
        && relative.components().all(|c| {
            let name = c.as_os_str().to_string_lossy();
            !name.starts_with('.') && !IGNORED_DIRS.contains(&name.as_ref())
        })
        && !relative.to_string_lossy().ends_with('~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_build_inputs_are_sources() {
        let root = Path::new("/p");
        let inputs = [
            PathBuf::from("flash.toml"),
            normalize(Path::new("./python")),
        ];
        assert!(is_source(root, &inputs, Path::new("/p/python/app.py")));
        assert!(is_source(root, &inputs, Path::new("/p/flash.toml")));
        assert!(!is_source(root, &inputs, Path::new("/p/run.log")));
        assert!(!is_source(root, &inputs, Path::new("/p/rust/src/lib.rs")));
    }

    #[test]
    fn build_output_and_hidden_files_are_not_sources() {
        let root = Path::new("/p");
        let inputs = [normalize(Path::new("."))];
        for source in [
            "/p/src/lib.rs",
            "/p/main.py",
            "/p/flash.toml",
            "/p/pkg/util.py",
        ] {
            assert!(is_source(root, &inputs, Path::new(source)), "{source}");
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
            assert!(
                !is_source(root, &inputs, Path::new(not_source)),
                "{not_source}"
            );
        }
    }

    #[tokio::test]
    async fn an_edit_is_reported_once_and_build_output_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.py"), "x = 1\n").unwrap();
        std::fs::create_dir(dir.path().join(".flash")).unwrap();
        let mut watcher = SourceWatcher::new(
            dir.path(),
            &[PathBuf::from(".")],
            Duration::from_millis(100),
        )
        .unwrap();
        std::fs::write(dir.path().join(".flash").join("artifact.tar.gz"), "out").unwrap();
        // Reads and rewrites of the same content are not changes.
        std::fs::read(dir.path().join("main.py")).unwrap();
        std::fs::write(dir.path().join("main.py"), "x = 1\n").unwrap();
        std::fs::write(dir.path().join("main.py"), "x = 2\n").unwrap();
        let change = tokio::time::timeout(Duration::from_secs(10), watcher.next_change())
            .await
            .expect("a change within 10 s")
            .expect("the watcher runs");
        assert_eq!(change, [PathBuf::from("main.py")]);
    }
}
