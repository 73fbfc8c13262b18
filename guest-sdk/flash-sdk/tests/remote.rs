//! `#[remote]` end to end, natively: registration through `inventory`, `describe`,
//! `invoke` (the component exports, called as plain Rust), and direct calls.

use flash_sdk::bindings::exports::flash::runtime::{describe::Guest as _, invoke::Guest as _};
use flash_sdk::bindings::flash::runtime::types::{self as wit, CallError};
use flash_sdk::{Error, ResourceConfig, Result, remote};
use serde::{Deserialize, Serialize};

const Q: ResourceConfig = ResourceConfig::queue("q").cpu(&["cpu3c-1-2"]);
const LB: ResourceConfig = ResourceConfig::load_balanced("lb")
    .cpu(&["cpu3c-1-2"])
    .workers(1, 2);

type App = flash_sdk::__private::FlashApp;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
}

/// `a + b`.
#[remote(Q)]
fn add(a: i64, b: i64) -> Result<i64> {
    Ok(a + b)
}

#[remote(Q)]
async fn scale(p: Point, mut k: i32) -> Result<Point> {
    k = std::future::ready(k).await;
    Ok(Point {
        x: p.x * k,
        y: p.y * k,
    })
}

#[remote(Q)]
fn twice(a: i64) -> Result<i64> {
    add(a, a) // a call between remote functions: local here (FLASH_RESOURCE_NAME unset)
}

#[remote(Q)]
fn refuse(reason: String) -> Result<()> {
    Err(Error::invalid_input(reason))
}

#[remote(Q)]
fn parse_num(s: String) -> Result<u8> {
    Ok(s.parse::<u8>()?)
}

#[remote(LB, method = "get", path = "/hello")]
pub fn hello(name: Option<String>, r#type: Option<String>) -> Result<String> {
    Ok(format!(
        "hello {} ({})",
        name.as_deref().unwrap_or("world"),
        r#type.unwrap_or_default()
    ))
}

// The WIT binding's `call-error`, as the host receives it: its size is the contract's.
#[allow(clippy::result_large_err)]
fn invoke(function: &str, input: &str) -> std::result::Result<String, CallError> {
    App::invoke(function.to_string(), input.to_string())
}

fn invoke_err(function: &str, input: &str) -> CallError {
    invoke(function, input).expect_err("expected the call to fail")
}

#[test]
fn describe_reports_every_function_and_config() {
    let d = App::describe();
    let names: Vec<_> = d.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["add", "hello", "parse_num", "refuse", "scale", "twice"]
    );
    let resources: Vec<_> = d.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(resources, ["lb", "q"]);
    assert!(matches!(
        d.resources[0].kind,
        wit::EndpointKind::LoadBalanced
    ));
    assert_eq!(
        (d.resources[0].workers_min, d.resources[0].workers_max),
        (1, 2)
    );

    let hello = &d.functions[1];
    assert_eq!(
        (hello.resource.as_str(), hello.module.as_str()),
        ("lb", "remote")
    );
    assert_eq!(hello.http_method.as_deref(), Some("GET"));
    assert_eq!(hello.http_path.as_deref(), Some("/hello"));
    let scale = &d.functions[4];
    assert!(scale.is_async && scale.http_method.is_none() && scale.http_path.is_none());
}

#[test]
fn invoke_named_and_positional() {
    assert_eq!(invoke("add", r#"{"a": 2, "b": 3}"#).unwrap(), "5");
    assert_eq!(invoke("add", "[2, 3]").unwrap(), "5");
    assert_eq!(invoke("twice", "[21]").unwrap(), "42");
    assert_eq!(
        invoke("scale", r#"{"p": {"x": 1, "y": -2}, "k": 3}"#).unwrap(),
        r#"{"x":3,"y":-6}"#
    );
    assert_eq!(invoke("hello", "{}").unwrap(), r#""hello world ()""#);
    assert_eq!(
        invoke("hello", r#"{"name": "ada", "type": "t"}"#).unwrap(),
        r#""hello ada (t)""#
    );
    assert_eq!(
        invoke("refuse", "").unwrap_err().message,
        "`refuse`: missing argument `reason`"
    );
}

#[test]
fn invoke_maps_errors_to_kinds() {
    let e = invoke_err("add", r#"{"a": 1}"#);
    assert!(matches!(e.kind, wit::ErrorKind::InvalidInput));
    assert_eq!(e.message, "`add`: missing argument `b`");

    let e = invoke_err("add", r#"{"a": 1, "b": "two"}"#);
    assert!(matches!(e.kind, wit::ErrorKind::InvalidInput));
    assert!(
        e.message.starts_with("`add`: argument `b`: invalid type"),
        "{}",
        e.message
    );

    let e = invoke_err("add", r#"{"a": 1, "b": 2, "c": 3}"#);
    assert!(matches!(e.kind, wit::ErrorKind::InvalidInput));

    let e = invoke_err("nope", "{}");
    assert!(matches!(e.kind, wit::ErrorKind::UnknownFunction));
    assert!(
        e.message
            .contains("add, hello, parse_num, refuse, scale, twice"),
        "{}",
        e.message
    );

    let e = invoke_err("refuse", r#"["no"]"#);
    assert!(matches!(e.kind, wit::ErrorKind::InvalidInput));
    assert_eq!(e.message, "no");

    let e = invoke_err("parse_num", r#"["300"]"#);
    assert!(matches!(e.kind, wit::ErrorKind::UserError));
    assert_eq!(e.message, "number too large to fit in target type");
}

#[test]
fn functions_stay_callable_as_plain_rust() {
    assert_eq!(add(1, 2), Ok(3));
    assert_eq!(twice(4), Ok(8));
    assert_eq!(
        flash_sdk::block_on(scale(Point { x: 1, y: 1 }, 2)),
        Ok(Point { x: 2, y: 2 })
    );
    assert_eq!(hello(None, None).unwrap(), "hello world ()");
}
