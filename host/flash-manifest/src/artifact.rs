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

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use flate2::Compression;
use sha2::Digest;

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

/// Which files of an artifact to unpack, decided from its manifest.
///
/// A host needs only its own resource's components, and not even those when its AOT cache
/// already holds their compiled code (keyed by the sha256 the manifest pins); the
/// manifest is the archive's first entry, so a host whose cache is warm decompresses a few
/// kilobytes instead of every component (see [`unpack_selected`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every file of the archive.
    All,
    /// The manifest plus these artifact paths (`components/x.wasm`, `models/m.onnx`).
    Only(BTreeSet<String>),
}

impl Selection {
    fn wants(&self, path: &str) -> bool {
        match self {
            Selection::All => true,
            Selection::Only(paths) => paths.contains(path),
        }
    }
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
    unpack_selected(reader, dest, limits, |_| Selection::All)
}

/// Unpacks the manifest and the files `select` picks from it, verifying each file the
/// manifest lists against its sha256 as it is written (nothing is read twice).
///
/// Reading stops as soon as every selected file is on disk, so the rest of the archive is
/// never decompressed. Files the selection leaves out are not checked: they are not on
/// disk, and nothing may run them. Entries before the manifest (archives `flash build` did
/// not pack) are all unpacked.
pub fn unpack_selected(
    reader: impl Read,
    dest: &Path,
    limits: UnpackLimits,
    select: impl FnOnce(&Manifest) -> Selection,
) -> Result<Manifest> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let dest = dest
        .canonicalize()
        .with_context(|| format!("resolving {}", dest.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let mut total: u64 = 0;
    let mut count = 0usize;
    let mut select = Some(select);
    let mut selection: Option<(Manifest, Selection)> = None;
    let mut written: BTreeMap<String, String> = BTreeMap::new();
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
        let name = normalized(&path);
        let target = dest.join(&path);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&target)
                    .with_context(|| format!("creating {}", target.display()))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some((_, chosen)) = &selection
                    && !chosen.wants(&name)
                {
                    continue;
                }
                let size = entry.header().size().context("tar entry without a size")?;
                total = total.saturating_add(size);
                ensure!(
                    total <= limits.max_total_bytes,
                    "artifact unpacks to more than {} bytes",
                    limits.max_total_bytes
                );
                let digest = write_entry(&mut entry, size, &dest, &path, &target)?;
                if name == MANIFEST_FILE_NAME {
                    let manifest = Manifest::read(&target).context(
                        "the artifact's flash_manifest.json is not a valid manifest; rebuild \
                         with `flash build`",
                    )?;
                    verify_references(&manifest)?;
                    let select = select.take().context("two manifests in one artifact")?;
                    let chosen = select(&manifest);
                    selection = Some((manifest, chosen));
                } else {
                    written.insert(name, digest);
                }
                if let Some((_, Selection::Only(paths))) = &selection
                    && paths.iter().all(|p| written.contains_key(p))
                {
                    break;
                }
            }
            other => bail!(
                "refusing artifact entry `{}`: {:?} entries (links, devices) are not allowed",
                path.display(),
                other
            ),
        }
    }
    let Some((manifest, chosen)) = selection else {
        bail!("the artifact has no flash_manifest.json at its root; rebuild with `flash build`");
    };
    let listed = manifest
        .components
        .iter()
        .map(|(path, entry)| (path.as_str(), entry.sha256.as_str(), "component"))
        .chain(
            manifest
                .models
                .values()
                .map(|model| (model.file.as_str(), model.sha256.as_str(), "model")),
        );
    for (path, expected, what) in listed {
        if !chosen.wants(path) {
            continue;
        }
        let actual = written.get(path).with_context(|| {
            format!("artifact {what} `{path}` is missing; rebuild with `flash build`")
        })?;
        ensure!(
            actual == expected,
            "artifact {what} `{path}` sha256 mismatch: expected {expected}, got {actual}; the \
             artifact is corrupt or was tampered with, rebuild it with `flash build`"
        );
    }
    Ok(manifest)
}

/// An entry path as the manifest writes it: `/`-separated, without `./`.
fn normalized(path: &Path) -> String {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_string_lossy()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Writes one regular entry of `size` bytes to `target` (a new file inside `dest`) and
/// returns the sha256 of what was written.
fn write_entry(
    entry: &mut impl Read,
    size: u64,
    dest: &Path,
    path: &Path,
    target: &Path,
) -> Result<String> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        // A directory created earlier cannot be a link (we never create links), but make
        // sure nothing outside `dest` is reached.
        let resolved = parent.canonicalize()?;
        ensure!(
            resolved.starts_with(dest),
            "refusing artifact entry `{}`: it resolves outside the artifact directory",
            path.display()
        );
    }
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .with_context(|| format!("creating {} (duplicate entry?)", target.display()))?;
    let mut hashing = HashingWriter {
        inner: std::io::BufWriter::with_capacity(1 << 20, out),
        hasher: sha2::Sha256::new(),
    };
    std::io::copy(&mut entry.take(size), &mut hashing)
        .and_then(|_| hashing.inner.flush())
        .with_context(|| format!("writing {}", target.display()))?;
    Ok(hex::encode(hashing.hasher.finalize()))
}

/// A writer that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
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
    verify_references(manifest)
}

/// Checks that every function points at a component the manifest lists, with its sha256.
pub fn verify_references(manifest: &Manifest) -> Result<()> {
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
