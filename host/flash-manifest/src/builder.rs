//! [`ManifestBuilder`]: from component descriptions to a validated [`Manifest`].
//!
//! The scanner (`flash-runtime`) asks each component what it provides; the builder merges
//! those descriptions, applies every rule of [`crate::validate`], fills RunPod's defaults
//! (idle timeout 60 s, scaler by endpoint kind, scaler value 4) and computes the hashes.

use std::collections::{BTreeMap, BTreeSet};

use crate::config_hash::config_hash;
use crate::describe::{Compute, Description, EndpointKind, ResourceConfig, ScalerType};
use crate::manifest::{
    ComponentEntry, FunctionEntry, Manifest, ModelEntry, ResourceEntry, ResourceType,
};
use crate::peer_calls::PeerCalls;
use crate::validate::{
    CPU_DATA_CENTERS, CUDA_VERSIONS, DATA_CENTERS, HTTP_METHODS, RESERVED_PATHS, ValidationError,
    ValidationErrors, is_valid_name,
};

/// Default idle timeout of a worker, in seconds (RunPod's default).
pub const DEFAULT_IDLE_TIMEOUT_S: u32 = 60;
/// Default scaler value (RunPod's default).
pub const DEFAULT_SCALER_VALUE: u32 = 4;
/// The idle timeouts a resource config may set, in seconds (RunPod's bounds); `flash
/// server`'s `saveEndpoint` applies the same rule.
pub const IDLE_TIMEOUT_RANGE_S: std::ops::RangeInclusive<u32> = 1..=3600;

/// One component going into the artifact.
#[derive(Debug, Clone)]
pub struct ComponentInput {
    /// Component name: the artifact file is `components/<name>.wasm`.
    pub name: String,
    pub sha256: String,
    pub size: u64,
    pub description: Description,
    /// What its functions may call, for `makes_remote_calls`.
    pub peer_calls: PeerCalls,
}

impl ComponentInput {
    /// Path of this component inside the artifact.
    pub fn artifact_path(&self) -> String {
        format!("components/{}.wasm", self.name)
    }
}

/// One model going into the artifact (declared in `flash.toml`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ModelInput {
    /// The name guests pass to `load-by-name`; the file is `models/<name>.onnx`.
    pub name: String,
    pub sha256: String,
    pub size: u64,
    /// Resource configs whose hosts preload it; empty = every one.
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub sessions: Option<u32>,
}

impl ModelInput {
    /// Path of this model inside the artifact.
    pub fn artifact_path(&self) -> String {
        format!("models/{}.onnx", self.name)
    }
}

/// Merges component descriptions into a manifest.
#[derive(Debug, Clone)]
pub struct ManifestBuilder {
    project_name: String,
    generated_at: String,
    components: Vec<ComponentInput>,
    models: Vec<ModelInput>,
}

impl ManifestBuilder {
    /// `generated_at` is an RFC 3339 UTC timestamp (see [`generated_at_now`]).
    pub fn new(project_name: impl Into<String>, generated_at: impl Into<String>) -> Self {
        Self {
            project_name: project_name.into(),
            generated_at: generated_at.into(),
            components: vec![],
            models: vec![],
        }
    }

    pub fn component(mut self, component: ComponentInput) -> Self {
        self.components.push(component);
        self
    }

    pub fn model(mut self, model: ModelInput) -> Self {
        self.models.push(model);
        self
    }

    /// Validates and builds; every violation is reported.
    pub fn build(self) -> Result<Manifest, ValidationErrors> {
        let mut errors = Vec::new();

        // Resource configs, merged across components.
        let mut configs: BTreeMap<&str, (&ResourceConfig, &str)> = BTreeMap::new();
        for component in &self.components {
            for config in &component.description.resources {
                match configs.get(config.name.as_str()) {
                    Some((existing, first)) if *existing != config => {
                        errors.push(ValidationError::ConflictingResource {
                            resource: config.name.clone(),
                            first_component: first.to_string(),
                            second_component: component.name.clone(),
                        });
                    }
                    Some(_) => {}
                    None => {
                        if !is_valid_name(&config.name) {
                            errors.push(ValidationError::InvalidName {
                                what: "resource config",
                                name: config.name.clone(),
                            });
                        }
                        check_config(config, &mut errors);
                        configs.insert(&config.name, (config, &component.name));
                    }
                }
            }
        }

        // Functions, grouped by resource.
        let mut seen: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
        let mut by_resource: BTreeMap<&str, Vec<FunctionEntry>> = BTreeMap::new();
        let mut routes: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for component in &self.components {
            for spec in &component.description.functions {
                if !is_valid_name(&spec.name) {
                    errors.push(ValidationError::InvalidName {
                        what: "function",
                        name: spec.name.clone(),
                    });
                }
                if let Some((first_resource, first_component)) = seen.get(spec.name.as_str()) {
                    errors.push(ValidationError::DuplicateFunction {
                        function: spec.name.clone(),
                        first_resource: first_resource.to_string(),
                        first_component: first_component.to_string(),
                        second_resource: spec.resource.clone(),
                        second_component: component.name.clone(),
                    });
                    continue;
                }
                seen.insert(&spec.name, (&spec.resource, &component.name));

                let Some((config, _)) = configs.get(spec.resource.as_str()) else {
                    errors.push(ValidationError::UndeclaredResource {
                        function: spec.name.clone(),
                        component: component.name.clone(),
                        resource: spec.resource.clone(),
                    });
                    continue;
                };
                let load_balanced = config.kind == EndpointKind::LoadBalanced;
                let method = spec.http_method.as_ref().map(|m| m.to_ascii_uppercase());
                let path = spec.http_path.clone();
                if load_balanced {
                    match (&method, &path) {
                        (Some(method), Some(path)) => {
                            let before = errors.len();
                            check_route(&spec.name, &spec.resource, method, path, &mut errors);
                            if errors.len() == before {
                                let route = format!("{method} {path}");
                                let table = routes.entry(spec.resource.clone()).or_default();
                                if let Some(first) = table.get(&route) {
                                    errors.push(ValidationError::DuplicateRoute {
                                        resource: spec.resource.clone(),
                                        route,
                                        first: first.clone(),
                                        second: spec.name.clone(),
                                    });
                                } else {
                                    table.insert(route, spec.name.clone());
                                }
                            }
                        }
                        _ => errors.push(ValidationError::MissingRoute {
                            function: spec.name.clone(),
                            resource: spec.resource.clone(),
                        }),
                    }
                } else if method.is_some() || path.is_some() {
                    errors.push(ValidationError::RouteOnQueueResource {
                        function: spec.name.clone(),
                        resource: spec.resource.clone(),
                    });
                }
                by_resource
                    .entry(&spec.resource)
                    .or_default()
                    .push(FunctionEntry {
                        name: spec.name.clone(),
                        module: spec.module.clone(),
                        is_async: spec.is_async,
                        is_class: false,
                        is_load_balanced: load_balanced,
                        http_method: method.filter(|_| load_balanced),
                        http_path: path.filter(|_| load_balanced),
                        component: component.artifact_path(),
                        component_sha256: component.sha256.clone(),
                    });
            }
        }

        let mut models = BTreeMap::new();
        for model in &self.models {
            if !is_valid_name(&model.name) {
                errors.push(ValidationError::InvalidName {
                    what: "model",
                    name: model.name.clone(),
                });
            }
            for resource in &model.resources {
                if !configs.contains_key(resource.as_str()) {
                    errors.push(ValidationError::ModelForUndeclaredResource {
                        model: model.name.clone(),
                        resource: resource.clone(),
                    });
                }
            }
            if let Some(sessions) = model.sessions
                && !(1..=64).contains(&sessions)
            {
                errors.push(ValidationError::ModelSessionsRange {
                    model: model.name.clone(),
                    sessions,
                });
            }
            let entry = ModelEntry {
                file: model.artifact_path(),
                sha256: model.sha256.clone(),
                size: model.size,
                encoding: "onnx".to_string(),
                resources: model.resources.clone(),
                sessions: model.sessions,
            };
            if models.insert(model.name.clone(), entry).is_some() {
                errors.push(ValidationError::DuplicateModel {
                    model: model.name.clone(),
                });
            }
        }

        if seen.is_empty() {
            errors.push(ValidationError::EmptyApp {
                project: self.project_name.clone(),
            });
        }
        if !errors.is_empty() {
            return Err(ValidationErrors(errors));
        }

        let mut resources = BTreeMap::new();
        let mut function_registry = BTreeMap::new();
        for (name, functions) in &by_resource {
            for f in functions {
                function_registry.insert(f.name.clone(), name.to_string());
            }
        }
        for (name, functions) in by_resource {
            let (config, _) = configs[name];
            let makes_remote_calls = self.makes_remote_calls(name, &function_registry);
            let mut entry = resource_entry(config, functions, makes_remote_calls);
            entry.config_hash = config_hash(&entry);
            resources.insert(name.to_string(), entry);
        }

        let components: BTreeMap<String, ComponentEntry> = self
            .components
            .iter()
            .map(|c| {
                (
                    c.artifact_path(),
                    ComponentEntry {
                        sha256: c.sha256.clone(),
                        size: c.size,
                    },
                )
            })
            .collect();
        // Models count as code: a new model must restart the endpoints serving it.
        let fingerprint_input: String = components
            .iter()
            .map(|(path, c)| format!("{path}\0{}\n", c.sha256))
            .chain(
                models
                    .values()
                    .map(|m| format!("{}\0{}\n", m.file, m.sha256)),
            )
            .collect();

        Ok(Manifest {
            version: crate::MANIFEST_VERSION.to_string(),
            generated_at: self.generated_at,
            project_name: self.project_name,
            flash_contract: crate::CONTRACT.to_string(),
            resources,
            function_registry,
            routes,
            components,
            models,
            source_fingerprint: Some(crate::sha256_hex(fingerprint_input.as_bytes())),
            resources_endpoints: None,
            extra: Default::default(),
        })
    }
}

impl ManifestBuilder {
    /// Whether a function of `resource`, in any component, may call a function that
    /// another resource serves (`registry`: function → resource).
    fn makes_remote_calls(&self, resource: &str, registry: &BTreeMap<String, String>) -> bool {
        let remote: BTreeSet<&str> = registry
            .iter()
            .filter(|(_, r)| r.as_str() != resource)
            .map(|(f, _)| f.as_str())
            .collect();
        if remote.is_empty() {
            return false;
        }
        self.components.iter().any(|component| {
            let mut served = component
                .description
                .functions
                .iter()
                .filter(|f| f.resource == resource)
                .map(|f| f.name.as_str())
                .peekable();
            served.peek().is_some() && component.peer_calls.may_call_any(served, &remote)
        })
    }
}

/// The container disk limit of a CPU instance id (reference §1.4): vCPU × 10 GB for `cpu3g`
/// and `cpu3c`, vCPU × 15 GB for `cpu5c`; `None` for an id of another shape.
pub fn cpu_disk_limit_gb(instance_id: &str) -> Option<u32> {
    let mut parts = instance_id.split('-');
    let family = parts.next()?;
    let vcpus: u32 = parts.next()?.parse().ok()?;
    let per_vcpu = match family {
        "cpu3g" | "cpu3c" => 10,
        "cpu5c" => 15,
        _ => return None,
    };
    Some(vcpus * per_vcpu)
}

fn check_placement(config: &ResourceConfig, errors: &mut Vec<ValidationError>) {
    let placement = &config.placement;
    let mut invalid = |reason: String| {
        errors.push(ValidationError::InvalidPlacement {
            resource: config.name.clone(),
            reason,
        })
    };
    match &config.compute {
        Compute::Gpu { .. } => {
            for location in &placement.locations {
                if !DATA_CENTERS.contains(&location.as_str()) {
                    invalid(format!(
                        "data centre `{location}` is not one of {}",
                        DATA_CENTERS.join(", ")
                    ));
                }
            }
            if let Some(version) = &placement.min_cuda_version
                && !CUDA_VERSIONS.contains(&version.as_str())
            {
                invalid(format!(
                    "minimum CUDA version `{version}` is not one of {}",
                    CUDA_VERSIONS.join(", ")
                ));
            }
        }
        Compute::Cpu { instance_ids } => {
            for location in &placement.locations {
                if !CPU_DATA_CENTERS.contains(&location.as_str()) {
                    invalid(format!(
                        "CPU endpoints run only in {}; data centre `{location}` cannot be used",
                        CPU_DATA_CENTERS.join(", ")
                    ));
                }
            }
            if placement.min_cuda_version.is_some() {
                invalid("a minimum CUDA version applies to GPU configs only; remove it".into());
            }
            let limit = instance_ids
                .iter()
                .filter_map(|i| cpu_disk_limit_gb(i))
                .min();
            if let (Some(disk), Some(limit)) = (placement.container_disk_gb, limit)
                && disk > limit
            {
                invalid(format!(
                    "a container disk of {disk} GB is more than the {limit} GB the smallest CPU \
                     instance of the config allows"
                ));
            }
        }
    }
    if placement.container_disk_gb == Some(0) {
        invalid("the container disk must be at least 1 GB".into());
    }
}

fn check_config(config: &ResourceConfig, errors: &mut Vec<ValidationError>) {
    check_placement(config, errors);
    if config.workers_min > config.workers_max {
        errors.push(ValidationError::WorkersRange {
            resource: config.name.clone(),
            min: config.workers_min,
            max: config.workers_max,
        });
    }
    if let Some(seconds) = config.idle_timeout_s
        && !IDLE_TIMEOUT_RANGE_S.contains(&seconds)
    {
        errors.push(ValidationError::IdleTimeoutRange {
            resource: config.name.clone(),
            seconds,
        });
    }
    if config.kind == EndpointKind::LoadBalanced
        && let Some(scaler @ ScalerType::QueueDelay) = config.scaler_type
    {
        errors.push(ValidationError::LoadBalancedScaler {
            resource: config.name.clone(),
            scaler: scaler.as_str().to_string(),
        });
    }
}

fn check_route(
    function: &str,
    resource: &str,
    method: &str,
    path: &str,
    errors: &mut Vec<ValidationError>,
) {
    if !HTTP_METHODS.contains(&method) {
        errors.push(ValidationError::InvalidMethod {
            function: function.to_string(),
            resource: resource.to_string(),
            method: method.to_string(),
        });
    }
    if !path.starts_with('/') {
        errors.push(ValidationError::PathWithoutSlash {
            function: function.to_string(),
            resource: resource.to_string(),
            path: path.to_string(),
        });
    } else if RESERVED_PATHS.contains(&path.trim_end_matches('/')) {
        errors.push(ValidationError::ReservedPath {
            function: function.to_string(),
            resource: resource.to_string(),
            path: path.to_string(),
        });
    }
}

fn resource_entry(
    config: &ResourceConfig,
    functions: Vec<FunctionEntry>,
    makes_remote_calls: bool,
) -> ResourceEntry {
    let load_balanced = config.kind == EndpointKind::LoadBalanced;
    let (resource_type, gpu_ids, gpu_count, instance_ids) = match &config.compute {
        Compute::Gpu { gpu_ids, gpu_count } => (
            if load_balanced {
                ResourceType::LiveLoadBalancer
            } else {
                ResourceType::LiveServerless
            },
            Some(gpu_ids.join(",")),
            Some(*gpu_count),
            None,
        ),
        Compute::Cpu { instance_ids } => (
            if load_balanced {
                ResourceType::CpuLiveLoadBalancer
            } else {
                ResourceType::CpuLiveServerless
            },
            None,
            None,
            Some(instance_ids.clone()),
        ),
    };
    let default_scaler = if load_balanced {
        ScalerType::RequestCount
    } else {
        ScalerType::QueueDelay
    };
    ResourceEntry {
        resource_type,
        functions,
        is_load_balanced: load_balanced,
        makes_remote_calls,
        config_hash: String::new(),
        gpu_ids,
        gpu_count,
        instance_ids,
        workers_min: config.workers_min,
        workers_max: config.workers_max,
        idle_timeout: config.idle_timeout_s.unwrap_or(DEFAULT_IDLE_TIMEOUT_S),
        execution_timeout_ms: config.execution_timeout_ms,
        scaler_type: config.scaler_type.unwrap_or(default_scaler),
        scaler_value: config.scaler_value.unwrap_or(DEFAULT_SCALER_VALUE),
        env: config.env.iter().cloned().collect(),
        locations: (!config.placement.locations.is_empty())
            .then(|| config.placement.locations.join(",")),
        min_cuda_version: config.placement.min_cuda_version.clone(),
        container_disk_gb: config.placement.container_disk_gb,
        flashboot: config.placement.flashboot,
        extra: Default::default(),
    }
}

/// `generated_at` for a build: `SOURCE_DATE_EPOCH` when set (reproducible builds), else now.
pub fn generated_at_now() -> anyhow::Result<String> {
    use anyhow::Context;
    let time = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) if !value.trim().is_empty() => {
            let secs: i64 = value.trim().parse().with_context(|| {
                format!("SOURCE_DATE_EPOCH=`{value}` is not a number of seconds")
            })?;
            time::OffsetDateTime::from_unix_timestamp(secs)
                .with_context(|| format!("SOURCE_DATE_EPOCH=`{value}` is out of range"))?
        }
        _ => time::OffsetDateTime::now_utc(),
    };
    Ok(format_timestamp(time))
}

/// RFC 3339 in UTC with a `Z` suffix and millisecond precision.
pub fn format_timestamp(time: time::OffsetDateTime) -> String {
    let t = time.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}
