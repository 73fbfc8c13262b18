//! The host side of the WIT `peer` import.
//!
//! The runtime does not know where functions live; it hands every `peer.call` to a
//! [`PeerRouter`]. `flash-host`'s service registry implements it: local functions run in
//! the same host, remote ones go over HTTP to the endpoint that serves them. The call
//! depth travels with each call so that cycles end with `call-depth-exceeded` instead of
//! recursing forever.

use std::future::Future;
use std::pin::Pin;

use crate::error::{CallError, ErrorKind};

/// A boxed, sendable future, as returned by [`PeerRouter::call`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Routes a guest's `peer.call(function, input)`.
pub trait PeerRouter: Send + Sync + 'static {
    /// Runs `function` with the JSON `input`; `depth` is the depth of this call in the
    /// chain (1 for a call made by a top-level invocation), `trace` the job the chain
    /// works for (it tags the callee's log lines, so that one job's lines can be found on
    /// every host it reached).
    fn call<'a>(
        &'a self,
        function: &'a str,
        input: String,
        depth: u32,
        trace: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, CallError>>;
}

/// A router with no peers: every call fails as `unavailable` (used by the scanner).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPeers;

impl PeerRouter for NoPeers {
    fn call<'a>(
        &'a self,
        function: &'a str,
        _input: String,
        _depth: u32,
        _trace: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, CallError>> {
        Box::pin(async move {
            Err(CallError::new(
                ErrorKind::Unavailable,
                format!("cannot call `{function}`: peer calls are not available in this context"),
            ))
        })
    }
}
