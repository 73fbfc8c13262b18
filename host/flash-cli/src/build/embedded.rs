//! Files built into the `flash` binary (see `build.rs`): the Python and JavaScript SDKs
//! and the WIT contract. `flash build` writes them into the cache directory once per content, so Python
//! components build the same way inside and outside a checkout of this repository.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

mod files {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

/// A tree of text files, by path relative to its root.
#[derive(Debug, Clone, Copy)]
pub struct Tree {
    /// Names the cache directory (`<name>-<digest>`).
    pub name: &'static str,
    pub files: &'static [(&'static str, &'static str)],
}

/// The `flash_sdk` package: paths are relative to the package folder, so it is written
/// with the prefix `flash_sdk`.
pub const PYTHON_SDK: Tree = Tree {
    name: "python-sdk",
    files: files::PYTHON_SDK,
};

/// The JavaScript SDK's TypeScript sources (`guest-sdk/js/src`), bundled into every
/// JavaScript component by esbuild.
pub const JS_SDK: Tree = Tree {
    name: "js-sdk",
    files: files::JS_SDK,
};

/// `wit/`: `flash.wit` and `deps/`.
pub const WIT: Tree = Tree {
    name: "wit",
    files: files::WIT,
};

impl Tree {
    /// sha256 over every path and content, in order.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        for (path, content) in self.files {
            hasher.update((path.len() as u64).to_le_bytes());
            hasher.update(path.as_bytes());
            hasher.update((content.len() as u64).to_le_bytes());
            hasher.update(content.as_bytes());
        }
        hex::encode(hasher.finalize())
    }

    /// Writes the files under `<cache>/<name>-<digest>/<prefix>` (once: an existing
    /// directory of that digest is reused) and returns `<cache>/<name>-<digest>`.
    pub fn write(&self, cache: &Path, prefix: &str) -> Result<PathBuf> {
        let root = cache.join(format!("{}-{}", self.name, &self.digest()[..16]));
        if root.is_dir() {
            return Ok(root);
        }
        std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{}-", self.name))
            .tempdir_in(cache)
            .with_context(|| format!("creating a directory in {}", cache.display()))?;
        for (path, content) in self.files {
            let file = staging.path().join(prefix).join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&file, content)
                .with_context(|| format!("writing {}", file.display()))?;
        }
        // Another build may have written the same digest meanwhile: then its copy stays
        // (and `staging` is removed when dropped).
        match std::fs::rename(staging.path(), &root) {
            Ok(()) => Ok(root),
            Err(_) if root.is_dir() => Ok(root),
            Err(e) => Err(e).with_context(|| format!("moving files to {}", root.display())),
        }
    }
}
