//! Packaging: from built component files and model files to a validated manifest and the
//! artifact that carries them.
//!
//! This is the one pipeline `flash build` and the test harness share (only describing a
//! component needs wasmtime: `flash_runtime::scan::describe_file`), so what the tests deploy
//! is made exactly as users' builds are.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::artifact;
use crate::builder::{ComponentInput, ManifestBuilder, ModelInput};
use crate::manifest::Manifest;

/// A manifest and the files of its artifact (artifact path → file on disk).
#[derive(Debug, Clone)]
pub struct Package {
    pub manifest: Manifest,
    pub files: Vec<(String, PathBuf)>,
}

impl Package {
    /// Builds and validates the manifest of `project` from described components and models
    /// (each with the file it is read from).
    pub fn new(
        project: &str,
        generated_at: impl Into<String>,
        components: Vec<(ComponentInput, PathBuf)>,
        models: Vec<(ModelInput, PathBuf)>,
    ) -> Result<Self> {
        let mut builder = ManifestBuilder::new(project, generated_at.into());
        let mut files = Vec::new();
        for (input, path) in components {
            files.push((input.artifact_path(), path));
            builder = builder.component(input);
        }
        for (input, path) in models {
            files.push((input.artifact_path(), path));
            builder = builder.model(input);
        }
        Ok(Self {
            manifest: builder.build()?,
            files,
        })
    }

    /// Writes the artifact (`.tar.gz`) to `out`, with every entry's mtime set to `mtime`
    /// (reproducible builds).
    pub fn write_artifact(&self, out: &Path, mtime: u64) -> Result<()> {
        artifact::pack(out, &self.manifest, &self.files, mtime)
            .with_context(|| format!("writing {}", out.display()))
    }
}

/// A model file as it goes into the artifact: hashed and sized.
pub fn model_input(
    name: &str,
    path: &Path,
    resources: Vec<String>,
    sessions: Option<u32>,
) -> Result<ModelInput> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(ModelInput {
        name: name.to_string(),
        sha256: crate::sha256_hex(&bytes),
        size: bytes.len() as u64,
        resources,
        sessions,
    })
}
