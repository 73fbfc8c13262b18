//! The env contract of `flash-host`, parsed once into a typed [`HostEnv`].
//!
//! A worker is configured by its environment: the platform's variables (RunPod's, or the
//! same ones from `flash server`), the endpoint template's env written at deploy, and a few
//! Flash settings. Every variable is read here, with one rule: **a blank value means
//! unset** (templates often carry `KEY=""`). Everything past this module takes typed
//! values, so a malformed setting is reported at boot, naming the variable, before any
//! work starts.
//!
//! | variable | meaning |
//! |---|---|
//! | `FLASH_RESOURCE_NAME` | the resource config served (required except with `--test-input` or as mothership) |
//! | `FLASH_ARTIFACT_URL` | an artifact URL or path, overriding RunPod's contract (local runs and tools) |
//! | `FLASH_MANIFEST_PATH` | the manifest of an already unpacked artifact |
//! | `FLASH_BUILD_ARTIFACT_PATH` | RunPod's artifact file (default `/root/.runpod/artifact.tar.gz`), unpacked into the app directory |
//! | `FLASH_DISABLE_UNPACK` | `1`, `true` or `yes`: the app directory already holds the unpacked artifact |
//! | `FLASH_APP_DIR` | where the artifact is unpacked (default `/app`, as RunPod's worker image) |
//! | `RUNPOD_ENDPOINT_ID`, `RUNPOD_POD_ID` | set by the platform: this is a deployed container, so the artifact must be at RunPod's path |
//! | `RUNPOD_WEBHOOK_GET_JOB`, `…_POST_OUTPUT`, `…_POST_STREAM`, `…_PING`, `RUNPOD_AI_API_KEY`, `RUNPOD_PING_INTERVAL` | queue worker protocol (see [`crate::queue`]) |
//! | `FLASH_LISTEN_ADDR` (or `0.0.0.0:$PORT`, default port 80) | load-balanced listen address |
//! | `RUNPOD_API_KEY` | auth of the load-balanced routes, of peer calls and artifact downloads |
//! | `FLASH_DISABLE_RP_AUTH=true` | serve load-balanced routes without auth |
//! | `FLASH_ENVIRONMENT_ID`, `RUNPOD_API_BASE_URL` | find peers through the State Manager (RunPod's API when the URL is unset) |
//! | `FLASH_MANIFEST_TTL_S` | cache time of the fetched manifest (default 300) |
//! | `FLASH_PEER_ENDPOINTS` | JSON `{resource: url}` overriding both |
//! | `FLASH_CONCURRENCY` | jobs / requests run at once (default 1 for queue, 64 for load-balanced) |
//! | `FLASH_MAX_MEMORY_MB` | memory cap per instance: all its linear memories and tables together (default 256) |
//! | `FLASH_CALL_BUDGET_MB` | host memory one call may make the host spend on it: the `wasi:nn` tensors and guest-loaded models it holds, plus the progress chunks and output it sends; past it the call fails naming this variable (default: `FLASH_MAX_MEMORY_MB`) |
//! | `FLASH_GUEST_OUTPUT_MAX_KB` | guest stdout and stderr logged per call, together; the rest is dropped and counted (default 1024; 0 logs none) |
//! | `FLASH_READY_INSTANCES` | fresh instances kept ready per component, made before the calls that take them so that a call does not wait for its instantiation (default 2, at most 4; 0 instantiates in each call) |
//! | `FLASH_KEEP_RESIDENT_KB` | memory of a recycled instance slot reset in place instead of returned to the kernel (default 1024; 0 trades speed for less resident memory) |
//! | `FLASH_CACHE_DIR` (else `$XDG_CACHE_HOME/flash`, `~/.cache/flash`) | the AOT cache of compiled components is its `aot/` |
//! | `FLASH_CACHE_MAX_MB` | size bound of the AOT cache; least recently used entries are evicted past it (default 2048) |
//! | `FLASH_PERFMAP` | `1`, `true` or `yes`: write `/tmp/perf-<pid>.map` so that `perf` names guest functions (profiling) |
//! | `FLASH_HEADER_READ_TIMEOUT_S` | how long a load-balanced client may take to send a request head before its connection is closed (default 30) |
//! | `FLASH_PEER_TIMEOUT_S` | bound of one peer call (default 300) |
//! | `FLASH_LOG_FORMAT` | `json` or `text`; unset: text on a terminal, JSON lines elsewhere (see [`crate::logging`]) |
//! | `FLASH_METRICS_ADDR` | also serve `GET /metrics` here, without auth (queue workers have no other port; see [`crate::metrics`]) |
//! | `FLASH_IS_MOTHERSHIP=true` | run as the environment's mothership instead (see [`crate::mothership`]) |
//! | `ORT_DYLIB_PATH` | ONNX Runtime shared library for `wasi:nn`; required when the resource preloads models (see [`crate::models`]) |
//! | `FLASH_NN_TARGET` | `cpu` or `gpu`: run preloaded models there instead of the resource config's target |
//! | `FLASH_NN_SESSIONS` / `FLASH_NN_THREADS` | session pool size per model (when the model sets none; default: cores, at most 4) / intra-op threads per session (default 1) |

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::boot::ArtifactSource;
use crate::models::NnOptions;

/// RunPod's artifact path on a worker (reference §5.6).
pub const DEFAULT_ARTIFACT_PATH: &str = "/root/.runpod/artifact.tar.gz";
/// Where RunPod's worker image unpacks the artifact.
pub const DEFAULT_APP_DIR: &str = "/app";

/// The variables a host reads, with the blank-means-unset rule applied once.
#[derive(Clone, Default)]
pub struct Vars(BTreeMap<String, String>);

/// Names only: values include keys (`RUNPOD_API_KEY`, `RUNPOD_AI_API_KEY`).
impl std::fmt::Debug for Vars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Vars {
    /// The process environment.
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars())
    }

    /// Any set of pairs (tests pass a literal list).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .filter(|(_, v)| !v.trim().is_empty())
                .collect(),
        )
    }

    /// The value of `name`; `None` when it is unset or blank.
    pub fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }

    /// Whether `name` is one of `1`, `true`, `yes` (any case).
    pub fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
    }

    /// `name` parsed as a `T`; an error that names the variable when it does not parse.
    pub fn parse<T: FromStr>(&self, name: &str) -> Result<Option<T>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| anyhow!("{name}=`{v}` is not a valid {}", kind_of::<T>())),
        }
    }
}

fn kind_of<T>() -> &'static str {
    let name = std::any::type_name::<T>();
    if name.starts_with('u') || name.starts_with('i') {
        "number"
    } else {
        "value"
    }
}

/// What the binary was asked to do on its command line (flags override the env).
#[derive(Debug, Clone, Default)]
pub struct HostArgs {
    pub artifact: Option<String>,
    pub manifest: Option<PathBuf>,
    pub resource: Option<String>,
    /// Run this job input once, print the result and exit.
    pub test_input: Option<serde_json::Value>,
    /// Run the test input this many times (timed, after a warm-up run).
    pub repeat: u32,
}

/// Where peers' URLs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerDiscovery {
    /// `FLASH_PEER_ENDPOINTS`.
    Static(BTreeMap<String, String>),
    /// The environment's active build in the State Manager.
    StateManager {
        environment_id: String,
        ttl: Option<Duration>,
    },
    /// The manifest's own `resources_endpoints`.
    Manifest,
}

/// The whole env contract of a host, typed. `Debug` leaves the keys out.
#[derive(Clone)]
pub struct HostEnv {
    pub resource: Option<String>,
    pub mothership: bool,
    pub artifact: ArtifactSource,
    /// `RUNPOD_API_KEY`.
    pub api_key: Option<String>,
    pub auth_disabled: bool,
    pub listen: SocketAddr,
    pub concurrency: Option<usize>,
    pub max_memory_mb: usize,
    /// `FLASH_CALL_BUDGET_MB`; `None`: the memory cap.
    pub call_budget_mb: Option<usize>,
    pub guest_output_max_kb: usize,
    pub keep_resident_kb: Option<usize>,
    /// `FLASH_READY_INSTANCES`.
    pub ready_instances: usize,
    /// The AOT cache (`None`: no directory could be named, so no cache).
    pub aot_cache: Option<flash_runtime::AotCache>,
    pub perfmap: bool,
    pub peer_timeout: Duration,
    pub header_read_timeout: Duration,
    /// `FLASH_METRICS_ADDR`: where `/metrics` is served without auth, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    pub peers: PeerDiscovery,
    pub nn: NnOptions,
    /// The variables themselves, for the parts that read their own (queue protocol,
    /// State Manager client, mothership options).
    pub vars: Vars,
}

impl std::fmt::Debug for HostEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostEnv")
            .field("resource", &self.resource)
            .field("mothership", &self.mothership)
            .field("artifact", &self.artifact)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .field("vars", &self.vars)
            .finish_non_exhaustive()
    }
}

impl HostEnv {
    /// Parses `vars`, with the command line's overrides.
    pub fn parse(vars: Vars, args: &HostArgs) -> Result<Self> {
        let resource = args
            .resource
            .clone()
            .or_else(|| vars.get("FLASH_RESOURCE_NAME"));
        let mothership = vars
            .get(flash_deploy::mothership::MOTHERSHIP_ENV)
            .is_some_and(|v| v == "true");
        if resource.is_none() && args.test_input.is_none() && !mothership {
            bail!(
                "FLASH_RESOURCE_NAME is not set: name the resource config this host serves (or \
                 use --test-input to run one job with every resource local)"
            );
        }
        let max_memory_mb: usize = vars.parse("FLASH_MAX_MEMORY_MB")?.unwrap_or(256);
        let keep_resident_kb: Option<usize> = vars.parse("FLASH_KEEP_RESIDENT_KB")?;
        let call_budget_mb: Option<usize> = vars.parse("FLASH_CALL_BUDGET_MB")?;
        match call_budget_mb {
            Some(0) => bail!(
                "FLASH_CALL_BUDGET_MB=0: a call needs room for its output; leave it unset for \
                 the default (the memory cap, FLASH_MAX_MEMORY_MB)"
            ),
            Some(mb) if mb.checked_mul(1 << 20).is_none() => {
                bail!("FLASH_CALL_BUDGET_MB={mb} does not fit this machine's address space")
            }
            _ => {}
        }
        if max_memory_mb.checked_mul(1 << 20).is_none() {
            bail!("FLASH_MAX_MEMORY_MB={max_memory_mb} does not fit this machine's address space");
        }
        let guest_output_max_kb: usize = vars
            .parse("FLASH_GUEST_OUTPUT_MAX_KB")?
            .unwrap_or(flash_runtime::guest_log::DEFAULT_MAX_GUEST_OUTPUT >> 10);
        if guest_output_max_kb.checked_mul(1 << 10).is_none() {
            bail!(
                "FLASH_GUEST_OUTPUT_MAX_KB={guest_output_max_kb} does not fit this machine's \
                 address space"
            );
        }
        if let Some(kb) = keep_resident_kb
            && kb.checked_mul(1024).is_none_or(|b| b > max_memory_mb << 20)
        {
            bail!(
                "FLASH_KEEP_RESIDENT_KB={kb} is more than an instance's memory cap \
                 (FLASH_MAX_MEMORY_MB={max_memory_mb})"
            );
        }
        let listen = match vars.get("FLASH_LISTEN_ADDR") {
            Some(addr) => addr
                .trim()
                .parse()
                .with_context(|| format!("FLASH_LISTEN_ADDR=`{addr}` is not host:port"))?,
            None => SocketAddr::from(([0, 0, 0, 0], vars.parse::<u16>("PORT")?.unwrap_or(80))),
        };
        let nn = NnOptions {
            ort_dylib_path: vars.get(flash_nn::ORT_DYLIB_PATH).map(PathBuf::from),
            target: match vars.get("FLASH_NN_TARGET") {
                Some(t) => Some(
                    t.parse()
                        .map_err(|e: String| anyhow!("FLASH_NN_TARGET: {e}"))?,
                ),
                None => None,
            },
            sessions: vars.parse("FLASH_NN_SESSIONS")?,
            intra_threads: vars.parse("FLASH_NN_THREADS")?,
        };
        let peers = if let Some(json) = vars.get("FLASH_PEER_ENDPOINTS") {
            PeerDiscovery::Static(
                serde_json::from_str(&json)
                    .context("FLASH_PEER_ENDPOINTS must be a JSON object {resource: url}")?,
            )
        } else if let Some(environment_id) = vars.get("FLASH_ENVIRONMENT_ID")
            && vars.get("RUNPOD_API_KEY").is_some()
        {
            PeerDiscovery::StateManager {
                environment_id: environment_id.trim().to_string(),
                ttl: vars
                    .parse::<u64>("FLASH_MANIFEST_TTL_S")?
                    .map(Duration::from_secs),
            }
        } else {
            PeerDiscovery::Manifest
        };
        Ok(Self {
            artifact: artifact_source(&vars, args),
            mothership,
            resource,
            api_key: vars.get("RUNPOD_API_KEY"),
            auth_disabled: vars
                .get("FLASH_DISABLE_RP_AUTH")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
            listen,
            concurrency: concurrency(&vars)?,
            max_memory_mb,
            call_budget_mb,
            guest_output_max_kb,
            keep_resident_kb,
            ready_instances: ready_instances(&vars)?,
            aot_cache: flash_runtime::AotCache::from_vars(|name| vars.get(name))?,
            perfmap: vars.flag("FLASH_PERFMAP"),
            peer_timeout: Duration::from_secs(vars.parse("FLASH_PEER_TIMEOUT_S")?.unwrap_or(300)),
            header_read_timeout: match vars.parse::<u64>("FLASH_HEADER_READ_TIMEOUT_S")? {
                Some(0) => bail!("FLASH_HEADER_READ_TIMEOUT_S=0: give clients at least a second"),
                Some(s) => Duration::from_secs(s),
                None => flash_api::serve::DEFAULT_HEADER_READ_TIMEOUT,
            },
            metrics_listen: vars
                .get("FLASH_METRICS_ADDR")
                .map(|addr| {
                    addr.trim().parse().with_context(|| {
                        format!(
                            "FLASH_METRICS_ADDR=`{addr}` is not an address such as 127.0.0.1:9100"
                        )
                    })
                })
                .transpose()?,
            peers,
            nn,
            vars,
        })
    }
}

/// `FLASH_CONCURRENCY`: at least 1, and no more than the instance pool can hold at once
/// (each running call holds an instance; more would fail instead of waiting).
fn concurrency(vars: &Vars) -> Result<Option<usize>> {
    let pool = flash_runtime::engine::DEFAULT_MAX_INSTANCES as usize;
    match vars.parse::<usize>("FLASH_CONCURRENCY")? {
        Some(0) => bail!("FLASH_CONCURRENCY=0: at least one call must be able to run"),
        Some(n) if n > pool => bail!(
            "FLASH_CONCURRENCY={n} is more than this host's instance pool ({pool}): at most \
             {pool} calls can run at once"
        ),
        n => Ok(n),
    }
}

/// `FLASH_READY_INSTANCES`: 0 to [`flash_runtime::ready::MAX_READY_INSTANCES`].
fn ready_instances(vars: &Vars) -> Result<usize> {
    let max = flash_runtime::ready::MAX_READY_INSTANCES;
    match vars.parse::<usize>("FLASH_READY_INSTANCES")? {
        Some(n) if n > max => bail!(
            "FLASH_READY_INSTANCES={n}: at most {max} fresh instances are kept ready per \
             component (each holds memory while it waits; 0 keeps none)"
        ),
        n => Ok(n.unwrap_or(flash_runtime::ready::DEFAULT_READY_INSTANCES)),
    }
}

/// Where the artifact comes from, in order: the `--artifact` flag or `FLASH_ARTIFACT_URL`;
/// `--manifest` or `FLASH_MANIFEST_PATH`; RunPod's contract (`FLASH_BUILD_ARTIFACT_PATH`,
/// or its default in a deployed container or when that file exists); else a search from
/// the working directory.
fn artifact_source(vars: &Vars, args: &HostArgs) -> ArtifactSource {
    if let Some(source) = args
        .artifact
        .clone()
        .or_else(|| vars.get("FLASH_ARTIFACT_URL"))
    {
        return ArtifactSource::Explicit(source);
    }
    if let Some(manifest) = args
        .manifest
        .clone()
        .or_else(|| vars.get("FLASH_MANIFEST_PATH").map(PathBuf::from))
    {
        return ArtifactSource::Unpacked(manifest);
    }
    let deployed = vars.get("RUNPOD_ENDPOINT_ID").is_some() || vars.get("RUNPOD_POD_ID").is_some();
    let archive = vars.get("FLASH_BUILD_ARTIFACT_PATH").map(PathBuf::from);
    let default = PathBuf::from(DEFAULT_ARTIFACT_PATH);
    if archive.is_some() || deployed || default.is_file() {
        return ArtifactSource::RunPod {
            archive: archive.unwrap_or(default),
            app_dir: vars
                .get("FLASH_APP_DIR")
                .map_or_else(|| PathBuf::from(DEFAULT_APP_DIR), PathBuf::from),
            unpack: !vars.flag("FLASH_DISABLE_UNPACK"),
        };
    }
    ArtifactSource::Search
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<HostEnv> {
        HostEnv::parse(
            Vars::from_pairs(pairs.iter().copied()),
            &HostArgs::default(),
        )
    }

    #[test]
    fn blank_means_unset_everywhere() {
        let env = parse(&[
            ("FLASH_RESOURCE_NAME", "api"),
            ("RUNPOD_API_KEY", "  "),
            ("FLASH_MAX_MEMORY_MB", ""),
            ("FLASH_ARTIFACT_URL", " "),
            ("PORT", ""),
        ])
        .unwrap();
        assert_eq!(env.api_key, None);
        assert_eq!(env.max_memory_mb, 256);
        assert_eq!(env.call_budget_mb, None);
        assert_eq!(env.guest_output_max_kb, 1024);
        assert_eq!(env.ready_instances, 2);
        assert_eq!(env.listen, SocketAddr::from(([0, 0, 0, 0], 80)));
        assert!(!matches!(env.artifact, ArtifactSource::Explicit(_)));
        let err = parse(&[("FLASH_RESOURCE_NAME", "  ")]).unwrap_err();
        assert!(
            err.to_string().contains("FLASH_RESOURCE_NAME is not set"),
            "{err}"
        );
    }

    #[test]
    fn malformed_settings_name_their_variable() {
        for (name, value) in [
            ("FLASH_MAX_MEMORY_MB", "lots"),
            ("PORT", "http"),
            ("FLASH_CONCURRENCY", "-1"),
            ("FLASH_CONCURRENCY", "0"),
            ("FLASH_CONCURRENCY", "129"),
            ("FLASH_LISTEN_ADDR", "localhost"),
            ("FLASH_PEER_ENDPOINTS", "[1]"),
            ("FLASH_CACHE_MAX_MB", "2G"),
            ("FLASH_CALL_BUDGET_MB", "0"),
            ("FLASH_CALL_BUDGET_MB", "lots"),
            ("FLASH_CALL_BUDGET_MB", "18446744073709551615"),
            ("FLASH_MAX_MEMORY_MB", "18446744073709551615"),
            ("FLASH_GUEST_OUTPUT_MAX_KB", "-1"),
            ("FLASH_READY_INSTANCES", "5"),
            ("FLASH_READY_INSTANCES", "-1"),
        ] {
            let err = parse(&[("FLASH_RESOURCE_NAME", "api"), (name, value)]).unwrap_err();
            assert!(format!("{err:#}").contains(name), "{name}: {err:#}");
        }
        let err = parse(&[
            ("FLASH_RESOURCE_NAME", "api"),
            ("FLASH_MAX_MEMORY_MB", "1"),
            ("FLASH_KEEP_RESIDENT_KB", "4096"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("memory cap"), "{err}");
        let err =
            parse(&[("FLASH_RESOURCE_NAME", "api"), ("FLASH_CONCURRENCY", "500")]).unwrap_err();
        assert!(err.to_string().contains("instance pool (128)"), "{err}");
        let env = parse(&[("FLASH_RESOURCE_NAME", "api"), ("FLASH_CONCURRENCY", "128")]).unwrap();
        assert_eq!(env.concurrency, Some(128));
    }

    #[test]
    fn a_deployed_container_follows_runpods_artifact_contract() {
        let env = parse(&[
            ("FLASH_RESOURCE_NAME", "api"),
            ("RUNPOD_ENDPOINT_ID", "ep1"),
        ])
        .unwrap();
        assert_eq!(
            env.artifact,
            ArtifactSource::RunPod {
                archive: PathBuf::from(DEFAULT_ARTIFACT_PATH),
                app_dir: PathBuf::from(DEFAULT_APP_DIR),
                unpack: true,
            }
        );
        let env = parse(&[
            ("FLASH_RESOURCE_NAME", "api"),
            ("FLASH_BUILD_ARTIFACT_PATH", "/data/a.tar.gz"),
            ("FLASH_APP_DIR", "/data/app"),
            ("FLASH_DISABLE_UNPACK", "Yes"),
        ])
        .unwrap();
        assert_eq!(
            env.artifact,
            ArtifactSource::RunPod {
                archive: PathBuf::from("/data/a.tar.gz"),
                app_dir: PathBuf::from("/data/app"),
                unpack: false,
            }
        );
        // An explicit source wins over the platform's.
        let env = parse(&[
            ("FLASH_RESOURCE_NAME", "api"),
            ("RUNPOD_POD_ID", "w1"),
            ("FLASH_ARTIFACT_URL", "http://127.0.0.1:9/a.tar.gz"),
        ])
        .unwrap();
        assert_eq!(
            env.artifact,
            ArtifactSource::Explicit("http://127.0.0.1:9/a.tar.gz".into())
        );
    }

    #[test]
    fn peers_come_from_the_override_the_state_manager_or_the_manifest() {
        let env = parse(&[
            ("FLASH_RESOURCE_NAME", "api"),
            ("FLASH_ENVIRONMENT_ID", "env1"),
            ("RUNPOD_API_KEY", "k"),
            ("FLASH_MANIFEST_TTL_S", "5"),
        ])
        .unwrap();
        assert_eq!(
            env.peers,
            PeerDiscovery::StateManager {
                environment_id: "env1".into(),
                ttl: Some(Duration::from_secs(5))
            }
        );
        let env = parse(&[
            ("FLASH_RESOURCE_NAME", "api"),
            ("FLASH_ENVIRONMENT_ID", "env1"),
        ])
        .unwrap();
        assert_eq!(env.peers, PeerDiscovery::Manifest);
        let env = parse(&[
            ("FLASH_RESOURCE_NAME", "api"),
            ("FLASH_PEER_ENDPOINTS", r#"{"gpu":"http://127.0.0.1:1"}"#),
            ("FLASH_ENVIRONMENT_ID", "env1"),
            ("RUNPOD_API_KEY", "k"),
        ])
        .unwrap();
        assert!(matches!(env.peers, PeerDiscovery::Static(ref m) if m.len() == 1));
    }
}
