//! `flash_runtime::LiveInstance` with the real rust test guest: calls reuse one store,
//! each call gets a fresh deadline, and a trap or timeout poisons the instance. Against
//! it, the serving path's fresh instance per call: nothing survives from one call to the
//! next, although the pooling allocator keeps recycled memory resident.

use std::sync::Arc;
use std::time::Duration;

use flash_runtime::{
    CallContext, Engine, EngineOptions, ErrorKind, FunctionComponentPre, InvokeLimits, NoPeers,
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
