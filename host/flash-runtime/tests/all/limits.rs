//! What one call may use, enforced on real components:
//!
//! - all of an instance's memories and tables against one cap: `components/many_memories.wat`,
//!   a hand-written component whose memory is spread over five core instances, as
//!   componentize-py's is;
//! - the host memory a call makes the host spend (`wasi:nn` tensors, progress chunks, its
//!   output) against its budget, and the bounded progress queue: `tests/guests/limits-guest`.
//!
//! Guest stdout and stderr are tested end to end in flash-host (`tests/all/guest_output.rs`),
//! where the host's log is.

use std::sync::Arc;
use std::time::Duration;

use flash_runtime::{
    CallContext, Engine, EngineOptions, ErrorKind, FunctionComponentPre, InvokeLimits, NoPeers,
};

fn engine(pooling: bool) -> Engine {
    Engine::new(EngineOptions {
        pooling,
        cache: None,
        ..Default::default()
    })
    .unwrap()
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

/// The default limits with a memory cap of `mb` MiB.
fn cap(mb: usize) -> InvokeLimits {
    InvokeLimits {
        max_memory_bytes: mb << 20,
        ..Default::default()
    }
}

fn many_memories(pooling: bool) -> FunctionComponentPre {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/components/many_memories.wat");
    let wasm = wat::parse_file(&path).unwrap();
    FunctionComponentPre::from_bytes(&engine(pooling), "many-memories", &wasm, "test".into())
        .unwrap()
}

async fn limits_guest() -> FunctionComponentPre {
    let wasm =
        tokio::task::spawn_blocking(|| flash_tests::build_guest("tests/guests/limits-guest"))
            .await
            .unwrap()
            .unwrap();
    FunctionComponentPre::load(&engine(true), "limits-guest", &wasm, None).unwrap()
}

#[tokio::test]
async fn all_memories_of_an_instance_share_its_cap() {
    let c = many_memories(true);
    // Four memories grown by 12 MiB each, plus the main one: 48 MiB in all, though no
    // single memory reaches 13 MiB.
    let err = c
        .invoke("memories", "null", &ctx(), &cap(32))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Internal, "{err}");
    assert!(
        err.message
            .contains("function `memories` exceeded the memory cap of 32 MiB per instance")
            && err.message.contains("FLASH_MAX_MEMORY_MB"),
        "{err}"
    );
    // Under a cap that holds them all, the same call succeeds: the sum is what counts.
    let out = c.invoke("memories", "null", &ctx(), &cap(64)).await;
    assert_eq!(out.unwrap(), "null");
}

#[tokio::test]
async fn tables_count_against_the_memory_cap() {
    // On-demand allocation, the fallback where the pool cannot be reserved, bounds a table
    // by nothing else.
    let c = many_memories(false);
    // Two tables grown by 4 Mi elements each: 64 MiB of host memory.
    let err = c
        .invoke("tables", "null", &ctx(), &cap(32))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Internal, "{err}");
    assert!(
        err.message.contains("exceeded the memory cap of 32 MiB") && err.message.contains("table"),
        "{err}"
    );
    let out = c.invoke("tables", "null", &ctx(), &cap(128)).await;
    assert_eq!(out.unwrap(), "null");
}

#[tokio::test]
async fn tensors_the_guest_holds_count_against_its_call_budget() {
    let c = limits_guest().await;
    // 48 tensors of 1 MiB, all alive: 48 MiB of host memory for a guest that uses about
    // 1 MiB of its own. The budget defaults to the memory cap.
    let input = r#"{"count": 48, "kib": 1024, "keep": true}"#;
    let err = c
        .invoke("tensors", input, &ctx(), &cap(32))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Internal, "{err}");
    for part in [
        "function `tensors` exceeded its per-call host memory budget of 32 MiB",
        "a wasi:nn tensor of 1048576 bytes",
        "FLASH_CALL_BUDGET_MB",
        "FLASH_MAX_MEMORY_MB",
    ] {
        assert!(err.message.contains(part), "{part}: {err}");
    }
    // Tensors dropped as soon as they are made never add up.
    let input = r#"{"count": 48, "kib": 1024, "keep": false}"#;
    assert_eq!(
        c.invoke("tensors", input, &ctx(), &cap(32)).await.unwrap(),
        "48"
    );
    // A budget of its own replaces the memory cap's.
    let limits = InvokeLimits {
        call_budget_bytes: Some(8 << 20),
        ..cap(32)
    };
    let input = r#"{"count": 9, "kib": 1024, "keep": true}"#;
    let err = c
        .invoke("tensors", input, &ctx(), &limits)
        .await
        .unwrap_err();
    assert!(err.message.contains("budget of 8 MiB"), "{err}");
}

#[tokio::test]
async fn progress_and_output_count_against_the_call_budget() {
    let c = limits_guest().await;
    // 40 chunks of 1 MiB with nobody listening (a load-balanced route): charged all the
    // same, so a function behaves alike on every kind of endpoint.
    let input = r#"{"count": 40, "kib": 1024}"#;
    let err = c
        .invoke("chunks", input, &ctx(), &cap(32))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Internal, "{err}");
    assert!(
        err.message
            .contains("budget of 32 MiB: a progress chunk of 1048578 bytes"),
        "{err}"
    );
    let input = r#"{"count": 20, "kib": 1024}"#;
    assert_eq!(
        c.invoke("chunks", input, &ctx(), &cap(32)).await.unwrap(),
        "20"
    );
    // The output is the last thing a call sends.
    let limits = InvokeLimits {
        call_budget_bytes: Some(4 << 20),
        ..cap(32)
    };
    let err = c
        .invoke("output", r#"{"kib": 5120}"#, &ctx(), &limits)
        .await
        .unwrap_err();
    assert!(
        err.message
            .contains("budget of 4 MiB: its output of 5242882 bytes")
            && err
                .message
                .contains("set FLASH_CALL_BUDGET_MB to change it)"),
        "{err}"
    );
}

#[tokio::test]
async fn a_guest_that_emits_faster_than_its_caller_reads_waits() {
    let c = limits_guest().await;
    let (sink, mut chunks) = flash_runtime::progress_channel();
    let mut ctx = ctx();
    ctx.progress = Some(sink);
    let call = tokio::spawn(async move {
        c.invoke(
            "chunks",
            r#"{"count": 100, "kib": 0}"#,
            &ctx,
            &InvokeLimits::default(),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !call.is_finished(),
        "the call went on although nobody took its chunks"
    );
    assert_eq!(chunks.len(), flash_runtime::PROGRESS_QUEUE);
    let mut received = 0;
    while let Some(chunk) = chunks.recv().await {
        assert_eq!(chunk, r#""""#);
        received += 1;
    }
    assert_eq!(received, 100);
    assert_eq!(call.await.unwrap().unwrap(), "100");
}

#[tokio::test]
async fn a_call_waiting_for_room_in_the_progress_queue_ends_at_its_deadline() {
    let c = limits_guest().await;
    let (sink, _chunks) = flash_runtime::progress_channel();
    let mut ctx = ctx();
    ctx.progress = Some(sink);
    let limits = InvokeLimits {
        deadline: Duration::from_millis(300),
        ..Default::default()
    };
    let err = c
        .invoke("chunks", r#"{"count": 100, "kib": 0}"#, &ctx, &limits)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
}
