//! `flash_runtime::LiveInstance` with the real rust test guest: calls reuse one store,
//! each call gets a fresh deadline, and a trap or timeout poisons the instance. Against
//! it, the serving path's fresh instance per call: nothing survives from one call to the
//! next, although the pooling allocator keeps recycled memory resident. And the instances
//! made before their calls (`flash_runtime::ReadyInstances`): fresh too, one call each, with
//! the call's own context and a deadline that starts with the call.

use std::sync::Arc;
use std::time::Duration;

use flash_runtime::{
    CallContext, Engine, EngineOptions, ErrorKind, FunctionComponentPre, InvokeLimits, NoPeers,
    ReadyInstances,
};

async fn guest() -> FunctionComponentPre {
    let wasm = tokio::task::spawn_blocking(|| flash_tests::build_guest("tests/guests/rust-guest"))
        .await
        .unwrap()
        .unwrap();
    let bytes = std::fs::read(&wasm).unwrap();
    let sha = flash_manifest::sha256_hex(&bytes);
    let engine = Engine::new(EngineOptions {
        cache: None,
        max_instances: 4,
        ..Default::default()
    })
    .unwrap();
    FunctionComponentPre::from_bytes(&engine, "rust-guest", &bytes, sha).unwrap()
}

fn ctx() -> CallContext {
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

#[tokio::test]
async fn calls_reuse_the_instance_with_a_fresh_deadline_each() {
    let pre = guest().await;
    let limits = InvokeLimits {
        deadline: Duration::from_millis(300),
        ..Default::default()
    };
    let mut live = pre.instantiate(&ctx(), &limits).await.unwrap();
    assert_eq!(
        live.invoke("add", r#"{"a": 2, "b": 3}"#).await.unwrap(),
        "5"
    );
    // Longer than the deadline: the second call must get a deadline of its own.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        live.invoke("add", r#"{"a": 4, "b": 3}"#).await.unwrap(),
        "7"
    );

    // A guest error is a normal return and leaves the instance usable.
    let err = live
        .invoke("fail", r#"{"message": "no"}"#)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::UserError, "{err}");
    assert_eq!(live.invoke("add", r#"[1, 1]"#).await.unwrap(), "2");
    assert_eq!(live.calls(), 4);
    assert!(!live.is_poisoned());
}

#[tokio::test]
async fn a_trap_or_a_timeout_poisons_the_instance() {
    let pre = guest().await;
    let limits = InvokeLimits {
        deadline: Duration::from_millis(200),
        ..Default::default()
    };

    let mut live = pre.instantiate(&ctx(), &limits).await.unwrap();
    // A panic is the function's own failure, reported with its message.
    let err = live.invoke("trap", "{}").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::UserError, "{err}");
    assert!(err.message.contains("trap() was called"), "{err}");
    assert!(live.is_poisoned());
    let err = live.invoke("add", r#"{"a": 1, "b": 1}"#).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Internal);
    assert!(err.message.contains("unusable"), "{err}");

    let mut live = pre.instantiate(&ctx(), &limits).await.unwrap();
    let err = live.invoke("spin", "{}").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    assert!(live.is_poisoned());
}

#[tokio::test]
async fn fresh_instances_see_nothing_of_earlier_calls_though_memory_is_recycled() {
    let pre = guest().await;
    let limits = InvokeLimits::default();
    assert!(
        pre.engine().uses_pooling(),
        "the pooling allocator is the case under test"
    );
    // Four slots, many calls: every slot is reused, its memory reset in place.
    for call in 0..12 {
        let out = pre
            .invoke("leftovers", "{}", &ctx(), &limits)
            .await
            .unwrap();
        assert_eq!(out, "[0,false]", "call {call} saw an earlier call's state");
    }
    // The probe can tell: one live instance does keep its statics and memory.
    let mut live = pre.instantiate(&ctx(), &limits).await.unwrap();
    assert_eq!(live.invoke("leftovers", "{}").await.unwrap(), "[0,false]");
    assert_eq!(live.invoke("leftovers", "{}").await.unwrap(), "[1,true]");
}

/// Polls (bounded) until `pool` holds `n` ready instances.
async fn until_ready(pool: &ReadyInstances, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while pool.ready() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} instances ready after 20 s",
            pool.ready()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn ready_instances_serve_one_call_each_with_the_call_s_own_context() {
    let pre = guest().await;
    let limits = InvokeLimits {
        deadline: Duration::from_millis(300),
        ..Default::default()
    };
    let env = vec![("GREETING".to_string(), "from the pool".to_string())];
    let pool = ReadyInstances::new(pre, env, limits, 2);
    pool.fill();
    until_ready(&pool, 2).await;

    // Made ahead, yet fresh: no call sees another's state, and each call is followed by a
    // replacement (one call in flight is a light load).
    for call in 0..6 {
        let out = pool.invoke("leftovers", "{}", &ctx()).await.unwrap();
        assert_eq!(out, "[0,false]", "call {call} saw an earlier call's state");
        until_ready(&pool, 2).await;
    }

    // The pool's environment, whatever the caller's context says.
    let mut other = ctx();
    other.env = vec![("GREETING".into(), "from the caller".into())];
    let out = pool
        .invoke("env_var", r#"{"name": "GREETING"}"#, &other)
        .await
        .unwrap();
    assert_eq!(out, r#""from the pool""#);
    until_ready(&pool, 2).await;

    // An instance that waited longer than the deadline still gets the whole deadline: it
    // starts with the call...
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        pool.invoke("add", r#"{"a": 2, "b": 3}"#, &ctx())
            .await
            .unwrap(),
        "5"
    );
    // ...and it is armed: a guest that never returns is stopped by it.
    until_ready(&pool, 2).await;
    let err = pool.invoke("spin", "{}", &ctx()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");

    // The call's progress sink is the one its context names.
    until_ready(&pool, 2).await;
    let (sink, mut chunks) = flash_runtime::progress_channel();
    let mut with_progress = ctx();
    with_progress.progress = Some(sink);
    let out = pool.invoke("count", r#"{"n": 3}"#, &with_progress).await;
    assert_eq!(out.unwrap(), "3");
    // Three chunks fit in the queue: they are all there once the call has returned.
    let seen: Vec<String> = std::iter::from_fn(|| chunks.try_recv().ok()).collect();
    assert_eq!(seen, [r#"{"i":0}"#, r#"{"i":1}"#, r#"{"i":2}"#]);
}

#[tokio::test]
async fn without_ready_instances_every_call_instantiates_in_place() {
    let pool = ReadyInstances::new(guest().await, vec![], InvokeLimits::default(), 0);
    pool.fill();
    for _ in 0..3 {
        let out = pool.invoke("leftovers", "{}", &ctx()).await.unwrap();
        assert_eq!(out, "[0,false]");
        assert_eq!(pool.ready(), 0);
    }
}
