//! Atomic file writes: the one helper every crate uses to replace a file (manifests, deploy
//! state, caches, artifacts), so that a crash or a full disk leaves the old file or the new
//! one, never half of one.
//!
//! The content goes to a temporary file in the same directory (`tempfile`, so the name never
//! collides with a concurrent writer), is flushed to disk, then renamed over the target. The
//! new file is readable by everyone (`0644`) unless the caller asks for a private one.
//! [`Staged`] is the same write in steps, for content that does not come from one closure
//! (an upload streamed by an async task).

use std::fs::File;
#[cfg(unix)]
use std::fs::Permissions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Who may read the written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// `0644`: manifests, artifacts, caches.
    Shared,
    /// `0600`: secrets (API keys, credentials).
    Private,
}

/// A replacement of a file being written: a temporary file beside it, which
/// [`Staged::commit`] flushes to disk and renames over the target. Dropped uncommitted, the
/// temporary file is removed and the target left as it was.
///
/// For writers that cannot hand [`write_with`] a closure, such as an async upload that
/// streams into a clone of [`Staged::file`].
#[derive(Debug)]
pub struct Staged {
    tmp: tempfile::NamedTempFile,
    path: PathBuf,
}

impl Staged {
    /// Starts replacing `path`: creates the temporary file in its directory.
    pub fn new(path: &Path, visibility: Visibility) -> io::Result<Self> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut builder = tempfile::Builder::new();
        builder.prefix(".flash-tmp-");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(Permissions::from_mode(match visibility {
                Visibility::Shared => 0o644,
                Visibility::Private => 0o600,
            }));
        }
        #[cfg(not(unix))]
        let _ = visibility;
        Ok(Self {
            tmp: builder.tempfile_in(dir)?,
            path: path.to_path_buf(),
        })
    }

    /// The temporary file, to write the new content into.
    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// Flushes the new content to disk and renames it over the target.
    pub fn commit(mut self) -> io::Result<()> {
        self.tmp.as_file_mut().flush()?;
        self.tmp.as_file().sync_all()?;
        self.tmp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Replaces `path` with what `write` writes.
pub fn write_with(
    path: &Path,
    visibility: Visibility,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let mut staged = Staged::new(path, visibility)?;
    write(staged.file())?;
    staged.commit()
}

/// Replaces `path` with `bytes`, readable by everyone.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, Visibility::Shared, |file| file.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "old").unwrap();
        write(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "old").unwrap();
        let err = write_with(&path, Visibility::Shared, |file| {
            file.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_uncommitted_stage_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("artifact");
        std::fs::write(&path, "old").unwrap();
        let mut staged = Staged::new(&path, Visibility::Shared).unwrap();
        staged.file().write_all(b"partial").unwrap();
        drop(staged);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let mut staged = Staged::new(&path, Visibility::Shared).unwrap();
        staged.file().write_all(b"new").unwrap();
        staged.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn visibility_sets_the_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for (visibility, mode) in [(Visibility::Shared, 0o644), (Visibility::Private, 0o600)] {
            let path = dir.path().join(format!("{mode:o}"));
            write_with(&path, visibility, |f| f.write_all(b"x")).unwrap();
            let actual = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(actual, mode);
        }
    }
}
