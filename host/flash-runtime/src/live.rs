//! [`LiveInstance`]: one instance of a component kept alive across calls.
//!
//! The serving path (queue worker, load-balanced routes, peer calls) deliberately does
//! **not** use this: it calls [`FunctionComponentPre::invoke`], a fresh `Store` and
//! instance per call. That is the isolation guarantee of a Flash endpoint: whatever one
//! job leaves behind (globals, heap contents, guest caches, WASI resources, the aftermath
//! of a trap) is dropped with its store and can never be seen by the next job, which may
//! come from a different caller. With the pooling allocator the price is small (see
//! `docs/benchmarks.md`).
//!
//! A live instance skips store creation and instantiation for every call but the first.
//! It exists to measure exactly that difference (the "hot call" of
//! `host/flash-host/benches/host.rs`) and as the building block of a possible future
//! *bounded reuse* option (N calls per instance, same caller only), which issue 3 allows
//! only if it is measured faster and shown safe.
//!
//! Semantics, chosen to stay sane for a store that outlives one call:
//!
//! - the deadline of [`InvokeLimits`] is re-armed before every call, so each call gets the
//!   full deadline, not what is left of the first call's;
//! - the memory cap bounds the instance's memory across all its calls (linear memory only
//!   grows), so a reused instance hits it sooner than fresh ones would;
//! - the host memory budget and the cap on logged output start over with each call, except
//!   for what the guest still holds (`wasi:nn` tensors and models it has not dropped);
//! - after a trap or a timeout the instance is *poisoned*: its state may be half-updated,
//!   so every later call fails with an `internal` error instead of running on it. A
//!   `call-error` returned by the guest itself is a normal return and does not poison.

use wasmtime::Store;

use crate::bindings::Function;
use crate::component::FunctionComponentPre;
use crate::error::{CallError, ErrorKind};
use crate::invoke::{
    CallContext, DEADLINE_GRACE, InvokeLimits, arm_deadline, call_wasi, classify_trap, finish_call,
    timeout_error,
};
use crate::state::HostState;

/// An instance of a component with its own store, reused by every [`invoke`](Self::invoke).
pub struct LiveInstance {
    store: Store<HostState>,
    instance: Function,
    limits: InvokeLimits,
    name: String,
    calls: u64,
    poisoned: bool,
}

impl std::fmt::Debug for LiveInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveInstance")
            .field("component", &self.name)
            .field("calls", &self.calls)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl FunctionComponentPre {
    /// Instantiates this component once, in a store that lives as long as the returned
    /// [`LiveInstance`]. `ctx` (environment, peers, depth) and `limits` apply to every
    /// call made on it.
    pub async fn instantiate(
        &self,
        ctx: &CallContext,
        limits: &InvokeLimits,
    ) -> Result<LiveInstance, CallError> {
        let (wasi, output) = call_wasi(
            &ctx.env,
            ctx.call_id.as_deref(),
            ctx.trace.as_deref(),
            "<instantiate>",
            limits,
        );
        let mut store = self.new_store(wasi, Some(output), Some(ctx), limits);
        let instantiate = self.pre.instantiate_async(&mut store);
        let instance =
            match tokio::time::timeout(limits.deadline + DEADLINE_GRACE, instantiate).await {
                Ok(Ok(instance)) => instance,
                Ok(Err(trap)) => return Err(classify_trap("<instantiate>", &trap, limits)),
                Err(_elapsed) => return Err(timeout_error("<instantiate>", limits)),
            };
        Ok(LiveInstance {
            store,
            instance,
            limits: *limits,
            name: self.name().to_string(),
            calls: 0,
            poisoned: false,
        })
    }
}

impl LiveInstance {
    /// Runs `function` with the JSON `input` on this instance (same store as the previous
    /// calls), with a fresh deadline.
    pub async fn invoke(&mut self, function: &str, input: &str) -> Result<String, CallError> {
        if self.poisoned {
            return Err(CallError::new(
                ErrorKind::Internal,
                format!(
                    "instance of component `{}` is unusable after an earlier trap or timeout; \
                     instantiate a new one",
                    self.name
                ),
            ));
        }
        arm_deadline(&mut self.store, self.limits.deadline);
        let state = self.store.data_mut();
        state.budget.new_call();
        if let Some(output) = &state.output {
            output.new_call(function);
        }
        self.calls += 1;
        let limits = self.limits;
        let (function_arg, input_arg) = (String::from(function), String::from(input));
        let call = self.instance.flash_runtime_invoke().call_invoke(
            &mut self.store,
            &function_arg,
            &input_arg,
        );
        let result = tokio::time::timeout(limits.deadline + DEADLINE_GRACE, call).await;
        // A trap or a timeout may leave the instance half-updated.
        self.poisoned = matches!(result, Ok(Err(_)) | Err(_));
        finish_call(&mut self.store, function, result, &limits)
    }

    /// Calls started on this instance so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Whether an earlier trap or timeout made this instance unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}
