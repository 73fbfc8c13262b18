//! The WIT contract exercised on real components: the Rust test guest (built with the
//! SDK) and a hand-written Python guest (componentize-py) must behave the same for
//! `describe` and `invoke` — dispatch by name, typed errors, async functions.

use std::path::Path;
use std::sync::Arc;

use flash_manifest::describe::{EndpointKind, FunctionSpec};
use flash_runtime::{
    CallContext, Engine, EngineOptions, ErrorKind, FunctionComponentPre, InvokeLimits, NoPeers,
};

fn load(path: &Path, name: &str) -> FunctionComponentPre {
    let engine = Engine::new(EngineOptions::default()).unwrap();
    FunctionComponentPre::load(&engine, name, path, None).unwrap()
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

async fn call(
    c: &FunctionComponentPre,
    function: &str,
    input: &str,
) -> Result<serde_json::Value, flash_runtime::CallError> {
    c.invoke(function, input, &ctx(), &InvokeLimits::default())
        .await
        .map(|out| serde_json::from_str(&out).unwrap())
}

fn function<'a>(functions: &'a [FunctionSpec], name: &str) -> &'a FunctionSpec {
    functions
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no function {name} in {functions:?}"))
}

/// The behaviour both guests share.
async fn common_contract(c: &FunctionComponentPre, echo: &str, add: &str) {
    assert_eq!(
        call(c, echo, r#"{"value": {"k": [1, 2]}}"#).await.unwrap(),
        serde_json::json!({"k": [1, 2]})
    );
    assert_eq!(
        call(c, add, r#"{"a": 2, "b": 5}"#).await.unwrap(),
        serde_json::json!(7)
    );
    assert_eq!(call(c, add, "[2, 5]").await.unwrap(), serde_json::json!(7));

    let err = call(c, "does_not_exist", "{}").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnknownFunction, "{err}");
    assert!(err.message.contains("does_not_exist"), "{err}");

    for bad in [
        r#"{"a": "x", "b": 1}"#,
        r#"{"a": 1}"#,
        r#"{"a": 1, "b": 2, "c": 3}"#,
        "[1]",
        "not json",
    ] {
        let err = call(c, add, bad).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidInput, "{bad}: {err}");
    }
}

#[tokio::test]
async fn rust_guest_describes_itself_and_dispatches_by_name() {
    let wasm = tokio::task::spawn_blocking(|| flash_tests::build_guest("tests/guests/rust-guest"))
        .await
        .unwrap()
        .unwrap();
    let c = load(&wasm, "rust-guest");
    let d = c.describe().await.unwrap();
    let mut names: Vec<_> = d.resources.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["test_lb", "test_other", "test_queue"]);
    assert_eq!(
        d.resources
            .iter()
            .find(|r| r.name == "test_lb")
            .unwrap()
            .kind,
        EndpointKind::LoadBalanced
    );
    assert!(function(&d.functions, "async_add").is_async);
    assert!(!function(&d.functions, "add").is_async);
    let echo = function(&d.functions, "lb_echo");
    assert_eq!(
        (echo.http_method.as_deref(), echo.http_path.as_deref()),
        (Some("POST"), Some("/lb/echo"))
    );
    assert_eq!(function(&d.functions, "other_add").resource, "test_other");

    common_contract(&c, "echo", "add").await;
    assert_eq!(
        call(&c, "async_add", r#"{"a": 20, "b": 22}"#)
            .await
            .unwrap(),
        serde_json::json!(42)
    );
    let err = call(&c, "fail", r#"{"message": "nope"}"#)
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind, err.message.contains("nope")),
        (ErrorKind::UserError, true),
        "{err}"
    );
}

#[tokio::test]
async fn python_guest_meets_the_same_contract() {
    let wasm = tokio::task::spawn_blocking(flash_tests::build_python_guest)
        .await
        .unwrap()
        .unwrap();
    let c = load(&wasm, "python-guest");
    let d = c.describe().await.unwrap();
    assert_eq!(d.resources.len(), 1);
    assert_eq!(d.resources[0].name, "py_config");
    assert_eq!(function(&d.functions, "py_add").resource, "py_config");
    common_contract(&c, "py_echo", "py_add").await;
}
