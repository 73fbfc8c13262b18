//! Python components (`kind = "python"`): a directory of modules that use `flash_sdk`, and
//! an optional `requirements.txt`, built into one component with componentize-py.
//!
//! 1. The sources are staged into `.flash/python/<component>/src` (without `.flash/`,
//!    virtual environments, caches or hidden folders), and every module that mentions
//!    `flash_sdk` is an entry point: the component imports it when componentize-py
//!    pre-initialises the interpreter, which registers its `Endpoint`s. `describe` then
//!    reads that registry inside the component: there is no separate scanner.
//! 2. The toolchain is pinned: [`COMPONENTIZE_PY`] in a virtual environment of the cache
//!    directory, created with the machine's Python on first use (`FLASH_PYTHON`, else
//!    `python3`).
//! 3. Dependencies are pure-Python wheels, installed for the component's CPython
//!    ([`TARGET_PYTHON`]) with pip: `requirements.txt` first (the modules may import them
//!    at the top), then every `Endpoint(dependencies=[...])`, which the SDK reports from a
//!    run of the modules under the host's Python. A package without a pure-Python wheel
//!    (native extensions) cannot run in a component: in `requirements.txt` it is an error,
//!    and in `dependencies=[...]` (which runpod-flash apps import lazily, inside function
//!    bodies) it is left out with a warning that names it. The runpod-flash SDK itself is
//!    never installed: `flash_sdk` is built into every component.
//! 4. componentize-py pre-initialises CPython and snapshots its heap into the component, so
//!    everything the interpreter sees while it imports the app must be the same from one
//!    build to the next ([`Isolation`]): no host site-packages, no bytecode caches, fixed
//!    file times, and on x86_64 Linux deterministic random bytes, clocks and file identities
//!    (`preinit_shim.c`). Two builds of the same sources then give the same bytes.
//! 5. A fingerprint of all inputs (sources, requirements, SDK, WIT, toolchain) is stored
//!    next to the output: an unchanged project is not rebuilt.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use flash_manifest::peer_calls::CallGraph;
use sha2::{Digest, Sha256};

use super::embedded;
use super::interpreted::{Preinit, PreloadedShim, cache_dir, hash_tree, run};
use crate::project::{ComponentDecl, Project};

/// The componentize-py release every Python component is built with.
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// The CPython version inside components built by [`COMPONENTIZE_PY`]: dependencies are
/// resolved for it.
pub const TARGET_PYTHON: &str = "3.14";

/// Packages that provide `flash_sdk`'s API on other platforms: never bundled, since the
/// SDK is part of every component (a ported runpod-flash app still lists them).
const SDK_PACKAGES: &[&str] = &["runpod-flash", "flash-sdk"];

/// Folders never staged: tool state, virtual environments, caches.
const SKIPPED_DIRS: &[&str] = &["__pycache__", "node_modules", "target", "venv", "env"];

/// The name of the generated entry module.
const ENTRY_MODULE: &str = "flash_component_entry";

/// Builds the Python component `decl` of `project` and returns the path of its `.wasm`.
pub fn build(project: &Project, decl: &ComponentDecl, output: &dyn Fn(&str)) -> Result<PathBuf> {
    let source_dir = project.root.join(&decl.path);
    let work = project.flash_dir().join("python").join(&decl.name);
    let staged = work.join("src");
    let modules = stage_sources(&source_dir, &project.flash_dir(), &staged)?;
    if modules.is_empty() {
        bail!(
            "no Python module in {} uses flash_sdk: write functions decorated with \
             `@Endpoint(...)` (`from flash_sdk import Endpoint`)",
            source_dir.display()
        );
    }
    let requirements = read_requirements(&source_dir, output)?;

    let wasm = work.join(format!("{}.wasm", decl.name));
    let stamp = work.join("build.stamp");
    let entry_source = entry_module(&modules);
    let preinit = Preinit::for_this_build();
    let fingerprint = fingerprint(&staged, &requirements, &[&entry_source, preinit.recipe()])?;
    if wasm.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&fingerprint) {
        output("up to date");
        return Ok(wasm);
    }

    let cache = cache_dir()?;
    let toolchain = Toolchain::ensure(&cache.join("python"), output)?;
    let sdk_root = embedded::PYTHON_SDK.write(&cache.join("python"), "flash_sdk")?;
    let wit = embedded::WIT.write(&cache, "")?;

    let mut python_path = vec![staged.clone(), sdk_root.clone()];
    if !requirements.is_empty() {
        output(&format!(
            "installing requirements.txt: {}",
            requirements.join(" ")
        ));
        let site = work.join(format!("site-{}", short_digest(&requirements)));
        install(&toolchain, &requirements, &site, output).map_err(|e| match e {
            InstallError::Native(package) => anyhow::anyhow!(
                "`{package}` (from requirements.txt) has no pure-Python wheel: it has native \
                 extensions, which cannot run inside a WebAssembly component. Remove it from \
                 requirements.txt; for model inference use the host's wasi:nn (see \
                 docs/python-sdk.md)"
            ),
            InstallError::Other(e) => e,
        })?;
        python_path.push(site);
    }

    let declared = toolchain.endpoint_dependencies(&staged, &python_path, &modules)?;
    let mut dependencies: Vec<String> = declared
        .into_iter()
        .filter(|d| !is_sdk_package(d))
        .collect();
    while !dependencies.is_empty() {
        let site = work.join(format!("deps-{}", short_digest(&dependencies)));
        output(&format!(
            "installing Endpoint dependencies: {}",
            dependencies.join(" ")
        ));
        match install(&toolchain, &dependencies, &site, output) {
            Ok(()) => {
                python_path.push(site);
                break;
            }
            Err(InstallError::Native(package)) => {
                let before = dependencies.len();
                dependencies.retain(|d| requirement_name(d) != normalize(&package));
                if dependencies.len() == before {
                    bail!(
                        "`{package}`, which one of {} needs, has no pure-Python wheel: it has \
                         native extensions, which cannot run inside a WebAssembly component",
                        dependencies.join(", ")
                    );
                }
                output(&format!(
                    "warning: dependency `{package}` has no pure-Python wheel (native \
                     extensions) and is not bundled: importing it in the component raises \
                     ImportError. For model inference use the host's wasi:nn (docs/python-sdk.md)"
                ));
            }
            Err(InstallError::Other(e)) => return Err(e),
        }
    }

    let entry = work.join("entry");
    std::fs::create_dir_all(&entry)?;
    std::fs::write(entry.join(format!("{ENTRY_MODULE}.py")), &entry_source)?;
    python_path.insert(0, entry);
    // componentize-py adds the site-packages of `VIRTUAL_ENV` (else of `pipenv`, else of
    // the machine's `python3`) to the component's Python path: point it at an empty one,
    // so that the build neither sees nor depends on what this machine has installed.
    let no_site_packages = work.join("no-site-packages");
    std::fs::create_dir_all(no_site_packages.join("lib").join("site-packages"))?;
    // CPython records the modification times it sees (import caches keep each directory's
    // mtime) and reads bytecode caches left by earlier builds, and componentize-py
    // snapshots that heap into the component: fix the times and remove the caches.
    for dir in python_path.iter().chain([&no_site_packages]) {
        normalize_tree(dir)?;
    }
    let isolation = Isolation {
        virtual_env: no_site_packages,
        preinit: preinit.prepare(&cache.join("python"), &fingerprint, &work, output)?,
    };

    let partial = work.join(format!("{}.wasm.partial", decl.name));
    toolchain.componentize(&wit, &python_path, &isolation, &partial, output)?;
    isolation.check(output);
    std::fs::rename(&partial, &wasm).with_context(|| format!("writing {}", wasm.display()))?;
    std::fs::write(&stamp, &fingerprint)?;
    Ok(wasm)
}

/// What the functions of a built Python component's sources mention (see
/// [`super::peer_scan`]): `flash_sdk._calls` run on the staged sources, which it reads
/// without importing them.
pub fn call_graph(project: &Project, decl: &ComponentDecl) -> Result<CallGraph> {
    let staged = project
        .flash_dir()
        .join("python")
        .join(&decl.name)
        .join("src");
    let cache = cache_dir()?.join("python");
    let toolchain = Toolchain::ensure(&cache, &|_| {})?;
    let sdk_root = embedded::PYTHON_SDK.write(&cache, "flash_sdk")?;
    let stdout = toolchain.build_helper(
        &["calls"],
        &staged,
        &[sdk_root],
        &format!("scanning {}", staged.display()),
    )?;
    serde_json::from_slice(&stdout).context("unexpected output of flash_sdk._build calls")
}

/// The module componentize-py is pointed at: imports the app, exports the WIT world. It
/// turns bytecode caches off first: a cache one build writes, the next would read, and
/// the component would depend on which build came first.
fn entry_module(modules: &[String]) -> String {
    format!(
        "# Generated by `flash build`: imports the app's modules while componentize-py\n\
         # pre-initialises the component, and exports the WIT world `function`.\n\
         import sys\n\n\
         sys.dont_write_bytecode = True\n\n\
         from flash_sdk import _component\n\n\
         _component.load({modules:?})\n\n\
         Describe = _component.Describe\n\
         Invoke = _component.Invoke\n"
    )
}

/// Copies the component's sources from `source` into `staged` (replacing what was there)
/// and returns the module names of the files that mention `flash_sdk`, sorted.
fn stage_sources(source: &Path, flash_dir: &Path, staged: &Path) -> Result<Vec<String>> {
    if staged.exists() {
        std::fs::remove_dir_all(staged)
            .with_context(|| format!("clearing {}", staged.display()))?;
    }
    let mut modules = Vec::new();
    copy_tree(source, source, flash_dir, staged, &mut modules)?;
    modules.sort();
    Ok(modules)
}

fn copy_tree(
    root: &Path,
    dir: &Path,
    flash_dir: &Path,
    staged: &Path,
    modules: &mut Vec<String>,
) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let file_type = entry.file_type()?;
        if name.starts_with('.') || path == flash_dir || file_type.is_symlink() {
            continue;
        }
        let relative = path.strip_prefix(root).expect("walked from root");
        if file_type.is_dir() {
            if SKIPPED_DIRS.contains(&name.as_str()) || path.join("pyvenv.cfg").exists() {
                continue;
            }
            copy_tree(root, &path, flash_dir, staged, modules)?;
        } else if file_type.is_file() {
            let target = staged.join(relative);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(&path, &target).with_context(|| format!("copying {}", path.display()))?;
            if name.ends_with(".py")
                && std::fs::read_to_string(&path).is_ok_and(|text| text.contains("flash_sdk"))
                && let Some(module) = module_name(relative)
            {
                modules.push(module);
            }
        }
    }
    Ok(())
}

/// The modification time every file of a component's Python path gets before
/// componentize-py runs: 1980-01-01, the earliest time a zip (and so a wheel) can hold.
const FIXED_MTIME: std::time::Duration = std::time::Duration::from_secs(315_532_800);

/// Removes the `__pycache__` folders under `dir` and sets the modification time of `dir` and
/// of everything under it to [`FIXED_MTIME`].
fn normalize_tree(dir: &Path) -> Result<()> {
    let time = std::time::UNIX_EPOCH + FIXED_MTIME;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let file_type = entry.file_type()?;
        if file_type.is_dir() && entry.file_name() == "__pycache__" {
            // Another build may be clearing the same shared folder (the SDK's) right now.
            match std::fs::remove_dir_all(entry.path()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", entry.path().display()));
                }
                _ => {}
            }
        } else if file_type.is_dir() {
            normalize_tree(&entry.path())?;
        } else if file_type.is_file() {
            set_mtime(&entry.path(), time)?;
        }
    }
    set_mtime(dir, time)
}

fn set_mtime(path: &Path, time: std::time::SystemTime) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|file| file.set_modified(time))
        .with_context(|| format!("setting the modification time of {}", path.display()))
}

/// `pkg/sub/mod.py` → `pkg.sub.mod`, `pkg/__init__.py` → `pkg`; None for names Python
/// cannot import.
fn module_name(relative: &Path) -> Option<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop()?;
    let stem = file.strip_suffix(".py")?;
    if stem != "__init__" {
        parts.push(stem.to_string());
    }
    let valid = |p: &String| {
        !p.is_empty()
            && !p.starts_with(|c: char| c.is_ascii_digit())
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    (!parts.is_empty() && parts.iter().all(valid)).then(|| parts.join("."))
}

/// The requirement lines of `requirements.txt` (none when absent), without comments, pip
/// options and the SDK packages.
fn read_requirements(dir: &Path, output: &dyn Fn(&str)) -> Result<Vec<String>> {
    let path = dir.join("requirements.txt");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(Vec::new());
    };
    let mut requirements = Vec::new();
    for line in text.lines() {
        let line = line.split(" #").next().unwrap_or_default().trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('-') {
            bail!(
                "{}: pip options such as `{line}` are not supported; list one requirement per line",
                path.display()
            );
        }
        if is_sdk_package(line) {
            output(&format!(
                "note: requirements.txt: `{line}` is skipped: flash_sdk is built into every component"
            ));
            continue;
        }
        requirements.push(line.to_string());
    }
    Ok(requirements)
}

fn is_sdk_package(requirement: &str) -> bool {
    SDK_PACKAGES.contains(&requirement_name(requirement).as_str())
}

/// The normalised project name of a requirement (`Foo_Bar>=1` → `foo-bar`).
fn requirement_name(requirement: &str) -> String {
    let end = requirement
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .unwrap_or(requirement.len());
    normalize(&requirement[..end])
}

/// PEP 503 normalisation.
fn normalize(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

fn short_digest(items: &[String]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(TARGET_PYTHON);
    for item in items {
        hasher.update(item.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())[..16].to_string()
}

/// sha256 over everything that goes into the component (`recipe`: what `flash build`
/// adds, the generated entry module and how the interpreter is pre-initialised).
fn fingerprint(staged: &Path, requirements: &[String], recipe: &[&str]) -> Result<String> {
    let mut hasher = Sha256::new();
    for part in [
        COMPONENTIZE_PY,
        &embedded::PYTHON_SDK.digest(),
        &embedded::WIT.digest(),
    ]
    .into_iter()
    .chain(recipe.iter().copied())
    {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    for requirement in requirements {
        hasher.update(requirement.as_bytes());
        hasher.update([0]);
    }
    hash_tree(staged, staged, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

enum InstallError {
    /// pip found no pure-Python wheel for this package.
    Native(String),
    Other(anyhow::Error),
}

/// Installs `requirements` as pure-Python wheels for the component's CPython into `site`
/// (kept between builds: a `site` that exists is complete).
fn install(
    toolchain: &Toolchain,
    requirements: &[String],
    site: &Path,
    output: &dyn Fn(&str),
) -> std::result::Result<(), InstallError> {
    if site.is_dir() {
        return Ok(());
    }
    let partial = site.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    let result = pip_install(&toolchain.python)
        .args([
            "--no-compile",
            "--only-binary=:all:",
            "--implementation",
            "py",
        ])
        .args(["--abi", "none", "--platform", "any"])
        .args(["--python-version", TARGET_PYTHON, "--target"])
        .arg(&partial)
        .args(requirements)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| InstallError::Other(anyhow::Error::new(e).context("running pip")))?;
    let stderr = String::from_utf8_lossy(&result.stderr);
    if !result.status.success() {
        let _ = std::fs::remove_dir_all(&partial);
        if let Some(package) = stderr
            .lines()
            .find_map(|l| l.split("No matching distribution found for ").nth(1))
        {
            let package = requirement_name(package.trim());
            if toolchain.exists_on_index(&package) {
                return Err(InstallError::Native(package));
            }
            return Err(InstallError::Other(anyhow::anyhow!(
                "no package `{package}` found on the package index: check its name"
            )));
        }
        return Err(InstallError::Other(anyhow::anyhow!(
            "pip could not install {}:\n{stderr}",
            requirements.join(" ")
        )));
    }
    stderr.lines().for_each(output);
    std::fs::rename(&partial, site)
        .with_context(|| format!("writing {}", site.display()))
        .map_err(InstallError::Other)
}

/// What componentize-py's pre-initialisation of the interpreter sees of this machine.
struct Isolation {
    /// An empty virtual environment: componentize-py adds its `site-packages` to the
    /// component's Python path instead of the machine's.
    virtual_env: PathBuf,
    /// The deterministic pre-initialisation, where it is available.
    preinit: Option<PreloadedShim>,
}

impl Isolation {
    /// Says so when the shim was meant to run and did not take effect.
    fn check(&self, output: &dyn Fn(&str)) {
        let Some(shim) = &self.preinit else {
            return;
        };
        let Some(why) = shim.failure("componentize-py's Python") else {
            return;
        };
        output(&format!(
            "warning: componentize-py ran without Flash's deterministic pre-initialisation \
             ({why}): another build of the same sources can give different component bytes"
        ));
    }
}

/// componentize-py and the Python that runs it, in a virtual environment of the cache.
struct Toolchain {
    python: PathBuf,
    componentize_py: PathBuf,
}

impl Toolchain {
    /// The pinned toolchain, installed on first use.
    fn ensure(cache: &Path, output: &dyn Fn(&str)) -> Result<Self> {
        let version = COMPONENTIZE_PY.replace("==", "-");
        let venv = cache.join(&version);
        let toolchain = Self {
            python: venv.join("bin/python"),
            componentize_py: venv.join("bin/componentize-py"),
        };
        let ready = venv.join(".flash-ready");
        if ready.is_file() {
            return Ok(toolchain);
        }
        // Builds running at once (two projects, or parallel tests) install it once: the
        // first holds the lock, the others wait and then find the marker.
        std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
        let lock_path = cache.join(format!("{version}.lock"));
        let lock = std::fs::File::create(&lock_path)
            .with_context(|| format!("creating {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
        if ready.is_file() {
            return Ok(toolchain);
        }
        let python = std::env::var_os("FLASH_PYTHON").unwrap_or_else(|| "python3".into());
        let found = Command::new(&python)
            .args(["-c", "import sys; print(sys.version_info >= (3, 10))"])
            .output();
        match found {
            Ok(out) if out.status.success() && out.stdout.starts_with(b"True") => {}
            Ok(_) => bail!(
                "`{}` is older than Python 3.10; Python components need Python 3.10 or newer \
                 at build time (to run componentize-py): install it or set FLASH_PYTHON",
                python.to_string_lossy()
            ),
            Err(_) => bail!(
                "Python components need Python 3.10 or newer at build time (to run \
                 componentize-py), and `{}` was not found: install python3 (with venv and \
                 pip, e.g. `apt-get install python3-venv`) or set FLASH_PYTHON to its path",
                python.to_string_lossy()
            ),
        }
        output(&format!(
            "installing {COMPONENTIZE_PY} into {} (first Python build only)",
            venv.display()
        ));
        // An interrupted install leaves no marker: start it over.
        let _ = std::fs::remove_dir_all(&venv);
        run(
            Command::new(&python).arg("-m").arg("venv").arg(&venv),
            "creating a virtual environment for componentize-py",
        )?;
        run(
            pip_install(&toolchain.python).arg(COMPONENTIZE_PY),
            &format!("installing {COMPONENTIZE_PY}"),
        )?;
        std::fs::write(&ready, COMPONENTIZE_PY)?;
        Ok(toolchain)
    }

    /// Runs the app's modules under this Python and returns every
    /// `Endpoint(dependencies=[...])` they declare.
    fn endpoint_dependencies(
        &self,
        staged: &Path,
        python_path: &[PathBuf],
        modules: &[String],
    ) -> Result<Vec<String>> {
        let args: Vec<&str> = std::iter::once("modules")
            .chain(modules.iter().map(String::as_str))
            .collect();
        let stdout =
            self.build_helper(&args, staged, python_path, "importing the app's modules")?;
        #[derive(serde::Deserialize)]
        struct Report {
            dependencies: Vec<String>,
        }
        let stdout = String::from_utf8_lossy(&stdout);
        let report: Report = stdout
            .lines()
            .last()
            .and_then(|line| serde_json::from_str(line).ok())
            .with_context(|| format!("unexpected output of flash_sdk._build: {stdout}"))?;
        Ok(report.dependencies)
    }

    /// Runs `python -m flash_sdk._build <args>` in `cwd` with `python_path` and returns its
    /// stdout; a failure is `<what> failed:` and its stderr.
    fn build_helper(
        &self,
        args: &[&str],
        cwd: &Path,
        python_path: &[PathBuf],
        what: &str,
    ) -> Result<Vec<u8>> {
        let result = Command::new(&self.python)
            .args(["-m", "flash_sdk._build"])
            .args(args)
            .current_dir(cwd)
            .env("PYTHONPATH", std::env::join_paths(python_path)?)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .output()
            .context("running Python")?;
        if !result.status.success() {
            bail!(
                "{what} failed:\n{}",
                String::from_utf8_lossy(&result.stderr).trim_end()
            );
        }
        Ok(result.stdout)
    }

    /// Whether the package index knows `package` at all.
    fn exists_on_index(&self, package: &str) -> bool {
        Command::new(&self.python)
            .args([
                "-m",
                "pip",
                "index",
                "versions",
                "--disable-pip-version-check",
            ])
            .arg(package)
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Runs componentize-py on the generated entry module.
    fn componentize(
        &self,
        wit: &Path,
        python_path: &[PathBuf],
        isolation: &Isolation,
        out: &Path,
        output: &dyn Fn(&str),
    ) -> Result<()> {
        let mut command = Command::new(&self.componentize_py);
        if let Some(preinit) = &isolation.preinit {
            preinit.apply(&mut command);
        }
        command
            .arg("-d")
            .arg(wit)
            .args(["-w", "function", "componentize", ENTRY_MODULE]);
        for dir in python_path {
            command.arg("-p").arg(dir);
        }
        command
            .arg("-o")
            .arg(out)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("VIRTUAL_ENV", &isolation.virtual_env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        output("$ componentize-py ... componentize flash_component_entry");
        let mut child = command.spawn().context("running componentize-py")?;
        let stderr = child.stderr.take().expect("piped stderr");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = Vec::new();
        std::thread::scope(|scope| {
            let errors = scope.spawn(move || {
                BufReader::new(stderr)
                    .lines()
                    .map_while(std::io::Result::ok)
                    .collect::<Vec<_>>()
            });
            for line in BufReader::new(stdout)
                .lines()
                .map_while(std::io::Result::ok)
            {
                output(&line);
                lines.push(line);
            }
            lines.extend(errors.join().unwrap_or_default());
        });
        let status = child.wait().context("waiting for componentize-py")?;
        if !status.success() {
            if isolation.preinit.is_some() && killed_by_sigsys(&status) {
                bail!(
                    "componentize-py was stopped by SIGSYS ({status}): Flash's deterministic \
                     pre-initialisation (preinit_shim.c) intercepts its `statx` and `getrandom` \
                     system calls, and something in that process replaced its handler or \
                     started a program. Build with FLASH_PYTHON_REPRODUCIBLE=0 to go without \
                     it (the component is then not byte-reproducible), and please report \
                     this:\n{}",
                    lines.join("\n")
                );
            }
            bail!(
                "componentize-py failed ({status}); importing the app's modules inside the \
                 component raised:\n{}",
                lines.join("\n")
            );
        }
        Ok(())
    }
}

#[cfg(unix)]
fn killed_by_sigsys(status: &std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(31)
}

#[cfg(not(unix))]
fn killed_by_sigsys(_: &std::process::ExitStatus) -> bool {
    false
}

/// `python -m pip install`, quiet.
fn pip_install(python: &Path) -> Command {
    let mut command = Command::new(python);
    command.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]);
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_follow_python_imports() {
        assert_eq!(module_name(Path::new("app.py")).as_deref(), Some("app"));
        assert_eq!(
            module_name(Path::new("pkg/sub/mod.py")).as_deref(),
            Some("pkg.sub.mod")
        );
        assert_eq!(
            module_name(Path::new("pkg/__init__.py")).as_deref(),
            Some("pkg")
        );
        assert_eq!(module_name(Path::new("01_worker.py")), None);
        assert_eq!(module_name(Path::new("my-app/x.py")), None);
        assert_eq!(module_name(Path::new("__init__.py")), None);
    }

    #[test]
    fn requirement_names_are_normalised() {
        assert_eq!(requirement_name("Runpod_Flash>=1.21"), "runpod-flash");
        assert_eq!(requirement_name("requests==2.32.3"), "requests");
        assert_eq!(requirement_name("zope.interface"), "zope-interface");
        assert!(is_sdk_package("runpod-flash"));
        assert!(is_sdk_package("flash_sdk"));
        assert!(!is_sdk_package("requests"));
    }
}
