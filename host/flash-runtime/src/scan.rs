//! The build-time scanner: asks a component what it provides.
//!
//! `describe` runs with no capabilities at all — no environment, no stdio, no files, no
//! peers — under a short deadline and the default memory cap; a component that needs more
//! to describe itself is broken.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use flash_manifest::describe as d;
use flash_manifest::peer_calls::PeerCalls;
use wasmtime_wasi::WasiCtx;

use crate::bindings::types;
use crate::component::FunctionComponentPre;
use crate::invoke::{InvokeLimits, classify_trap};

/// Deadline of a `describe` call.
pub const DESCRIBE_DEADLINE: Duration = Duration::from_secs(10);

impl FunctionComponentPre {
    /// Calls the component's `describe` export.
    pub async fn describe(&self) -> Result<d::Description> {
        let limits = InvokeLimits {
            deadline: DESCRIBE_DEADLINE,
            ..Default::default()
        };
        let mut store = self.new_store(WasiCtx::builder().build(), None, None, &limits);
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| anyhow!(classify_trap("describe", &e, &limits)))
            .with_context(|| format!("instantiating component `{}`", self.name()))?;
        let description = instance
            .flash_runtime_describe()
            .call_describe(&mut store)
            .await
            .map_err(|e| anyhow!(classify_trap("describe", &e, &limits)))
            .with_context(|| format!("calling `describe` of component `{}`", self.name()))?;
        Ok(convert(description))
    }
}

/// Reads a component file, hashes it and asks it to describe itself: what the manifest
/// needs of one component.
pub async fn describe_file(
    engine: &crate::Engine,
    name: &str,
    path: &std::path::Path,
) -> Result<flash_manifest::ComponentInput> {
    let wasm = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let sha256 = flash_manifest::sha256_hex(&wasm);
    let pre = FunctionComponentPre::from_bytes(engine, name, &wasm, sha256.clone())?;
    // No sources here: what the component imports is all that is known of its calls.
    let peer_calls = if pre.imports_peer() {
        PeerCalls::Unknown
    } else {
        PeerCalls::Impossible
    };
    Ok(flash_manifest::ComponentInput {
        name: name.to_string(),
        sha256,
        size: wasm.len() as u64,
        description: pre.describe().await?,
        peer_calls,
    })
}

fn convert(description: types::Description) -> d::Description {
    d::Description {
        resources: description
            .resources
            .into_iter()
            .map(convert_resource)
            .collect(),
        functions: description
            .functions
            .into_iter()
            .map(|f| d::FunctionSpec {
                name: f.name,
                resource: f.resource,
                module: f.module,
                is_async: f.is_async,
                http_method: f.http_method,
                http_path: f.http_path,
            })
            .collect(),
    }
}

fn convert_resource(r: types::ResourceConfig) -> d::ResourceConfig {
    d::ResourceConfig {
        name: r.name,
        kind: match r.kind {
            types::EndpointKind::Queue => d::EndpointKind::Queue,
            types::EndpointKind::LoadBalanced => d::EndpointKind::LoadBalanced,
        },
        compute: match r.compute {
            types::Compute::Gpu(g) => d::Compute::Gpu {
                gpu_ids: g.gpu_ids,
                gpu_count: g.gpu_count,
            },
            types::Compute::Cpu(c) => d::Compute::Cpu {
                instance_ids: c.instance_ids,
            },
        },
        workers_min: r.workers_min,
        workers_max: r.workers_max,
        idle_timeout_s: r.idle_timeout_s,
        execution_timeout_ms: r.execution_timeout_ms,
        scaler_type: r.scaler_type.map(|s| match s {
            types::ScalerType::QueueDelay => d::ScalerType::QueueDelay,
            types::ScalerType::RequestCount => d::ScalerType::RequestCount,
        }),
        scaler_value: r.scaler_value,
        env: r.env,
        placement: d::Placement {
            locations: r.placement.locations,
            min_cuda_version: r.placement.min_cuda_version,
            container_disk_gb: r.placement.container_disk_gb,
            flashboot: r.placement.flashboot,
        },
    }
}
