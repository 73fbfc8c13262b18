//! One call: a fresh store and instance, a memory cap, a deadline, typed failures.
//!
//! Every invocation gets its own `Store`, so no state leaks between jobs or requests and
//! a trapped instance is simply dropped; with the pooling allocator this costs tens of
//! microseconds. Failures are always a [`CallError`], never a panic of the host:
//!
//! - the guest's own `call-error` is passed through unchanged;
//! - a deadline hit (epoch callback, or a peer call outliving it) is `timeout`;
//! - growing memory past the cap traps and becomes `internal` naming the cap;
//! - any other trap is `internal` with wasmtime's trap message.
//!
//! `wasi:nn` inference runs on the host's blocking pool and stops at the same deadline:
//! the guest gets the wasi-nn `timeout` code, and the call ends as `timeout` either way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::WasiCtx;

use crate::component::FunctionComponentPre;
use crate::error::{CallError, ErrorKind};
use crate::peer::PeerRouter;
use crate::state::HostState;

/// Default deadline of a call when the resource config sets none.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(300);
/// Default limit of nested peer calls.
pub const DEFAULT_MAX_CALL_DEPTH: u32 = 8;

/// Resource limits of one call.
#[derive(Debug, Clone, Copy)]
pub struct InvokeLimits {
    pub deadline: Duration,
    pub max_memory_bytes: usize,
}

impl Default for InvokeLimits {
    fn default() -> Self {
        Self {
            deadline: DEFAULT_DEADLINE,
            max_memory_bytes: 256 << 20,
        }
    }
}

/// Receives the chunks a call emits through `progress.emit` (JSON text), in order.
pub type ProgressSink = tokio::sync::mpsc::UnboundedSender<String>;

/// What a call may see and reach.
#[derive(Clone)]
pub struct CallContext {
    /// The guest's environment: exactly these variables and nothing else.
    pub env: Vec<(String, String)>,
    pub peers: Arc<dyn PeerRouter>,
    /// Depth of this call in a peer-call chain (0 for a handler's call).
    pub depth: u32,
    pub max_depth: u32,
    /// Partial output of this call; nested peer calls get none.
    pub progress: Option<ProgressSink>,
    /// Models for `wasi:nn` (shared by every call of the host); disabled by default.
    pub inference: flash_nn::Inference,
}

/// Marker error returned by the epoch callback once the deadline has passed.
#[derive(Debug)]
struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

impl FunctionComponentPre {
    pub(crate) fn new_store(
        &self,
        wasi: WasiCtx,
        ctx: Option<&CallContext>,
        limits: &InvokeLimits,
    ) -> Store<HostState> {
        let state = HostState {
            wasi,
            table: Default::default(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.max_memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            peers: ctx
                .map(|c| Arc::clone(&c.peers))
                .unwrap_or_else(|| Arc::new(crate::peer::NoPeers)),
            depth: ctx.map_or(0, |c| c.depth),
            max_depth: ctx.map_or(0, |c| c.max_depth),
            progress: ctx.and_then(|c| c.progress.clone()),
            nn: flash_nn::NnCtx {
                inference: ctx.map(|c| c.inference.clone()).unwrap_or_default(),
                deadline: None,
            },
            panic: None,
        };
        let mut store = Store::new(self.engine.wasmtime(), state);
        store.limiter(|state| &mut state.limits);
        arm_deadline(&mut store, limits.deadline);
        store
    }

    /// Runs `function` of this component with the JSON `input`.
    pub async fn invoke(
        &self,
        function: &str,
        input: &str,
        ctx: &CallContext,
        limits: &InvokeLimits,
    ) -> Result<String, CallError> {
        let mut store = self.new_store(call_wasi(ctx), Some(ctx), limits);
        let call = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            instance
                .flash_runtime_invoke()
                .call_invoke(&mut store, &String::from(function), &String::from(input))
                .await
        };
        // The epoch callback stops guest code; this also bounds time spent in host calls
        // (a peer call cannot outlive the caller's deadline by more than a grace period).
        match tokio::time::timeout(limits.deadline + DEADLINE_GRACE, call).await {
            Ok(Ok(Ok(output))) => Ok(output),
            Ok(Ok(Err(guest_error))) => Err(guest_error.into()),
            Ok(Err(trap)) => Err(match store.data_mut().panic.take() {
                Some(panic) => panic_error(function, &panic, &trap),
                None => classify_trap(function, &trap, limits),
            }),
            Err(_elapsed) => Err(timeout_error(function, limits)),
        }
    }
}

/// A guest panic: the failure of the user's code, reported with the guest's own message
/// and the trap's backtrace (function names demangled).
pub(crate) fn panic_error(function: &str, panic: &str, trap: &wasmtime::Error) -> CallError {
    let mut error = CallError::new(
        ErrorKind::UserError,
        format!("function `{function}` {panic}"),
    );
    if let Some(backtrace) = trap.downcast_ref::<wasmtime::WasmBacktrace>() {
        error.traceback = Some(format!("{backtrace}"));
    }
    error
}

/// How long a call's host-side work (a peer call) may outlive its deadline.
pub(crate) const DEADLINE_GRACE: Duration = Duration::from_millis(100);

/// The WASI context of a call: exactly the declared environment, stdout and stderr to the
/// host's, and no preopened directories.
pub(crate) fn call_wasi(ctx: &CallContext) -> WasiCtx {
    WasiCtx::builder()
        .envs(&ctx.env)
        .inherit_stdout()
        .inherit_stderr()
        .build()
}

/// Arms the store's deadline `deadline` from now: on every epoch tick the guest yields
/// to the executor, and once the deadline has passed the next tick traps.
///
/// Replaces any earlier deadline, so a store that lives across calls
/// ([`crate::live::LiveInstance`]) re-arms it before each one.
pub(crate) fn arm_deadline(store: &mut Store<HostState>, deadline: Duration) {
    let deadline = Instant::now() + deadline;
    // Host-side inference stops at the same instant (returns wasi-nn `timeout`).
    store.data_mut().nn.deadline = Some(deadline);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Err(DeadlineExceeded.into())
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
}

pub(crate) fn timeout_error(function: &str, limits: &InvokeLimits) -> CallError {
    CallError::new(
        ErrorKind::Timeout,
        format!(
            "function `{function}` did not finish within its deadline of {} ms",
            limits.deadline.as_millis()
        ),
    )
}

/// Turns a wasmtime error into a typed, user-readable [`CallError`].
pub(crate) fn classify_trap(
    function: &str,
    err: &wasmtime::Error,
    limits: &InvokeLimits,
) -> CallError {
    if err.downcast_ref::<DeadlineExceeded>().is_some()
        || matches!(
            err.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        )
    {
        return timeout_error(function, limits);
    }
    let text = format!("{err:#}");
    if text.contains("forcing trap when growing memory") {
        return CallError::new(
            ErrorKind::Internal,
            format!(
                "function `{function}` exceeded the memory cap of {} MiB per instance",
                limits.max_memory_bytes >> 20
            ),
        );
    }
    let mut message = format!("function `{function}` trapped: {text}");
    if message.len() > 4000 {
        let mut cut = 4000;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(" …");
    }
    CallError::new(ErrorKind::Internal, message)
}
