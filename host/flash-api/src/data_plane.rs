//! Where deployed endpoints are reached: the data plane, next to the GraphQL control plane.
//!
//! `flash server` serves everything on one host (`{base}/v2/{id}` for queue endpoints,
//! `{base}/lb/{id}` for load-balanced ones). RunPod does not: its GraphQL API is
//! `https://api.runpod.io`, queue endpoints are `https://api.runpod.ai/v2/{id}` and a
//! load-balanced endpoint is its own host, `https://{id}.api.runpod.ai` (reference §0, §4).
//! As in runpod-python, `RUNPOD_ENDPOINT_BASE_URL` overrides the queue base, and the
//! load-balanced domain is that base's `host[:port]`.

use crate::error::ApiError;

/// The header in which a load-balanced `flash-host` names the WIT error kind of a failed
/// call (`user-error`, …), so that a proxy (`flash server`'s metrics and console) can say
/// what failed without reading the body, which streams through.
pub const ERROR_KIND_HEADER: &str = "x-flash-error-kind";

/// The environment variable that overrides the queue API base (runpod-python's name).
pub const ENDPOINT_BASE_URL_ENV: &str = "RUNPOD_ENDPOINT_BASE_URL";

/// RunPod's queue API base.
pub const RUNPOD_ENDPOINT_BASE_URL: &str = "https://api.runpod.ai/v2";

/// How endpoint URLs are formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataPlane {
    /// `flash server` (or any control plane that also serves endpoints):
    /// `{base}/v2/{id}` and `{base}/lb/{id}`.
    SameHost { base: String },
    /// RunPod: `{queue_base}/{id}` and `https://{id}.{domain}`.
    RunPod { queue_base: String, domain: String },
}

impl DataPlane {
    /// The data plane of the control plane at `control_plane` (no trailing `/`), given
    /// the value of `RUNPOD_ENDPOINT_BASE_URL` (blank means unset).
    pub fn resolve(control_plane: &str, endpoint_base: Option<&str>) -> Result<Self, ApiError> {
        if let Some(base) = endpoint_base.map(str::trim).filter(|b| !b.is_empty()) {
            // `{control plane}/v2` is `flash server`'s layout (what it tells runpod-python
            // clients to set, and what its provisioner gives workers).
            if base.trim_end_matches('/') == format!("{control_plane}/v2") {
                return Ok(Self::SameHost {
                    base: control_plane.to_string(),
                });
            }
            return Self::runpod(base);
        }
        let is_runpod = reqwest::Url::parse(control_plane)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .is_some_and(|host| host == "runpod.io" || host.ends_with(".runpod.io"));
        if is_runpod {
            Self::runpod(RUNPOD_ENDPOINT_BASE_URL)
        } else {
            Ok(Self::SameHost {
                base: control_plane.to_string(),
            })
        }
    }

    /// [`DataPlane::resolve`] with `RUNPOD_ENDPOINT_BASE_URL` from the process environment.
    pub fn from_env(control_plane: &str) -> Result<Self, ApiError> {
        Self::resolve(
            control_plane,
            std::env::var(ENDPOINT_BASE_URL_ENV).ok().as_deref(),
        )
    }

    fn runpod(queue_base: &str) -> Result<Self, ApiError> {
        let queue_base = queue_base.trim_end_matches('/');
        let url = reqwest::Url::parse(queue_base)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"));
        let Some(host) = url.as_ref().and_then(|u| u.host_str()) else {
            return Err(ApiError::Config(format!(
                "{ENDPOINT_BASE_URL_ENV}=`{queue_base}` is not an http(s) URL (RunPod's is \
                 {RUNPOD_ENDPOINT_BASE_URL})"
            )));
        };
        let domain = match url.as_ref().and_then(|u| u.port()) {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        Ok(Self::RunPod {
            queue_base: queue_base.to_string(),
            domain,
        })
    }

    /// URL of a queue endpoint.
    pub fn queue_url(&self, id: &str) -> String {
        match self {
            Self::SameHost { base } => format!("{base}/v2/{id}"),
            Self::RunPod { queue_base, .. } => format!("{queue_base}/{id}"),
        }
    }

    /// URL of a load-balanced endpoint (RunPod's are always https).
    pub fn lb_url(&self, id: &str) -> String {
        match self {
            Self::SameHost { base } => format!("{base}/lb/{id}"),
            Self::RunPod { domain, .. } => format!("https://{id}.{domain}"),
        }
    }

    /// Whether `url` (one of this data plane's endpoint URLs) is a load-balanced one.
    pub fn is_lb_url(&self, url: &str) -> bool {
        match self {
            Self::SameHost { base } => url.starts_with(&format!("{base}/lb/")),
            Self::RunPod { domain, .. } => {
                url.starts_with("https://") && url.ends_with(&format!(".{domain}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_server_serves_endpoints_on_its_own_host() {
        let dp = DataPlane::resolve("http://127.0.0.1:8765", None).unwrap();
        assert_eq!(dp.queue_url("ep1"), "http://127.0.0.1:8765/v2/ep1");
        assert_eq!(dp.lb_url("ep1"), "http://127.0.0.1:8765/lb/ep1");
        assert!(dp.is_lb_url(&dp.lb_url("ep1")) && !dp.is_lb_url(&dp.queue_url("ep1")));
        // Blank means unset; `{base}/v2` (what `flash server` tells clients to set) is
        // the same layout.
        for endpoint_base in [
            "  ",
            "http://127.0.0.1:8765/v2",
            "http://127.0.0.1:8765/v2/",
        ] {
            assert_eq!(
                DataPlane::resolve("http://127.0.0.1:8765", Some(endpoint_base)).unwrap(),
                dp,
                "{endpoint_base}"
            );
        }
    }

    #[test]
    fn runpods_control_plane_implies_its_data_plane() {
        let dp = DataPlane::resolve("https://api.runpod.io", None).unwrap();
        assert_eq!(dp.queue_url("abc123"), "https://api.runpod.ai/v2/abc123");
        assert_eq!(dp.lb_url("abc123"), "https://abc123.api.runpod.ai");
        assert!(dp.is_lb_url(&dp.lb_url("abc123")) && !dp.is_lb_url(&dp.queue_url("abc123")));
    }

    #[test]
    fn the_endpoint_base_overrides_and_gives_the_lb_domain() {
        let dp = DataPlane::resolve("https://api.runpod.io", Some("http://dev.example:9000/v2/"))
            .unwrap();
        assert_eq!(dp.queue_url("e"), "http://dev.example:9000/v2/e");
        assert_eq!(dp.lb_url("e"), "https://e.dev.example:9000");
        let err = DataPlane::resolve("http://127.0.0.1:8765", Some("ftp://x"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("RUNPOD_ENDPOINT_BASE_URL=`ftp://x` is not an http(s) URL"),
            "{err}"
        );
    }
}
