//! The error type of `#[remote]` functions.
//!
//! [`Error`] is what crosses the component boundary: a machine-readable [`ErrorKind`]
//! (a mirror of the WIT `error-kind`, which hosts map to HTTP statuses and job errors)
//! and a human-readable message. It deliberately does *not* implement
//! [`std::error::Error`]: that leaves room for a blanket `From<E: std::error::Error>`
//! (the `anyhow` pattern), so `?` works on I/O, serde and any other error and yields a
//! [`ErrorKind::UserError`].

use std::fmt;

use crate::bindings::flash::runtime::types as wit;

/// `Result<T, flash_sdk::Error>`: the return type every `#[remote]` function must have.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a call failed. Mirrors the WIT `error-kind` of `flash:runtime`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input could not be decoded into the function's arguments.
    InvalidInput,
    /// No function of that name exists.
    UnknownFunction,
    /// The function ran and returned an error of its own.
    UserError,
    /// The peer endpoint that serves the function could not be reached or found.
    Unavailable,
    /// The call did not finish within its deadline.
    Timeout,
    /// The peer endpoint answered with a failure it could not classify further.
    RemoteFailure,
    /// A peer call chain went deeper than the host allows (a likely call cycle).
    CallDepthExceeded,
    /// The guest or the host failed; the message says how.
    Internal,
}

impl ErrorKind {
    /// The WIT spelling of the kind, e.g. `invalid-input`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::UnknownFunction => "unknown-function",
            ErrorKind::UserError => "user-error",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::RemoteFailure => "remote-failure",
            ErrorKind::CallDepthExceeded => "call-depth-exceeded",
            ErrorKind::Internal => "internal",
        }
    }

    // Natively only tests use it: peer calls need a component.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) fn from_wit(kind: wit::ErrorKind) -> Self {
        match kind {
            wit::ErrorKind::InvalidInput => ErrorKind::InvalidInput,
            wit::ErrorKind::UnknownFunction => ErrorKind::UnknownFunction,
            wit::ErrorKind::UserError => ErrorKind::UserError,
            wit::ErrorKind::Unavailable => ErrorKind::Unavailable,
            wit::ErrorKind::Timeout => ErrorKind::Timeout,
            wit::ErrorKind::RemoteFailure => ErrorKind::RemoteFailure,
            wit::ErrorKind::CallDepthExceeded => ErrorKind::CallDepthExceeded,
            wit::ErrorKind::Internal => ErrorKind::Internal,
        }
    }

    pub(crate) fn to_wit(self) -> wit::ErrorKind {
        match self {
            ErrorKind::InvalidInput => wit::ErrorKind::InvalidInput,
            ErrorKind::UnknownFunction => wit::ErrorKind::UnknownFunction,
            ErrorKind::UserError => wit::ErrorKind::UserError,
            ErrorKind::Unavailable => wit::ErrorKind::Unavailable,
            ErrorKind::Timeout => wit::ErrorKind::Timeout,
            ErrorKind::RemoteFailure => wit::ErrorKind::RemoteFailure,
            ErrorKind::CallDepthExceeded => wit::ErrorKind::CallDepthExceeded,
            ErrorKind::Internal => wit::ErrorKind::Internal,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call: an [`ErrorKind`], a message and, for failures that come back from a
/// peer, the traceback the failing guest reported.
///
/// Build one with [`Error::msg`] (a user error), [`Error::invalid_input`] or
/// [`Error::new`], or let `?` convert any [`std::error::Error`] (into a user error whose
/// message includes the error's `source()` chain).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    traceback: Option<String>,
    // Boxed: most errors have none, and `Result<T, Error>` stays small.
    origin: Option<Box<Origin>>,
}

/// Where a failure that came back through peer calls began: the function that failed
/// first, the resource config that serves it, and the functions in between (in call
/// order). The host records it; an error passed on with `?` keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub function: String,
    pub resource_config: String,
    pub via: Vec<String>,
}

impl Error {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl fmt::Display) -> Self {
        Error {
            kind,
            message: message.to_string(),
            traceback: None,
            origin: None,
        }
    }

    /// A [`ErrorKind::UserError`]: the function failed for a reason of its own.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error::new(ErrorKind::UserError, message)
    }

    /// An [`ErrorKind::InvalidInput`]: the arguments were well-formed but unacceptable.
    pub fn invalid_input(message: impl fmt::Display) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// An [`ErrorKind::Internal`] failure.
    pub fn internal(message: impl fmt::Display) -> Self {
        Error::new(ErrorKind::Internal, message)
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where the failure happened, as the failing guest reported it (a Python
    /// traceback, a JavaScript stack), for failures that came back from a peer call.
    pub fn traceback(&self) -> Option<&str> {
        self.traceback.as_deref()
    }

    /// Where the failure began, when it came back through peer calls.
    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_deref()
    }

    /// Prefixes the message with `context: `, keeping the kind and traceback.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error {
            message: format!("{context}: {}", self.message),
            ..self
        }
    }

    // Natively only tests use it: peer calls need a component.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) fn from_wit(error: wit::CallError) -> Self {
        Error {
            kind: ErrorKind::from_wit(error.kind),
            message: error.message,
            traceback: error.traceback,
            origin: error.origin.map(|o| {
                Box::new(Origin {
                    function: o.function,
                    resource_config: o.resource_config,
                    via: o.via,
                })
            }),
        }
    }

    pub(crate) fn into_wit(self) -> wit::CallError {
        wit::CallError {
            kind: self.kind.to_wit(),
            message: self.message,
            traceback: self.traceback,
            origin: self.origin.map(|o| *o).map(|o| wit::ErrorOrigin {
                function: o.function,
                resource_config: o.resource_config,
                via: o.via,
            }),
        }
    }
}

impl fmt::Display for Error {
    /// The message; with `{:#}`, prefixed by the kind (`user-error: ...`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            write!(f, "{}: {}", self.kind, self.message)
        } else {
            f.write_str(&self.message)
        }
    }
}

impl<E> From<E> for Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Error::msg(message)
    }
}

/// Adds context to failures, `anyhow` style: `fs::read(p).context("reading the model")?`.
pub trait Context<T> {
    /// Wraps the error (or a `None`) with `context`, keeping its kind (user error for
    /// foreign errors and `None`).
    fn context(self, context: impl fmt::Display) -> Result<T>;

    /// Like [`Context::context`], computing the context only on failure.
    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }

    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.into().context(context()))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.ok_or_else(|| Error::msg(context))
    }

    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.ok_or_else(|| Error::msg(context()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("loading weights")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn question_mark_makes_user_errors_with_the_source_chain() {
        fn read() -> Result<()> {
            Err(Outer(std::io::Error::other("disk on fire")))?;
            Ok(())
        }
        let err = read().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UserError);
        assert_eq!(err.message(), "loading weights: disk on fire");
    }

    #[test]
    fn serde_errors_convert() {
        fn parse() -> Result<u32> {
            Ok(serde_json::from_str("\"x\"")?)
        }
        let err = parse().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UserError);
        assert!(err.message().contains("expected u32"), "{err}");
    }

    #[test]
    fn constructors_and_display() {
        let err = Error::invalid_input("dims must be > 0");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(err.to_string(), "dims must be > 0");
        assert_eq!(format!("{err:#}"), "invalid-input: dims must be > 0");
        assert_eq!(Error::msg("x").kind(), ErrorKind::UserError);
        assert_eq!(Error::internal("x").kind(), ErrorKind::Internal);
    }

    #[test]
    fn context_keeps_the_kind() {
        let r: Result<()> = Err(Error::invalid_input("bad"));
        let err = r.context("embedding").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(err.message(), "embedding: bad");

        let none: Option<u8> = None;
        let err = none.with_context(|| "no model").unwrap_err();
        assert_eq!(
            (err.kind(), err.message()),
            (ErrorKind::UserError, "no model")
        );
    }

    #[test]
    fn wit_round_trip_preserves_every_kind() {
        for kind in [
            ErrorKind::InvalidInput,
            ErrorKind::UnknownFunction,
            ErrorKind::UserError,
            ErrorKind::Unavailable,
            ErrorKind::Timeout,
            ErrorKind::RemoteFailure,
            ErrorKind::CallDepthExceeded,
            ErrorKind::Internal,
        ] {
            let err = Error::new(kind, "m");
            assert_eq!(Error::from_wit(err.clone().into_wit()), err);
        }
    }
}
