//! [`HostApp`]: the functions this host serves, loaded once, invoked many times.
//!
//! At boot the host loads the components of its resource config (`FLASH_RESOURCE_NAME`)
//! from the verified artifact and pre-links each once. Functions of other resource configs
//! are peers: they are never instantiated here. Without a resource name (the one-shot
//! debugging mode) every resource is local.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use flash_manifest::Manifest;
use flash_manifest::artifact::Selection;
use flash_runtime::{
    CallContext, CallError, Engine, ErrorKind, FunctionComponentPre, InvokeLimits, PeerRouter,
    ProgressSink, ReadyInstances,
};

use crate::metrics::HostMetrics;

/// How a call's log lines are tagged (see `flash_runtime::CallContext`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallTag {
    /// The job or request the call serves.
    pub job: Option<String>,
    /// The job a peer call was made for (the first of its chain).
    pub trace: Option<String>,
}

/// The function table of a host.
pub struct HostApp {
    pub manifest: Manifest,
    /// The resource config served here; `None` = every resource (one-shot mode).
    pub resource: Option<String>,
    /// function name → the fresh instances of its component, with its resource's limits
    /// and env (one pool per resource and component, shared by their functions)
    functions: BTreeMap<String, Arc<ReadyInstances>>,
    pub max_call_depth: u32,
    /// Preloaded models (`wasi:nn`), shared by every call; see [`crate::models`].
    pub inference: flash_nn::Inference,
    /// What this host counts (`/metrics`).
    pub metrics: HostMetrics,
}

/// Knobs of the host app.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Memory cap of one instance: all its memories and tables (`FLASH_MAX_MEMORY_MB`).
    pub max_memory_bytes: usize,
    /// Host memory one call may make the host spend on it; `None`: the memory cap
    /// (`FLASH_CALL_BUDGET_MB`).
    pub call_budget_bytes: Option<usize>,
    /// Guest stdout and stderr logged per call (`FLASH_GUEST_OUTPUT_MAX_KB`).
    pub max_guest_output_bytes: usize,
    /// Deadline when the resource config sets no `executionTimeoutMs`.
    pub default_deadline: Duration,
    pub max_call_depth: u32,
    /// Fresh instances kept ready per component, made before the calls that take them
    /// (`FLASH_READY_INSTANCES`; see [`flash_runtime::ready`]).
    pub ready_instances: usize,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            max_memory_bytes: 256 << 20,
            call_budget_bytes: None,
            max_guest_output_bytes: flash_runtime::guest_log::DEFAULT_MAX_GUEST_OUTPUT,
            default_deadline: flash_runtime::invoke::DEFAULT_DEADLINE,
            max_call_depth: flash_runtime::invoke::DEFAULT_MAX_CALL_DEPTH,
            ready_instances: flash_runtime::ready::DEFAULT_READY_INSTANCES,
        }
    }
}

impl HostApp {
    /// Loads the components serving `resource` (all resources when `None`) from the
    /// unpacked artifact in `root`.
    ///
    /// `preloaded` holds components already loaded (by [`needed_files`]) by artifact path.
    pub fn load(
        engine: &Engine,
        manifest: Manifest,
        root: &Path,
        resource: Option<&str>,
        options: &AppOptions,
        preloaded: BTreeMap<String, FunctionComponentPre>,
    ) -> Result<Self> {
        if let Some(name) = resource
            && !manifest.resources.contains_key(name)
        {
            bail!(
                "FLASH_RESOURCE_NAME=`{name}` is not a resource config of app `{}` (it has: {})",
                manifest.project_name,
                manifest
                    .resources
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let mut loaded = preloaded;
        let mut functions = BTreeMap::new();
        // Ready instances hold pool slots of their own (see `flash_runtime::ready`).
        let mut ready_slots = flash_runtime::ready::reserved_slots(options.ready_instances);
        for (resource_name, entry) in &manifest.resources {
            if resource.is_some_and(|r| r != resource_name) {
                continue;
            }
            let deadline = match entry.execution_timeout_ms {
                Some(ms) if ms > 0 => Duration::from_millis(ms),
                _ => options.default_deadline,
            };
            let limits = InvokeLimits {
                deadline,
                max_memory_bytes: options.max_memory_bytes,
                call_budget_bytes: options.call_budget_bytes,
                max_guest_output_bytes: options.max_guest_output_bytes,
            };
            let mut env: Vec<(String, String)> = entry
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if resource.is_some() {
                env.push(("FLASH_RESOURCE_NAME".into(), resource_name.clone()));
            }
            let mut pools: BTreeMap<&str, Arc<ReadyInstances>> = BTreeMap::new();
            for f in &entry.functions {
                let component = match loaded.get(&f.component) {
                    Some(c) => c.clone(),
                    None => {
                        let c = FunctionComponentPre::load(
                            engine,
                            &f.component,
                            &root.join(&f.component),
                            Some(&f.component_sha256),
                        )?;
                        tracing::info!(
                            component = %f.component,
                            cached = c.loaded_from_cache(),
                            "loaded component"
                        );
                        loaded.insert(f.component.clone(), c.clone());
                        c
                    }
                };
                let instances = pools.entry(&f.component).or_insert_with(|| {
                    let target = options.ready_instances.min(ready_slots);
                    ready_slots -= target;
                    ReadyInstances::new(component, env.clone(), limits, target)
                });
                functions.insert(f.name.clone(), Arc::clone(instances));
            }
        }
        Ok(Self {
            manifest,
            resource: resource.map(str::to_string),
            functions,
            max_call_depth: options.max_call_depth,
            inference: flash_nn::Inference::disabled(),
            metrics: HostMetrics::default(),
        })
    }

    /// Serves `wasi:nn` from `inference` (preloaded models) in every call.
    pub fn with_inference(mut self, inference: flash_nn::Inference) -> Self {
        self.inference = inference;
        self
    }

    /// Whether `function` runs in this host.
    pub fn is_local(&self, function: &str) -> bool {
        self.functions.contains_key(function)
    }

    /// Names of the functions served here, sorted.
    pub fn local_functions(&self) -> impl Iterator<Item = &str> {
        self.functions.keys().map(String::as_str)
    }

    /// Runs a local function; its `progress.emit` chunks go to `progress`, if any (the
    /// caller drains it while the call runs: it is bounded), and its log lines are tagged
    /// with `call` (its job, and the job a peer call was made for).
    pub async fn invoke(
        &self,
        function: &str,
        input: &str,
        depth: u32,
        peers: Arc<dyn PeerRouter>,
        progress: Option<ProgressSink>,
        call: CallTag,
    ) -> Result<String, CallError> {
        let Some(instances) = self.functions.get(function) else {
            return Err(self.unknown(function));
        };
        // A caller that claims a depth past the limit is refused before anything runs (a
        // peer's depth is in its request, so it is input like any other).
        if depth > self.max_call_depth {
            return Err(CallError::new(
                ErrorKind::CallDepthExceeded,
                format!(
                    "`{function}` was called {depth} peer calls deep (limit {}); is there a call \
                     cycle between functions?",
                    self.max_call_depth
                ),
            ));
        }
        let ctx = CallContext {
            // The pool's own (the resource's).
            env: Vec::new(),
            peers,
            depth,
            max_depth: self.max_call_depth,
            progress,
            call_id: call.job,
            trace: call.trace,
            inference: self.inference.clone(),
        };
        let started = std::time::Instant::now();
        let result = instances.invoke(function, input, &ctx).await;
        self.metrics
            .record_call(function, &result, started.elapsed());
        // A failure goes in the log with its job, so `flash logs --job` shows it on every
        // worker it crossed.
        if let Err(err) = &result {
            tracing::warn!(
                function,
                job = ctx.call_id.as_deref(),
                trace = ctx.trace.as_deref(),
                kind = err.kind.as_str(),
                origin = err.origin.as_ref().map(|o| o.to_string()),
                "`{function}` failed: {}{}: {}",
                err.kind.as_str(),
                err.origin
                    .as_ref()
                    .map(|o| format!(" in {o}"))
                    .unwrap_or_default(),
                err.message
            );
        }
        result
    }

    /// The text of `/metrics`, with the instance gauges read now.
    pub fn metrics_text(&self) -> String {
        let mut components: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for pool in self.functions.values() {
            if seen.insert(Arc::as_ptr(pool)) {
                let name = pool.component().name();
                let name = name.strip_prefix("components/").unwrap_or(name);
                let name = name.strip_suffix(".wasm").unwrap_or(name);
                let counts = components.entry(name.to_string()).or_default();
                counts.0 += pool.in_flight();
                counts.1 += pool.ready();
            }
        }
        for (component, (in_flight, ready)) in components {
            self.metrics.set_instances(&component, in_flight, ready);
        }
        self.metrics.encode()
    }

    /// The error for a function this host does not serve.
    pub fn unknown(&self, function: &str) -> CallError {
        let served = self
            .functions
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        match self.manifest.resource_of(function) {
            Some(resource) => CallError::new(
                ErrorKind::UnknownFunction,
                format!(
                    "function `{function}` is served by resource `{resource}`, not by this endpoint (which serves: {served})"
                ),
            ),
            None => CallError::new(
                ErrorKind::UnknownFunction,
                format!(
                    "no function `{function}` in app `{}` (this endpoint serves: {served})",
                    self.manifest.project_name
                ),
            ),
        }
    }

    /// Reads the resource entry this host serves (`None` in all-local mode).
    pub fn resource_entry(&self) -> Option<&flash_manifest::ResourceEntry> {
        self.resource
            .as_deref()
            .and_then(|r| self.manifest.resources.get(r))
    }

    /// Loads the manifest and components from a directory holding an unpacked artifact.
    ///
    /// Each file is verified against the manifest's sha256 where it is read (components in
    /// [`FunctionComponentPre::load`], models in [`crate::models`]); a component found in
    /// the AOT cache by that sha256 is not read at all.
    pub fn load_dir(
        engine: &Engine,
        root: &Path,
        resource: Option<&str>,
        options: &AppOptions,
        preloaded: BTreeMap<String, FunctionComponentPre>,
    ) -> Result<Self> {
        let manifest = Manifest::read(&root.join(flash_manifest::MANIFEST_FILE_NAME))?;
        flash_manifest::artifact::verify_references(&manifest)
            .with_context(|| format!("verifying the artifact in {}", root.display()))?;
        Self::load(engine, manifest, root, resource, options, preloaded)
    }
}

/// The artifact files a host serving `resource` (every resource when `None`) needs on disk:
/// the components whose compiled code the AOT cache does not hold, and the models it
/// preloads. Components the cache holds are loaded into `preloaded` (by artifact path) on
/// the way, so a warm host unpacks nothing but the manifest.
pub fn needed_files(
    engine: &Engine,
    manifest: &Manifest,
    resource: Option<&str>,
    preloaded: &mut BTreeMap<String, FunctionComponentPre>,
) -> Selection {
    let mut needed = BTreeSet::new();
    let functions = manifest
        .resources
        .iter()
        .filter(|(name, _)| resource.is_none_or(|r| r == name.as_str()))
        .flat_map(|(_, entry)| &entry.functions);
    for function in functions {
        if preloaded.contains_key(&function.component) || needed.contains(&function.component) {
            continue;
        }
        // Any failure here (not cached, not linkable) is met again, and reported, when the
        // component is loaded from its file.
        match FunctionComponentPre::from_cache(
            engine,
            &function.component,
            &function.component_sha256,
        ) {
            Ok(Some(component)) => {
                tracing::info!(
                    component = %function.component,
                    cached = true,
                    "loaded component"
                );
                preloaded.insert(function.component.clone(), component);
            }
            Ok(None) | Err(_) => {
                needed.insert(function.component.clone());
            }
        }
    }
    for (_, model) in manifest.models_for(resource) {
        needed.insert(model.file.clone());
    }
    Selection::Only(needed)
}

/// Parses a function's JSON output; a component that returns invalid JSON broke the
/// contract, which is an `internal` failure of that function.
pub fn decode_output(function: &str, output: &str) -> Result<serde_json::Value, CallError> {
    serde_json::from_str(output).map_err(|e| {
        CallError::new(
            ErrorKind::Internal,
            format!("function `{function}` returned invalid JSON: {e}"),
        )
    })
}
