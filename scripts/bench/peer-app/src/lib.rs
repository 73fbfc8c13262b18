//! The app of `scripts/bench.sh`'s peer-call and payload rows.
//!
//! * `front` (load-balanced): `GET /here` calls `add_here` in place (it lives on
//!   `front` too); `GET /peer` calls `add` on `back`, a queue endpoint, through the peer
//!   router (State Manager lookup, `/runsync` through the gateway, a worker of `back`).
//!   The two routes differ only in where the addition runs, so their latencies differ by
//!   the peer call's overhead.
//! * `back` (queue): `add`, and `echo` for the large-payload round trip.

use flash_sdk::{ResourceConfig, Result, remote};
use serde_json::Value;

const FRONT: ResourceConfig = ResourceConfig::load_balanced("front")
    .cpu(&["cpu3c-1-2"])
    .workers(1, 1);

const BACK: ResourceConfig = ResourceConfig::queue("back")
    .cpu(&["cpu3c-1-2"])
    .workers(1, 1);

/// `GET /here`: `1 + 2`, computed by a function of this config (an in-place call).
#[remote(FRONT, method = "GET", path = "/here")]
fn here() -> Result<i64> {
    add_here(1, 2)
}

/// `GET /peer`: `1 + 2`, computed by `add` on `back` (a peer call).
#[remote(FRONT, method = "GET", path = "/peer")]
fn peer() -> Result<i64> {
    add(1, 2)
}

/// `POST /add`: `a + b` on `front`.
#[remote(FRONT, method = "POST", path = "/add")]
fn add_here(a: i64, b: i64) -> Result<i64> {
    Ok(a.wrapping_add(b))
}

/// `a + b` on `back`.
#[remote(BACK)]
fn add(a: i64, b: i64) -> Result<i64> {
    Ok(a.wrapping_add(b))
}

/// Returns its argument unchanged (the large-payload round trip).
#[remote(BACK)]
fn echo(value: Value) -> Result<Value> {
    Ok(value)
}

flash_sdk::export_app!();
