//! Boot: find or fetch the artifact, unpack it safely, and know what this host serves.
//!
//! Where the artifact comes from, in order:
//! 1. `--artifact` / `FLASH_ARTIFACT_URL`: an `http(s)://` URL (downloaded with
//!    `Authorization: Bearer $RUNPOD_API_KEY`) or a path to `artifact.tar.gz`;
//! 2. `FLASH_BUILD_ARTIFACT_PATH`: a path to `artifact.tar.gz` (RunPod's worker image name);
//! 3. `FLASH_MANIFEST_PATH`: a manifest inside an already unpacked artifact;
//! 4. search from the working directory upwards: an unpacked artifact
//!    (`flash_manifest.json` + `components/`) or `.flash/artifact.tar.gz`.
//!
//! Archives are unpacked into a fresh private directory with
//! [`flash_manifest::artifact::unpack`] (no `..`, no absolute paths, no links, sizes
//! bounded, every component's sha256 verified); anything off stops the boot with a message
//! saying what and how to fix it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flash_manifest::MANIFEST_FILE_NAME;
use flash_manifest::artifact::{ARTIFACT_FILE_NAME, UnpackLimits};

/// An unpacked, verified artifact on disk.
#[derive(Debug)]
pub struct UnpackedArtifact {
    pub root: PathBuf,
    /// Removed on drop when the host unpacked it itself.
    _temp: Option<tempfile::TempDir>,
}

/// Locates (and if needed fetches and unpacks) the artifact.
pub async fn locate(
    artifact: Option<&str>,
    manifest_path: Option<&Path>,
    api_key: Option<&str>,
) -> Result<UnpackedArtifact> {
    if let Some(source) = artifact {
        if source.starts_with("http://") || source.starts_with("https://") {
            return download_and_unpack(source, api_key).await;
        }
        return unpack_file(Path::new(source));
    }
    if let Some(path) = std::env::var_os("FLASH_BUILD_ARTIFACT_PATH").filter(|v| !v.is_empty()) {
        return unpack_file(Path::new(&path));
    }
    if let Some(manifest) = manifest_path {
        let root = manifest
            .parent()
            .context("FLASH_MANIFEST_PATH has no parent directory")?;
        if !manifest.is_file() {
            bail!("FLASH_MANIFEST_PATH={} does not exist", manifest.display());
        }
        return Ok(UnpackedArtifact {
            root: root.to_path_buf(),
            _temp: None,
        });
    }
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
            return unpack_file(&archive);
        }
    }
    bail!(
        "no artifact found: set FLASH_ARTIFACT_URL (URL or path of artifact.tar.gz) or \
         FLASH_MANIFEST_PATH, or run in a project after `flash build`"
    )
}

fn unpack_file(archive: &Path) -> Result<UnpackedArtifact> {
    let temp = tempfile::Builder::new()
        .prefix("flash-host-")
        .tempdir()
        .context("creating a work directory")?;
    flash_manifest::artifact::unpack(archive, temp.path(), UnpackLimits::default()).with_context(
        || {
            format!(
                "refusing to start: artifact {} is not valid",
                archive.display()
            )
        },
    )?;
    Ok(UnpackedArtifact {
        root: temp.path().to_path_buf(),
        _temp: Some(temp),
    })
}

async fn download_and_unpack(url: &str, api_key: Option<&str>) -> Result<UnpackedArtifact> {
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(600))
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
                let bytes = r
                    .bytes()
                    .await
                    .with_context(|| format!("downloading {url}"))?;
                let temp = tempfile::Builder::new().prefix("flash-host-").tempdir()?;
                let root = temp.path().join("artifact");
                flash_manifest::artifact::unpack_from(&bytes[..], &root, UnpackLimits::default())
                    .with_context(|| format!("refusing to start: artifact from {url} is not valid"))?;
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
        tokio::time::sleep(std::time::Duration::from_secs(attempt as u64)).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
        .with_context(|| format!("downloading the artifact from {url} failed 3 times"))
}
