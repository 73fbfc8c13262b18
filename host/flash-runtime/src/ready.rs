//! Fresh instances made before their calls arrive: [`PreparedInstance`] and the small
//! pool that keeps some ready, [`ReadyInstances`].
//!
//! Every call runs in a fresh instance ([`crate::invoke`]), and for a big component most
//! of a call's time is making that instance, not running it: for the Python quickstart
//! (componentize-py, ~18 MB) instantiating takes ≈ 300 µs and recycling the pool slot
//! afterwards ≈ 100 µs, while its `GET /stats` runs in ≈ 20 µs in a warm instance
//! (`docs/benchmarks.md`). That work does not depend on the call, so it can happen before
//! the call arrives, on another core, while the host waits for the network; and the slot
//! can be recycled after the answer is on its way.
//!
//! A [`PreparedInstance`] is such an instance: its store and instance exist, no export
//! has been called, and nothing of any call has touched it. What does depend on the call
//! (the peer router and depth, the progress sink, the log tag, `wasi:nn` models, the
//! deadline, which starts when the call does) is set when the call takes it. The
//! environment and the limits are the component's and are fixed when it is prepared.
//!
//! The isolation guarantee is unchanged: a prepared instance serves exactly one call and
//! is dropped with its store afterwards.
//!
//! [`ReadyInstances`] keeps up to `target` of them per component. A call takes one if one
//! is ready (and otherwise instantiates inline, as before), and every take starts making a
//! replacement in the background. Under full load no instance is ever ready when a call
//! arrives, so nothing is made twice: each replacement is taken by a later call.
//! The price is memory: each ready instance holds a pool slot and the pages its
//! instantiation touched.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::Store;

use crate::bindings::Function;
use crate::component::FunctionComponentPre;
use crate::error::CallError;
use crate::invoke::{
    CallContext, DEADLINE_GRACE, InvokeLimits, arm_deadline, call_wasi, classify_trap, finish_call,
    timeout_error,
};
use crate::state::HostState;

/// Fresh instances kept ready per component by default (`FLASH_READY_INSTANCES`).
pub const DEFAULT_READY_INSTANCES: usize = 2;

/// Most fresh instances kept ready per component (`FLASH_READY_INSTANCES`).
pub const MAX_READY_INSTANCES: usize = 4;

/// Components of one host that get ready instances; the engine's instance pool has
/// `FLASH_READY_INSTANCES` × this many slots more than calls can use, so that instances
/// waiting for a call never take a slot a running call needs.
pub const READY_COMPONENTS: usize = 4;

/// Pool slots kept for ready instances when each component keeps `per_component` ready:
/// the engine's pool has this many more than calls can use, and a host hands out no more.
pub fn reserved_slots(per_component: usize) -> usize {
    per_component * READY_COMPONENTS
}

/// A fresh instance of a component, made for one later call.
pub struct PreparedInstance {
    store: Store<HostState>,
    instance: Function,
    limits: InvokeLimits,
}

impl std::fmt::Debug for PreparedInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedInstance").finish_non_exhaustive()
    }
}

impl FunctionComponentPre {
    /// Makes a fresh instance for one later call, with the guest environment `env`
    /// (exactly these variables) and `limits`.
    pub async fn prepare(
        &self,
        env: &[(String, String)],
        limits: &InvokeLimits,
    ) -> Result<PreparedInstance, CallError> {
        let (wasi, output) = call_wasi(env, None, None, "<instantiate>", limits);
        let mut store = self.new_store(wasi, Some(output), None, limits);
        let instantiate = self.pre.instantiate_async(&mut store);
        match tokio::time::timeout(limits.deadline + DEADLINE_GRACE, instantiate).await {
            Ok(Ok(instance)) => Ok(PreparedInstance {
                store,
                instance,
                limits: *limits,
            }),
            Ok(Err(trap)) => Err(classify_trap("<instantiate>", &trap, limits)),
            Err(_elapsed) => Err(timeout_error("<instantiate>", limits)),
        }
    }
}

impl PreparedInstance {
    /// Runs `function` with the JSON `input` in this instance, with what `ctx` gives the
    /// call (its environment is the one the instance was prepared with); the instance is
    /// dropped afterwards. The deadline starts now.
    pub async fn invoke(
        mut self,
        function: &str,
        input: &str,
        ctx: &CallContext,
    ) -> Result<String, CallError> {
        self.call(function, input, ctx).await
    }

    /// [`invoke`](Self::invoke), leaving the spent instance to the caller to drop (which
    /// recycles its pool slot: ≈ 100 µs for a Python component).
    async fn call(
        &mut self,
        function: &str,
        input: &str,
        ctx: &CallContext,
    ) -> Result<String, CallError> {
        let limits = self.limits;
        let state = self.store.data_mut();
        state.peers = Arc::clone(&ctx.peers);
        state.depth = ctx.depth;
        state.trace = ctx.peer_trace();
        state.max_depth = ctx.max_depth;
        state.progress = ctx.progress.clone();
        state.nn.inference = ctx.inference.clone();
        if let Some(output) = &state.output {
            output.start_call(function, ctx.call_id.as_deref(), ctx.trace.as_deref());
        }
        arm_deadline(&mut self.store, limits.deadline);
        let (function_arg, input_arg) = (String::from(function), String::from(input));
        let call = self.instance.flash_runtime_invoke().call_invoke(
            &mut self.store,
            &function_arg,
            &input_arg,
        );
        let result = tokio::time::timeout(limits.deadline + DEADLINE_GRACE, call).await;
        finish_call(&mut self.store, function, result, &limits)
    }
}

/// Up to `target` fresh instances of one component, made ahead of the calls that will
/// take them (see the module docs).
pub struct ReadyInstances {
    component: FunctionComponentPre,
    env: Vec<(String, String)>,
    limits: InvokeLimits,
    target: usize,
    /// Calls in flight at most for work to be done ahead of them (see [`Self::is_light`]).
    light_load: usize,
    in_flight: AtomicUsize,
    state: Mutex<Pool>,
}

#[derive(Default)]
struct Pool {
    ready: Vec<PreparedInstance>,
    /// Instances being made now.
    making: usize,
}

impl std::fmt::Debug for ReadyInstances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadyInstances")
            .field("component", &self.component.name())
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl ReadyInstances {
    /// A pool for `component` with the guest environment `env` and `limits`, which keeps
    /// up to `target` instances ready (0: none, every call instantiates inline). Empty
    /// until [`fill`](Self::fill) or the first call.
    pub fn new(
        component: FunctionComponentPre,
        env: Vec<(String, String)>,
        limits: InvokeLimits,
        target: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            component,
            env,
            limits,
            target,
            light_load: std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1))
                .max(1),
            in_flight: AtomicUsize::new(0),
            state: Mutex::new(Pool::default()),
        })
    }

    /// Runs `function` with the JSON `input` in a fresh instance: a ready one if there is
    /// one, else one made now. Either way a replacement is started in the background.
    /// `ctx.env` is ignored: the pool's environment applies.
    pub async fn invoke(
        self: &Arc<Self>,
        function: &str,
        input: &str,
        ctx: &CallContext,
    ) -> Result<String, CallError> {
        let in_flight = InFlight::enter(&self.in_flight);
        let light = in_flight.count <= self.light_load;
        let prepared = self.take();
        if light {
            self.fill();
        }
        match prepared {
            Some(mut prepared) => {
                let answer = prepared.call(function, input, ctx).await;
                if light {
                    // Recycle the slot after the answer is on its way, not before.
                    tokio::spawn(async move { drop(prepared) });
                }
                answer
            }
            None => {
                let ctx = CallContext {
                    env: self.env.clone(),
                    ..ctx.clone()
                };
                self.component
                    .invoke(function, input, &ctx, &self.limits)
                    .await
            }
        }
    }

    /// Calls running in this pool's instances now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The component whose instances these are.
    pub fn component(&self) -> &FunctionComponentPre {
        &self.component
    }

    /// Instances ready now.
    pub fn ready(&self) -> usize {
        self.lock().ready.len()
    }

    /// Starts making instances in the background until `target` are ready or being made.
    /// Must be called within a tokio runtime.
    ///
    /// Calls do this only while the load is light: at most one call in flight per core
    /// but one. With every core busy, making instances ahead only moves the same work
    /// around and adds to it (measured: −18 % requests/s at concurrency 16), so a loaded
    /// host instantiates in each call, as without this pool.
    pub fn fill(self: &Arc<Self>) {
        loop {
            {
                let mut pool = self.lock();
                if pool.ready.len() + pool.making >= self.target {
                    return;
                }
                pool.making += 1;
            }
            let pool = Arc::clone(self);
            tokio::spawn(async move {
                let made = pool.component.prepare(&pool.env, &pool.limits).await;
                let mut state = pool.lock();
                state.making -= 1;
                match made {
                    Ok(instance) => state.ready.push(instance),
                    // The call that would have taken it instantiates inline and reports
                    // the failure itself (a full instance pool, a trap while starting).
                    Err(error) => tracing::debug!(
                        component = pool.component.name(),
                        %error,
                        "could not make an instance ahead of its call"
                    ),
                }
            });
        }
    }

    fn take(&self) -> Option<PreparedInstance> {
        self.lock().ready.pop()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        // Nothing is left half-done under this lock: keep going after a panic elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One call counted in flight for as long as it lives.
struct InFlight<'a> {
    counter: &'a AtomicUsize,
    /// Calls in flight, this one included, when it entered.
    count: usize,
}

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        let count = counter.fetch_add(1, Ordering::Relaxed) + 1;
        Self { counter, count }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}
