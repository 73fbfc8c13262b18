//! Where a fresh-instance call's time goes, for any component: instantiation, recycling
//! the instance's pool slot (dropping the store), the call in an instance made ahead
//! ([`flash_runtime::PreparedInstance`]), a whole fresh-instance call, and a call in a
//! warm instance. In-process, no HTTP; figures in `docs/benchmarks.md` ("Python
//! functions").
//!
//! ```sh
//! flash build                      # in examples/quickstart-python
//! tar xzf .flash/artifact.tar.gz -C /tmp/qs
//! cargo run --release -p flash-runtime --example instantiate_cost -- \
//!     /tmp/qs/components/quickstart_python.wasm stats '{}' [iterations]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use flash_runtime::{
    CallContext, Engine, EngineOptions, FunctionComponentPre, InvokeLimits, NoPeers,
};

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: instantiate_cost <component.wasm> <function> <json input> [iterations]";
    let path = args.next().context(usage)?;
    let function = args.next().context(usage)?;
    let input = args.next().context(usage)?;
    let n: u32 = args.next().map_or(Ok(2000), |s| s.parse()).context(usage)?;

    let engine = Engine::new(EngineOptions {
        cache: None,
        ..Default::default()
    })?;
    let bytes = std::fs::read(&path).with_context(|| format!("reading {path}"))?;
    let sha = flash_manifest::sha256_hex(&bytes);
    let pre = FunctionComponentPre::from_bytes(&engine, "measured", &bytes, sha)?;
    let ctx = CallContext {
        env: vec![],
        peers: Arc::new(NoPeers),
        depth: 0,
        max_depth: 8,
        progress: None,
        call_id: None,
        trace: None,
        inference: Default::default(),
    };
    let limits = InvokeLimits::default();
    let call = |what: &str, result: Result<String, flash_runtime::CallError>| {
        result.with_context(|| format!("{what}: `{function}` failed"))
    };
    // Warm-up: every pool slot used at least once.
    for _ in 0..200 {
        call(
            "warm-up",
            pre.invoke(&function, &input, &ctx, &limits).await,
        )?;
    }

    let (mut instantiate, mut recycle) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..n {
        let start = Instant::now();
        let prepared = pre.prepare(&ctx.env, &limits).await?;
        let made = Instant::now();
        drop(prepared);
        recycle += made.elapsed();
        instantiate += made - start;
    }
    let mut prepared_call = Duration::ZERO;
    for _ in 0..n {
        let prepared = pre.prepare(&ctx.env, &limits).await?;
        let start = Instant::now();
        call("prepared", prepared.invoke(&function, &input, &ctx).await)?;
        prepared_call += start.elapsed();
    }
    let start = Instant::now();
    for _ in 0..n {
        call("fresh", pre.invoke(&function, &input, &ctx, &limits).await)?;
    }
    let fresh = start.elapsed();
    let mut live = pre.instantiate(&ctx, &limits).await?;
    let start = Instant::now();
    for _ in 0..n {
        call("warm", live.invoke(&function, &input).await)?;
    }
    let warm = start.elapsed();

    println!("{n} iterations of `{function}` in {path}, mean per iteration:");
    println!(
        "  instantiate                         {:?}",
        instantiate / n
    );
    println!("  recycle (drop the store)            {:?}", recycle / n);
    println!(
        "  call in an instance made ahead (+ drop) {:?}",
        prepared_call / n
    );
    println!("  fresh-instance call (all of it)     {:?}", fresh / n);
    println!("  call in a warm instance             {:?}", warm / n);
    Ok(())
}
