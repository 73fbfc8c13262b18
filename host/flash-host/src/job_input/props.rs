//! Property tests for [`resolve`] with hostile inputs: any JSON, and objects built from the
//! keys the resolver reads (`function_name`, `args`, `kwargs`, `input`, `flash_call_depth`,
//! `__empty`) holding values of every type, depths out of range, names that are no string.
//!
//! Whatever the input, the resolver never panics; a call it returns carries a JSON object
//! or array, the function the input named (or the endpoint's only one) and the depth the
//! input carried; what it refuses, it refuses as the caller's error. Numbers reach the
//! function as the caller wrote them.
//!
//! 256 cases per property run in the normal test suite (well under a second); a longer run:
//!
//! ```sh
//! PROPTEST_CASES=20000 cargo test -p flash-host --lib job_input::props
//! ```
//!
//! A failure saves its seed under `host/flash-host/proptest-regressions/`; commit it.

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::{CALL_DEPTH_KEY, resolve};
use flash_runtime::ErrorKind;

/// Any JSON value, nested a few levels.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| {
            serde_json::Number::from_f64(f).map(Value::Number)
        }),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// The keys the resolver reads, and others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "function_name", "args", "kwargs", "input", CALL_DEPTH_KEY, "__empty",
        ])
        .prop_map(str::to_string),
        1 => "[a-z_]{0,8}",
    ]
}

/// Values a field may hold: any JSON, names, and depths at and past the edges.
fn field() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => json(),
        1 => prop::sample::select(vec![
            Value::from(0),
            Value::from(3),
            Value::from(u32::MAX),
            Value::from(u64::from(u32::MAX) + 1),
            Value::from(u64::MAX),
            Value::from(-1),
            Value::from(1.5),
            Value::from("3"),
            Value::from("f"),
            Value::from(""),
            Value::Array(vec![]),
            Value::Object(Map::new()),
        ]),
    ]
}

/// An input: any JSON, or an object of the resolver's keys.
fn input() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => json(),
        3 => prop::collection::vec((key(), field()), 0..6)
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
    ]
}

/// The functions served, and the single one if the input picks it.
fn served() -> impl Strategy<Value = (Vec<String>, bool)> {
    (prop::collection::vec("[a-z]{1,6}", 1..4), any::<bool>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn resolving_any_input_keeps_every_invariant(input in input(), (served, one) in served()) {
        let names: Vec<&str> = served.iter().map(String::as_str).collect();
        let single = one.then(|| names[0]);
        let result = resolve(&input, single, &names);
        let object = input.as_object();
        let named = object.and_then(|o| o.get("function_name"));
        let depth = object.and_then(|o| o.get(CALL_DEPTH_KEY));
        match result {
            Ok(call) => {
                // The payload is named or positional arguments, as JSON.
                let payload: Value = serde_json::from_str(&call.payload)
                    .map_err(|e| TestCaseError::fail(format!("payload is not JSON: {e}")))?;
                prop_assert!(payload.is_object() || payload.is_array(), "{payload}");
                // The function the input named, or the only one served here.
                match named {
                    Some(name) => prop_assert_eq!(Some(call.function.as_str()), name.as_str()),
                    None => {
                        prop_assert_eq!(Some(call.function.as_str()), single);
                        // The resolver's own keys never reach the function.
                        if let Value::Object(args) = &payload {
                            prop_assert!(!args.contains_key("__empty"));
                            prop_assert!(!args.contains_key(CALL_DEPTH_KEY));
                        }
                    }
                }
                // The depth the input carried, or 0.
                let expected = match depth {
                    None => 0,
                    Some(d) => d
                        .as_u64()
                        .ok_or_else(|| TestCaseError::fail("non-integer depth accepted"))?,
                };
                prop_assert_eq!(u64::from(call.depth), expected);
            }
            Err(err) => {
                prop_assert!(
                    matches!(err.kind, ErrorKind::InvalidInput | ErrorKind::CallDepthExceeded),
                    "{:?}: {}", err.kind, err.message
                );
                prop_assert!(!err.message.is_empty());
                // An endpoint of several functions says which it serves.
                if named.is_none() && single.is_none() {
                    for name in &names {
                        prop_assert!(err.message.contains(name), "{}", err.message);
                    }
                }
            }
        }
        // What must be refused is refused.
        let bad_depth =
            depth.is_some_and(|d| d.as_u64().and_then(|d| u32::try_from(d).ok()).is_none());
        let bad_call = match named {
            Some(name) => !name.is_string(),
            None => {
                single.is_none()
                    || !matches!(input, Value::Object(_) | Value::Array(_) | Value::Null)
            }
        };
        if bad_depth || bad_call {
            prop_assert!(resolve(&input, single, &names).is_err());
        }
    }

    #[test]
    fn numbers_reach_the_function_as_sent(
        x in any::<f64>().prop_filter("finite", |x| x.is_finite()),
        n in any::<i64>(),
        u in any::<u64>(),
    ) {
        // Parsed as the queue worker and the load-balanced server parse a job, then resolved:
        // the function gets the very numbers the caller sent (no float off by one ULP).
        let x = serde_json::to_string(&x).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let text = format!(r#"{{"x":{x},"n":{n},"u":{u}}}"#);
        let input: Value =
            serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let call =
            resolve(&input, Some("f"), &["f"]).map_err(|e| TestCaseError::fail(e.message))?;
        prop_assert_eq!(call.payload, text);
    }

    #[test]
    fn named_calls_pass_their_arguments_through(
        function in "[a-z]{1,6}",
        args in prop::collection::vec(json(), 1..4),
        kwargs in prop::collection::vec(("[a-z]{1,6}", json()), 1..4),
        positional in any::<bool>(),
    ) {
        let (field, value) = if positional {
            ("args", Value::Array(args))
        } else {
            ("kwargs", Value::Object(kwargs.into_iter().collect()))
        };
        let input = serde_json::json!({"function_name": function, field: value});
        let call = resolve(&input, None, &["other"]).map_err(|e| TestCaseError::fail(e.message))?;
        prop_assert_eq!(call.function, function);
        prop_assert_eq!(call.payload, value.to_string());
        prop_assert_eq!(call.depth, 0);
    }
}
