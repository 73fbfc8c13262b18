//! Build-time validation rules.
//!
//! Every rule has its own [`ValidationError`] variant whose message names the function,
//! resource and component involved and says how to fix it. [`ManifestBuilder`] collects
//! every violation instead of stopping at the first, so one build shows all problems.
//!
//! [`ManifestBuilder`]: crate::ManifestBuilder

use std::fmt;

/// HTTP methods a load-balanced route may use.
pub const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH"];

/// Paths that `flash-host` serves itself on load-balanced endpoints.
pub const RESERVED_PATHS: &[&str] = &["/execute", "/ping"];

/// RunPod's data centre ids (reference §6.5): the default `locations` of GPU endpoints.
pub const DATA_CENTERS: &[&str] = &[
    "US-CA-2", "US-IL-1", "US-KS-2", "US-MO-1", "US-MO-2", "US-NC-2", "US-NE-1", "US-WA-1",
    "EU-CZ-1", "EU-RO-1", "EUR-NO-1",
];

/// The only data centre of CPU endpoints (reference §1.4).
pub const CPU_DATA_CENTERS: &[&str] = &["EU-RO-1"];

/// CUDA versions a GPU endpoint may require (reference §1.4).
pub const CUDA_VERSIONS: &[&str] = &[
    "11.8", "12.0", "12.1", "12.2", "12.3", "12.4", "12.5", "12.6", "12.7", "12.8", "12.9", "13.0",
];

/// One violated rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("resource `{resource}`: {reason}")]
    InvalidPlacement { resource: String, reason: String },

    #[error("app `{project}` has no functions: mark at least one function with #[remote(...)]")]
    EmptyApp { project: String },

    #[error(
        "function `{function}` is defined twice: in resource `{first_resource}` (component \
         `{first_component}`) and in resource `{second_resource}` (component `{second_component}`); \
         function names must be unique across the app"
    )]
    DuplicateFunction {
        function: String,
        first_resource: String,
        first_component: String,
        second_resource: String,
        second_component: String,
    },

    #[error(
        "function `{function}` (component `{component}`) names resource config `{resource}`, \
         which no component declares"
    )]
    UndeclaredResource {
        function: String,
        component: String,
        resource: String,
    },

    #[error(
        "resource config `{resource}` is declared differently by components `{first_component}` \
         and `{second_component}`; declare it once or make both declarations identical"
    )]
    ConflictingResource {
        resource: String,
        first_component: String,
        second_component: String,
    },

    #[error(
        "function `{function}` on load-balanced resource `{resource}` needs both an HTTP method \
         and a path, e.g. #[remote(CONFIG, method = \"POST\", path = \"/{function}\")]"
    )]
    MissingRoute { function: String, resource: String },

    #[error(
        "function `{function}` declares an HTTP route but resource `{resource}` is queue-based; \
         queue and load-balanced functions cannot share a resource config: move the function to a \
         load-balanced config or remove its method and path"
    )]
    RouteOnQueueResource { function: String, resource: String },

    #[error(
        "function `{function}` on resource `{resource}`: HTTP method `{method}` is not one of \
         GET, POST, PUT, DELETE, PATCH"
    )]
    InvalidMethod {
        function: String,
        resource: String,
        method: String,
    },

    #[error("function `{function}` on resource `{resource}`: path `{path}` must start with `/`")]
    PathWithoutSlash {
        function: String,
        resource: String,
        path: String,
    },

    #[error(
        "function `{function}` on resource `{resource}`: path `{path}` is reserved by flash-host \
         (`/execute` and `/ping` are built in); choose another path"
    )]
    ReservedPath {
        function: String,
        resource: String,
        path: String,
    },

    #[error("resource `{resource}`: route `{route}` is claimed by both `{first}` and `{second}`")]
    DuplicateRoute {
        resource: String,
        route: String,
        first: String,
        second: String,
    },

    #[error("resource `{resource}`: workers min ({min}) is greater than workers max ({max})")]
    WorkersRange {
        resource: String,
        min: u32,
        max: u32,
    },

    #[error("resource `{resource}`: idle timeout {seconds} s is outside 1..=3600")]
    IdleTimeoutRange { resource: String, seconds: u32 },

    #[error("resource `{resource}` is load-balanced and must scale by REQUEST_COUNT, not {scaler}")]
    LoadBalancedScaler { resource: String, scaler: String },

    #[error(
        "model `{model}` is declared for resource config `{resource}`, which no component declares"
    )]
    ModelForUndeclaredResource { model: String, resource: String },

    #[error("model `{model}` is declared twice")]
    DuplicateModel { model: String },

    #[error("model `{model}`: sessions must be in 1..=64, got {sessions}")]
    ModelSessionsRange { model: String, sessions: u32 },

    #[error(
        "{what} name `{name}` is invalid: use 1-64 characters from letters, digits, `_` and `-`"
    )]
    InvalidName { what: &'static str, name: String },
}

/// All violations found in one build, displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "the app is invalid ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for (i, err) in self.0.iter().enumerate() {
            if i + 1 < n {
                writeln!(f, "  - {err}")?;
            } else {
                write!(f, "  - {err}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Resource and function names end up in URLs, env vars and file names.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
