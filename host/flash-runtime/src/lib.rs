//! The Flash runtime: runs function components with wasmtime.
//!
//! This crate is the only place that knows wasmtime's knobs (Spin's `core` idea):
//!
//! - [`engine`]: the [`Engine`] with the pooling allocator (probed, with an on-demand
//!   fallback), epoch interruption for deadlines, and the AOT compilation cache;
//! - [`bindings`]: host bindings generated from `wit/` (the `function` world);
//! - [`component`]: a component compiled and pre-linked once ([`FunctionComponentPre`]);
//! - [`invoke`]: one call = one fresh `Store` + instance, with memory cap, host memory
//!   budget, bounded progress queue and deadline;
//! - [`ready`]: fresh instances made before their calls arrive ([`ReadyInstances`]), so
//!   that a call does not wait for its instantiation;
//! - [`limiter`]: one memory cap for all of an instance's memories and tables together;
//! - [`guest_log`]: guest stdout and stderr to the host's log, tagged, escaped and capped
//!   per call;
//! - [`live`]: one instance kept across calls ([`LiveInstance`]), for measurement and a
//!   future bounded-reuse option; the serving path does not use it;
//! - [`scan`]: calls `describe` with no capabilities at all (the build-time scanner);
//! - [`peer`]: the host side of the WIT `peer` import, routed through a [`PeerRouter`];
//!   `progress.emit` chunks go to the call's [`ProgressSink`].
//!
//! Handlers (queue worker, HTTP) and peer discovery live in `flash-host`.

pub mod aot_cache;
pub mod bindings;
pub mod component;
pub mod engine;
pub mod error;
pub mod guest_log;
pub mod invoke;
pub mod limiter;
pub mod live;
pub mod peer;
pub mod ready;
pub mod scan;
mod state;

pub use aot_cache::AotCache;
pub use component::FunctionComponentPre;
pub use engine::{Engine, EngineOptions};
pub use error::{CallError, ErrorKind, ErrorOrigin};
pub use flash_nn::{BudgetExceeded, HostBudget};
pub use invoke::{CallContext, InvokeLimits, PROGRESS_QUEUE, ProgressSink, progress_channel};
pub use limiter::MemoryCapExceeded;
pub use live::LiveInstance;
pub use peer::{NoPeers, PeerRouter};
pub use ready::{PreparedInstance, ReadyInstances};
