//! The project file, `flash.toml`: the app's name and how to build each component.
//!
//! ```toml
//! [app]
//! name = "quickstart"
//!
//! [[component]]
//! name = "quickstart"   # artifact file: components/quickstart.wasm
//! kind = "rust"         # cargo build --release --target wasm32-wasip2, in `path`
//! path = "."
//!
//! [[component]]
//! name = "api"
//! kind = "python"       # modules using flash_sdk in `path`, + optional requirements.txt
//! path = "api"
//!
//! [[component]]
//! name = "web"
//! kind = "js"           # a JS/TS entry module using flash-sdk, + package.json deps
//! path = "web"
//! entry = "src/app.ts"  # default: index.ts, index.js, index.mjs, src/index.ts, ...
//!
//! [[component]]
//! name = "pyfuncs"
//! kind = "command"      # any toolchain: run `command`, which writes `output`
//! command = "componentize-py -d ../../wit -w function componentize app -o {output}"
//! output = "build/pyfuncs.wasm"
//! inputs = ["app.py"]   # rebuilt only when one of these is newer than `output`
//!
//! [[model]]
//! name = "classifier"            # guests: wasi:nn `load-by-name("classifier")`
//! path = "model/classifier.onnx" # packed as models/classifier.onnx, sha256 in the manifest
//! resources = ["gpu_config"]     # hosts that preload it (default: every resource config)
//! sessions = 4                   # concurrent inferences per host (default: host's choice)
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;

/// File name of the project file.
pub const PROJECT_FILE: &str = "flash.toml";

/// A parsed project, with its root directory.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
    pub file: ProjectFile,
    /// There is no `flash.toml`: a directory of Python modules using `flash_sdk` (a
    /// ported runpod-flash app) is built as one Python component named after the directory.
    pub implicit: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectFile {
    pub app: App,
    #[serde(default, rename = "component")]
    pub components: Vec<ComponentDecl>,
    #[serde(default, rename = "model")]
    pub models: Vec<ModelDecl>,
}

/// A model file that travels in the artifact and that hosts preload for `wasi:nn`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDecl {
    pub name: String,
    /// The ONNX file, relative to the project root.
    pub path: PathBuf,
    #[serde(default)]
    pub resources: Vec<String>,
    pub sessions: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    pub name: String,
}

/// How to build one component.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentDecl {
    pub name: String,
    #[serde(default)]
    pub kind: ComponentKind,
    /// Directory of the component's sources, relative to the project root.
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// `kind = "command"`: shell command; `{output}` is replaced by the output path.
    pub command: Option<String>,
    /// `kind = "command"`: the component file the command writes (relative to `path`).
    pub output: Option<PathBuf>,
    /// `kind = "command"`: files whose change triggers a rebuild (relative to `path`).
    #[serde(default)]
    pub inputs: Vec<PathBuf>,
    /// `kind = "js"`: the entry module (relative to `path`); by default the first of
    /// `index.ts`, `index.js`, `index.mjs`, `src/index.ts`, `src/index.js`, `app.ts`, `app.js`.
    pub entry: Option<PathBuf>,
}

fn default_path() -> PathBuf {
    PathBuf::from(".")
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentKind {
    /// A cargo crate built for `wasm32-wasip2`.
    #[default]
    Rust,
    /// A directory of Python modules using `flash_sdk` (built with componentize-py).
    Python,
    /// A JavaScript or TypeScript entry module using `flash-sdk` (built with esbuild and
    /// componentize-js).
    Js,
    /// Any command that writes a component (componentize-py, componentize-js, ...).
    Command,
}

impl Project {
    /// Finds `flash.toml` in `start` or its ancestors and parses it.
    pub fn discover(start: &Path) -> Result<Self> {
        let start = start
            .canonicalize()
            .with_context(|| format!("resolving {}", start.display()))?;
        let mut dir = Some(start.as_path());
        while let Some(d) = dir {
            if d.join(PROJECT_FILE).is_file() {
                return Self::load(d);
            }
            dir = d.parent();
        }
        if let Some(project) = Self::implicit_python(&start) {
            return Ok(project);
        }
        bail!(
            "no {PROJECT_FILE} found in {} or any parent directory, and no Python module there \
             uses flash_sdk; create a project with `flash init <name> [--lang python]` or run \
             from a project directory",
            start.display()
        )
    }

    /// Parses `<root>/flash.toml`.
    pub fn load(root: &Path) -> Result<Self> {
        let path = root.join(PROJECT_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let file: ProjectFile =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let project = Self {
            root: root.to_path_buf(),
            file,
            implicit: false,
        };
        project
            .check()
            .with_context(|| format!("in {}", path.display()))?;
        Ok(project)
    }

    fn check(&self) -> Result<()> {
        ensure!(
            flash_manifest::validate::is_valid_name(&self.file.app.name),
            "app name `{}` is invalid: use letters, digits, `_` and `-`",
            self.file.app.name
        );
        ensure!(
            !self.file.components.is_empty(),
            "no [[component]] entries: declare at least one component"
        );
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.file.components {
            ensure!(
                flash_manifest::validate::is_valid_name(&c.name),
                "component name `{}` is invalid: use letters, digits, `_` and `-`",
                c.name
            );
            ensure!(
                seen.insert(&c.name),
                "component `{}` is declared twice",
                c.name
            );
            ensure!(
                c.entry.is_none() || c.kind == ComponentKind::Js,
                "component `{}` sets `entry`, which only kind = \"js\" components have",
                c.name
            );
            if c.kind == ComponentKind::Command {
                ensure!(
                    c.command.is_some(),
                    "component `{}` has kind = \"command\" but no `command`",
                    c.name
                );
                ensure!(
                    c.output.is_some(),
                    "component `{}` has kind = \"command\" but no `output`",
                    c.name
                );
            }
        }
        Ok(())
    }

    /// A directory without `flash.toml` whose top-level Python modules use `flash_sdk`
    /// (runpod-flash's project shape): one Python component, app named after the
    /// directory as runpod-flash names it.
    fn implicit_python(dir: &Path) -> Option<Self> {
        let uses_sdk = std::fs::read_dir(dir).ok()?.flatten().any(|entry| {
            let path = entry.path();
            path.extension().is_some_and(|e| e == "py")
                && std::fs::read_to_string(&path).is_ok_and(|text| text.contains("flash_sdk"))
        });
        if !uses_sdk {
            return None;
        }
        let name: String = dir
            .file_name()?
            .to_string_lossy()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        Some(Self {
            root: dir.to_path_buf(),
            file: ProjectFile {
                app: App { name: name.clone() },
                components: vec![ComponentDecl {
                    name,
                    kind: ComponentKind::Python,
                    path: default_path(),
                    command: None,
                    output: None,
                    inputs: Vec::new(),
                    entry: None,
                }],
                models: Vec::new(),
            },
            implicit: true,
        })
    }

    /// The `.flash/` directory of the project.
    pub fn flash_dir(&self) -> PathBuf {
        self.root.join(".flash")
    }

    pub fn name(&self) -> &str {
        &self.file.app.name
    }
}
