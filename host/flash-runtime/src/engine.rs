//! The wasmtime [`Engine`]: every knob Flash turns, in one place, with its reason.
//!
//! - **Async calls** (`instantiate_async`/`call_async`): calls are futures on tokio; a guest waiting on `peer.call` parks
//!   its task, not a thread.
//! - **Pooling allocator**: instance memory is pre-reserved and recycled, so the fresh
//!   instance per call costs tens of microseconds instead of an mmap per call. It needs a
//!   large virtual address space reservation, which some containers (tight `ulimit -v`)
//!   refuse: we probe by building the engine and fall back to on-demand allocation with a
//!   warning. When a slot is recycled, the first [`EngineOptions::memory_keep_resident`]
//!   bytes of its memory are reset in place (only the pages the last call dirtied, where
//!   the kernel offers `PAGEMAP_SCAN`) instead of being returned to the kernel, so the next
//!   call does not page-fault its heap back in.
//! - **Epoch interruption**: a background thread bumps the epoch every
//!   [`EPOCH_TICK`]; each store's callback yields to the executor on every tick (so a busy
//!   guest cannot starve other tasks) and traps once the call's deadline has passed.
//! - **AOT cache** ([`crate::aot_cache`]): compiled components are kept on disk, keyed by
//!   the component's sha256 and the engine's compatibility hash; a second boot maps the
//!   compiled code instead of compiling.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::component::Component;

use crate::aot_cache::{self, AotCache};

/// How often the epoch advances: the granularity of deadlines and of fair yielding.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Default of [`EngineOptions::memory_keep_resident`]: enough for the heap a call of a
/// typical Rust guest touches (its JSON in and out included). See docs/benchmarks.md.
pub const DEFAULT_MEMORY_KEEP_RESIDENT: usize = 1 << 20;

/// Tunables of an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Largest linear memory one instance may grow to (the per-instance memory cap).
    pub max_memory_bytes: usize,
    /// How many instances may be alive at once (concurrent calls, nested peer calls included).
    pub max_instances: u32,
    /// Try the pooling allocator (falls back to on-demand if the probe fails).
    pub pooling: bool,
    /// The AOT cache; `None` disables it.
    pub cache: Option<AotCache>,
    /// Pooling only: bytes of each linear memory kept resident (reset in place) when its
    /// slot is recycled; the rest is decommitted. 0 decommits everything.
    pub memory_keep_resident: usize,
    /// Write `/tmp/perf-<pid>.map` so that `perf` names the guest's functions (wasmtime's
    /// perfmap profiler); for profiling only.
    pub perfmap: bool,
}

/// Instances alive at once by default (the pooling allocator's slots).
pub const DEFAULT_MAX_INSTANCES: u32 = 128;

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_memory_bytes: 256 << 20,
            max_instances: DEFAULT_MAX_INSTANCES,
            pooling: true,
            // A bad FLASH_CACHE_MAX_MB is reported where settings are parsed
            // (`AotCache::from_env`: flash-host at boot, `flash build`); here it falls back
            // to the default bound.
            cache: AotCache::from_env().ok().flatten().or_else(|| {
                aot_cache::default_dir().map(|dir| AotCache::new(dir, aot_cache::DEFAULT_MAX_BYTES))
            }),
            memory_keep_resident: DEFAULT_MEMORY_KEEP_RESIDENT,
            perfmap: false,
        }
    }
}

/// A configured wasmtime engine plus Flash's policies around it. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: wasmtime::Engine,
    options: Arc<EngineOptions>,
    pooling: bool,
    compat_key: Arc<str>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("options", &self.options)
            .field("pooling", &self.pooling)
            .finish()
    }
}

impl Engine {
    /// Builds the engine (probing the pooling allocator) and starts the epoch ticker.
    pub fn new(options: EngineOptions) -> Result<Self> {
        let (inner, pooling) = if options.pooling {
            match wasmtime::Engine::new(&config(&options, true)) {
                Ok(engine) => (engine, true),
                Err(err) => {
                    tracing::warn!(
                        "pooling allocator unavailable ({err:#}); falling back to on-demand \
                         instance allocation, which makes every call slower"
                    );
                    (wasmtime::Engine::new(&config(&options, false))?, false)
                }
            }
        } else {
            (wasmtime::Engine::new(&config(&options, false))?, false)
        };
        start_epoch_ticker(&inner);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        inner.precompile_compatibility_hash().hash(&mut hasher);
        let compat_key = format!("{:016x}", hasher.finish()).into();
        Ok(Self {
            inner,
            options: Arc::new(options),
            pooling,
            compat_key,
        })
    }

    /// The underlying wasmtime engine.
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner
    }

    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Whether the pooling allocator is in use.
    pub fn uses_pooling(&self) -> bool {
        self.pooling
    }

    /// The compiled component of the component file whose sha256 is `sha256`, from the AOT
    /// cache, without its bytes: `None` when the cache is off, has no such entry, or the
    /// entry is not trusted or not usable (each said in a warning).
    pub fn cached_component(&self, sha256: &str) -> Option<Component> {
        let cache = self.options.cache.as_ref()?;
        let path = cache.lookup(sha256, &self.compat_key)?;
        // SAFETY: entries are written only by `AotCache::store` below from
        // `Engine::precompile_component` output of a compatible engine (the compatibility
        // hash is part of the name), under the sha256 of the bytes compiled; `lookup` uses
        // only entries that this user alone can write, and wasmtime checks the header.
        match unsafe { Component::deserialize_file(&self.inner, &path) } {
            Ok(component) => Some(component),
            Err(err) => {
                tracing::warn!(
                    "ignoring unusable AOT cache entry {}: {err:#}",
                    path.display()
                );
                None
            }
        }
    }

    /// Compiles `wasm` (whose sha256 is `sha256`), through the AOT cache when enabled.
    ///
    /// Returns the component and whether it came from the cache.
    pub fn compile_component(&self, wasm: &[u8], sha256: &str) -> Result<(Component, bool)> {
        let Some(cache) = &self.options.cache else {
            return Ok((Component::new(&self.inner, wasm)?, false));
        };
        if let Some(component) = self.cached_component(sha256) {
            return Ok((component, true));
        }
        let compiled = self
            .inner
            .precompile_component(wasm)
            .map_err(anyhow::Error::from)
            .context("compiling the component")?;
        if let Err(err) = cache.store(sha256, &self.compat_key, &compiled) {
            tracing::warn!(
                "could not write AOT cache entry {}: {err:#}",
                cache.entry_path(sha256, &self.compat_key).display()
            );
        }
        // SAFETY: `compiled` was produced just now by this very engine.
        let component = unsafe { Component::deserialize(&self.inner, &compiled)? };
        Ok((component, false))
    }
}

fn config(options: &EngineOptions, pooling: bool) -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    if options.perfmap {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if pooling {
        let n = options.max_instances;
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(n)
            // componentize-py components hold a dozen core instances and several memories.
            .max_core_instances_per_component(64)
            .max_memories_per_component(16)
            .max_tables_per_component(32)
            .total_core_instances(n * 16)
            .total_memories(n * 4)
            .total_tables(n * 8)
            .total_stacks(n)
            .max_memory_size(options.max_memory_bytes)
            .linear_memory_keep_resident(options.memory_keep_resident)
            .table_keep_resident(options.memory_keep_resident.min(64 << 10))
            // Resets only the pages a call dirtied (Linux ≥ 6.7; otherwise the low
            // `memory_keep_resident` bytes are reset with memset).
            .pagemap_scan(wasmtime::Enabled::Auto);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// Bumps the engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
fn start_epoch_ticker(engine: &wasmtime::Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("flash-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}
