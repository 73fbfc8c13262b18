//! Per-call store state: the WASI context, limits, the peer router and `wasi:nn`.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{flash, types};
use crate::error::{CallError, ErrorKind};
use crate::limiter::InstanceLimiter;
use crate::peer::PeerRouter;

pub(crate) struct HostState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    /// All memories and tables of the instance, against its memory cap.
    pub limiter: InstanceLimiter,
    /// Host memory the call makes the host spend on it: `wasi:nn` tensors and models,
    /// progress chunks, the output.
    pub budget: flash_nn::HostBudget,
    /// The guest's stdout and stderr (tagged, escaped, capped); `None` for `describe`.
    pub output: Option<crate::guest_log::GuestOutput>,
    pub peers: Arc<dyn PeerRouter>,
    /// Depth of the running invocation (0 = invoked by a handler).
    pub depth: u32,
    pub max_depth: u32,
    /// The job the peer calls of this invocation work for (see `CallContext::trace`).
    pub trace: Option<String>,
    /// Where `progress.emit` chunks go; `None` drops them.
    pub progress: Option<crate::invoke::ProgressSink>,
    /// The host's preloaded models and the call's deadline, for `wasi:nn`.
    pub nn: flash_nn::NnCtx,
    /// What the guest reported through `diagnostics.panicked` before trapping.
    pub panic: Option<String>,
}

/// The longest panic message kept (a guest decides its length).
const MAX_PANIC_MESSAGE: usize = 4096;

impl HostState {
    pub fn nn_view(&mut self) -> flash_nn::NnView<'_> {
        flash_nn::NnView {
            ctx: &mut self.nn,
            table: &mut self.table,
            budget: &mut self.budget,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl flash::runtime::types::Host for HostState {}

impl flash::runtime::peer::Host for HostState {
    async fn call(&mut self, function: String, input: String) -> Result<String, types::CallError> {
        let depth = self.depth.saturating_add(1);
        if depth > self.max_depth {
            return Err(CallError::new(
                ErrorKind::CallDepthExceeded,
                format!(
                    "calling `{function}` would nest {depth} peer calls deep (limit {}); is there a \
                     call cycle between functions?",
                    self.max_depth
                ),
            )
            .into());
        }
        let peers = Arc::clone(&self.peers);
        peers
            .call(&function, input, depth, self.trace.as_deref())
            .await
            .map_err(Into::into)
    }
}

impl flash::runtime::diagnostics::Host for HostState {
    async fn panicked(&mut self, mut message: String) {
        if message.len() > MAX_PANIC_MESSAGE {
            let mut cut = MAX_PANIC_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" …");
        }
        self.panic = Some(message);
    }
}

impl flash::runtime::progress::Host for HostState {
    /// Charges the chunk to the call's budget (also where nobody listens, so a function
    /// behaves the same on every kind of endpoint), then waits for room in the bounded
    /// progress queue: a guest that emits faster than the stream is posted slows down
    /// instead of piling chunks up in the host. The call's deadline bounds the wait.
    async fn emit(&mut self, chunk: String) -> wasmtime::Result<()> {
        self.budget.send("a progress chunk", chunk.len())?;
        if let Some(sink) = &self.progress {
            // A receiver that went away (caller finished) just means nobody listens.
            let _ = sink.send(chunk).await;
        }
        Ok(())
    }
}
