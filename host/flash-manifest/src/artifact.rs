//! `artifact.tar.gz`: packing it reproducibly and unpacking it safely.
//!
//! Layout: `flash_manifest.json` at the root, `components/<name>.wasm`, and
//! `models/<name>.onnx` for the models hosts preload. Packing writes entries in sorted order with fixed metadata (mode 0644,
//! uid/gid 0, no user names, mtime from `SOURCE_DATE_EPOCH` or 0) and a gzip header without
//! a timestamp, so the same inputs always give the same bytes and the same sha256.
//!
//! Unpacking treats the archive as hostile: only regular files and directories are
//! accepted, every path must be relative and free of `..`, sizes are bounded, and every
//! component's and model's sha256 must match the manifest before anything is served.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use flate2::Compression;

use crate::manifest::{MANIFEST_FILE_NAME, Manifest};

/// The artifact's file name under `.flash/`.
pub const ARTIFACT_FILE_NAME: &str = "artifact.tar.gz";

/// Limits applied while unpacking.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    /// Largest total of unpacked bytes.
    pub max_total_bytes: u64,
    /// Largest number of entries.
    pub max_entries: usize,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_total_bytes: 4 << 30,
            max_entries: 10_000,
        }
    }
}

/// Packs `manifest` plus `files` (artifact path → local file) into `out`.
///
/// Every artifact path must be relative (`components/x.wasm`); the manifest is written at
/// the root. `mtime` is the timestamp stored for every entry.
pub fn pack(
    out: &Path,
    manifest: &Manifest,
    files: &[(String, PathBuf)],
    mtime: u64,
) -> Result<()> {
    let mut sorted: Vec<&(String, PathBuf)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut dirs = BTreeSet::new();
    for (path, _) in &sorted {
        check_entry_path(Path::new(path)).with_context(|| format!("artifact path `{path}`"))?;
        let mut parent = Path::new(path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.to_path_buf());
            parent = p.parent();
        }
    }

    crate::atomic::write_with(out, crate::atomic::Visibility::Shared, |file| {
        write_tar(file, manifest, &dirs, &sorted, mtime)
            .map_err(|e| std::io::Error::other(format!("{e:#}")))
    })
    .with_context(|| format!("writing {}", out.display()))
}

/// The gzip'd tar stream of an artifact.
fn write_tar(
    file: &mut std::fs::File,
    manifest: &Manifest,
    dirs: &BTreeSet<PathBuf>,
    sorted: &[&(String, PathBuf)],
    mtime: u64,
) -> Result<()> {
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(file, Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);

    append(
        &mut tar,
        MANIFEST_FILE_NAME,
        &manifest.to_json_pretty(),
        mtime,
    )?;
    for dir in dirs {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        tar.append_data(&mut header, dir, std::io::empty())
            .with_context(|| format!("adding directory {}", dir.display()))?;
    }
    for (path, local) in sorted {
        let bytes = std::fs::read(local).with_context(|| format!("reading {}", local.display()))?;
        append(&mut tar, path, &bytes, mtime)?;
    }
    let gz = tar.into_inner().context("finishing the tar stream")?;
    let file = gz.finish().context("finishing the gzip stream")?;
    file.flush()?;
    Ok(())
}

fn append<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8], mtime: u64) -> Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(bytes.len() as u64);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    tar.append_data(&mut header, path, bytes)
        .with_context(|| format!("adding {path} to the artifact"))
}

/// The mtime stored in artifacts: `SOURCE_DATE_EPOCH` when set, else 0.
pub fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds")),
        _ => Ok(0),
    }
}

/// Relative, no `..`, no root, no prefix: the only paths an artifact may contain.
fn check_entry_path(path: &Path) -> Result<()> {
    ensure!(!path.as_os_str().is_empty(), "empty path");
    for component in path.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => bail!("`..` is not allowed in artifact paths"),
            Component::RootDir | Component::Prefix(_) => bail!("absolute paths are not allowed"),
        }
    }
    Ok(())
}

/// Unpacks `archive` into `dest` (created if missing, must not already hold files of the
/// archive) and verifies it; returns the manifest.
pub fn unpack(archive: &Path, dest: &Path, limits: UnpackLimits) -> Result<Manifest> {
    let file = std::fs::File::open(archive)
        .with_context(|| format!("opening artifact {}", archive.display()))?;
    unpack_from(file, dest, limits)
        .with_context(|| format!("unpacking artifact {}", archive.display()))
}

/// Like [`unpack`], from any reader of gzip'd tar bytes.
pub fn unpack_from(reader: impl Read, dest: &Path, limits: UnpackLimits) -> Result<Manifest> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let dest = dest
        .canonicalize()
        .with_context(|| format!("resolving {}", dest.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let mut total: u64 = 0;
    let mut count = 0usize;
    for entry in tar.entries().context("reading the tar stream")? {
        let mut entry = entry.context("reading a tar entry")?;
        count += 1;
        ensure!(
            count <= limits.max_entries,
            "artifact has more than {} entries",
            limits.max_entries
        );
        let path = entry
            .path()
            .context("tar entry with an unreadable path")?
            .into_owned();
        check_entry_path(&path)
            .with_context(|| format!("refusing artifact entry `{}`", path.display()))?;
        let target = dest.join(&path);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&target)
                    .with_context(|| format!("creating {}", target.display()))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().context("tar entry without a size")?;
                total = total.saturating_add(size);
                ensure!(
                    total <= limits.max_total_bytes,
                    "artifact unpacks to more than {} bytes",
                    limits.max_total_bytes
                );
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                    // A directory created earlier cannot be a link (we never create links),
                    // but make sure nothing outside `dest` is reached.
                    let resolved = parent.canonicalize()?;
                    ensure!(
                        resolved.starts_with(&dest),
                        "refusing artifact entry `{}`: it resolves outside the artifact directory",
                        path.display()
                    );
                }
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .with_context(|| format!("creating {} (duplicate entry?)", target.display()))?;
                std::io::copy(&mut (&mut entry).take(size), &mut out)
                    .with_context(|| format!("writing {}", target.display()))?;
            }
            other => bail!(
                "refusing artifact entry `{}`: {:?} entries (links, devices) are not allowed",
                path.display(),
                other
            ),
        }
    }
    let manifest = Manifest::read(&dest.join(MANIFEST_FILE_NAME))
        .context("the artifact has no readable flash_manifest.json at its root")?;
    verify_dir(&dest, &manifest)?;
    Ok(manifest)
}

/// Checks that every component the manifest lists exists under `dir` with its sha256, and
/// that every function points at a listed component.
pub fn verify_dir(dir: &Path, manifest: &Manifest) -> Result<()> {
    for (path, entry) in &manifest.components {
        check_entry_path(Path::new(path))
            .with_context(|| format!("manifest component `{path}`"))?;
        let bytes = std::fs::read(dir.join(path)).with_context(|| {
            format!("artifact component `{path}` is missing; rebuild with `flash build`")
        })?;
        let actual = crate::sha256_hex(&bytes);
        ensure!(
            actual == entry.sha256,
            "artifact component `{path}` sha256 mismatch: expected {}, got {actual}; the artifact \
             is corrupt or was tampered with, rebuild it with `flash build`",
            entry.sha256
        );
    }
    for (name, model) in &manifest.models {
        check_entry_path(Path::new(&model.file))
            .with_context(|| format!("manifest model `{name}`"))?;
        let bytes = std::fs::read(dir.join(&model.file)).with_context(|| {
            format!(
                "artifact model `{name}` ({}) is missing; rebuild with `flash build`",
                model.file
            )
        })?;
        let actual = crate::sha256_hex(&bytes);
        ensure!(
            actual == model.sha256,
            "artifact model `{name}` ({}) sha256 mismatch: expected {}, got {actual}; the artifact \
             is corrupt or was tampered with, rebuild it with `flash build`",
            model.file,
            model.sha256
        );
    }
    for (resource, entry) in &manifest.resources {
        for function in &entry.functions {
            let listed = manifest
                .components
                .get(&function.component)
                .with_context(|| {
                    format!(
                        "function `{}` of resource `{resource}` names component `{}`, which the \
                     manifest does not list",
                        function.name, function.component
                    )
                })?;
            ensure!(
                listed.sha256 == function.component_sha256,
                "function `{}` expects component `{}` with sha256 {}, but the artifact holds {}",
                function.name,
                function.component,
                function.component_sha256,
                listed.sha256
            );
        }
    }
    Ok(())
}
