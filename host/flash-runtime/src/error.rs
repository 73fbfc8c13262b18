//! [`CallError`]: the typed failure of a call, shared by guests, hosts and the wire.
//!
//! It mirrors the WIT `call-error` record. Handlers turn it into job errors and HTTP
//! statuses; peers send it across the network as JSON (`{"kind": "...", "message": "...",
//! "traceback": "..."}`) so that a remote failure arrives in the calling guest with its kind
//! and traceback intact.

use serde::{Deserialize, Serialize};

use crate::bindings::types;

/// Why a call failed (WIT `error-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    InvalidInput,
    UnknownFunction,
    UserError,
    Unavailable,
    Timeout,
    RemoteFailure,
    CallDepthExceeded,
    Internal,
}

impl ErrorKind {
    /// The WIT spelling, e.g. `invalid-input`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid-input",
            Self::UnknownFunction => "unknown-function",
            Self::UserError => "user-error",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::RemoteFailure => "remote-failure",
            Self::CallDepthExceeded => "call-depth-exceeded",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status a load-balanced route answers with for this kind.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidInput => 400,
            Self::UnknownFunction => 404,
            Self::UserError => 500,
            Self::Unavailable => 503,
            Self::Timeout => 504,
            Self::RemoteFailure => 502,
            Self::CallDepthExceeded => 508,
            Self::Internal => 500,
        }
    }
}

/// A typed call failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}: {message}", kind.as_str())]
pub struct CallError {
    pub kind: ErrorKind,
    pub message: String,
    /// Where the failure happened, as the guest reported it (a Python traceback, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
    /// Where a failure that came back through peer calls began (WIT `error-origin`).
    /// Boxed: most errors have none, and `Result<T, CallError>` stays small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Box<ErrorOrigin>>,
}

/// The function a failure began in and the peer calls it came back through (WIT
/// `error-origin`). On the wire: `{"function", "resource", "via"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorOrigin {
    pub function: String,
    #[serde(rename = "resource")]
    pub resource_config: String,
    /// The functions in between, in call order.
    #[serde(default)]
    pub via: Vec<String>,
}

impl ErrorOrigin {
    /// The origin a peer or worker sent (`origin` in a load-balanced error body,
    /// `error_origin` in a job's error), if it is a well-formed one.
    pub fn from_wire(value: Option<&serde_json::Value>) -> Option<Self> {
        value
            .filter(|v| !v.is_null())
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }
}

impl std::fmt::Display for ErrorOrigin {
    /// `hop_three (resource web, via stage_two)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (resource {}", self.function, self.resource_config)?;
        if !self.via.is_empty() {
            write!(f, ", via {}", self.via.join(", "))?;
        }
        f.write_str(")")
    }
}

impl CallError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            traceback: None,
            origin: None,
        }
    }

    /// The error as the caller of `function` (served by `resource_config`) sees it when a
    /// peer call to it failed: a failure that began there gets that origin; one that came
    /// through it from further away keeps its origin, with `function` added to the path.
    pub fn through_peer(mut self, function: &str, resource_config: &str) -> Self {
        match &mut self.origin {
            Some(origin) => origin.via.insert(0, function.to_string()),
            None => {
                self.origin = Some(Box::new(ErrorOrigin {
                    function: function.to_string(),
                    resource_config: resource_config.to_string(),
                    via: Vec::new(),
                }))
            }
        }
        self
    }

    /// The same error with `traceback` attached (an empty one counts as none).
    pub fn with_traceback(mut self, traceback: Option<String>) -> Self {
        self.traceback = traceback.filter(|t| !t.is_empty());
        self
    }
}

impl From<types::ErrorKind> for ErrorKind {
    fn from(kind: types::ErrorKind) -> Self {
        match kind {
            types::ErrorKind::InvalidInput => Self::InvalidInput,
            types::ErrorKind::UnknownFunction => Self::UnknownFunction,
            types::ErrorKind::UserError => Self::UserError,
            types::ErrorKind::Unavailable => Self::Unavailable,
            types::ErrorKind::Timeout => Self::Timeout,
            types::ErrorKind::RemoteFailure => Self::RemoteFailure,
            types::ErrorKind::CallDepthExceeded => Self::CallDepthExceeded,
            types::ErrorKind::Internal => Self::Internal,
        }
    }
}

impl From<ErrorKind> for types::ErrorKind {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidInput => Self::InvalidInput,
            ErrorKind::UnknownFunction => Self::UnknownFunction,
            ErrorKind::UserError => Self::UserError,
            ErrorKind::Unavailable => Self::Unavailable,
            ErrorKind::Timeout => Self::Timeout,
            ErrorKind::RemoteFailure => Self::RemoteFailure,
            ErrorKind::CallDepthExceeded => Self::CallDepthExceeded,
            ErrorKind::Internal => Self::Internal,
        }
    }
}

impl From<types::CallError> for CallError {
    fn from(e: types::CallError) -> Self {
        Self {
            origin: e.origin.map(|o| {
                Box::new(ErrorOrigin {
                    function: o.function,
                    resource_config: o.resource_config,
                    via: o.via,
                })
            }),
            ..Self::new(e.kind.into(), e.message).with_traceback(e.traceback)
        }
    }
}

impl From<CallError> for types::CallError {
    fn from(e: CallError) -> Self {
        Self {
            kind: e.kind.into(),
            message: e.message,
            traceback: e.traceback,
            origin: e.origin.map(|o| *o).map(|o| types::ErrorOrigin {
                function: o.function,
                resource_config: o.resource_config,
                via: o.via,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_where_it_began_across_peer_hops() {
        // hop_one → stage_two → hop_three, which fails.
        let at_stage_two =
            CallError::new(ErrorKind::InvalidInput, "bad text").through_peer("hop_three", "web");
        let at_hop_one = at_stage_two.through_peer("stage_two", "api");
        let origin = at_hop_one.origin.clone().unwrap();
        assert_eq!(
            origin.to_string(),
            "hop_three (resource web, via stage_two)"
        );
        assert_eq!(at_hop_one.kind, ErrorKind::InvalidInput);
        // On the wire.
        let wire = serde_json::to_value(&at_hop_one).unwrap();
        assert_eq!(
            wire["origin"],
            serde_json::json!({"function": "hop_three", "resource": "web", "via": ["stage_two"]})
        );
        let back: CallError = serde_json::from_value(wire).unwrap();
        assert_eq!(back, at_hop_one);
        // Through the WIT record and back.
        let wit: types::CallError = at_hop_one.clone().into();
        assert_eq!(CallError::from(wit), at_hop_one);
        // Without an origin nothing is added.
        let plain = serde_json::to_value(CallError::new(ErrorKind::Timeout, "slow")).unwrap();
        assert!(plain.get("origin").is_none(), "{plain}");
    }
}
