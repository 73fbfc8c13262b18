//! Boot: find or fetch the artifact, unpack it safely, and know what this host serves.
//!
//! Where the artifact comes from is decided by [`crate::env`] ([`ArtifactSource`]):
//! 1. an explicit source (`--artifact` / `FLASH_ARTIFACT_URL`): an `http(s)://` URL
//!    (downloaded with `Authorization: Bearer $RUNPOD_API_KEY`) or a path to
//!    `artifact.tar.gz`, unpacked into a private temporary directory;
//! 2. `--manifest` / `FLASH_MANIFEST_PATH`: a manifest inside an already unpacked artifact;
//! 3. RunPod's worker contract (reference §5.6): the file at `FLASH_BUILD_ARTIFACT_PATH`
//!    (default `/root/.runpod/artifact.tar.gz`, waited for with 3 attempts 30 s apart),
//!    unpacked into the app directory (`/app`, or `FLASH_APP_DIR`), unless
//!    `FLASH_DISABLE_UNPACK` says it is unpacked already;
//! 4. a search from the working directory upwards: an unpacked artifact
//!    (`flash_manifest.json` + `components/`) or `.flash/artifact.tar.gz`.
//!
//! Archives are unpacked with [`flash_manifest::artifact::unpack_selected`] (no `..`, no
//! absolute paths, no links, sizes bounded, every unpacked component's and model's sha256
//! verified as it is written); anything off stops the boot with a message saying what and
//! how to fix it. Only the files the host needs are unpacked: its own resource's models and
//! the components its AOT cache does not already hold compiled, so a warm host reads the
//! manifest and stops there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use flash_manifest::artifact::{ARTIFACT_FILE_NAME, Selection, UnpackLimits};
use flash_manifest::{MANIFEST_FILE_NAME, Manifest};

/// Attempts to find RunPod's artifact file, and the wait between them (reference §5.6).
const ARTIFACT_WAIT_ATTEMPTS: u32 = 3;
const ARTIFACT_WAIT: Duration = Duration::from_secs(30);

/// Where the artifact comes from (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactSource {
    /// A URL or a path to `artifact.tar.gz`, named by the flag or `FLASH_ARTIFACT_URL`.
    Explicit(String),
    /// The manifest of an already unpacked artifact.
    Unpacked(PathBuf),
    /// RunPod's contract: `archive` unpacked into `app_dir` (or, with `unpack` false,
    /// `app_dir` already holds it).
    RunPod {
        archive: PathBuf,
        app_dir: PathBuf,
        unpack: bool,
    },
    /// Search from the working directory.
    Search,
}

/// An unpacked, verified artifact on disk.
#[derive(Debug)]
pub struct UnpackedArtifact {
    pub root: PathBuf,
    /// Removed on drop when the host unpacked it itself.
    _temp: Option<tempfile::TempDir>,
}

/// Locates (and if needed fetches and unpacks) the artifact. Where this host unpacks it,
/// only the files `select` picks from the manifest are unpacked (and verified): see
/// [`Selection`]. An artifact found already unpacked is used as it is.
pub async fn locate(
    source: &ArtifactSource,
    api_key: Option<&str>,
    select: impl FnOnce(&Manifest) -> Selection + Send,
) -> Result<UnpackedArtifact> {
    match source {
        ArtifactSource::Explicit(source) => {
            if source.starts_with("http://") || source.starts_with("https://") {
                download_and_unpack(source, api_key, select).await
            } else {
                unpack_file(Path::new(source), select)
            }
        }
        ArtifactSource::Unpacked(manifest) => {
            let root = manifest
                .parent()
                .context("FLASH_MANIFEST_PATH has no parent directory")?;
            if !manifest.is_file() {
                bail!("FLASH_MANIFEST_PATH={} does not exist", manifest.display());
            }
            Ok(UnpackedArtifact {
                root: root.to_path_buf(),
                _temp: None,
            })
        }
        ArtifactSource::RunPod {
            archive,
            app_dir,
            unpack,
        } => {
            if *unpack {
                wait_for(archive).await?;
                unpack_into_app_dir(archive, app_dir, select)
            } else {
                let manifest = app_dir.join(MANIFEST_FILE_NAME);
                if !manifest.is_file() {
                    bail!(
                        "FLASH_DISABLE_UNPACK is set but {} does not exist: unpack the artifact \
                         into {} first, or unset FLASH_DISABLE_UNPACK",
                        manifest.display(),
                        app_dir.display()
                    );
                }
                Ok(UnpackedArtifact {
                    root: app_dir.clone(),
                    _temp: None,
                })
            }
        }
        ArtifactSource::Search => search(select),
    }
}

/// Prefix of the temporary directories hosts unpack explicit artifacts into: the owner's
/// pid, so that a host killed with SIGKILL (which cannot clean up) leaves a directory the
/// next host on the machine recognises as stale ([`sweep_stale_unpacks`]).
const TEMP_PREFIX: &str = "flash-host-";

/// A new private directory for an unpacked artifact, after removing those of hosts that
/// are gone.
fn fresh_temp_dir() -> std::io::Result<tempfile::TempDir> {
    let temp_dir = std::env::temp_dir();
    let swept = sweep_stale_unpacks(&temp_dir);
    if swept > 0 {
        tracing::info!(swept, "removed artifacts unpacked by hosts that are gone");
    }
    tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{}-", std::process::id()))
        .tempdir_in(temp_dir)
}

/// Removes the unpacked artifacts of hosts that are gone: `flash-host-<pid>-*` directories
/// in the temp dir whose process no longer runs. Returns how many were removed. Linux only
/// (reads `/proc`); elsewhere a no-op.
pub fn sweep_stale_unpacks(temp_dir: &Path) -> usize {
    if !Path::new("/proc/self").exists() {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(temp_dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(TEMP_PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = Path::new("/proc").join(pid.to_string()).exists();
        if !alive && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Waits for RunPod's artifact file to appear (it is delivered next to the container start).
async fn wait_for(archive: &Path) -> Result<()> {
    for attempt in 1..=ARTIFACT_WAIT_ATTEMPTS {
        if archive.is_file() {
            return Ok(());
        }
        if attempt < ARTIFACT_WAIT_ATTEMPTS {
            tracing::warn!(
                path = %archive.display(),
                attempt,
                "the artifact is not there yet; waiting {}s",
                ARTIFACT_WAIT.as_secs()
            );
            tokio::time::sleep(ARTIFACT_WAIT).await;
        }
    }
    bail!(
        "no artifact at {} (FLASH_BUILD_ARTIFACT_PATH, RunPod's artifact path) after {} \
         attempts: deploy the app with `flash deploy send`, or set FLASH_ARTIFACT_URL to an \
         artifact",
        archive.display(),
        ARTIFACT_WAIT_ATTEMPTS
    )
}

/// Unpacks into the app directory, replacing a previous boot's unpacked artifact. A
/// directory with other files is never overwritten.
fn unpack_into_app_dir(
    archive: &Path,
    app_dir: &Path,
    select: impl FnOnce(&Manifest) -> Selection,
) -> Result<UnpackedArtifact> {
    let holds_files = std::fs::read_dir(app_dir)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if holds_files {
        if !app_dir.join(MANIFEST_FILE_NAME).is_file() {
            bail!(
                "the app directory {} (FLASH_APP_DIR) holds files that are not a Flash \
                 artifact: refusing to unpack over them; point FLASH_APP_DIR at an empty \
                 directory",
                app_dir.display()
            );
        }
        std::fs::remove_dir_all(app_dir)
            .with_context(|| format!("removing the previous artifact in {}", app_dir.display()))?;
    }
    unpack_archive(archive, app_dir, select)?;
    Ok(UnpackedArtifact {
        root: app_dir.to_path_buf(),
        _temp: None,
    })
}

fn search(select: impl FnOnce(&Manifest) -> Selection) -> Result<UnpackedArtifact> {
    let cwd = std::env::current_dir().context("reading the working directory")?;
    for dir in cwd.ancestors() {
        if dir.join(MANIFEST_FILE_NAME).is_file() && dir.join("components").is_dir() {
            return Ok(UnpackedArtifact {
                root: dir.to_path_buf(),
                _temp: None,
            });
        }
        let archive = dir.join(".flash").join(ARTIFACT_FILE_NAME);
        if archive.is_file() {
            return unpack_file(&archive, select);
        }
    }
    bail!(
        "no artifact found: set FLASH_ARTIFACT_URL (URL or path of artifact.tar.gz), \
         FLASH_BUILD_ARTIFACT_PATH or FLASH_MANIFEST_PATH, or run in a project after `flash build`"
    )
}

fn unpack_file(
    archive: &Path,
    select: impl FnOnce(&Manifest) -> Selection,
) -> Result<UnpackedArtifact> {
    let temp = fresh_temp_dir().context("creating a work directory")?;
    unpack_archive(archive, temp.path(), select)?;
    Ok(UnpackedArtifact {
        root: temp.path().to_path_buf(),
        _temp: Some(temp),
    })
}

/// The largest artifact a host downloads: the unpack limit, since an archive does not
/// compress to more than it holds.
const MAX_DOWNLOAD_BYTES: u64 = 4 << 30;

/// Streams a response body to `path`, never past `max` bytes nor past the length the
/// response declared, and fails when the body ends short of that length.
async fn save_download(mut response: reqwest::Response, path: &Path, max: u64) -> Result<()> {
    use tokio::io::AsyncWriteExt;

    let declared = response.content_length();
    if let Some(declared) = declared {
        anyhow::ensure!(
            declared <= max,
            "the artifact is {declared} bytes, more than the {max} a host accepts"
        );
    }
    let limit = declared.unwrap_or(max);
    let mut file = tokio::fs::File::create(path)
        .await
        .with_context(|| format!("creating {}", path.display()))?;
    let mut received: u64 = 0;
    while let Some(chunk) = response.chunk().await? {
        received += chunk.len() as u64;
        anyhow::ensure!(
            received <= limit,
            "the server sent more than {}",
            if declared.is_some() {
                format!("the {limit} bytes it declared")
            } else {
                format!("{limit} bytes, the most a host accepts")
            }
        );
        file.write_all(&chunk)
            .await
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(declared) = declared {
        anyhow::ensure!(
            received == declared,
            "the download ended after {received} of {declared} bytes"
        );
    }
    file.flush().await?;
    Ok(())
}

/// Unpacks the selected files of the archive at `archive` into `dest`.
fn unpack_archive(
    archive: &Path,
    dest: &Path,
    select: impl FnOnce(&Manifest) -> Selection,
) -> Result<Manifest> {
    let file = std::fs::File::open(archive)
        .with_context(|| format!("opening artifact {}", archive.display()))?;
    flash_manifest::artifact::unpack_selected(file, dest, UnpackLimits::default(), select)
        .with_context(|| {
            format!(
                "refusing to start: artifact {} is not valid",
                archive.display()
            )
        })
}

async fn download_and_unpack(
    url: &str,
    api_key: Option<&str>,
    select: impl FnOnce(&Manifest) -> Selection,
) -> Result<UnpackedArtifact> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(600))
        .build()?;
    let mut request = client.get(url);
    if let Some(key) = api_key {
        request = request.bearer_auth(key);
    }
    let mut last = None;
    for attempt in 1..=3u32 {
        match request
            .try_clone()
            .expect("GET requests clone")
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                let temp = fresh_temp_dir()?;
                let archive = temp.path().join(ARTIFACT_FILE_NAME);
                save_download(r, &archive, MAX_DOWNLOAD_BYTES)
                    .await
                    .with_context(|| format!("downloading {url}"))?;
                let root = temp.path().join("artifact");
                unpack_archive(&archive, &root, select)
                    .with_context(|| format!("the artifact downloaded from {url}"))?;
                return Ok(UnpackedArtifact {
                    root,
                    _temp: Some(temp),
                });
            }
            Ok(r) if r.status().is_client_error() => {
                bail!(
                    "downloading the artifact from {url} failed: HTTP {} (expired or wrong URL, or bad RUNPOD_API_KEY?)",
                    r.status()
                )
            }
            Ok(r) => last = Some(anyhow::anyhow!("HTTP {}", r.status())),
            Err(e) => last = Some(e.into()),
        }
        if attempt < 3 {
            tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
        .with_context(|| format!("downloading the artifact from {url} failed 3 times"))
}
