//! Figures a bench hands to `scripts/bench.sh`.
//!
//! Each bench prints its own markdown tables for people. `scripts/bench.sh` runs them all
//! and builds one table of ratios from their figures: it sets `FLASH_BENCH_RESULTS` to a
//! file, and every [`record`] appends one JSON line `{"key": …, "value": …}` to it. Without
//! the variable (a bench run by hand, the smoke runs of `cargo test --benches`) nothing is
//! written.

use std::io::Write;

use anyhow::{Context, Result};

/// Appends `{"key": key, "value": value}` to `$FLASH_BENCH_RESULTS`, if it is set.
pub fn record(key: &str, value: f64) -> Result<()> {
    let Some(path) = std::env::var_os("FLASH_BENCH_RESULTS") else {
        return Ok(());
    };
    let line = serde_json::json!({ "key": key, "value": value }).to_string();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening FLASH_BENCH_RESULTS ({})", path.to_string_lossy()))?;
    writeln!(file, "{line}").context("writing FLASH_BENCH_RESULTS")
}
