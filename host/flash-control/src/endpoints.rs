//! Serverless endpoints as `saveEndpoint` defines them: merge, defaults and validation.
//!
//! `saveEndpoint` both creates (no `id`) and updates (an `id`): every setting of its input is
//! optional, and an unset one keeps the saved value on an update or takes RunPod's default on
//! a create. The rules live here, apart from the GraphQL transport, so that the resolver only
//! translates its input into an [`EndpointPatch`], fences the environments with their leases
//! and translates the answer back:
//!
//! - [`EndpointSpec::merge`] is pure: the patch over the saved endpoint (or the defaults),
//!   checked. The names, spellings and bounds are flash-manifest's ([`EndpointKind`],
//!   [`ScalerType`], [`DEFAULT_IDLE_TIMEOUT_S`], [`DEFAULT_SCALER_VALUE`],
//!   [`IDLE_TIMEOUT_RANGE_S`]), so a manifest's resource config and a saved endpoint cannot
//!   disagree on what a default, a scaler or a valid idle timeout is;
//! - [`prepare`] adds the reads: the endpoint to update and the Flash environment it names.
//!   It writes nothing, so the caller can check the environments' deploy leases
//!   ([`Prepared::environments`]) before [`Prepared::commit`] writes an inline template and
//!   the endpoint.
//!
//! Error texts are part of the API (clients show them, tests match on them): each
//! [`EndpointError`] prints exactly what the resolver answered before this module existed,
//! and the checks run in the same order.

use flash_manifest::builder::{DEFAULT_IDLE_TIMEOUT_S, DEFAULT_SCALER_VALUE, IDLE_TIMEOUT_RANGE_S};
use flash_manifest::describe::{EndpointKind, ScalerType};

use crate::store::{DeployStore, Endpoint, EnvVar, StoreError, Template};
use crate::util::{new_id, random_secret};

/// Suffix RunPod's client appends to FlashBoot endpoint names; the saved name is without it.
const FLASHBOOT_SUFFIX: &str = "-fb";

/// What one `saveEndpoint` call asks for. `None` means "not sent".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointPatch {
    /// The endpoint to update; `None` creates one.
    pub id: Option<String>,
    pub name: String,
    /// `QB` or `LB`, in any case.
    pub kind: Option<String>,
    pub workers_min: Option<i32>,
    pub workers_max: Option<i32>,
    pub workers_pfb_target: Option<i32>,
    pub idle_timeout: Option<i32>,
    pub execution_timeout_ms: Option<i64>,
    pub scaler_type: Option<String>,
    pub scaler_value: Option<i32>,
    pub gpu_ids: Option<String>,
    pub gpu_count: Option<i32>,
    pub allowed_cuda_versions: Option<String>,
    pub min_cuda_version: Option<String>,
    pub instance_ids: Option<Vec<String>>,
    pub locations: Option<String>,
    pub network_volume_id: Option<String>,
    pub network_volume_ids: Option<Vec<String>>,
    pub flash_boot_type: Option<String>,
    pub flash_environment_id: Option<String>,
    /// An existing template to use.
    pub template_id: Option<String>,
    /// A template to write (into the endpoint's template, or a new one); exclusive with
    /// `template_id`.
    pub template: Option<InlineTemplate>,
}

/// A template sent inside `saveEndpoint`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InlineTemplate {
    pub name: Option<String>,
    pub image_name: Option<String>,
    pub container_disk_in_gb: Option<i32>,
    pub docker_args: Option<String>,
    pub env: Vec<EnvVar>,
}

/// Why `saveEndpoint` was refused.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint not found: `{0}`")]
    NotFound(String),
    #[error("endpoint type must be QB or LB, got `{0}`")]
    Kind(String),
    #[error("endpoint name must not be empty")]
    EmptyName,
    #[error("workersMin ({min}) must be between 0 and workersMax ({max})")]
    WorkersRange { min: i32, max: i32 },
    #[error(
        "idleTimeout must be {min}..={max} seconds, got {0}",
        min = IDLE_TIMEOUT_RANGE_S.start(),
        max = IDLE_TIMEOUT_RANGE_S.end()
    )]
    IdleTimeout(i32),
    #[error("scalerValue must be at least 1")]
    ScalerValue,
    #[error("scalerType must be QUEUE_DELAY or REQUEST_COUNT, got `{0}`")]
    ScalerType(String),
    #[error("flash environment not found: `{0}`")]
    EnvironmentNotFound(String),
    #[error("send either templateId or template, not both")]
    TemplateConflict,
    #[error("template not found: `{0}`")]
    TemplateNotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `QB` / `LB`, the spelling of RunPod's `type` field.
pub fn kind_code(kind: EndpointKind) -> &'static str {
    match kind {
        EndpointKind::Queue => "QB",
        EndpointKind::LoadBalanced => "LB",
    }
}

fn parse_kind(code: &str) -> Option<EndpointKind> {
    [EndpointKind::Queue, EndpointKind::LoadBalanced]
        .into_iter()
        .find(|k| kind_code(*k) == code)
}

fn parse_scaler(text: &str) -> Option<ScalerType> {
    [ScalerType::QueueDelay, ScalerType::RequestCount]
        .into_iter()
        .find(|s| s.as_str() == text)
}

/// The scaler an endpoint uses when none is sent: load-balanced endpoints have no queue to
/// measure a delay on (flash-manifest's builder picks the same).
pub fn default_scaler(kind: EndpointKind) -> ScalerType {
    match kind {
        EndpointKind::Queue => ScalerType::QueueDelay,
        EndpointKind::LoadBalanced => ScalerType::RequestCount,
    }
}

/// How a saved endpoint scales: `REQUEST_COUNT`, else `QUEUE_DELAY` (saved endpoints were
/// validated, so nothing else occurs).
pub fn scaler_of(endpoint: &Endpoint) -> ScalerType {
    parse_scaler(&endpoint.scaler_type).unwrap_or(ScalerType::QueueDelay)
}

/// The identity of a saved endpoint: kept across updates, except the version, which counts
/// them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    pub ai_key: String,
    pub version: i32,
}

impl Identity {
    /// The identity of the next save: the saved endpoint's with the version incremented, or
    /// a fresh one (RunPod-shaped id, new `aiKey`, version 1).
    pub fn next(saved: Option<&Endpoint>) -> Self {
        match saved {
            Some(e) => Self {
                id: e.id.clone(),
                ai_key: e.ai_key.clone(),
                version: e.version + 1,
            },
            None => Self {
                // RunPod endpoint ids are short lowercase alphanumerics; keep that shape.
                id: uuid::Uuid::new_v4().simple().to_string()[..14].to_string(),
                ai_key: format!("ak_{}", &random_secret()[..40]),
                version: 1,
            },
        }
    }
}

/// A complete and valid endpoint setting: a patch merged over the saved endpoint or the
/// defaults. Everything an endpoint is, except its [`Identity`].
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointSpec {
    pub name: String,
    pub kind: EndpointKind,
    pub workers_min: u32,
    pub workers_max: u32,
    pub workers_pfb_target: i32,
    pub idle_timeout_s: u32,
    /// 0: no limit.
    pub execution_timeout_ms: i64,
    pub scaler_type: ScalerType,
    pub scaler_value: u32,
    pub template_id: Option<String>,
    pub gpu_ids: Option<String>,
    pub gpu_count: Option<i32>,
    pub allowed_cuda_versions: Option<String>,
    pub min_cuda_version: Option<String>,
    pub instance_ids: Option<Vec<String>>,
    pub locations: Option<String>,
    pub network_volume_id: Option<String>,
    pub network_volume_ids: Vec<String>,
    pub flash_environment_id: Option<String>,
    pub flash_boot_type: Option<String>,
}

/// An endpoint with nothing set but the defaults of a new one of this kind.
fn defaults(kind: EndpointKind) -> Endpoint {
    Endpoint {
        idle_timeout: DEFAULT_IDLE_TIMEOUT_S as i32,
        scaler_type: default_scaler(kind).as_str().into(),
        scaler_value: DEFAULT_SCALER_VALUE as i32,
        workers_min: 0,
        workers_max: 1,
        flash_boot_type: Some("FLASHBOOT".into()),
        ..Default::default()
    }
}

impl EndpointSpec {
    /// Merges `patch` over `saved` (an update) or over the defaults of a new endpoint, and
    /// checks the result: type, name, worker range, idle timeout, scaler, in that order (the
    /// first problem is the one reported). Pure: the store checks are [`prepare`]'s.
    pub fn merge(patch: &EndpointPatch, saved: Option<&Endpoint>) -> Result<Self, EndpointError> {
        let code = patch
            .kind
            .clone()
            .or_else(|| saved.map(|e| e.kind.clone()))
            .unwrap_or_else(|| kind_code(EndpointKind::Queue).into())
            .to_ascii_uppercase();
        let kind = parse_kind(&code).ok_or(EndpointError::Kind(code))?;
        let base = saved.cloned().unwrap_or_else(|| defaults(kind));
        let p = patch.clone();
        let name = p.name.trim_end_matches(FLASHBOOT_SUFFIX).to_string();
        if name.trim().is_empty() {
            return Err(EndpointError::EmptyName);
        }
        let workers_min = p.workers_min.unwrap_or(base.workers_min);
        let workers_max = p.workers_max.unwrap_or(base.workers_max);
        if workers_min < 0 || workers_max < 0 || workers_min > workers_max {
            return Err(EndpointError::WorkersRange {
                min: workers_min,
                max: workers_max,
            });
        }
        let idle_timeout = p.idle_timeout.unwrap_or(base.idle_timeout);
        if !u32::try_from(idle_timeout).is_ok_and(|s| IDLE_TIMEOUT_RANGE_S.contains(&s)) {
            return Err(EndpointError::IdleTimeout(idle_timeout));
        }
        let scaler_value = p.scaler_value.unwrap_or(base.scaler_value);
        if scaler_value < 1 {
            return Err(EndpointError::ScalerValue);
        }
        let scaler_text = p.scaler_type.unwrap_or(base.scaler_type);
        let scaler_type =
            parse_scaler(&scaler_text).ok_or(EndpointError::ScalerType(scaler_text))?;
        // The checks above make these conversions lossless.
        let unsigned = |n: i32| u32::try_from(n).unwrap_or_default();
        Ok(Self {
            name,
            kind,
            workers_min: unsigned(workers_min),
            workers_max: unsigned(workers_max),
            workers_pfb_target: p.workers_pfb_target.unwrap_or(base.workers_pfb_target),
            idle_timeout_s: unsigned(idle_timeout),
            execution_timeout_ms: p.execution_timeout_ms.unwrap_or(base.execution_timeout_ms),
            scaler_type,
            scaler_value: unsigned(scaler_value),
            template_id: p.template_id.or(base.template_id),
            gpu_ids: p.gpu_ids.or(base.gpu_ids),
            gpu_count: p.gpu_count.or(base.gpu_count),
            allowed_cuda_versions: p.allowed_cuda_versions.or(base.allowed_cuda_versions),
            min_cuda_version: p.min_cuda_version.or(base.min_cuda_version),
            instance_ids: p.instance_ids.or(base.instance_ids),
            locations: p.locations.or(base.locations),
            network_volume_id: p.network_volume_id.or(base.network_volume_id),
            network_volume_ids: p.network_volume_ids.unwrap_or(base.network_volume_ids),
            flash_environment_id: p.flash_environment_id.or(base.flash_environment_id),
            flash_boot_type: p.flash_boot_type.or(base.flash_boot_type),
        })
    }

    /// The record to store: this setting under `identity`.
    pub fn into_endpoint(self, identity: Identity) -> Endpoint {
        let signed = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        Endpoint {
            id: identity.id,
            name: self.name,
            kind: kind_code(self.kind).into(),
            ai_key: identity.ai_key,
            version: identity.version,
            template_id: self.template_id,
            gpu_ids: self.gpu_ids,
            gpu_count: self.gpu_count,
            allowed_cuda_versions: self.allowed_cuda_versions,
            min_cuda_version: self.min_cuda_version,
            instance_ids: self.instance_ids,
            locations: self.locations,
            idle_timeout: signed(self.idle_timeout_s),
            execution_timeout_ms: self.execution_timeout_ms,
            scaler_type: self.scaler_type.as_str().into(),
            scaler_value: signed(self.scaler_value),
            workers_min: signed(self.workers_min),
            workers_max: signed(self.workers_max),
            workers_pfb_target: self.workers_pfb_target,
            network_volume_id: self.network_volume_id,
            network_volume_ids: self.network_volume_ids,
            flash_environment_id: self.flash_environment_id,
            flash_boot_type: self.flash_boot_type,
        }
    }
}

/// A checked `saveEndpoint`, not written yet: see [`prepare`].
#[derive(Debug)]
pub struct Prepared {
    /// The endpoint as it will be saved (its template id still to be settled by `commit`).
    endpoint: Endpoint,
    /// The Flash environment the endpoint was saved in before, if it leaves it.
    left_environment: Option<String>,
    template_id: Option<String>,
    template: Option<InlineTemplate>,
}

/// Reads what `saveEndpoint` needs and checks it: the endpoint to update (if `patch.id` is
/// set), the merged setting ([`EndpointSpec::merge`]) and the Flash environment it names.
/// Writes nothing.
pub fn prepare(store: &dyn DeployStore, patch: EndpointPatch) -> Result<Prepared, EndpointError> {
    let saved = match &patch.id {
        Some(id) => Some(
            store
                .get_endpoint(id)?
                .ok_or_else(|| EndpointError::NotFound(id.clone()))?,
        ),
        None => None,
    };
    let spec = EndpointSpec::merge(&patch, saved.as_ref())?;
    if let Some(env) = &spec.flash_environment_id
        && store.get_environment(env)?.is_none()
    {
        return Err(EndpointError::EnvironmentNotFound(env.clone()));
    }
    let endpoint = spec.into_endpoint(Identity::next(saved.as_ref()));
    let left_environment = saved
        .and_then(|s| s.flash_environment_id)
        .filter(|old| Some(old) != endpoint.flash_environment_id.as_ref());
    Ok(Prepared {
        endpoint,
        left_environment,
        template_id: patch.template_id,
        template: patch.template,
    })
}

impl Prepared {
    /// The Flash environments this save changes, whose deploy leases it must respect: the
    /// one the endpoint is saved in, then the one it leaves.
    pub fn environments(&self) -> impl Iterator<Item = &str> {
        self.endpoint
            .flash_environment_id
            .as_deref()
            .into_iter()
            .chain(self.left_environment.as_deref())
    }

    /// Settles the template (an inline one is written into the endpoint's own template, or
    /// a new one; a named one must exist), then writes the endpoint. Returns what was saved.
    pub fn commit(self, store: &dyn DeployStore) -> Result<Endpoint, EndpointError> {
        let mut endpoint = self.endpoint;
        match (self.template, &self.template_id) {
            (Some(_), Some(_)) => return Err(EndpointError::TemplateConflict),
            (Some(t), None) => {
                let id = endpoint
                    .template_id
                    .clone()
                    .unwrap_or_else(|| new_id("tpl-"));
                store.save_template(&Template {
                    id: id.clone(),
                    name: t.name,
                    image_name: t.image_name,
                    container_disk_in_gb: t.container_disk_in_gb,
                    docker_args: t.docker_args,
                    env: t.env,
                    readme: None,
                })?;
                endpoint.template_id = Some(id);
            }
            (None, Some(id)) => {
                if store.get_template(id)?.is_none() {
                    return Err(EndpointError::TemplateNotFound(id.clone()));
                }
            }
            (None, None) => {}
        }
        store.save_endpoint(&endpoint)?;
        Ok(endpoint)
    }
}

/// [`prepare`] then [`Prepared::commit`], for callers that hold no leases (tests).
#[cfg(test)]
fn save(store: &dyn DeployStore, patch: EndpointPatch) -> Result<Endpoint, EndpointError> {
    prepare(store, patch)?.commit(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn patch(name: &str) -> EndpointPatch {
        EndpointPatch {
            name: name.into(),
            ..Default::default()
        }
    }

    fn saved() -> Endpoint {
        EndpointSpec::merge(
            &EndpointPatch {
                workers_max: Some(3),
                scaler_type: Some("REQUEST_COUNT".into()),
                gpu_ids: Some("ADA_24".into()),
                template_id: Some("tpl-1".into()),
                ..patch("api")
            },
            None,
        )
        .expect("valid")
        .into_endpoint(Identity {
            id: "ep1".into(),
            ai_key: "ak_1".into(),
            version: 4,
        })
    }

    #[test]
    fn a_new_endpoint_gets_runpods_defaults() {
        let spec = EndpointSpec::merge(&patch("gpu_worker-fb"), None).expect("valid");
        assert_eq!(spec.name, "gpu_worker", "trailing -fb stripped");
        assert_eq!(spec.kind, EndpointKind::Queue);
        assert_eq!((spec.workers_min, spec.workers_max), (0, 1));
        assert_eq!(spec.idle_timeout_s, 60);
        assert_eq!(spec.scaler_type, ScalerType::QueueDelay);
        assert_eq!(spec.scaler_value, 4);
        assert_eq!(spec.flash_boot_type.as_deref(), Some("FLASHBOOT"));
        assert_eq!(spec.execution_timeout_ms, 0);
        assert!(spec.network_volume_ids.is_empty());

        let lb = EndpointSpec::merge(
            &EndpointPatch {
                kind: Some("lb".into()),
                ..patch("api")
            },
            None,
        )
        .expect("valid");
        assert_eq!(
            lb.kind,
            EndpointKind::LoadBalanced,
            "type is case-insensitive"
        );
        assert_eq!(
            lb.scaler_type,
            ScalerType::RequestCount,
            "LB default scaler"
        );

        let id = Identity::next(None);
        assert_eq!(id.version, 1);
        assert_eq!(id.id.len(), 14);
        assert!(id.ai_key.starts_with("ak_") && id.ai_key.len() == 43);
        let stored = lb.into_endpoint(id);
        assert_eq!(
            (stored.kind.as_str(), stored.scaler_type.as_str()),
            ("LB", "REQUEST_COUNT")
        );
    }

    #[test]
    fn an_update_keeps_what_it_does_not_send() {
        let saved = saved();
        let spec = EndpointSpec::merge(
            &EndpointPatch {
                id: Some("ep1".into()),
                workers_min: Some(1),
                ..patch("api")
            },
            Some(&saved),
        )
        .expect("valid");
        assert_eq!((spec.workers_min, spec.workers_max), (1, 3));
        assert_eq!(spec.scaler_type, ScalerType::RequestCount);
        assert_eq!(spec.gpu_ids.as_deref(), Some("ADA_24"));
        assert_eq!(spec.template_id.as_deref(), Some("tpl-1"));
        let next = Identity::next(Some(&saved));
        assert_eq!(
            (next.id.as_str(), next.ai_key.as_str(), next.version),
            ("ep1", "ak_1", 5),
            "same id and aiKey, version counts the saves"
        );
        // A sent value replaces the saved one; the type of a saved endpoint is kept.
        let spec = EndpointSpec::merge(
            &EndpointPatch {
                gpu_ids: Some("AMPERE_16".into()),
                network_volume_ids: Some(vec!["v1".into()]),
                ..patch("api")
            },
            Some(&saved),
        )
        .expect("valid");
        assert_eq!(spec.gpu_ids.as_deref(), Some("AMPERE_16"));
        assert_eq!(spec.network_volume_ids, ["v1"]);
        assert_eq!(spec.kind, EndpointKind::Queue);
    }

    #[test]
    fn invalid_settings_are_refused_with_the_first_problem() {
        let refused = |p: EndpointPatch| {
            EndpointSpec::merge(&p, None)
                .expect_err("invalid")
                .to_string()
        };
        assert_eq!(
            refused(EndpointPatch {
                kind: Some("xx".into()),
                ..patch("")
            }),
            "endpoint type must be QB or LB, got `XX`"
        );
        assert_eq!(refused(patch("  ")), "endpoint name must not be empty");
        assert_eq!(refused(patch("-fb")), "endpoint name must not be empty");
        assert_eq!(
            refused(EndpointPatch {
                workers_min: Some(3),
                workers_max: Some(1),
                ..patch("x")
            }),
            "workersMin (3) must be between 0 and workersMax (1)"
        );
        assert_eq!(
            refused(EndpointPatch {
                workers_min: Some(-1),
                ..patch("x")
            }),
            "workersMin (-1) must be between 0 and workersMax (1)"
        );
        for bad in [0, 3601] {
            assert_eq!(
                refused(EndpointPatch {
                    idle_timeout: Some(bad),
                    ..patch("x")
                }),
                format!("idleTimeout must be 1..=3600 seconds, got {bad}")
            );
        }
        for good in [1, 3600] {
            let p = EndpointPatch {
                idle_timeout: Some(good),
                ..patch("x")
            };
            assert!(EndpointSpec::merge(&p, None).is_ok());
        }
        assert_eq!(
            refused(EndpointPatch {
                scaler_value: Some(0),
                ..patch("x")
            }),
            "scalerValue must be at least 1"
        );
        assert_eq!(
            refused(EndpointPatch {
                scaler_type: Some("queue_delay".into()),
                ..patch("x")
            }),
            "scalerType must be QUEUE_DELAY or REQUEST_COUNT, got `queue_delay`"
        );
        // Several problems: the first in check order is reported.
        assert_eq!(
            refused(EndpointPatch {
                workers_min: Some(2),
                idle_timeout: Some(0),
                ..patch("")
            }),
            "endpoint name must not be empty"
        );
    }

    #[test]
    fn save_checks_references_and_writes_inline_templates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("db")).expect("open");
        let app = store.create_app("a").expect("app");
        let env = store.create_environment(&app.id, "e").expect("env").id;
        let template = |id: &str| store.get_template(id).expect("get").expect("template");
        let inline = InlineTemplate {
            env: vec![EnvVar {
                key: "A".into(),
                value: "1".into(),
            }],
            ..Default::default()
        };
        let created = save(
            &store,
            EndpointPatch {
                flash_environment_id: Some(env.clone()),
                template: Some(inline.clone()),
                ..patch("w")
            },
        )
        .expect("saved");
        let tpl = created.template_id.clone().expect("template written");
        assert!(tpl.starts_with("tpl-"));
        assert_eq!(template(&tpl).env, inline.env);
        assert_eq!(
            store.get_endpoint(&created.id).expect("get"),
            Some(created.clone())
        );

        // An inline template on update rewrites the endpoint's own template.
        let updated = save(
            &store,
            EndpointPatch {
                id: Some(created.id.clone()),
                template: Some(InlineTemplate::default()),
                ..patch("w")
            },
        )
        .expect("saved");
        assert_eq!(updated.template_id.as_deref(), Some(tpl.as_str()));
        assert_eq!(updated.version, 2);
        assert!(template(&tpl).env.is_empty());

        let err = |p: EndpointPatch| save(&store, p).expect_err("refused").to_string();
        assert_eq!(
            err(EndpointPatch {
                id: Some("nope".into()),
                ..patch("w")
            }),
            "endpoint not found: `nope`"
        );
        assert_eq!(
            err(EndpointPatch {
                flash_environment_id: Some("env-2".into()),
                ..patch("w")
            }),
            "flash environment not found: `env-2`"
        );
        assert_eq!(
            err(EndpointPatch {
                template_id: Some(tpl.clone()),
                template: Some(InlineTemplate::default()),
                ..patch("w")
            }),
            "send either templateId or template, not both"
        );
        assert_eq!(
            err(EndpointPatch {
                template_id: Some("tpl-missing".into()),
                ..patch("w")
            }),
            "template not found: `tpl-missing`"
        );
        assert_eq!(
            store.list_endpoints().expect("list").len(),
            1,
            "refused saves write nothing"
        );
    }

    #[test]
    fn the_environments_a_save_changes_are_the_new_one_and_the_one_it_leaves() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("db")).expect("open");
        let app = store.create_app("a").expect("app");
        let a = store.create_environment(&app.id, "a").expect("env").id;
        let b = store.create_environment(&app.id, "b").expect("env").id;
        let envs = |p: &Prepared| p.environments().map(str::to_string).collect::<Vec<_>>();
        assert!(envs(&prepare(&store, patch("w")).expect("ok")).is_empty());
        let in_a = save(
            &store,
            EndpointPatch {
                flash_environment_id: Some(a.clone()),
                ..patch("w")
            },
        )
        .expect("saved");
        let same = prepare(
            &store,
            EndpointPatch {
                id: Some(in_a.id.clone()),
                ..patch("w")
            },
        )
        .expect("ok");
        assert_eq!(envs(&same), [a.as_str()], "kept: its environment once");
        let moved = prepare(
            &store,
            EndpointPatch {
                id: Some(in_a.id.clone()),
                flash_environment_id: Some(b.clone()),
                ..patch("w")
            },
        )
        .expect("ok");
        assert_eq!(envs(&moved), [b, a], "the new one, then the one it leaves");
    }
}
