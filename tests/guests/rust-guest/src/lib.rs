//! The Rust test guest: a component whose functions each exercise one host behaviour.
//!
//! Resource configs:
//! * `test_queue` (queue, CPU): echo, arithmetic, errors, traps, deadlines, memory,
//!   environment, raw and transparent peer calls;
//! * `test_other` (queue, GPU): the target of `remote_add`'s cross-config call;
//! * `test_lb` (load-balanced, CPU): HTTP routes `POST /lb/echo` and `GET /lb/hello`.

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use flash_sdk::{Error, ResourceConfig, Result, remote};
use serde_json::Value;

const TEST_QUEUE: ResourceConfig = ResourceConfig::queue("test_queue")
    .cpu(&["cpu3c-1-2"])
    .workers(0, 2)
    .env(&[("FLASH_TEST_VAR", "from-config")]);

const TEST_OTHER: ResourceConfig = ResourceConfig::queue("test_other")
    .gpu(&["AMPERE_16"])
    .workers(0, 1);

const TEST_LB: ResourceConfig = ResourceConfig::load_balanced("test_lb")
    .cpu(&["cpu3c-1-2"])
    .workers(1, 2);

/// Returns its argument unchanged.
#[remote(TEST_QUEUE)]
fn echo(value: Value) -> Result<Value> {
    Ok(value)
}

/// `a + b`; overflow is a user error.
#[remote(TEST_QUEUE)]
fn add(a: i64, b: i64) -> Result<i64> {
    a.checked_add(b)
        .ok_or_else(|| Error::msg(format!("{a} + {b} overflows")))
}

/// `a + b`, as an `async fn`.
#[remote(TEST_QUEUE)]
async fn async_add(a: i64, b: i64) -> Result<i64> {
    add(a, b)
}

/// Always fails with a user error carrying `message`.
#[remote(TEST_QUEUE)]
fn fail(message: String) -> Result<()> {
    Err(Error::msg(message))
}

/// Always traps (a Rust panic).
#[remote(TEST_QUEUE)]
fn trap() -> Result<()> {
    panic!("trap() was called")
}

/// Never returns: for deadline tests.
#[remote(TEST_QUEUE)]
fn spin() -> Result<()> {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Allocates `mb` MiB and writes to every page; returns the bytes touched. Past the
/// host's memory cap, the allocation fails and the guest traps.
#[remote(TEST_QUEUE)]
fn grow(mb: u32) -> Result<u64> {
    let len = (mb as usize)
        .checked_mul(1024 * 1024)
        .ok_or_else(|| Error::invalid_input(format!("{mb} MiB does not fit the address space")))?;
    let mut buf = vec![0u8; len];
    for i in (0..len).step_by(4096) {
        buf[i] = 1;
    }
    Ok(std::hint::black_box(&buf)
        .iter()
        .step_by(4096)
        .map(|b| u64::from(*b))
        .sum::<u64>()
        * 4096)
}

/// The guest's environment variable `name`, if set.
#[remote(TEST_QUEUE)]
fn env_var(name: String) -> Result<Option<String>> {
    Ok(std::env::var(name).ok())
}

/// Linear memory this instance has written to (zero in a fresh instance: `.bss`).
static SCRATCH: [AtomicU8; 256 << 10] = [const { AtomicU8::new(0) }; 256 << 10];
/// Calls made to this instance so far.
static CALLS: AtomicU32 = AtomicU32::new(0);

/// What this instance kept from earlier calls: how many calls it had served, and whether
/// 256 KiB of its memory still held the bytes an earlier call wrote. A fresh instance per
/// call must answer `[0, false]` every time, however the host recycles memory.
#[remote(TEST_QUEUE)]
fn leftovers() -> Result<(u32, bool)> {
    let calls = CALLS.fetch_add(1, Ordering::Relaxed);
    let dirty = SCRATCH.iter().any(|b| b.load(Ordering::Relaxed) != 0);
    for (i, b) in SCRATCH.iter().enumerate() {
        b.store((i % 251) as u8 | 1, Ordering::Relaxed);
    }
    Ok((calls, dirty))
}

/// Emits `n` chunks of partial output (`{"i": 0}`, `{"i": 1}`, ...), then returns `n`.
#[remote(TEST_QUEUE)]
fn count(n: u32) -> Result<u32> {
    for i in 0..n {
        flash_sdk::emit(&serde_json::json!({ "i": i }))?;
    }
    Ok(n)
}

/// A raw peer call: `function` with `input` as its JSON payload.
#[remote(TEST_QUEUE)]
fn call(function: String, input: Value) -> Result<Value> {
    let output = flash_sdk::peer_call(&function, &input.to_string())?;
    Ok(serde_json::from_str(&output)?)
}

/// `a + b` computed by `other_add` on `test_other`: a transparent cross-config call.
#[remote(TEST_QUEUE)]
fn remote_add(a: i64, b: i64) -> Result<i64> {
    other_add(a, b)
}

/// `a + b`, served by `test_other` (computed here: calling `add` would be another
/// cross-config call, back to `test_queue`).
#[remote(TEST_OTHER)]
fn other_add(a: i64, b: i64) -> Result<i64> {
    println!("other_add({a}, {b})");
    a.checked_add(b)
        .ok_or_else(|| Error::msg(format!("{a} + {b} overflows")))
}

/// `POST /lb/echo`: returns its argument unchanged.
#[remote(TEST_LB, method = "POST", path = "/lb/echo")]
fn lb_echo(value: Value) -> Result<Value> {
    Ok(value)
}

/// `GET /lb/hello`: a greeting; `name` is optional.
#[remote(TEST_LB, method = "GET", path = "/lb/hello")]
fn lb_hello(name: Option<String>) -> Result<String> {
    println!("greeting {}", name.as_deref().unwrap_or("world"));
    Ok(format!("hello, {}", name.as_deref().unwrap_or("world")))
}

/// `POST /lb/busy`: keeps its instance busy for `ms` milliseconds (concurrency tests).
#[remote(TEST_LB, method = "POST", path = "/lb/busy")]
fn lb_busy(ms: u64) -> Result<u64> {
    let start = std::time::Instant::now();
    let mut n = 0u64;
    while start.elapsed() < std::time::Duration::from_millis(ms) {
        n = std::hint::black_box(n.wrapping_add(1));
    }
    Ok(n)
}

flash_sdk::export_app!();
