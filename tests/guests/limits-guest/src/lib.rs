//! A test guest that pushes on what the host bounds per call: host memory spent on it
//! (`wasi:nn` tensors, progress chunks, its output) and what it prints.
//!
//! One resource config, `limits` (queue, CPU). `tensors` needs no model and no ONNX
//! Runtime: creating a tensor is a host call of its own.

use flash_sdk::nn::bindings::wasi::nn::tensor::{Tensor, TensorType};
use flash_sdk::{Error, ResourceConfig, Result, remote};

const LIMITS: ResourceConfig = ResourceConfig::queue("limits")
    .cpu(&["cpu3c-1-2"])
    .workers(0, 1);

fn kib_bytes(kib: u32) -> Result<usize> {
    (kib as usize)
        .checked_mul(1024)
        .ok_or_else(|| Error::invalid_input(format!("{kib} KiB does not fit the address space")))
}

/// Creates `count` `u8` tensors of `kib` KiB each from one guest buffer (the guest's own
/// memory stays small). With `keep` all stay alive until it returns; otherwise each is
/// dropped before the next is made. Returns `count`.
#[remote(LIMITS)]
fn tensors(count: u32, kib: u32, keep: bool) -> Result<u32> {
    let data = vec![7u8; kib_bytes(kib)?];
    let dimensions = vec![data.len() as u32];
    let mut kept = Vec::new();
    for _ in 0..count {
        let tensor = Tensor::new(&dimensions, TensorType::U8, &data);
        if keep {
            kept.push(tensor);
        }
    }
    Ok(count)
}

/// Emits `count` chunks of partial output, each a JSON string of `kib` KiB of `x` (`""`
/// for 0), then returns `count`.
#[remote(LIMITS)]
fn chunks(count: u32, kib: u32) -> Result<u32> {
    let chunk = serde_json::Value::String("x".repeat(kib_bytes(kib)?));
    for _ in 0..count {
        flash_sdk::emit(&chunk)?;
    }
    Ok(count)
}

/// Returns a string of `kib` KiB of `y`.
#[remote(LIMITS)]
fn output(kib: u32) -> Result<String> {
    Ok("y".repeat(kib_bytes(kib)?))
}

/// Prints `out` to stdout and `err` to stderr as they are (no newline added), then about
/// `filler_kib` KiB of numbered lines to stdout. Returns the filler lines printed.
#[remote(LIMITS)]
fn print(out: String, err: String, filler_kib: u32) -> Result<u32> {
    use std::io::Write;
    print!("{out}");
    eprint!("{err}");
    let mut lines = 0u32;
    let mut printed = 0usize;
    while printed < kib_bytes(filler_kib)? {
        let line = format!("filler line {lines:08} {}\n", "z".repeat(100));
        print!("{line}");
        printed += line.len();
        lines += 1;
    }
    std::io::stdout().flush()?;
    Ok(lines)
}

flash_sdk::export_app!();
