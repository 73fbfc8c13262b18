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
//!
//! Bounds, and why each is where it is:
//!
//! - every decompressed byte counts against [`UnpackLimits::max_total_bytes`], counted under
//!   the tar reader: headers, padding, extension records and the data of entries that are
//!   skipped, not only the files written, so a small archive cannot make the host inflate
//!   gigabytes it never writes;
//! - GNU long name and PAX records are read here, not by the tar crate (which reads them
//!   whole, of any size), and refused over [`MAX_EXTENSION_RECORD_BYTES`];
//! - a PAX `size` must equal the header's: readers disagree on which one frames the entry,
//!   so a disagreement is an archive that unpacks to different files in different readers;
//! - an entry whose data ends early is an error, never a short file.

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
    /// Largest number of bytes decompressed: the whole tar stream (headers, extension
    /// records, padding, and the data of every entry, written or skipped), so it also bounds
    /// the bytes written.
    pub max_total_bytes: u64,
    /// Largest number of tar records (entries and their extension records).
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
    unpack_tar_selected(flate2::read::GzDecoder::new(reader), dest, limits, select)
}

/// Like [`unpack_from`], from the decompressed tar stream: at most
/// [`UnpackLimits::max_total_bytes`] + 1 bytes are ever read from `tar` (the property tests
/// check this).
pub fn unpack_tar_from(tar: impl Read, dest: &Path, limits: UnpackLimits) -> Result<Manifest> {
    unpack_tar_selected(tar, dest, limits, |_| Selection::All)
}

/// [`unpack_selected`] from the decompressed tar stream: at most
/// [`UnpackLimits::max_total_bytes`] + 1 bytes are ever read from `tar`.
fn unpack_tar_selected(
    tar: impl Read,
    dest: &Path,
    limits: UnpackLimits,
    select: impl FnOnce(&Manifest) -> Selection,
) -> Result<Manifest> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let dest = dest
        .canonicalize()
        .with_context(|| format!("resolving {}", dest.display()))?;
    // Every decompressed byte passes through this `Take` before the tar reader sees it:
    // headers, extension records, padding, and the data of entries the tar crate skips. One
    // byte over the limit empties it, which is how a stream past the limit is told apart from
    // a truncated one (both look like an early end to the tar reader).
    let mut archive = tar::Archive::new(tar.take(limits.max_total_bytes.saturating_add(1)));
    let result = unpack_entries(&mut archive, &dest, limits, select);
    if archive.into_inner().limit() == 0 {
        return Err(InvalidArtifact::TooLarge {
            limit: limits.max_total_bytes,
        }
        .into());
    }
    let (manifest, chosen, written) = result?;
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

/// The largest GNU long name or PAX record accepted: paths are far shorter, and the tar
/// crate would otherwise read a record of any size into memory.
pub const MAX_EXTENSION_RECORD_BYTES: u64 = 64 << 10;

/// Why an archive is refused, for what no other error already says: each message names the
/// problem and the fix (the artifact comes from `flash build`; anything else is suspect).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidArtifact {
    #[error(
        "artifact is not valid: it unpacks to more than {limit} bytes (file data, headers, \
         extension records and padding all count); rebuild with `flash build`"
    )]
    TooLarge { limit: u64 },

    #[error(
        "artifact is not valid: it has more than {limit} tar records (extension records \
         count); rebuild with `flash build`"
    )]
    TooManyEntries { limit: usize },

    #[error(
        "artifact is not valid: its {record} record is {size} bytes, over the \
         {MAX_EXTENSION_RECORD_BYTES}-byte limit; rebuild with `flash build`"
    )]
    ExtensionTooLarge { record: &'static str, size: u64 },

    #[error(
        "artifact is not valid: entry `{path}` declares {pax} bytes in its PAX record but \
         {header} in its tar header; rebuild with `flash build`"
    )]
    SizeMismatch { path: String, pax: u64, header: u64 },

    #[error(
        "artifact is not valid: entry `{path}` is truncated: the archive holds {read} of its \
         {size} bytes; rebuild with `flash build`"
    )]
    Truncated { path: String, read: u64, size: u64 },

    #[error("artifact is not valid: {reason}; rebuild with `flash build`")]
    Malformed { reason: String },
}

impl InvalidArtifact {
    fn malformed(reason: impl Into<String>) -> Self {
        Self::Malformed {
            reason: reason.into(),
        }
    }
}

/// The extension records that describe the next entry, as read so far.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

/// Walks the raw tar records: extension records are read here, bounded, and applied to the
/// entry they describe (the tar crate's own handling reads them whole and trusts a PAX
/// `size`), then each entry is checked and written. Returns the manifest, the selection made
/// from it, and the sha256 of every file written (by artifact path).
fn unpack_entries<R: Read>(
    archive: &mut tar::Archive<R>,
    dest: &Path,
    limits: UnpackLimits,
    select: impl FnOnce(&Manifest) -> Selection,
) -> Result<(Manifest, Selection, BTreeMap<String, String>)> {
    let unreadable = |e: std::io::Error| {
        InvalidArtifact::malformed(format!("it is not a readable tar.gz stream ({e})"))
    };
    let mut total: u64 = 0;
    let mut records = 0usize;
    let mut pending = Pending::default();
    let mut select = Some(select);
    let mut selection: Option<(Manifest, Selection)> = None;
    let mut written: BTreeMap<String, String> = BTreeMap::new();
    for entry in archive.entries().map_err(unreadable)?.raw(true) {
        let mut entry = entry.map_err(unreadable)?;
        records += 1;
        if records > limits.max_entries {
            return Err(InvalidArtifact::TooManyEntries {
                limit: limits.max_entries,
            }
            .into());
        }
        let header_size = entry.header().entry_size().map_err(unreadable)?;
        let entry_type = entry.header().entry_type();
        if let Some(record) = extension_record(entry_type) {
            if header_size > MAX_EXTENSION_RECORD_BYTES {
                return Err(InvalidArtifact::ExtensionTooLarge {
                    record,
                    size: header_size,
                }
                .into());
            }
            let body = read_record(&mut entry, record, header_size)?;
            let slot = match entry_type {
                tar::EntryType::GNULongName => &mut pending.long_name,
                tar::EntryType::XHeader => &mut pending.pax,
                tar::EntryType::XGlobalHeader => continue, // `git archive`'s commit id; unused
                _ => {
                    return Err(InvalidArtifact::malformed(format!(
                        "it holds a {record} record, and links are not allowed"
                    ))
                    .into());
                }
            };
            if slot.replace(body).is_some() {
                return Err(InvalidArtifact::malformed(format!(
                    "two {record} records describe the same entry"
                ))
                .into());
            }
            continue;
        }

        let described = std::mem::take(&mut pending);
        let path = entry_path(&entry, &described)?;
        if let Some(pax) = described.pax.as_deref() {
            check_pax(pax, &path, header_size)?;
        }
        let shown = path.display().to_string();
        check_entry_path(&path).with_context(|| format!("refusing artifact entry `{shown}`"))?;
        let name = normalized(&path);
        let target = dest.join(&path);
        match entry_type {
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
                total = total.saturating_add(header_size);
                if total > limits.max_total_bytes {
                    return Err(InvalidArtifact::TooLarge {
                        limit: limits.max_total_bytes,
                    }
                    .into());
                }
                let digest = write_entry(&mut entry, header_size, dest, &shown, &target)?;
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
                "refusing artifact entry `{shown}`: {} entries (links, devices) are not allowed",
                type_name(other)
            ),
        }
    }
    if pending.long_name.is_some() || pending.pax.is_some() {
        return Err(InvalidArtifact::malformed(
            "its last extension record describes no entry (the archive ends after it)",
        )
        .into());
    }
    let Some((manifest, chosen)) = selection else {
        bail!("the artifact has no flash_manifest.json at its root; rebuild with `flash build`");
    };
    Ok((manifest, chosen, written))
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
/// returns the sha256 of what was written. An entry whose data ends early is an error, and
/// its file is removed: never a short file.
fn write_entry(
    entry: &mut impl Read,
    size: u64,
    dest: &Path,
    shown: &str,
    target: &Path,
) -> Result<String> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        // A directory created earlier cannot be a link (we never create links), but make
        // sure nothing outside `dest` is reached.
        let resolved = parent
            .canonicalize()
            .with_context(|| format!("resolving {}", parent.display()))?;
        ensure!(
            resolved.starts_with(dest),
            "refusing artifact entry `{shown}`: it resolves outside the artifact directory"
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
    let read = copy_entry(entry, size, &mut hashing)
        .and_then(|read| {
            hashing.inner.flush()?;
            Ok(read)
        })
        .with_context(|| format!("writing {}", target.display()))?;
    if read != size {
        drop(hashing);
        let _ = std::fs::remove_file(target);
        return Err(InvalidArtifact::Truncated {
            path: shown.to_string(),
            read,
            size,
        }
        .into());
    }
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

/// Copies up to `size` bytes of an entry into `out`; returns how many the archive held. A
/// read error is the archive's fault ([`InvalidArtifact`]), a write error the disk's.
fn copy_entry(entry: &mut impl Read, size: u64, out: &mut impl Write) -> Result<u64> {
    let mut buf = vec![0u8; 64 << 10];
    let mut entry = entry.take(size);
    let mut read = 0u64;
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => return Ok(read),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(InvalidArtifact::malformed(format!(
                    "it is not a readable tar.gz stream ({e})"
                ))
                .into());
            }
        };
        out.write_all(&buf[..n])?;
        read += n as u64;
    }
}

/// An entry type as a person reads it: the tar crate's name, or the type byte it has none for.
fn type_name(entry_type: tar::EntryType) -> String {
    let name = format!("{entry_type:?}");
    if name.starts_with("__") {
        format!("type {:?}", char::from(entry_type.as_byte()))
    } else {
        name
    }
}

/// The name of an extension record's kind, or `None` for an entry.
fn extension_record(entry_type: tar::EntryType) -> Option<&'static str> {
    match entry_type {
        tar::EntryType::GNULongName => Some("GNU long name"),
        tar::EntryType::GNULongLink => Some("GNU long link"),
        tar::EntryType::XHeader => Some("PAX extended header"),
        tar::EntryType::XGlobalHeader => Some("PAX global header"),
        _ => None,
    }
}

/// Reads an extension record's body (`size` is at most [`MAX_EXTENSION_RECORD_BYTES`]).
fn read_record(entry: &mut impl Read, record: &str, size: u64) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    entry.take(size).read_to_end(&mut body).map_err(|e| {
        InvalidArtifact::malformed(format!("its {record} record is unreadable ({e})"))
    })?;
    if body.len() as u64 != size {
        return Err(InvalidArtifact::malformed(format!("its {record} record is truncated")).into());
    }
    Ok(body)
}

/// The entry's path: its GNU long name, or its PAX `path`, or the header's name (never two of
/// them: readers disagree on which wins). Paths must be UTF-8, as the manifest's are.
fn entry_path<R: Read>(entry: &tar::Entry<'_, R>, described: &Pending) -> Result<PathBuf> {
    let pax_path = match described.pax.as_deref() {
        Some(pax) => pax_value(pax, "path")?,
        None => None,
    };
    let bytes: std::borrow::Cow<'_, [u8]> = match (&described.long_name, pax_path) {
        (Some(_), Some(_)) => {
            return Err(InvalidArtifact::malformed(
                "an entry has both a GNU long name and a PAX path",
            )
            .into());
        }
        // GNU tar ends the name with a NUL.
        (Some(long), None) => long.strip_suffix(b"\0").unwrap_or(long).into(),
        (None, Some(path)) => path.into(),
        (None, None) => entry.header().path_bytes(),
    };
    let path = std::str::from_utf8(&bytes).map_err(|_| {
        InvalidArtifact::malformed(format!(
            "entry `{}` has a path that is not UTF-8",
            String::from_utf8_lossy(&bytes)
        ))
    })?;
    if path.contains('\0') {
        return Err(InvalidArtifact::malformed(format!(
            "entry `{}` has a NUL byte in its path",
            path.escape_debug()
        ))
        .into());
    }
    Ok(PathBuf::from(path))
}

/// Checks an entry's PAX record: well formed, no sparse-file keys (their data is not the
/// file's bytes), and a `size`, if any, equal to the header's. POSIX readers (the tar crate
/// among them) frame the entry by the PAX `size`, others by the header's: when the two
/// disagree, the same bytes unpack to different files, and a reader that counted the header's
/// size would inflate and skip the PAX one unchecked. The raw walk here frames by the header.
fn check_pax(pax: &[u8], path: &Path, header_size: u64) -> Result<()> {
    for record in pax_records(pax)? {
        let (key, _) = record?;
        if key.starts_with("GNU.sparse.") {
            return Err(InvalidArtifact::malformed(format!(
                "entry `{}` is a sparse file, and sparse files are not allowed",
                path.display()
            ))
            .into());
        }
    }
    if let Some(value) = pax_value(pax, "size")? {
        let pax_size = std::str::from_utf8(value)
            .ok()
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| {
                InvalidArtifact::malformed(format!(
                    "entry `{}` has a PAX size that is not a number of bytes",
                    path.display()
                ))
            })?;
        if pax_size != header_size {
            return Err(InvalidArtifact::SizeMismatch {
                path: path.display().to_string(),
                pax: pax_size,
                header: header_size,
            }
            .into());
        }
    }
    Ok(())
}

/// The value of `key` in a PAX record (the last one wins, as in POSIX).
fn pax_value<'a>(pax: &'a [u8], key: &str) -> Result<Option<&'a [u8]>> {
    let mut found = None;
    for record in pax_records(pax)? {
        let (k, value) = record?;
        if k == key {
            found = Some(value);
        }
    }
    Ok(found)
}

/// The `key=value` records of a PAX extended header, parsed by the tar crate. Its parser
/// stops at the first empty line and reads a value holding a newline as two records, so a
/// body it would read only in part is refused first.
fn pax_records(pax: &[u8]) -> Result<impl Iterator<Item = Result<(&str, &[u8]), InvalidArtifact>>> {
    let malformed = || InvalidArtifact::malformed("a PAX extended header record is malformed");
    let lines = pax.strip_suffix(b"\n").ok_or_else(malformed)?;
    if lines.split(|b| *b == b'\n').any(<[u8]>::is_empty) {
        return Err(malformed().into());
    }
    Ok(tar::PaxExtensions::new(pax).map(move |record| {
        let record = record.map_err(|_| malformed())?;
        let key = record.key().map_err(|_| malformed())?;
        Ok((key, record.value_bytes()))
    }))
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
