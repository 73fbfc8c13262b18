//! JavaScript and TypeScript components (`kind = "js"`): an entry module that uses
//! `flash-sdk`, the modules it imports, and the npm dependencies of the folder's
//! `package.json`, built into one component with esbuild and componentize-js.
//!
//! 1. The sources are staged into `.flash/js/<component>/src` (without `.flash/`,
//!    `node_modules`, build output or hidden folders), and a generated entry module is
//!    written next to them: it imports the WIT imports, binds the SDK to them, imports the
//!    app's entry module (which registers its `Endpoint`s) and exports `describe` and
//!    `invoke`. componentize-js evaluates all of it while it pre-initialises the engine, so
//!    `describe` reads the registry inside the component: there is no separate scanner.
//! 2. The toolchain is pinned: esbuild and componentize-js at the versions of
//!    `js_toolchain/package-lock.json`, installed with `npm ci` into the cache directory on
//!    first use, and run by `js_toolchain/build.mjs` with the machine's Node.js
//!    (`FLASH_NODE`, else `node`; npm: `FLASH_NPM`, else `npm`).
//! 3. Dependencies: when `package.json` lists `dependencies`, its lockfile
//!    (`package-lock.json` or `npm-shrinkwrap.json`) is required and installed with
//!    `npm ci --omit=dev --ignore-scripts` into a folder of the work directory named after
//!    the lockfile's digest (kept between builds); esbuild bundles what the app imports.
//!    `flash-sdk` always resolves to the SDK built into `flash` (`guest-sdk/js/src`).
//! 4. Reproducible: componentize-js snapshots the engine's heap, and paths, random bytes
//!    and clocks it sees end up in it. Its work directory is a fixed path (builds that
//!    share it take turns under a lock), and on x86_64 Linux wizer runs with the
//!    deterministic pre-initialisation shim of Python builds (`preinit_shim.c`).
//! 5. While it reads the app's modules, the build lists what each function mentions
//!    ([`call_graph`]): the scan behind `makes_remote_calls` (`peer_scan`).
//! 6. A fingerprint of all inputs (sources, lockfile, SDK, WIT, toolchain) is stored next
//!    to the output: an unchanged project is not rebuilt.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use flash_manifest::peer_calls::CallGraph;
use sha2::{Digest, Sha256};

use super::embedded;
use super::interpreted::{Preinit, cache_dir, hash_tree, run};
use crate::project::{ComponentDecl, Project};

/// The toolchain's `package.json`: esbuild and componentize-js, exact versions.
const TOOLCHAIN_PACKAGE: &str = include_str!("js_toolchain/package.json");
/// Its lockfile: every transitive package pinned with its integrity hash.
const TOOLCHAIN_LOCK: &str = include_str!("js_toolchain/package-lock.json");
/// The Node.js script that bundles and componentizes (see the file).
const DRIVER: &str = include_str!("js_toolchain/build.mjs");

/// What the build reports of the toolchain (the versions of `js_toolchain/package.json`).
pub const TOOLCHAIN: &str = "componentize-js 0.23.0, esbuild 0.28.2";

/// The oldest Node.js that runs the toolchain.
const NODE_MAJOR: u32 = 20;

/// Entry modules looked for when `entry` is not set, in order.
const DEFAULT_ENTRIES: &[&str] = &[
    "index.ts",
    "index.js",
    "index.mjs",
    "src/index.ts",
    "src/index.js",
    "app.ts",
    "app.js",
];

/// Folders never staged: dependencies, build output, tool state.
const SKIPPED_DIRS: &[&str] = &["node_modules", "target", "dist", "build"];

/// The file of the build's call graph (see [`call_graph`]), in the component's work folder.
const CALL_GRAPH: &str = "calls.json";

/// The generated entry module's file name.
const ENTRY_MODULE: &str = "flash_component_entry.js";

/// The WIT world JavaScript components are built for: the contract's `function` world and
/// `wasi:cli/environment` (the SDK reads `FLASH_RESOURCE_NAME` through it; JavaScript
/// engines have no `process.env` in a component).
const JS_WORLD: &str = "package flash:js-build;\n\n\
    world function-js {\n    include flash:runtime/function@0.4.0;\n    \
    import wasi:cli/environment@0.2.3;\n}\n";
const WASI_ENVIRONMENT: &str = "package wasi:cli@0.2.3;\n\n\
    interface environment {\n    get-environment: func() -> list<tuple<string, string>>;\n}\n";

/// Builds the JavaScript component `decl` of `project` and returns the path of its `.wasm`.
pub fn build(project: &Project, decl: &ComponentDecl, output: &dyn Fn(&str)) -> Result<PathBuf> {
    let source_dir = project.root.join(&decl.path);
    let entry = entry_module(&source_dir, decl)?;
    let work = project.flash_dir().join("js").join(&decl.name);
    let staged = work.join("src");
    stage_sources(&source_dir, &project.flash_dir(), &staged)?;
    let generated = generated_entry(&entry);
    std::fs::write(staged.join(ENTRY_MODULE), &generated)?;
    let lockfile = dependencies_lockfile(&source_dir)?;

    let wasm = work.join(format!("{}.wasm", decl.name));
    let stamp = work.join("build.stamp");
    let preinit = Preinit::for_this_build();
    let fingerprint = fingerprint(&staged, &[preinit.recipe()])?;
    if wasm.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&fingerprint) {
        output("up to date");
        return Ok(wasm);
    }

    let cache = cache_dir()?;
    let toolchain = Toolchain::ensure(&cache.join("js"), output)?;
    let sdk = write_sdk(&cache.join("js"))?;
    let wit = write_wit(&work.join("wit"))?;
    let node_paths = match &lockfile {
        Some(lock) => vec![toolchain.install_dependencies(&source_dir, lock, &work, output)?],
        None => Vec::new(),
    };

    // Builds of any project share the fixed work directory: one at a time.
    let lock_path = cache.join("js").join("componentize.lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    // wizer hands its environment to the guest, which keeps it in the snapshot: the shim's
    // status file (named in that environment) lives at a fixed path too.
    let status_dir = std::env::temp_dir().join("flash-js-preinit");
    std::fs::create_dir_all(&status_dir)
        .with_context(|| format!("creating {}", status_dir.display()))?;
    let shim = preinit.prepare(&cache.join("python"), &fingerprint, &status_dir, output)?;
    let partial = work.join(format!("{}.wasm.partial", decl.name));
    let bundle_name = format!("{}.js", decl.name);
    let mut wizer_env = serde_json::Map::new();
    if let Some(shim) = &shim {
        for (key, value) in shim.env() {
            wizer_env.insert(key.to_string(), value.into());
        }
    }
    let request = serde_json::json!({
        "root": staged,
        "entry": format!("./{ENTRY_MODULE}"),
        "sdk": sdk,
        "nodePaths": node_paths,
        "wit": wit,
        "world": "function-js",
        "output": partial,
        "work": std::env::temp_dir().join("flash-js-build"),
        "bundleName": bundle_name,
        "bundleCopy": work.join(&bundle_name),
        "callGraph": work.join(CALL_GRAPH),
        "wizerEnv": wizer_env,
    });
    let request_path = work.join("request.json");
    std::fs::write(&request_path, serde_json::to_vec_pretty(&request)?)?;
    output(&format!(
        "$ node build.mjs (esbuild, componentize-js) {}",
        entry.display()
    ));
    toolchain.run_driver(&request_path, output)?;
    drop(lock);
    if let Some(why) = shim.as_ref().and_then(|shim| shim.failure("wizer")) {
        output(&format!(
            "warning: wizer ran without Flash's deterministic pre-initialisation ({why}): \
             another build of the same sources can give different component bytes"
        ));
    }
    std::fs::rename(&partial, &wasm).with_context(|| format!("writing {}", wasm.display()))?;
    std::fs::write(&stamp, &fingerprint)?;
    Ok(wasm)
}

/// What the functions of the component's own modules mention, as `build.mjs` wrote it in
/// the last build (next to the component: it changes only with the sources).
pub fn call_graph(project: &Project, decl: &ComponentDecl) -> Result<CallGraph> {
    let path = project
        .flash_dir()
        .join("js")
        .join(&decl.name)
        .join(CALL_GRAPH);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (written by the build)", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
}

/// The app's entry module, relative to the component folder: `entry` in flash.toml, else
/// the first of [`DEFAULT_ENTRIES`] that exists.
fn entry_module(source_dir: &Path, decl: &ComponentDecl) -> Result<PathBuf> {
    if let Some(entry) = &decl.entry {
        if !source_dir.join(entry).is_file() {
            bail!(
                "entry module {} (`entry` in flash.toml) does not exist",
                source_dir.join(entry).display()
            );
        }
        return Ok(entry.clone());
    }
    DEFAULT_ENTRIES
        .iter()
        .map(PathBuf::from)
        .find(|p| source_dir.join(p).is_file())
        .with_context(|| {
            format!(
                "no entry module in {}: write one of {} that registers functions with \
                 `new Endpoint(...)` (`import {{ Endpoint }} from 'flash-sdk'`), or set \
                 `entry = \"path/to/module.ts\"` in the component's [[component]] entry",
                source_dir.display(),
                DEFAULT_ENTRIES.join(", ")
            )
        })
}

/// The module componentize-js is given: binds the SDK to the WIT imports, evaluates the
/// app and exports the WIT interfaces.
fn generated_entry(entry: &Path) -> String {
    let path = entry.to_string_lossy().replace('\\', "/");
    format!(
        "// Generated by `flash build`: binds flash-sdk to the WIT world `function` and\n\
         // evaluates the app while componentize-js pre-initialises the component.\n\
         import {{ call }} from 'flash:runtime/peer@0.4.0';\n\
         import {{ emit }} from 'flash:runtime/progress@0.4.0';\n\
         import {{ getEnvironment }} from 'wasi:cli/environment@0.2.3';\n\
         import {{ bind }} from 'flash-sdk/component';\n\
         import {path:?};\n\n\
         const exported = bind({{ call, emit, getEnvironment }});\n\
         export const describe = exported.describe;\n\
         export const invoke = exported.invoke;\n",
        path = format!("./{path}"),
    )
}

/// The lockfile of the folder's npm dependencies; None when `package.json` lists none.
fn dependencies_lockfile(dir: &Path) -> Result<Option<PathBuf>> {
    let manifest = dir.join("package.json");
    let Ok(text) = std::fs::read_to_string(&manifest) else {
        return Ok(None);
    };
    let package: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", manifest.display()))?;
    let has_dependencies = package["dependencies"]
        .as_object()
        .is_some_and(|d| !d.is_empty());
    if !has_dependencies {
        return Ok(None);
    }
    for name in ["npm-shrinkwrap.json", "package-lock.json"] {
        let lock = dir.join(name);
        if lock.is_file() {
            return Ok(Some(lock));
        }
    }
    bail!(
        "{} lists dependencies but there is no package-lock.json next to it: run `npm install` \
         in {} to write one (flash build installs exactly what the lockfile pins)",
        manifest.display(),
        dir.display()
    )
}

/// Copies the component's sources into `staged` (replacing what was there).
fn stage_sources(source: &Path, flash_dir: &Path, staged: &Path) -> Result<()> {
    if staged.exists() {
        std::fs::remove_dir_all(staged)
            .with_context(|| format!("clearing {}", staged.display()))?;
    }
    copy_tree(source, source, flash_dir, staged)
}

fn copy_tree(root: &Path, dir: &Path, flash_dir: &Path, staged: &Path) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    std::fs::create_dir_all(staged)?;
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let file_type = entry.file_type()?;
        if name.starts_with('.') || path == flash_dir || file_type.is_symlink() {
            continue;
        }
        let relative = path.strip_prefix(root).expect("walked from root");
        if file_type.is_dir() {
            if !SKIPPED_DIRS.contains(&name.as_str()) {
                copy_tree(root, &path, flash_dir, staged)?;
            }
        } else if file_type.is_file() {
            let target = staged.join(relative);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(&path, &target).with_context(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(())
}

/// sha256 over everything that goes into the component.
fn fingerprint(staged: &Path, recipe: &[&str]) -> Result<String> {
    let mut hasher = Sha256::new();
    for part in [
        TOOLCHAIN_LOCK,
        DRIVER,
        JS_WORLD,
        WASI_ENVIRONMENT,
        &embedded::JS_SDK.digest(),
        &embedded::WIT.digest(),
    ]
    .into_iter()
    .chain(recipe.iter().copied())
    {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hash_tree(staged, staged, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// The SDK's TypeScript sources, once per content; returns their folder.
fn write_sdk(cache: &Path) -> Result<PathBuf> {
    embedded::JS_SDK.write(cache, "")
}

/// The WIT folder componentize-js reads: [`JS_WORLD`] with the contract and its
/// dependencies as `deps/`.
fn write_wit(dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let write = |path: PathBuf, content: &str| -> Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))
    };
    write(dir.join("js.wit"), JS_WORLD)?;
    write(dir.join("deps/wasi-cli/environment.wit"), WASI_ENVIRONMENT)?;
    for (path, content) in embedded::WIT.files {
        let target = match path.strip_prefix("deps/") {
            Some(dep) => dir.join("deps").join(dep),
            None => dir.join("deps/flash-runtime").join(path),
        };
        write(target, content)?;
    }
    Ok(dir.to_path_buf())
}

/// Node.js, npm and the pinned toolchain in the cache.
struct Toolchain {
    node: PathBuf,
    npm: PathBuf,
    dir: PathBuf,
}

impl Toolchain {
    /// The pinned toolchain, installed on first use.
    fn ensure(cache: &Path, output: &dyn Fn(&str)) -> Result<Self> {
        let node = PathBuf::from(std::env::var_os("FLASH_NODE").unwrap_or_else(|| "node".into()));
        let npm = PathBuf::from(std::env::var_os("FLASH_NPM").unwrap_or_else(|| "npm".into()));
        let mut digest = Sha256::new();
        digest.update(TOOLCHAIN_PACKAGE);
        digest.update(TOOLCHAIN_LOCK);
        let dir = cache.join(format!(
            "toolchain-{}",
            &hex::encode(digest.finalize())[..16]
        ));
        let toolchain = Self { node, npm, dir };
        // Every build runs Node.js: say what is missing before anything else.
        toolchain.check_node()?;
        let ready = toolchain.dir.join(".flash-ready");
        if ready.is_file() {
            toolchain.write_driver()?;
            return Ok(toolchain);
        }
        std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
        let lock_path = cache.join("toolchain.lock");
        let lock = std::fs::File::create(&lock_path)
            .with_context(|| format!("creating {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
        if ready.is_file() {
            toolchain.write_driver()?;
            return Ok(toolchain);
        }
        output(&format!(
            "installing {TOOLCHAIN} with npm into {} (first JavaScript build only)",
            toolchain.dir.display()
        ));
        // An interrupted install leaves no marker: start it over.
        let _ = std::fs::remove_dir_all(&toolchain.dir);
        std::fs::create_dir_all(&toolchain.dir)?;
        std::fs::write(toolchain.dir.join("package.json"), TOOLCHAIN_PACKAGE)?;
        std::fs::write(toolchain.dir.join("package-lock.json"), TOOLCHAIN_LOCK)?;
        run(
            toolchain.npm_ci().current_dir(&toolchain.dir),
            &format!("installing {TOOLCHAIN} (npm ci)"),
        )?;
        std::fs::write(&ready, TOOLCHAIN)?;
        toolchain.write_driver()?;
        Ok(toolchain)
    }

    /// Writes this `flash`'s `build.mjs` next to the installed packages (the install is
    /// keyed by the lockfile only, so a new driver does not reinstall them).
    fn write_driver(&self) -> Result<()> {
        let path = self.dir.join("build.mjs");
        if std::fs::read(&path).ok().as_deref() != Some(DRIVER.as_bytes()) {
            flash_manifest::atomic::write(&path, DRIVER.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// Node.js is there and new enough, and so is npm.
    fn check_node(&self) -> Result<()> {
        let missing = |what: &str, var: &str, path: &Path| {
            anyhow::anyhow!(
                "JavaScript components need Node.js {NODE_MAJOR} or newer and npm at build time \
                 (to run esbuild and componentize-js), and `{}` ({what}) was not found: install \
                 them (e.g. `apt-get install nodejs npm`, or from https://nodejs.org) or set \
                 {var} to its path",
                path.display()
            )
        };
        let version = Command::new(&self.node)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|_| missing("Node.js", "FLASH_NODE", &self.node))?;
        let text = String::from_utf8_lossy(&version.stdout);
        let major = text
            .trim()
            .trim_start_matches('v')
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok());
        match major {
            Some(major) if major >= NODE_MAJOR => {}
            _ => bail!(
                "`{}` is Node.js {}; JavaScript components need Node.js {NODE_MAJOR} or newer at \
                 build time: install it or set FLASH_NODE",
                self.node.display(),
                text.trim()
            ),
        }
        Command::new(&self.npm)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|_| missing("npm", "FLASH_NPM", &self.npm))?;
        Ok(())
    }

    /// `npm ci` without install scripts, audit or funding notices.
    fn npm_ci(&self) -> Command {
        let mut command = Command::new(&self.npm);
        command.args([
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ]);
        command
    }

    /// Installs the project's dependencies from its lockfile (once per lockfile content)
    /// and returns their `node_modules`.
    fn install_dependencies(
        &self,
        source_dir: &Path,
        lockfile: &Path,
        work: &Path,
        output: &dyn Fn(&str),
    ) -> Result<PathBuf> {
        let manifest = std::fs::read(source_dir.join("package.json"))?;
        let lock = std::fs::read(lockfile)?;
        let digest = hex::encode(
            Sha256::new()
                .chain_update(&manifest)
                .chain_update(&lock)
                .finalize(),
        );
        let deps = work.join(format!("deps-{}", &digest[..16]));
        let modules = deps.join("node_modules");
        if deps.join(".flash-ready").is_file() {
            return Ok(modules);
        }
        output(&format!(
            "installing npm dependencies from {}",
            lockfile.display()
        ));
        let _ = std::fs::remove_dir_all(&deps);
        std::fs::create_dir_all(&deps)?;
        std::fs::write(deps.join("package.json"), &manifest)?;
        std::fs::write(
            deps.join(lockfile.file_name().context("lockfile name")?),
            &lock,
        )?;
        run(
            self.npm_ci().arg("--omit=dev").current_dir(&deps),
            &format!(
                "installing the dependencies of {} (npm ci)",
                lockfile.display()
            ),
        )?;
        std::fs::write(deps.join(".flash-ready"), "")?;
        Ok(modules)
    }

    /// Runs `build.mjs` with the request at `request`, streaming its output.
    fn run_driver(&self, request: &Path, output: &dyn Fn(&str)) -> Result<()> {
        let mut child = Command::new(&self.node)
            .arg(self.dir.join("build.mjs"))
            .arg(request)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", self.node.display()))?;
        let stderr = child.stderr.take().context("piped stderr")?;
        let stdout = child.stdout.take().context("piped stdout")?;
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
        let status = child.wait().context("waiting for node")?;
        if !status.success() {
            let text = lines.join("\n");
            let hint = if text.contains("You cannot call arbitrary imported functions during Wizer")
            {
                "\nhint: the app's modules are evaluated at build time, where componentize-js \
                 offers no random numbers (Math.random, crypto.getRandomValues) and no I/O: \
                 call them inside functions, which run at call time"
            } else {
                ""
            };
            bail!("building the JavaScript component failed ({status}):\n{text}{hint}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_entry_imports_the_app_and_exports_the_world() {
        let entry = generated_entry(Path::new("src/app.ts"));
        assert!(entry.contains("import \"./src/app.ts\";"), "{entry}");
        assert!(entry.contains("export const invoke = exported.invoke;"));
    }

    #[test]
    fn dependencies_need_a_lockfile() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(dependencies_lockfile(dir.path()).unwrap(), None);
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"devDependencies": {"x": "1"}}"#,
        )
        .unwrap();
        assert_eq!(dependencies_lockfile(dir.path()).unwrap(), None);
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"dependencies": {"x": "1"}}"#,
        )
        .unwrap();
        let error = dependencies_lockfile(dir.path()).unwrap_err().to_string();
        assert!(error.contains("there is no package-lock.json"), "{error}");
        std::fs::write(dir.path().join("package-lock.json"), "{}").unwrap();
        assert_eq!(
            dependencies_lockfile(dir.path()).unwrap(),
            Some(dir.path().join("package-lock.json"))
        );
    }

    #[test]
    fn the_toolchain_versions_are_the_pinned_ones() {
        let package: serde_json::Value = serde_json::from_str(TOOLCHAIN_PACKAGE).unwrap();
        let deps = &package["dependencies"];
        assert_eq!(
            TOOLCHAIN,
            format!(
                "componentize-js {}, esbuild {}",
                deps["@bytecodealliance/componentize-js"].as_str().unwrap(),
                deps["esbuild"].as_str().unwrap()
            )
        );
    }
}
