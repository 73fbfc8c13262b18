//! One call: a fresh store and instance, a memory cap, a host memory budget, a deadline,
//! capped logs, typed failures.
//!
//! Every invocation gets its own `Store`, so no state leaks between jobs or requests and
//! a trapped instance is simply dropped. With the pooling allocator this costs tens of
//! microseconds for a small component and ≈ 300 µs for a Python one (componentize-py);
//! [`crate::ready`] makes instances before their calls arrive so that a lightly loaded
//! host does not wait for it. What one call may use is bounded ([`InvokeLimits`]):
//!
//! - **memory**: all the instance's linear memories and tables together, against
//!   `max_memory_bytes` ([`crate::limiter`]);
//! - **host memory spent on the call**: `wasi:nn` tensors and guest-loaded models while the
//!   guest holds them, progress chunks and the output, against the call's budget
//!   ([`flash_nn::HostBudget`]; `call_budget_bytes`, by default the memory cap);
//! - **progress**: chunks wait in a queue of [`PROGRESS_QUEUE`]; a guest that emits faster
//!   than its caller takes them waits (see [`ProgressSink`]);
//! - **stdout and stderr**: logged by the host, tagged and escaped, up to
//!   `max_guest_output_bytes` per call ([`crate::guest_log`]);
//! - **time**: the deadline.
//!
//! Failures are always a [`CallError`], never a panic of the host:
//!
//! - the guest's own `call-error` is passed through unchanged;
//! - a deadline hit (epoch callback, or a peer call outliving it) is `timeout`;
//! - growing memory past the cap, or spending host memory past the budget, traps and
//!   becomes `internal` naming the limit and its setting;
//! - any other trap is `internal` with wasmtime's trap message.
//!
//! `wasi:nn` inference runs on the host's blocking pool and stops at the same deadline:
//! the guest gets the wasi-nn `timeout` code, and the call ends as `timeout` either way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::WasiCtx;

use crate::component::FunctionComponentPre;
use crate::error::{CallError, ErrorKind};
use crate::guest_log::GuestOutput;
use crate::limiter::{InstanceLimiter, MemoryCapExceeded};
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
    /// All linear memories and tables of the instance together (`FLASH_MAX_MEMORY_MB`).
    pub max_memory_bytes: usize,
    /// Host memory the call may make the host spend on it: `wasi:nn` tensors and models it
    /// holds, plus the progress chunks and output it sends (`FLASH_CALL_BUDGET_MB`).
    /// `None`: the same as `max_memory_bytes`.
    pub call_budget_bytes: Option<usize>,
    /// Guest stdout and stderr logged per call, together; past it output is dropped and
    /// counted (`FLASH_GUEST_OUTPUT_MAX_KB`).
    pub max_guest_output_bytes: usize,
}

impl Default for InvokeLimits {
    fn default() -> Self {
        Self {
            deadline: DEFAULT_DEADLINE,
            max_memory_bytes: 256 << 20,
            call_budget_bytes: None,
            max_guest_output_bytes: crate::guest_log::DEFAULT_MAX_GUEST_OUTPUT,
        }
    }
}

impl InvokeLimits {
    /// The call's host memory budget in bytes (`call_budget_bytes`, else the memory cap).
    pub fn call_budget(&self) -> usize {
        self.call_budget_bytes.unwrap_or(self.max_memory_bytes)
    }
}

/// Chunks of partial output waiting for the caller, at most, per call.
///
/// Bounded with backpressure rather than refusal: chunks are ordered partial results a
/// client reads from the job's stream, so dropping some would corrupt the stream, and
/// failing the call would punish a guest for a slow network. A guest that emits faster
/// than the caller posts waits in `progress.emit`, bounded by its deadline. Together with
/// the call's host memory budget (every chunk is charged), this bounds what one call can
/// queue in the host.
pub const PROGRESS_QUEUE: usize = 16;

/// Receives the chunks a call emits through `progress.emit` (JSON text), in order; made
/// by [`progress_channel`].
pub type ProgressSink = tokio::sync::mpsc::Sender<String>;

/// A bounded progress queue ([`PROGRESS_QUEUE`] chunks): the sink for a [`CallContext`]
/// and the receiver the caller must drain while the call runs (or the call waits).
pub fn progress_channel() -> (ProgressSink, tokio::sync::mpsc::Receiver<String>) {
    tokio::sync::mpsc::channel(PROGRESS_QUEUE)
}

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
    /// The id of the job or request this call serves, if any: tags the guest's log lines.
    pub call_id: Option<String>,
    /// The job this call works for, when a peer call made it on that job's behalf (the
    /// first job of the chain): tags the guest's log lines, and travels on with the
    /// peer calls this call makes (`call_id` does when this is the first).
    pub trace: Option<String>,
    /// Models for `wasi:nn` (shared by every call of the host); disabled by default.
    pub inference: flash_nn::Inference,
}

impl CallContext {
    /// What the peer calls this call makes carry as their `trace`: its own, else its job.
    pub fn peer_trace(&self) -> Option<String> {
        self.trace.clone().or_else(|| self.call_id.clone())
    }
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
        output: Option<GuestOutput>,
        ctx: Option<&CallContext>,
        limits: &InvokeLimits,
    ) -> Store<HostState> {
        let state = HostState {
            wasi,
            table: Default::default(),
            limiter: InstanceLimiter::new(limits.max_memory_bytes),
            budget: flash_nn::HostBudget::new(limits.call_budget()),
            output,
            peers: ctx
                .map(|c| Arc::clone(&c.peers))
                .unwrap_or_else(|| Arc::new(crate::peer::NoPeers)),
            depth: ctx.map_or(0, |c| c.depth),
            trace: ctx.and_then(CallContext::peer_trace),
            max_depth: ctx.map_or(0, |c| c.max_depth),
            progress: ctx.and_then(|c| c.progress.clone()),
            nn: flash_nn::NnCtx {
                inference: ctx.map(|c| c.inference.clone()).unwrap_or_default(),
                deadline: None,
            },
            panic: None,
        };
        let mut store = Store::new(self.engine.wasmtime(), state);
        store.limiter(|state| &mut state.limiter);
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
        let (wasi, output) = call_wasi(
            &ctx.env,
            ctx.call_id.as_deref(),
            ctx.trace.as_deref(),
            function,
            limits,
        );
        let mut store = self.new_store(wasi, Some(output), Some(ctx), limits);
        let call = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            instance
                .flash_runtime_invoke()
                .call_invoke(&mut store, &String::from(function), &String::from(input))
                .await
        };
        // The epoch callback stops guest code; this also bounds time spent in host calls
        // (a peer call cannot outlive the caller's deadline by more than a grace period).
        let result = tokio::time::timeout(limits.deadline + DEADLINE_GRACE, call).await;
        finish_call(&mut store, function, result, limits)
    }
}

/// What a call's future ended with, bounded by the deadline: the guest's answer, its own
/// `call-error`, a trap, or the deadline passing.
pub(crate) type CallResult = Result<
    wasmtime::Result<Result<String, crate::bindings::types::CallError>>,
    tokio::time::error::Elapsed,
>;

/// Turns how a call ended into its answer: the output charged to the budget, or a typed
/// [`CallError`] (a panic's own message when the guest reported one before trapping).
pub(crate) fn finish_call(
    store: &mut Store<HostState>,
    function: &str,
    result: CallResult,
    limits: &InvokeLimits,
) -> Result<String, CallError> {
    match result {
        Ok(Ok(Ok(output))) => charge_output(store, function, output, limits),
        Ok(Ok(Err(guest_error))) => Err(guest_error.into()),
        Ok(Err(trap)) => Err(match store.data_mut().panic.take() {
            Some(panic) => panic_error(function, &panic, &trap),
            None => classify_trap(function, &trap, limits),
        }),
        Err(_elapsed) => Err(timeout_error(function, limits)),
    }
}

/// Charges the call's output to its budget: it is the last thing the call sends.
pub(crate) fn charge_output(
    store: &mut Store<HostState>,
    function: &str,
    output: String,
    limits: &InvokeLimits,
) -> Result<String, CallError> {
    match store.data_mut().budget.send("its output", output.len()) {
        Ok(()) => Ok(output),
        Err(exceeded) => Err(budget_error(function, &exceeded, limits)),
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
/// host's log through the call's capped [`GuestOutput`] (returned too), and no preopened
/// directories.
pub(crate) fn call_wasi(
    env: &[(String, String)],
    call_id: Option<&str>,
    trace: Option<&str>,
    function: &str,
    limits: &InvokeLimits,
) -> (WasiCtx, GuestOutput) {
    let output = GuestOutput::new(function, call_id, limits.max_guest_output_bytes);
    output.set_trace(trace);
    let wasi = WasiCtx::builder()
        .envs(env)
        .stdout(output.stdout())
        .stderr(output.stderr())
        .build();
    (wasi, output)
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
    if let Some(exceeded) = err.downcast_ref::<MemoryCapExceeded>() {
        return CallError::new(
            ErrorKind::Internal,
            format!(
                "function `{function}` exceeded the memory cap of {} per instance: growing {} by \
                 {} bytes would bring its memories and tables to {} bytes; the cap counts all \
                 of an instance's linear memories and tables together (set \
                 FLASH_MAX_MEMORY_MB to change it)",
                mib(limits.max_memory_bytes),
                exceeded.what,
                exceeded.requested,
                exceeded.used.saturating_add(exceeded.requested),
            ),
        );
    }
    if let Some(exceeded) = err.downcast_ref::<flash_nn::BudgetExceeded>() {
        return budget_error(function, exceeded, limits);
    }
    let text = format!("{err:#}");
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

/// The error of a call that spent more host memory than its budget.
pub(crate) fn budget_error(
    function: &str,
    exceeded: &flash_nn::BudgetExceeded,
    limits: &InvokeLimits,
) -> CallError {
    let setting = if limits.call_budget_bytes.is_some() {
        "set FLASH_CALL_BUDGET_MB to change it"
    } else {
        "set FLASH_CALL_BUDGET_MB to change it; it defaults to the memory cap, \
         FLASH_MAX_MEMORY_MB"
    };
    CallError::new(
        ErrorKind::Internal,
        format!(
            "function `{function}` exceeded its per-call host memory budget of {}: {} of {} \
             bytes on top of {} bytes already held or sent; the budget counts the wasi:nn \
             tensors and models a call holds and the progress chunks and output it sends \
             ({setting})",
            mib(exceeded.limit),
            exceeded.what,
            exceeded.bytes,
            exceeded.used,
        ),
    )
}

/// `bytes` for people: whole MiB when it is some, else bytes.
fn mib(bytes: usize) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}
