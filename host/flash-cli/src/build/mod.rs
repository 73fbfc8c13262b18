//! `flash build`: project → guest components → scan → manifest → artifact.
//!
//! 1. [`compile`] builds every component the project declares (cargo for Rust,
//!    componentize-py for Python (see [`python`]), esbuild and componentize-js for
//!    JavaScript and TypeScript (see [`js`]), any command for other languages),
//!    relying on the toolchain's own incremental builds;
//! 2. each component is loaded with wasmtime and its `describe` called (the scanner),
//!    with descriptions cached by component sha256 so unchanged components are not even
//!    compiled by wasmtime again; whether it imports `peer`, and a scan of its sources
//!    ([`peer_scan`]), decide which resources call peers and get the API key;
//! 3. [`ManifestBuilder`] validates and writes `.flash/flash_manifest.json`;
//! 4. [`flash_manifest::artifact::pack`] writes a reproducible `.flash/artifact.tar.gz`.
//!
//! When nothing changed, the previous `generated_at` is kept so the artifact is
//! byte-identical and reported as up to date.

pub mod compile;
pub mod embedded;
mod interpreted;
pub mod js;
pub mod peer_scan;
pub mod python;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use flash_manifest::artifact::{self, ARTIFACT_FILE_NAME};
use flash_manifest::describe::Description;
use flash_manifest::package::{self, Package};
use flash_manifest::{ComponentInput, MANIFEST_FILE_NAME, Manifest};

use crate::project::Project;

/// Receives progress of a build (the CLI draws it; tests ignore it).
pub trait Reporter: Send + Sync {
    /// A component starts building.
    fn component_started(&self, _name: &str) {}
    /// A line of the component toolchain's output.
    fn component_output(&self, _name: &str, _line: &str) {}
    /// A component finished building.
    fn component_finished(&self, _name: &str, _elapsed: Duration) {}
    /// A component is being scanned (loaded and described).
    fn scanning(&self, _name: &str, _cached: bool) {}
}

/// A reporter that drops everything.
pub struct Silent;
impl Reporter for Silent {}

/// What a build produced.
#[derive(Debug)]
pub struct BuildOutput {
    pub manifest: Manifest,
    pub manifest_path: PathBuf,
    pub artifact_path: PathBuf,
    pub artifact_sha256: String,
    pub artifact_size: u64,
    /// The previous build had the same content: the artifact is unchanged.
    pub up_to_date: bool,
    pub elapsed: Duration,
}

/// Builds `project` into `.flash/`.
pub async fn build(project: &Project, reporter: &dyn Reporter) -> Result<BuildOutput> {
    let started = Instant::now();
    let flash_dir = project.flash_dir();
    std::fs::create_dir_all(&flash_dir)
        .with_context(|| format!("creating {}", flash_dir.display()))?;

    let mut components = Vec::new();
    for decl in &project.file.components {
        reporter.component_started(&decl.name);
        let t = Instant::now();
        let wasm_path = compile::compile(project, decl, &|line| {
            reporter.component_output(&decl.name, line)
        })
        .with_context(|| format!("building component `{}`", decl.name))?;
        reporter.component_finished(&decl.name, t.elapsed());
        components.push((decl.name.clone(), wasm_path));
    }

    let engine = scanner_engine()?;
    let mut inputs = Vec::new();
    for (decl, (name, path)) in project.file.components.iter().zip(components) {
        let wasm = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let sha256 = flash_manifest::sha256_hex(&wasm);
        let scanned = describe_cached(&engine, project, &name, &wasm, &sha256, reporter).await?;
        let input = ComponentInput {
            name,
            sha256,
            size: wasm.len() as u64,
            description: scanned.description,
            peer_calls: peer_scan::peer_calls(project, decl, scanned.imports_peer),
        };
        inputs.push((input, path));
    }
    let mut models = Vec::new();
    for decl in &project.file.models {
        let path = project.root.join(&decl.path);
        let input = package::model_input(&decl.name, &path, decl.resources.clone(), decl.sessions)
            .with_context(|| format!("model `{}` (declared in flash.toml)", decl.name))?;
        models.push((input, path));
    }
    let generated_at = flash_manifest::builder::generated_at_now()?;
    let package = Package::new(project.name(), generated_at, inputs, models)?;
    let mut manifest = package.manifest.clone();

    let manifest_path = flash_dir.join(MANIFEST_FILE_NAME);
    let artifact_path = flash_dir.join(ARTIFACT_FILE_NAME);
    let previous = Manifest::read(&manifest_path).ok();
    let up_to_date = match &previous {
        Some(prev)
            if std::env::var_os("SOURCE_DATE_EPOCH").is_none() && same_content(prev, &manifest) =>
        {
            manifest.generated_at = prev.generated_at.clone();
            artifact_path.is_file()
        }
        _ => false,
    };
    manifest.write(&manifest_path)?;
    if !up_to_date {
        // Not up to date: `manifest` is the package's own.
        package.write_artifact(&artifact_path, artifact::source_date_epoch()?)?;
    }
    let bytes = std::fs::read(&artifact_path)
        .with_context(|| format!("reading {}", artifact_path.display()))?;
    Ok(BuildOutput {
        artifact_sha256: flash_manifest::sha256_hex(&bytes),
        artifact_size: bytes.len() as u64,
        manifest,
        manifest_path,
        artifact_path,
        up_to_date,
        elapsed: started.elapsed(),
    })
}

/// Equal apart from `generated_at`.
fn same_content(a: &Manifest, b: &Manifest) -> bool {
    let mut a = a.clone();
    a.generated_at = b.generated_at.clone();
    a == *b
}

fn scanner_engine() -> Result<flash_runtime::Engine> {
    flash_runtime::Engine::new(flash_runtime::EngineOptions {
        pooling: false,
        ..Default::default()
    })
}

/// What the build learns from a component file itself.
#[derive(serde::Serialize, serde::Deserialize)]
struct Scanned {
    description: Description,
    /// It imports the WIT `peer` interface (it can call other functions).
    imports_peer: bool,
}

/// `describe` of a component and its imports, cached in `.flash/cache/` by sha256.
async fn describe_cached(
    engine: &flash_runtime::Engine,
    project: &Project,
    name: &str,
    wasm: &[u8],
    sha256: &str,
    reporter: &dyn Reporter,
) -> Result<Scanned> {
    let cache = project
        .flash_dir()
        .join("cache")
        .join(format!("describe-{sha256}.json"));
    // A file of another shape (an older Flash's) is scanned again and replaced.
    if let Some(scanned) = std::fs::read(&cache)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        reporter.scanning(name, true);
        return Ok(scanned);
    }
    reporter.scanning(name, false);
    let pre =
        flash_runtime::FunctionComponentPre::from_bytes(engine, name, wasm, sha256.to_string())?;
    let scanned = Scanned {
        description: pre.describe().await?,
        imports_peer: pre.imports_peer(),
    };
    if let Some(parent) = cache.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&cache, serde_json::to_vec_pretty(&scanned)?)
        .with_context(|| format!("writing {}", cache.display()))?;
    Ok(scanned)
}
