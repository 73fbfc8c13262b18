//! Calls to other functions of the app, and the local-or-remote decision.
//!
//! A `#[remote]` function runs its body in place when it belongs to the resource config
//! this instance serves (`FLASH_RESOURCE_NAME`, set by the host in the guest's
//! environment) or when no config is set at all (a one-shot local run, where every
//! config is local). Otherwise the call goes through the imported `peer.call`, and the
//! host routes it to the endpoint that serves the function.

use serde::de::DeserializeOwned;

use crate::args::decode_output;
use crate::config::ResourceConfig;
use crate::error::{Error, Result};

/// The environment variable naming the resource config this instance serves.
pub const RESOURCE_NAME_VAR: &str = "FLASH_RESOURCE_NAME";

/// The resource config this instance serves, or `None` when every config is local.
pub fn current_resource() -> Option<String> {
    std::env::var(RESOURCE_NAME_VAR)
        .ok()
        .filter(|name| !name.is_empty())
}

/// Whether functions of `config` run in this instance.
pub fn runs_locally(config: &ResourceConfig) -> bool {
    is_local(current_resource().as_deref(), config.name())
}

/// The decision itself: local when no resource is set or it is the function's.
pub(crate) fn is_local(current: Option<&str>, resource: &str) -> bool {
    current.is_none_or(|current| current == resource)
}

/// Calls `function` of this app through the host with a raw JSON `input` (named or
/// positional arguments) and returns its raw JSON result.
///
/// `#[remote]` functions do this for you; use it for dynamic calls. Host failures keep
/// their kind (`unavailable`, `timeout`, `call-depth-exceeded`, ...).
pub fn peer_call(function: &str, input: &str) -> Result<String> {
    imp::call(function, input)
}

/// The remote half of a `#[remote]` call: a peer call plus typed decoding.
pub fn call_remote<T: DeserializeOwned>(function: &str, input: &str) -> Result<T> {
    let output = peer_call(function, input)?;
    decode_output(function, &output)
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::*;
    use crate::bindings::flash::runtime::peer;

    pub fn call(function: &str, input: &str) -> Result<String> {
        peer::call(function, input).map_err(Error::from_wit)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::*;
    use crate::error::ErrorKind;

    /// Natively (unit tests, tooling) there is no host to route the call.
    pub fn call(function: &str, _input: &str) -> Result<String> {
        Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "cannot call `{function}`: peer calls need the Flash host (not running as a component)"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn local_when_unset_or_matching() {
        assert!(is_local(None, "gpu_config"));
        assert!(is_local(Some("gpu_config"), "gpu_config"));
        assert!(!is_local(Some("api"), "gpu_config"));
    }

    #[test]
    fn native_peer_calls_are_unavailable() {
        let err = call_remote::<u32>("embed", "{}").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.message().contains("`embed`"), "{err}");
    }
}
