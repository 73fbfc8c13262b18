//! `flash init <name> [--lang rust|python|js|ts]`: scaffold a project that builds and runs as is.
//!
//! The Rust template has two resource configs — a GPU queue config and a CPU
//! load-balanced API — and a route that calls the queue function across configs, so a new
//! user sees the whole model (configs, routes, peer calls) in one small file. The Python
//! template has runpod-flash's three-file shape (`gpu_worker.py`, `cpu_worker.py`,
//! `lb_worker.py`), with the route calling the GPU worker across configs. The JavaScript
//! and TypeScript templates put the same three endpoints in one entry module.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, ValueEnum};

/// The language of a new project.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    #[default]
    Rust,
    Python,
    /// JavaScript (`index.js`).
    Js,
    /// TypeScript (`index.ts`).
    Ts,
}

/// Create a new Flash project in a new directory.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Project (and app) name; also the directory created.
    pub name: String,
    /// Create the project here instead of `./<name>`.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The language of the functions.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    pub lang: Lang,
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
        if matches!(self.lang, Lang::Js | Lang::Ts) {
            let typescript = self.lang == Lang::Ts;
            scaffold_js(&dir, &self.name, typescript)?;
            println!(
                "Created Flash project `{}` ({}) in {}",
                self.name,
                if typescript {
                    "TypeScript"
                } else {
                    "JavaScript"
                },
                dir.display()
            );
            println!("Next:\n  cd {}\n  flash build\n  flash run", dir.display());
            return Ok(());
        }
        if self.lang == Lang::Python {
            scaffold_python(&dir, &self.name)?;
            println!(
                "Created Flash project `{}` (Python) in {}",
                self.name,
                dir.display()
            );
            println!("Next:\n  cd {}\n  flash build\n  flash run", dir.display());
            return Ok(());
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

/// Writes the Python template: runpod-flash's three workers plus `flash.toml`.
pub fn scaffold_python(dir: &Path, name: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let component = name.replace('-', "_");
    let files = [
        (
            "flash.toml",
            format!(
                "[app]\nname = \"{name}\"\n\n[[component]]\nname = \"{component}\"\n\
                 kind = \"python\"      # every module here that uses flash_sdk\npath = \".\"\n"
            ),
        ),
        ("requirements.txt", PYTHON_REQUIREMENTS.to_string()),
        (".gitignore", ".flash/\n__pycache__/\n.venv/\n".to_string()),
        ("gpu_worker.py", PYTHON_GPU_WORKER.to_string()),
        ("cpu_worker.py", PYTHON_CPU_WORKER.to_string()),
        ("lb_worker.py", PYTHON_LB_WORKER.to_string()),
    ];
    for (path, content) in files {
        std::fs::write(dir.join(path), content).with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

/// Writes the JavaScript or TypeScript template: the three workers of the Python template
/// in one entry module, `package.json` (for npm dependencies) and `flash.toml`.
pub fn scaffold_js(dir: &Path, name: &str, typescript: bool) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let component = name.replace('-', "_");
    let entry = if typescript { "index.ts" } else { "index.js" };
    let source = if typescript {
        JS_TEMPLATE.to_string()
    } else {
        // The template without its type annotations.
        JS_TEMPLATE.replace(": string", "")
    };
    let mut files = vec![
        (
            "flash.toml".to_string(),
            format!(
                "[app]\nname = \"{name}\"\n\n[[component]]\nname = \"{component}\"\n\
                 kind = \"js\"          # bundled with esbuild, built with componentize-js\n\
                 path = \".\"\nentry = \"{entry}\"\n"
            ),
        ),
        (
            "package.json".to_string(),
            format!(
                "{{\n  \"name\": \"{}\",\n  \"version\": \"0.1.0\",\n  \"private\": true,\n  \
                 \"type\": \"module\",\n  \"dependencies\": {{}}\n}}\n",
                name.to_lowercase()
            ),
        ),
        (
            ".gitignore".to_string(),
            ".flash/\nnode_modules/\n".to_string(),
        ),
        (entry.to_string(), source),
    ];
    if typescript {
        // Types for editors and `tsc --noEmit`: the SDK's sources of this `flash`, when
        // they are there (flash build resolves `flash-sdk` itself either way).
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest-sdk/js/src/index.ts");
        let paths = match sdk.canonicalize() {
            Ok(sdk) => format!(
                ",\n    \"paths\": {{ \"flash-sdk\": [{:?}] }}",
                sdk.display().to_string()
            ),
            Err(_) => String::new(),
        };
        files.push((
            "tsconfig.json".to_string(),
            format!(
                "{{\n  \"compilerOptions\": {{\n    \"target\": \"ES2022\",\n    \
                 \"module\": \"ES2022\",\n    \"moduleResolution\": \"bundler\",\n    \
                 \"strict\": true,\n    \"noEmit\": true{paths}\n  }}\n}}\n"
            ),
        ));
    }
    for (path, content) in files {
        std::fs::write(dir.join(&path), content).with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

const JS_TEMPLATE: &str = r#"// A Flash app: three endpoints (a GPU queue worker, a CPU queue worker, a load-balanced
// API) and a call across them.
//   flash call gpu_hello '{"message": "hi"}'
//   curl -X POST <url>/process -d '{"message": "hi"}'
import { Endpoint, GpuGroup, currentResource } from 'flash-sdk';

// GPU queue worker: scales from 0 to 3 workers on 48 GB Ampere or 24 GB Ada GPUs.
const gpu = new Endpoint({ name: 'gpu_worker', gpu: [GpuGroup.AMPERE_48, GpuGroup.ADA_24], workers: [0, 3] });

/** Counts the words of a message. Model inference goes through the host's wasi:nn. */
export const gpuHello = gpu.fn(async function gpu_hello(message: string = 'Hello from the GPU worker!') {
  return { message, words: message.split(/\s+/).filter(Boolean).length };
});

// CPU queue worker.
const cpu = new Endpoint({ name: 'cpu_worker', cpu: 'cpu3c-1-2' });

/** Returns a greeting and the resource config that served it. */
export const cpuHello = cpu.fn(function cpu_hello(message: string = 'Hello from the CPU worker!') {
  return { message, served_by: currentResource() };
});

// Load-balanced HTTP endpoint with custom routes; one worker always up.
const api = new Endpoint({ name: 'lb_worker', cpu: 'cpu3c-1-2', workers: [1, 3] });

/** Runs the GPU worker on the message: a call to another endpoint, written as a local one. */
api.post('/process', async function process(message: string) {
  return { status: 'success', gpu: await gpuHello(message) };
});

api.get('/health', async function health() {
  return { status: 'healthy' };
});
"#;

const PYTHON_REQUIREMENTS: &str = "\
# Pure-Python packages the workers import, bundled into the component by `flash build`
# (packages with native extensions cannot run in a WebAssembly component).
";

const PYTHON_GPU_WORKER: &str = r#"# GPU queue worker: scales from 0 to 3 workers on 48 GB Ampere or 24 GB Ada GPUs.
# Call it: flash call gpu_hello '{"input_data": {"message": "hi"}}'
from flash_sdk import Endpoint, GpuGroup


@Endpoint(name="gpu_worker", gpu=[GpuGroup.AMPERE_48, GpuGroup.ADA_24], workers=(0, 3))
async def gpu_hello(input_data: dict) -> dict:
    """Counts the words of a message. Model inference goes through the host's wasi:nn."""
    message = input_data.get("message", "Hello from the GPU worker!")
    return {"message": message, "words": len(message.split())}
"#;

const PYTHON_CPU_WORKER: &str = r#"# CPU queue worker.
# Call it: flash call cpu_hello '{"input_data": {"message": "hi"}}'
from flash_sdk import Endpoint, current_resource


@Endpoint(name="cpu_worker", cpu="cpu3c-1-2")
def cpu_hello(input_data: dict) -> dict:
    """Returns a greeting and the resource config that served it."""
    import platform

    return {
        "message": input_data.get("message", "Hello from the CPU worker!"),
        "served_by": current_resource(),
        "python_version": platform.python_version(),
    }
"#;

const PYTHON_LB_WORKER: &str = r#"# Load-balanced HTTP endpoint with custom routes; one worker always up.
# Call it: curl -X POST <url>/process -d '{"input_data": {"message": "hi"}}'
from flash_sdk import Endpoint

api = Endpoint(name="lb_worker", cpu="cpu3c-1-2", workers=(1, 3))


@api.post("/process")
async def process(input_data: dict) -> dict:
    """Runs the GPU worker on the input: a call to another endpoint, written as a local one."""
    from gpu_worker import gpu_hello

    result = await gpu_hello(input_data)
    return {"status": "success", "gpu": result}


@api.get("/health")
async def health() -> dict:
    return {"status": "healthy"}
"#;

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
