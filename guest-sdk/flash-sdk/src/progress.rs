//! Partial output: [`emit`] sends a chunk while the function is still running.
//!
//! On a queue endpoint every chunk reaches the job's stream (RunPod `/stream/{id}`) in
//! order and before the result; callers that cannot stream ignore chunks. The function's
//! return value stays its result.
//!
//! The host bounds what a call sends: [`emit`] waits while the host's queue of unposted
//! chunks is full (the call's deadline still runs), and every chunk counts against the
//! call's host memory budget (`FLASH_CALL_BUDGET_MB`, by default the memory cap); a chunk
//! past it ends the call with an error that says so.

use serde::Serialize;

use crate::error::{Error, Result};

/// Emits one chunk of partial output (any serde value, sent as JSON).
pub fn emit<T: Serialize + ?Sized>(chunk: &T) -> Result<()> {
    let json = serde_json::to_string(chunk)
        .map_err(|e| Error::internal(format!("cannot encode a progress chunk: {e}")))?;
    imp::emit(&json);
    Ok(())
}

#[cfg(target_arch = "wasm32")]
mod imp {
    pub fn emit(chunk: &str) {
        crate::bindings::flash::runtime::progress::emit(chunk);
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    /// Natively there is no host to stream to; chunks are dropped.
    pub fn emit(_chunk: &str) {}
}
