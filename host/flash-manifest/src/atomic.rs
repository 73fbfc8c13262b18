//! Atomic file writes: the one helper every crate uses to replace a file (manifests, deploy
//! state, caches, artifacts), so that a crash or a full disk leaves the old file or the new
//! one, never half of one.
//!
//! The content goes to a temporary file in the same directory (`tempfile`, so the name never
//! collides with a concurrent writer), is flushed to disk, then renamed over the target. The
//! new file is readable by everyone (`0644`) unless the caller asks for a private one.

use std::fs::File;
#[cfg(unix)]
use std::fs::Permissions;
use std::io::{self, Write};
use std::path::Path;

/// Who may read the written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// `0644`: manifests, artifacts, caches.
    Shared,
    /// `0600`: secrets (API keys, credentials).
    Private,
}

/// Replaces `path` with what `write` writes.
pub fn write_with(
    path: &Path,
    visibility: Visibility,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
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
    let mut tmp = builder.tempfile_in(dir)?;
    write(tmp.as_file_mut())?;
    tmp.as_file_mut().flush()?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
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
