//! flash-host benchmarks, all in one run (issue 3, "Done means"):
//!
//! 1. **fresh-instance call**: `FunctionComponentPre::invoke` (new `Store` + instantiate +
//!    call), the serving path, with the pooling allocator and, for comparison, on-demand;
//! 2. **hot call**: `LiveInstance::invoke` on one instance (no store, no instantiation);
//! 3. **load-balanced route**: a real `flash-host` process serving `test_lb`, driven with
//!    `POST /lb/echo` over loopback at concurrency 1 and 16 for a fixed time;
//! 4. **AOT cold boot**: process spawn → first `GET /ping` answered → first route call
//!    answered, with a cold AOT cache (fresh `FLASH_CACHE_DIR`) and a warm one.
//!
//! All of it uses the real rust test guest (`tests/guests/rust-guest`). Every loop is
//! bounded in count and in time. Results are printed as markdown tables (recorded in
//! `docs/benchmarks.md`).
//!
//! Run: `cargo bench -p flash-host --bench host`. Without `--bench` on the command line
//! (e.g. `cargo test --benches`) it runs a short smoke version of every measurement.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use flash_runtime::{
    CallContext, Engine, EngineOptions, FunctionComponentPre, InvokeLimits, NoPeers,
};
use flash_tests::ChildGuard;

/// Counts and durations of one run; `smoke` shrinks everything to a quick check.
struct Plan {
    warmup_calls: usize,
    fresh_calls: usize,
    hot_calls: usize,
    /// Upper bound of any one in-process measurement loop.
    loop_budget: Duration,
    lb_duration: Duration,
    cold_boots: usize,
    warm_boots: usize,
}

impl Plan {
    fn full() -> Self {
        Self {
            warmup_calls: 200,
            fresh_calls: 5_000,
            hot_calls: 50_000,
            loop_budget: Duration::from_secs(10),
            lb_duration: Duration::from_secs(3),
            cold_boots: 3,
            warm_boots: 5,
        }
    }

    fn smoke() -> Self {
        Self {
            warmup_calls: 5,
            fresh_calls: 20,
            hot_calls: 20,
            loop_budget: Duration::from_secs(2),
            lb_duration: Duration::from_millis(200),
            cold_boots: 1,
            warm_boots: 1,
        }
    }
}

const ADD_INPUT: &str = r#"{"a": 2, "b": 3}"#;
const ECHO_BODY: &str = r#"{"value": {"msg": "hello", "n": [1, 2, 3]}}"#;

/// Latency samples and what they summarise to.
struct Samples(Vec<Duration>);

impl Samples {
    fn summary(mut self) -> Summary {
        self.0.sort_unstable();
        let n = self.0.len();
        let total: Duration = self.0.iter().sum();
        let at = |q: f64| self.0[((n as f64 - 1.0) * q).round() as usize];
        Summary {
            n,
            mean: total / n.max(1) as u32,
            p50: at(0.50),
            p99: at(0.99),
        }
    }
}

struct Summary {
    n: usize,
    mean: Duration,
    p50: Duration,
    p99: Duration,
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn call_context() -> CallContext {
    CallContext {
        env: vec![],
        inference: Default::default(),
        peers: Arc::new(NoPeers),
        depth: 0,
        max_depth: 8,
        progress: None,
        call_id: None,
        trace: None,
    }
}

/// Fresh store + instance per call, as the handlers do.
async fn bench_fresh(pre: &FunctionComponentPre, plan: &Plan) -> Result<Summary> {
    let ctx = call_context();
    let limits = InvokeLimits::default();
    for _ in 0..plan.warmup_calls {
        pre.invoke("add", ADD_INPUT, &ctx, &limits).await?;
    }
    let stop = Instant::now() + plan.loop_budget;
    let mut samples = Vec::with_capacity(plan.fresh_calls);
    while samples.len() < plan.fresh_calls && Instant::now() < stop {
        let t = Instant::now();
        let out = pre.invoke("add", ADD_INPUT, &ctx, &limits).await?;
        samples.push(t.elapsed());
        ensure!(out == "5", "add returned {out}");
    }
    Ok(Samples(samples).summary())
}

/// One live instance, many calls.
async fn bench_hot(pre: &FunctionComponentPre, plan: &Plan) -> Result<Summary> {
    let mut live = pre
        .instantiate(&call_context(), &InvokeLimits::default())
        .await?;
    for _ in 0..plan.warmup_calls {
        live.invoke("add", ADD_INPUT).await?;
    }
    let stop = Instant::now() + plan.loop_budget;
    let mut samples = Vec::with_capacity(plan.hot_calls);
    while samples.len() < plan.hot_calls && Instant::now() < stop {
        let t = Instant::now();
        let out = live.invoke("add", ADD_INPUT).await?;
        samples.push(t.elapsed());
        ensure!(out == "5", "add returned {out}");
    }
    Ok(Samples(samples).summary())
}

/// A `flash-host` process serving `test_lb` on loopback, killed on drop.
struct Host {
    _child: ChildGuard,
    base: String,
    log: PathBuf,
}

fn spawn_host(artifact: &Path, cache_dir: &Path, log: &Path) -> Result<Host> {
    let port = flash_tests::free_port();
    let log_file = std::fs::File::create(log)?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flash-host"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        // `boot_once` reads the cache hit from the text format's line.
        .env("FLASH_LOG_FORMAT", "text")
        .env("FLASH_RESOURCE_NAME", "test_lb")
        .env("FLASH_DISABLE_RP_AUTH", "true")
        .env("FLASH_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("FLASH_ARTIFACT_URL", artifact)
        .env("FLASH_CACHE_DIR", cache_dir)
        .stdout(Stdio::null())
        .stderr(log_file);
    Ok(Host {
        _child: ChildGuard::spawn(&mut cmd)?,
        base: format!("http://127.0.0.1:{port}"),
        log: log.to_path_buf(),
    })
}

/// Spawn → `/ping` answered → first route call answered, and whether the component
/// came from the AOT cache (from the host's log).
struct Boot {
    to_ping: Duration,
    to_first_call: Duration,
    cached: bool,
}

async fn boot_once(
    http: &reqwest::Client,
    artifact: &Path,
    cache_dir: &Path,
    log: &Path,
) -> Result<Boot> {
    let start = Instant::now();
    let host = spawn_host(artifact, cache_dir, log)?;
    let deadline = start + Duration::from_secs(30);
    let ping = format!("{}/ping", host.base);
    let to_ping = loop {
        match http.get(&ping).send().await {
            Ok(r) if r.status().is_success() => break start.elapsed(),
            _ if Instant::now() >= deadline => bail!(
                "flash-host did not answer /ping within 30 s:\n{}",
                std::fs::read_to_string(&host.log).unwrap_or_default()
            ),
            _ => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    };
    echo(http, &host.base).await?;
    let to_first_call = start.elapsed();
    let cached = strip_ansi(&std::fs::read_to_string(&host.log).unwrap_or_default())
        .lines()
        .any(|l| l.contains("loaded component") && l.contains("cached=true"));
    drop(host);
    Ok(Boot {
        to_ping,
        to_first_call,
        cached,
    })
}

/// The log without terminal colour codes (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn echo(http: &reqwest::Client, base: &str) -> Result<()> {
    let r = http
        .post(format!("{base}/lb/echo"))
        .header("content-type", "application/json")
        .body(ECHO_BODY)
        .send()
        .await?;
    ensure!(r.status() == 200, "POST /lb/echo answered {}", r.status());
    r.bytes().await?;
    Ok(())
}

struct LoadResult {
    concurrency: usize,
    ok: usize,
    errors: usize,
    elapsed: Duration,
    latency: Summary,
}

/// `concurrency` clients each sending `POST /lb/echo` back to back until `duration` ends.
async fn drive(
    http: &reqwest::Client,
    base: &str,
    concurrency: usize,
    duration: Duration,
) -> Result<LoadResult> {
    let start = Instant::now();
    let stop = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let http = http.clone();
        let base = base.to_string();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut errors = 0usize;
            // Bounded by time and, as a backstop, by count.
            while Instant::now() < stop && samples.len() + errors < 10_000_000 {
                let t = Instant::now();
                match echo(&http, &base).await {
                    Ok(()) => samples.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (samples, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (samples, e) = task.await?;
        all.extend(samples);
        errors += e;
    }
    let elapsed = start.elapsed();
    ensure!(
        !all.is_empty(),
        "no successful request at concurrency {concurrency}"
    );
    Ok(LoadResult {
        concurrency,
        ok: all.len(),
        errors,
        elapsed,
        latency: Samples(all).summary(),
    })
}

fn call_row(name: &str, s: &Summary) -> String {
    format!(
        "| {name} | {} | {} | {} | {} |",
        s.n,
        us(s.mean),
        us(s.p50),
        us(s.p99)
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let plan = if smoke { Plan::smoke() } else { Plan::full() };
    let tmp = tempfile::tempdir()?;

    eprintln!("building the rust test guest and its artifact ...");
    let wasm = tokio::task::spawn_blocking(|| flash_tests::build_guest("tests/guests/rust-guest"))
        .await??;
    let bytes = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let sha = flash_manifest::sha256_hex(&bytes);
    let artifact = flash_tests::guest_artifact(&wasm, "bench", tmp.path(), |_| {}).await?;

    // 1 + 2: in-process calls.
    let mut call_rows = Vec::new();
    let mut pooling_in_use = false;
    let keep = flash_runtime::engine::DEFAULT_MEMORY_KEEP_RESIDENT;
    for (pooling, keep_resident) in [(true, keep), (true, 0), (false, 0)] {
        eprintln!("in-process calls, pooling={pooling} keep_resident={keep_resident} ...");
        let engine = Engine::new(EngineOptions {
            pooling,
            cache: None,
            memory_keep_resident: keep_resident,
            ..Default::default()
        })?;
        let label = if !engine.uses_pooling() {
            "on-demand".to_string()
        } else {
            pooling_in_use = true;
            format!("pooling, {} KiB kept resident", keep_resident >> 10)
        };
        let pre = FunctionComponentPre::from_bytes(&engine, "rust-guest", &bytes, sha.clone())?;
        let fresh = bench_fresh(&pre, &plan).await?;
        let hot = bench_hot(&pre, &plan).await?;
        if pooling && keep_resident == keep {
            // The configuration flash-host serves with: the figures scripts/bench.sh quotes.
            flash_tests::bench_results::record(
                "host.fresh_call_us",
                fresh.p50.as_secs_f64() * 1e6,
            )?;
            flash_tests::bench_results::record("host.hot_call_us", hot.p50.as_secs_f64() * 1e6)?;
        }
        call_rows.push(call_row(
            &format!("fresh-instance call (`invoke`), {label}"),
            &fresh,
        ));
        call_rows.push(call_row(
            &format!("hot call (`LiveInstance::invoke`), {label}"),
            &hot,
        ));
    }

    // What counting a call costs: every call a host serves is counted
    // (`flash_host::metrics`: a counter and a histogram, labelled by function and result).
    eprintln!("metrics ...");
    let metrics = flash_host::metrics::HostMetrics::default();
    let counted: u32 = if smoke { 1_000 } else { 200_000 };
    let ok: std::result::Result<(), flash_runtime::CallError> = Ok(());
    let started = Instant::now();
    for i in 0..counted {
        metrics.record_call("add", &ok, Duration::from_micros(20 + u64::from(i % 64)));
    }
    let per_count = started.elapsed() / counted;
    call_rows.push(format!(
        "| counting one call (`HostMetrics::record_call`) | {counted} | {} | – | – |",
        us(per_count)
    ));

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;

    // 3: load-balanced route throughput.
    eprintln!("load-balanced route ...");
    let lb_cache = tmp.path().join("cache-lb");
    let host = spawn_host(&artifact, &lb_cache, &tmp.path().join("lb.log"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if echo(&http, &host.base).await.is_ok() {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "flash-host did not serve /lb/echo within 60 s:\n{}",
                std::fs::read_to_string(&host.log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..plan.warmup_calls {
        echo(&http, &host.base).await?;
    }
    let mut loads = Vec::new();
    for concurrency in [1, 16] {
        loads.push(drive(&http, &host.base, concurrency, plan.lb_duration).await?);
    }
    drop(host);

    // 4: boot. Cold: an empty AOT cache each time (the first boot of a new artifact on a
    // new machine). Warm: one shared cache, primed by a boot that is not counted.
    eprintln!("boots ...");
    let mut cold = Vec::new();
    for i in 0..plan.cold_boots {
        let dir = tmp.path().join(format!("cache-cold-{i}"));
        let b = boot_once(&http, &artifact, &dir, &tmp.path().join("boot.log")).await?;
        ensure!(!b.cached, "a boot with an empty cache reported a cache hit");
        cold.push(b);
    }
    let warm_cache = tmp.path().join("cache-warm");
    boot_once(&http, &artifact, &warm_cache, &tmp.path().join("boot.log")).await?;
    let mut warm = Vec::new();
    for _ in 0..plan.warm_boots {
        let b = boot_once(&http, &artifact, &warm_cache, &tmp.path().join("boot.log")).await?;
        ensure!(
            b.cached,
            "a boot with a primed cache recompiled the component; its log:\n{}",
            std::fs::read_to_string(tmp.path().join("boot.log")).unwrap_or_default()
        );
        warm.push(b);
    }

    // Report.
    println!();
    println!("### In-process calls (`add`, rust test guest), µs");
    println!();
    println!("| measurement | calls | mean | p50 | p99 |");
    println!("|---|---:|---:|---:|---:|");
    for row in &call_rows {
        println!("{row}");
    }
    if !pooling_in_use {
        println!();
        println!("(the pooling allocator was unavailable here: both engines are on-demand)");
    }
    println!();
    println!("### Load-balanced route `POST /lb/echo` (real flash-host, loopback, keep-alive)");
    println!();
    println!("| concurrency | requests | errors | seconds | req/s | p50 ms | p99 ms |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for l in &loads {
        println!(
            "| {} | {} | {} | {:.2} | {:.0} | {} | {} |",
            l.concurrency,
            l.ok,
            l.errors,
            l.elapsed.as_secs_f64(),
            l.ok as f64 / l.elapsed.as_secs_f64(),
            ms(l.latency.p50),
            ms(l.latency.p99),
        );
    }
    println!();
    println!("### Boot: process spawn → first answer, ms (median of n)");
    println!();
    println!("| AOT cache | n | to `/ping` | to first `/lb/echo` | min–max first call |");
    println!("|---|---:|---:|---:|---:|");
    for (name, boots) in [("cold (empty)", &cold), ("warm (hit)", &warm)] {
        let firsts: Vec<Duration> = boots.iter().map(|b| b.to_first_call).collect();
        let key = if name.starts_with("cold") {
            "host.cold_boot_ms"
        } else {
            "host.warm_boot_ms"
        };
        flash_tests::bench_results::record(key, median(firsts.clone()).as_secs_f64() * 1e3)?;
        let min = firsts.iter().min().copied().unwrap_or_default();
        let max = firsts.iter().max().copied().unwrap_or_default();
        println!(
            "| {name} | {} | {} | {} | {}–{} |",
            boots.len(),
            ms(median(boots.iter().map(|b| b.to_ping).collect())),
            ms(median(firsts)),
            ms(min),
            ms(max),
        );
    }
    if smoke {
        println!();
        println!("(smoke run: pass `--bench`, as `cargo bench` does, for real numbers)");
    }
    Ok(())
}
