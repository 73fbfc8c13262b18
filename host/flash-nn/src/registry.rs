//! [`Inference`]: the graphs a host preloaded, by name, and the runtime for guest `load`s.
//!
//! Models are part of the artifact: `flash-host` verifies each declared model's sha256,
//! parses it into a [`Graph`] once per process, and every call's `load-by-name` returns
//! the shared graph, with no per-request parsing. Guests may still `load` model bytes
//! themselves; such graphs live only as long as the guest's handle.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::error::NnError;
use crate::graph::{Graph, GraphOptions};
use crate::placement::{Device, Target};
use crate::runtime::{OnnxRuntime, RuntimeError};

/// Named graphs plus the runtime. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Inference(Arc<Inner>);

#[derive(Default)]
struct Inner {
    runtime: Option<OnnxRuntime>,
    graphs: BTreeMap<String, Arc<Graph>>,
}

/// What a host reports about one preloaded graph (`/ping`, logs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GraphStatus {
    pub name: String,
    pub requested: Target,
    pub device: Device,
    pub execution_provider: &'static str,
    pub sessions: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

impl Inference {
    /// No runtime and no graphs: `wasi:nn` calls fail with a typed error naming
    /// `ORT_DYLIB_PATH`.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// A runtime without preloaded graphs yet.
    pub fn new(runtime: OnnxRuntime) -> Self {
        Self(Arc::new(Inner {
            runtime: Some(runtime),
            graphs: BTreeMap::new(),
        }))
    }

    /// Parses `model` and registers it as `name` (at start-up, before the handle is shared).
    pub fn preload(
        &mut self,
        name: &str,
        model: &[u8],
        options: &GraphOptions,
    ) -> anyhow::Result<&Graph> {
        let inner = Arc::get_mut(&mut self.0)
            .ok_or_else(|| anyhow::anyhow!("models are preloaded before the host serves"))?;
        let runtime = inner
            .runtime
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no ONNX Runtime loaded"))?;
        let graph = Graph::load(runtime, name, model, options)
            .map_err(|e| anyhow::anyhow!("loading model `{name}`: {e}"))?;
        let graph = inner
            .graphs
            .entry(name.to_string())
            .insert_entry(Arc::new(graph))
            .into_mut();
        Ok(graph)
    }

    pub fn runtime(&self) -> Result<&OnnxRuntime, NnError> {
        self.0.runtime.as_ref().ok_or_else(|| {
            NnError::Unsupported(format!(
                "this host has no ONNX Runtime loaded: {}",
                RuntimeError::not_set()
            ))
        })
    }

    /// The preloaded graph `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Graph>, NnError> {
        self.0.graphs.get(name).cloned().ok_or_else(|| {
            let known = self.0.graphs.keys().cloned().collect::<Vec<_>>();
            NnError::NotFound(if known.is_empty() {
                format!("no model named `{name}`: this host preloads no models (declare them in flash.toml)")
            } else {
                format!("no model named `{name}` (this host preloads: {})", known.join(", "))
            })
        })
    }

    /// Status of every preloaded graph, by name.
    pub fn status(&self) -> Vec<GraphStatus> {
        self.0
            .graphs
            .values()
            .map(|g| GraphStatus {
                name: g.name().to_string(),
                requested: g.placement().requested,
                device: g.placement().device,
                execution_provider: g.placement().device.execution_provider(),
                sessions: g.sessions(),
                fallback: g.placement().fallback.clone(),
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.graphs.is_empty()
    }
}
