//! Resource configs: the endpoints an app deploys to.
//!
//! A [`ResourceConfig`] is built in a `const` with `const fn` builders, so `#[remote]`
//! can reference it from statics and check it at compile time. It maps 1:1 to the WIT
//! `resource-config` record that `describe` reports. The four constructors match the
//! Python SDK's resource classes:
//!
//! | Python                | Rust                                                  |
//! |-----------------------|-------------------------------------------------------|
//! | `LiveServerless`      | `ResourceConfig::queue(name)` (GPU, any pool)         |
//! | `CpuLiveServerless`   | `ResourceConfig::queue(name).cpu(&[..])`              |
//! | `LiveLoadBalancer`    | `ResourceConfig::load_balanced(name)` (GPU, any pool) |
//! | `CpuLiveLoadBalancer` | `ResourceConfig::load_balanced(name).cpu(&[..])`      |

use crate::bindings::flash::runtime::types as wit;

/// How an endpoint receives work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndpointKind {
    /// Queue-based: jobs via `/run` and `/runsync`, one function per job.
    Queue,
    /// Load-balanced: plain HTTP routes (`#[remote(CFG, method = .., path = ..)]`).
    LoadBalanced,
}

/// What an endpoint runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compute {
    /// GPU workers from the given pools (empty: any), `count` GPUs per worker.
    Gpu {
        ids: &'static [&'static str],
        count: u32,
    },
    /// CPU workers of the given instance types (e.g. `cpu3c-2-4`).
    Cpu {
        instance_ids: &'static [&'static str],
    },
}

/// How the platform scales workers between the minimum and the maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScalerType {
    /// Scale up when jobs wait in the queue longer than the value, in seconds.
    QueueDelay,
    /// Scale up when a worker has more requests in flight than the value.
    RequestCount,
}

/// One deployable endpoint. Build it in a `const`:
///
/// ```
/// use flash_sdk::{ResourceConfig, ScalerType};
///
/// const GPU: ResourceConfig = ResourceConfig::queue("gpu_config")
///     .gpu(&["AMPERE_48", "ADA_24"])
///     .workers(0, 3)
///     .scaler(ScalerType::QueueDelay, 2);
/// const API: ResourceConfig = ResourceConfig::load_balanced("api")
///     .cpu(&["cpu3c-1-2"])
///     .workers(1, 3)
///     .env(&[("LOG_LEVEL", "debug")]);
/// assert_eq!(API.name(), "api");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResourceConfig {
    name: &'static str,
    kind: EndpointKind,
    compute: Compute,
    workers_min: u32,
    workers_max: u32,
    idle_timeout_s: Option<u32>,
    execution_timeout_ms: Option<u64>,
    scaler: Option<(ScalerType, u32)>,
    env: &'static [(&'static str, &'static str)],
    locations: &'static [&'static str],
    min_cuda_version: Option<&'static str>,
    container_disk_gb: Option<u32>,
    flashboot: Option<bool>,
}

impl ResourceConfig {
    /// Default worker range, as on the platform: scale to zero, at most three.
    pub const DEFAULT_WORKERS: (u32, u32) = (0, 3);

    const fn new(name: &'static str, kind: EndpointKind) -> Self {
        assert!(
            is_valid_name(name),
            "resource config names must be 1-64 characters from letters, digits, `_` and `-`"
        );
        ResourceConfig {
            name,
            kind,
            compute: Compute::Gpu { ids: &[], count: 1 },
            workers_min: Self::DEFAULT_WORKERS.0,
            workers_max: Self::DEFAULT_WORKERS.1,
            idle_timeout_s: None,
            execution_timeout_ms: None,
            scaler: None,
            env: &[],
            locations: &[],
            min_cuda_version: None,
            container_disk_gb: None,
            flashboot: None,
        }
    }

    /// A queue-based endpoint (one GPU of any pool until told otherwise).
    pub const fn queue(name: &'static str) -> Self {
        Self::new(name, EndpointKind::Queue)
    }

    /// A load-balanced HTTP endpoint (one GPU of any pool until told otherwise).
    pub const fn load_balanced(name: &'static str) -> Self {
        Self::new(name, EndpointKind::LoadBalanced)
    }

    /// Runs on GPU workers from these pools (e.g. `AMPERE_48`); empty means any.
    pub const fn gpu(mut self, ids: &'static [&'static str]) -> Self {
        let count = match self.compute {
            Compute::Gpu { count, .. } => count,
            Compute::Cpu { .. } => 1,
        };
        self.compute = Compute::Gpu { ids, count };
        self
    }

    /// GPUs per worker (switches to GPU compute if the config was CPU).
    pub const fn gpu_count(mut self, count: u32) -> Self {
        assert!(
            count > 0,
            "ResourceConfig::gpu_count: count must be at least 1"
        );
        let ids = match self.compute {
            Compute::Gpu { ids, .. } => ids,
            Compute::Cpu { .. } => &[],
        };
        self.compute = Compute::Gpu { ids, count };
        self
    }

    /// Runs on CPU workers of these instance types (e.g. `cpu3c-2-4`).
    pub const fn cpu(mut self, instance_ids: &'static [&'static str]) -> Self {
        self.compute = Compute::Cpu { instance_ids };
        self
    }

    /// Worker range. Fails to compile (in a `const`) when `min > max`.
    pub const fn workers(mut self, min: u32, max: u32) -> Self {
        assert!(
            min <= max,
            "ResourceConfig::workers: min must not exceed max"
        );
        self.workers_min = min;
        self.workers_max = max;
        self
    }

    /// Seconds an idle worker stays up, 1 to 3600 (platform default: 60).
    pub const fn idle_timeout_s(mut self, seconds: u32) -> Self {
        assert!(
            seconds >= 1 && seconds <= 3600,
            "ResourceConfig::idle_timeout_s: must be within 1..=3600"
        );
        self.idle_timeout_s = Some(seconds);
        self
    }

    /// Per-job deadline in milliseconds (default: the host's).
    pub const fn execution_timeout_ms(mut self, millis: u64) -> Self {
        self.execution_timeout_ms = Some(millis);
        self
    }

    /// Scaling policy and its threshold (default: queue delay for queue endpoints,
    /// request count for load-balanced ones; value 4). Load-balanced endpoints can only
    /// scale by request count.
    pub const fn scaler(mut self, kind: ScalerType, value: u32) -> Self {
        assert!(
            !matches!(
                (self.kind, kind),
                (EndpointKind::LoadBalanced, ScalerType::QueueDelay)
            ),
            "ResourceConfig::scaler: load-balanced endpoints scale by ScalerType::RequestCount"
        );
        self.scaler = Some((kind, value));
        self
    }

    /// Environment variables for this config's components (and nothing else).
    pub const fn env(mut self, vars: &'static [(&'static str, &'static str)]) -> Self {
        self.env = vars;
        self
    }

    /// Data centres the platform may place workers in (RunPod ids such as `EU-RO-1`);
    /// default: every data centre for GPU workers, the platform's choice for CPU ones.
    /// `flash build` checks the ids.
    pub const fn locations(mut self, data_centers: &'static [&'static str]) -> Self {
        self.locations = data_centers;
        self
    }

    /// Lowest CUDA version of GPU workers (`"11.8"`, `"12.0"` to `"13.0"`; default
    /// `"12.8"`). `flash build` checks the version.
    pub const fn min_cuda_version(mut self, version: &'static str) -> Self {
        self.min_cuda_version = Some(version);
        self
    }

    /// Container disk in GB (default: 64 for GPU workers, the instance's limit for CPU ones).
    pub const fn container_disk_gb(mut self, gigabytes: u32) -> Self {
        assert!(
            gigabytes >= 1,
            "ResourceConfig::container_disk_gb: must be at least 1"
        );
        self.container_disk_gb = Some(gigabytes);
        self
    }

    /// FlashBoot, the platform's snapshot-based fast cold start (default: on).
    pub const fn flashboot(mut self, enabled: bool) -> Self {
        self.flashboot = Some(enabled);
        self
    }

    /// The config's name, unique within the app; the host's `FLASH_RESOURCE_NAME`.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Queue or load-balanced.
    pub const fn kind(&self) -> EndpointKind {
        self.kind
    }

    /// GPU or CPU, and which.
    pub const fn compute(&self) -> Compute {
        self.compute
    }

    /// `(min, max)` workers.
    pub const fn worker_range(&self) -> (u32, u32) {
        (self.workers_min, self.workers_max)
    }

    /// The idle timeout, if set.
    pub const fn idle_timeout(&self) -> Option<u32> {
        self.idle_timeout_s
    }

    /// The execution timeout in milliseconds, if set.
    pub const fn execution_timeout(&self) -> Option<u64> {
        self.execution_timeout_ms
    }

    /// The scaling policy, if set.
    pub const fn scaling(&self) -> Option<(ScalerType, u32)> {
        self.scaler
    }

    /// The environment variables.
    pub const fn env_vars(&self) -> &'static [(&'static str, &'static str)] {
        self.env
    }

    /// The WIT record `describe` reports.
    pub(crate) fn to_wit(self) -> wit::ResourceConfig {
        let strings = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect();
        wit::ResourceConfig {
            name: self.name.to_string(),
            kind: match self.kind {
                EndpointKind::Queue => wit::EndpointKind::Queue,
                EndpointKind::LoadBalanced => wit::EndpointKind::LoadBalanced,
            },
            compute: match self.compute {
                Compute::Gpu { ids, count } => wit::Compute::Gpu(wit::GpuSpec {
                    gpu_ids: strings(ids),
                    gpu_count: count,
                }),
                Compute::Cpu { instance_ids } => wit::Compute::Cpu(wit::CpuSpec {
                    instance_ids: strings(instance_ids),
                }),
            },
            workers_min: self.workers_min,
            workers_max: self.workers_max,
            idle_timeout_s: self.idle_timeout_s,
            execution_timeout_ms: self.execution_timeout_ms,
            scaler_type: self.scaler.map(|(kind, _)| match kind {
                ScalerType::QueueDelay => wit::ScalerType::QueueDelay,
                ScalerType::RequestCount => wit::ScalerType::RequestCount,
            }),
            scaler_value: self.scaler.map(|(_, value)| value),
            env: self
                .env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            placement: wit::Placement {
                locations: strings(self.locations),
                min_cuda_version: self.min_cuda_version.map(str::to_string),
                container_disk_gb: self.container_disk_gb,
                flashboot: self.flashboot,
            },
        }
    }
}

/// The host's naming rule: names end up in URLs, env vars and file names.
const fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > 64 {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPU: ResourceConfig = ResourceConfig::queue("gpu_config")
        .gpu(&["AMPERE_48", "ADA_24"])
        .gpu_count(2)
        .workers(0, 3)
        .idle_timeout_s(30)
        .execution_timeout_ms(60_000)
        .scaler(ScalerType::QueueDelay, 2)
        .env(&[("MODEL", "tiny")]);

    const API: ResourceConfig = ResourceConfig::load_balanced("api")
        .cpu(&["cpu3c-1-2"])
        .workers(1, 3);

    #[test]
    fn defaults_match_the_platform() {
        let c = ResourceConfig::queue("q");
        assert_eq!(c.kind(), EndpointKind::Queue);
        assert_eq!(c.compute(), Compute::Gpu { ids: &[], count: 1 });
        assert_eq!(c.worker_range(), (0, 3));
        assert_eq!(
            (c.idle_timeout(), c.execution_timeout(), c.scaling()),
            (None, None, None)
        );
        assert!(c.env_vars().is_empty());
    }

    #[test]
    fn builders_set_every_field() {
        assert_eq!(GPU.name(), "gpu_config");
        assert_eq!(
            GPU.compute(),
            Compute::Gpu {
                ids: &["AMPERE_48", "ADA_24"],
                count: 2
            }
        );
        assert_eq!(GPU.idle_timeout(), Some(30));
        assert_eq!(GPU.execution_timeout(), Some(60_000));
        assert_eq!(GPU.scaling(), Some((ScalerType::QueueDelay, 2)));
        assert_eq!(GPU.env_vars(), &[("MODEL", "tiny")]);
        assert_eq!(API.kind(), EndpointKind::LoadBalanced);
        assert_eq!(
            API.compute(),
            Compute::Cpu {
                instance_ids: &["cpu3c-1-2"]
            }
        );
        assert_eq!(API.worker_range(), (1, 3));
    }

    #[test]
    fn gpu_count_after_cpu_switches_to_any_gpu() {
        let c = ResourceConfig::queue("q").cpu(&["cpu3c-1-2"]).gpu_count(4);
        assert_eq!(c.compute(), Compute::Gpu { ids: &[], count: 4 });
    }

    #[test]
    #[should_panic(expected = "min must not exceed max")]
    fn workers_rejects_an_inverted_range() {
        let _ = std::hint::black_box(ResourceConfig::queue("q")).workers(3, 1);
    }

    #[test]
    fn names_follow_the_host_rule() {
        assert!(is_valid_name("gpu_config-2"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("a b"));
        assert!(!is_valid_name("ünï"));
        assert!(!is_valid_name(&"x".repeat(65)));
    }

    #[test]
    #[should_panic(expected = "resource config names must be")]
    fn constructors_reject_invalid_names() {
        let _ = ResourceConfig::queue(std::hint::black_box("no spaces"));
    }

    #[test]
    #[should_panic(expected = "load-balanced endpoints scale by ScalerType::RequestCount")]
    fn load_balanced_configs_scale_by_request_count() {
        let _ = std::hint::black_box(ResourceConfig::load_balanced("api"))
            .scaler(ScalerType::QueueDelay, 4);
    }

    #[test]
    #[should_panic(expected = "must be within 1..=3600")]
    fn idle_timeout_is_bounded() {
        let _ = std::hint::black_box(ResourceConfig::queue("q")).idle_timeout_s(0);
    }

    #[test]
    fn maps_to_the_wit_record() {
        let w = GPU.to_wit();
        assert_eq!(w.name, "gpu_config");
        assert!(matches!(w.kind, wit::EndpointKind::Queue));
        match &w.compute {
            wit::Compute::Gpu(g) => {
                assert_eq!(g.gpu_ids, ["AMPERE_48", "ADA_24"]);
                assert_eq!(g.gpu_count, 2);
            }
            wit::Compute::Cpu(_) => panic!("expected GPU compute"),
        }
        assert_eq!((w.workers_min, w.workers_max), (0, 3));
        assert_eq!(w.idle_timeout_s, Some(30));
        assert_eq!(w.execution_timeout_ms, Some(60_000));
        assert!(matches!(w.scaler_type, Some(wit::ScalerType::QueueDelay)));
        assert_eq!(w.scaler_value, Some(2));
        assert_eq!(w.env, [("MODEL".to_string(), "tiny".to_string())]);

        let w = API.to_wit();
        assert!(matches!(w.kind, wit::EndpointKind::LoadBalanced));
        assert!(matches!(&w.compute, wit::Compute::Cpu(c) if c.instance_ids == ["cpu3c-1-2"]));
        assert!(w.scaler_type.is_none() && w.scaler_value.is_none());
        assert_eq!(w.placement.locations, Vec::<String>::new());
        assert!(w.placement.min_cuda_version.is_none() && w.placement.flashboot.is_none());
    }

    #[test]
    fn placement_maps_to_the_wit_record() {
        const PLACED: ResourceConfig = ResourceConfig::queue("placed")
            .gpu(&["ADA_24"])
            .locations(&["EU-RO-1", "US-CA-2"])
            .min_cuda_version("12.4")
            .container_disk_gb(100)
            .flashboot(false);
        let p = PLACED.to_wit().placement;
        assert_eq!(p.locations, ["EU-RO-1", "US-CA-2"]);
        assert_eq!(p.min_cuda_version.as_deref(), Some("12.4"));
        assert_eq!(p.container_disk_gb, Some(100));
        assert_eq!(p.flashboot, Some(false));
    }

    #[test]
    #[should_panic(expected = "container_disk_gb: must be at least 1")]
    fn container_disk_is_at_least_one_gigabyte() {
        let _ = std::hint::black_box(ResourceConfig::queue("q")).container_disk_gb(0);
    }
}
