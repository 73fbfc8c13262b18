//! `flash init <name>`: scaffold a project that builds and runs as is.
//!
//! The template has two resource configs — a GPU queue config and a CPU load-balanced
//! API — and a route that calls the queue function across configs, so a new user sees
//! the whole model (configs, routes, peer calls) in one small file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;

/// Create a new Flash project in a new directory.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Project (and app) name; also the directory created.
    pub name: String,
    /// Create the project here instead of `./<name>`.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Path of the `flash-sdk` crate the project depends on (default: the SDK this `flash`
    /// was built from; `FLASH_SDK_PATH` also works).
    #[arg(long, env = "FLASH_SDK_PATH", value_name = "DIR")]
    pub sdk_path: Option<PathBuf>,
}

impl InitArgs {
    pub fn run(self) -> Result<()> {
        ensure!(
            flash_manifest::validate::is_valid_name(&self.name),
            "project name `{}` is invalid: use letters, digits, `_` and `-`",
            self.name
        );
        let dir = self.dir.unwrap_or_else(|| PathBuf::from(&self.name));
        if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
            bail!(
                "{} already exists and is not empty; choose another name or --dir",
                dir.display()
            );
        }
        let sdk = match self.sdk_path {
            Some(p) => p,
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest-sdk/flash-sdk"),
        };
        let sdk = sdk.canonicalize().with_context(|| {
            format!(
                "flash-sdk not found at {}; pass --sdk-path to your checkout's guest-sdk/flash-sdk",
                sdk.display()
            )
        })?;
        scaffold(&dir, &self.name, &sdk)?;
        println!("Created Flash project `{}` in {}", self.name, dir.display());
        println!("Next:\n  cd {}\n  flash build\n  flash run", dir.display());
        Ok(())
    }
}

/// Writes the template files.
pub fn scaffold(dir: &Path, name: &str, sdk: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let crate_name = name.replace('-', "_");
    let files = [
        (
            "flash.toml",
            format!(
                "[app]\nname = \"{name}\"\n\n[[component]]\nname = \"{crate_name}\"\nkind = \"rust\"\npath = \".\"\n"
            ),
        ),
        (
            "Cargo.toml",
            format!(
                "[package]\nname = \"{crate_name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nflash-sdk = {{ path = {sdk:?} }}\nserde = {{ version = \"1\", features = [\"derive\"] }}\n\n\
             # A Flash component is its own workspace.\n[workspace]\n",
                sdk = sdk.display().to_string()
            ),
        ),
        (".gitignore", "/target\n.flash/\n".to_string()),
        ("src/lib.rs", TEMPLATE_LIB.to_string()),
    ];
    for (path, content) in files {
        std::fs::write(dir.join(path), content).with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

const TEMPLATE_LIB: &str = r#"//! A Flash app: two resource configs and a cross-config call.

use flash_sdk::{ResourceConfig, Result, remote};
use serde::{Deserialize, Serialize};

/// GPU workers fed from a queue, scaled between 0 and 3.
const GPU: ResourceConfig = ResourceConfig::queue("gpu_config").gpu(&["AMPERE_48", "ADA_24"]).workers(0, 3);

/// A CPU HTTP API, always at least one worker.
const API: ResourceConfig = ResourceConfig::load_balanced("api").cpu(&["cpu3c-1-2"]).workers(1, 3);

/// Heavy work: runs on the GPU config.
#[remote(GPU)]
fn score(text: String) -> Result<f32> {
    let letters = text.chars().filter(|c| c.is_alphabetic()).count() as f32;
    Ok(letters / (text.len().max(1) as f32))
}

#[derive(Serialize, Deserialize)]
pub struct Scored {
    pub text: String,
    pub score: f32,
}

/// An HTTP route on the API config; `score` runs on the GPU endpoint via a peer call.
#[remote(API, method = "POST", path = "/score")]
fn score_text(text: String) -> Result<Scored> {
    let score = score(text.clone())?;
    Ok(Scored { text, score })
}

flash_sdk::export_app!();
"#;
