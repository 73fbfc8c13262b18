//! [`FunctionComponentPre`]: a function component compiled, linked and ready to instantiate.
//!
//! Compilation (or AOT-cache loading) and import resolution happen once per component per
//! process; each call then only allocates a store and instantiates from the pre-resolved
//! `InstancePre`, which with the pooling allocator is a few tens of microseconds for a
//! small component (≈ 300 µs for a Python one; see [`crate::ready`]).

use std::path::Path;

use anyhow::{Context, Result, ensure};
use wasmtime::component::{Component, HasSelf, Linker};

use crate::bindings::{Function, FunctionPre};
use crate::engine::Engine;
use crate::state::HostState;

/// A component ready to run.
#[derive(Clone)]
pub struct FunctionComponentPre {
    pub(crate) engine: Engine,
    pub(crate) pre: FunctionPre<HostState>,
    name: String,
    sha256: String,
    from_cache: bool,
}

impl std::fmt::Debug for FunctionComponentPre {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionComponentPre")
            .field("name", &self.name)
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl FunctionComponentPre {
    /// Loads the component file at `path`. When `expected_sha256` is given the file must
    /// match it (artifacts are verified before anything runs), and a compiled component
    /// of that sha256 in the AOT cache is used without reading the file at all.
    pub fn load(
        engine: &Engine,
        name: &str,
        path: &Path,
        expected_sha256: Option<&str>,
    ) -> Result<Self> {
        if let Some(expected) = expected_sha256
            && let Some(cached) = Self::from_cache(engine, name, expected)?
        {
            return Ok(cached);
        }
        let wasm =
            std::fs::read(path).with_context(|| format!("reading component {}", path.display()))?;
        let sha256 = flash_manifest::sha256_hex(&wasm);
        if let Some(expected) = expected_sha256 {
            ensure!(
                sha256 == expected,
                "component `{name}` ({}) sha256 mismatch: expected {expected}, got {sha256}; rebuild \
                 with `flash build`",
                path.display()
            );
        }
        Self::from_bytes(engine, name, &wasm, sha256)
            .with_context(|| format!("loading component `{name}` from {}", path.display()))
    }

    /// The component whose file has sha256 `sha256`, compiled, from the engine's AOT
    /// cache: `Ok(None)` when the cache does not hold it. The file itself is not needed,
    /// which is what lets a host with a warm cache skip unpacking it.
    pub fn from_cache(engine: &Engine, name: &str, sha256: &str) -> Result<Option<Self>> {
        let Some(component) = engine.cached_component(sha256) else {
            return Ok(None);
        };
        Self::link(engine, name, component, sha256.to_string(), true)
            .with_context(|| format!("loading component `{name}` from the AOT cache"))
            .map(Some)
    }

    /// Like [`load`](Self::load) from bytes already in memory.
    pub fn from_bytes(engine: &Engine, name: &str, wasm: &[u8], sha256: String) -> Result<Self> {
        let (component, from_cache) = engine.compile_component(wasm, &sha256)?;
        Self::link(engine, name, component, sha256, from_cache)
    }

    /// Resolves the imports of a compiled component once.
    fn link(
        engine: &Engine,
        name: &str,
        component: Component,
        sha256: String,
        from_cache: bool,
    ) -> Result<Self> {
        let mut linker: Linker<HostState> = Linker::new(engine.wasmtime());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        Function::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)?;
        // Every component may import `wasi:nn`; without models or ONNX Runtime its calls
        // fail with typed errors (see flash-nn).
        flash_nn::add_to_linker(&mut linker, HostState::nn_view)?;
        let instance_pre = linker.instantiate_pre(&component).map_err(anyhow::Error::from).with_context(|| {
            format!(
                "component `{name}` needs imports this host does not provide; it must target the \
                 `function` world of {}",
                flash_manifest::CONTRACT
            )
        })?;
        let pre = FunctionPre::new(instance_pre)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "component `{name}` does not export the `function` world of {}",
                    flash_manifest::CONTRACT
                )
            })?;
        Ok(Self {
            engine: engine.clone(),
            pre,
            name: name.to_string(),
            sha256,
            from_cache,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Whether the compiled code came from the AOT cache.
    pub fn loaded_from_cache(&self) -> bool {
        self.from_cache
    }

    /// Whether the component imports the WIT `peer` interface, that is, whether any of its
    /// functions can call another function at all (toolchains drop imports the code never
    /// uses). Any version of the interface counts.
    pub fn imports_peer(&self) -> bool {
        let prefix = format!("{}/peer", contract_package());
        let component = self.pre.instance_pre().component();
        component
            .component_type()
            .imports(self.engine.wasmtime())
            .any(|(name, _)| name == prefix || name.starts_with(&format!("{prefix}@")))
    }

    /// The engine this component was compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// `flash:runtime`: the package of [`flash_manifest::CONTRACT`] without its version.
fn contract_package() -> &'static str {
    flash_manifest::CONTRACT
        .split_once('@')
        .map_or(flash_manifest::CONTRACT, |(package, _)| package)
}
