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
}

impl CallError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            traceback: None,
        }
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
        Self::new(e.kind.into(), e.message).with_traceback(e.traceback)
    }
}

impl From<CallError> for types::CallError {
    fn from(e: CallError) -> Self {
        Self {
            kind: e.kind.into(),
            message: e.message,
            traceback: e.traceback,
        }
    }
}
