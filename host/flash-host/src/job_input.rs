//! How a job's `input` (or an `/execute` body) names a function and its arguments.
//!
//! Accepted shapes, most explicit first:
//!
//! - `{"function_name": "f", "kwargs": {...}}` — named arguments;
//! - `{"function_name": "f", "args": [...]}` — positional arguments;
//! - `{"function_name": "f", "input": <object or array>}` — the payload as is;
//! - any other value, when the resource serves exactly one function: the whole input is
//!   that function's payload (`{"x": 1}` or `[1]`). RunPod's `{"__empty": true}`
//!   placeholder for an empty input is removed.
//!
//! `flash_call_depth` carries the peer-call depth across hosts (cycle guard), and
//! `flash_trace` the job a peer call works for (it tags the callee's log lines).

use flash_runtime::{CallError, ErrorKind};
use serde_json::{Map, Value};

/// Key carrying the peer-call depth between hosts.
pub const CALL_DEPTH_KEY: &str = "flash_call_depth";

/// Key carrying the job a peer call works for between hosts.
pub const TRACE_KEY: &str = "flash_trace";

/// Longest `flash_trace` accepted (job ids are far shorter).
const MAX_TRACE: usize = 128;

/// A resolved call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub function: String,
    /// JSON text: an object of named arguments or an array of positional ones.
    pub payload: String,
    pub depth: u32,
    /// The job the call works for, when a peer sent it.
    pub trace: Option<String>,
}

/// Resolves `input` against the functions served here (`single` is the only one, if so).
pub fn resolve(input: &Value, single: Option<&str>, served: &[&str]) -> Result<Call, CallError> {
    let invalid = |msg: String| CallError::new(ErrorKind::InvalidInput, msg);
    if let Value::Object(map) = input
        && let Some(name) = map.get("function_name")
    {
        let function = name
            .as_str()
            .ok_or_else(|| invalid("`function_name` must be a string".into()))?
            .to_string();
        let depth = depth_of(map)?;
        let trace = trace_of(map)?;
        let args = map.get("args").filter(|v| !is_empty(v));
        let kwargs = map.get("kwargs").filter(|v| !is_empty(v));
        let payload = match (args, kwargs, map.get("input")) {
            (Some(_), Some(_), _) => {
                return Err(invalid(format!(
                    "call to `{function}` passes both `args` and `kwargs`; pass one of them"
                )));
            }
            (Some(args @ Value::Array(_)), None, _) => args.clone(),
            (Some(_), None, _) => return Err(invalid("`args` must be an array".into())),
            (None, Some(kwargs @ Value::Object(_)), _) => kwargs.clone(),
            (None, Some(_), _) => return Err(invalid("`kwargs` must be an object".into())),
            (None, None, Some(input @ (Value::Object(_) | Value::Array(_)))) => input.clone(),
            (None, None, Some(_)) => {
                return Err(invalid("`input` must be an object or an array".into()));
            }
            (None, None, None) => Value::Object(Map::new()),
        };
        return Ok(Call {
            function,
            payload: payload.to_string(),
            depth,
            trace,
        });
    }
    let Some(function) = single else {
        return Err(invalid(format!(
            "this endpoint serves several functions ({}); name one with \
             {{\"function_name\": \"...\", \"kwargs\": {{...}}}}",
            served.join(", ")
        )));
    };
    let mut payload = input.clone();
    let mut depth = 0;
    let mut trace = None;
    if let Value::Object(map) = &mut payload {
        map.remove("__empty");
        depth = depth_of(map)?;
        trace = trace_of(map)?;
        map.remove(CALL_DEPTH_KEY);
        map.remove(TRACE_KEY);
    }
    match payload {
        Value::Object(_) | Value::Array(_) => {}
        Value::Null => payload = Value::Object(Map::new()),
        other => {
            return Err(invalid(format!(
                "input for `{function}` must be an object of named arguments or an array of \
                 positional ones, not {other}"
            )));
        }
    }
    Ok(Call {
        function: function.to_string(),
        payload: payload.to_string(),
        depth,
        trace,
    })
}

fn trace_of(map: &Map<String, Value>) -> Result<Option<String>, CallError> {
    match map.get(TRACE_KEY) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(trace)) if !trace.is_empty() && trace.len() <= MAX_TRACE => {
            Ok(Some(trace.clone()))
        }
        Some(_) => Err(CallError::new(
            ErrorKind::InvalidInput,
            format!("`{TRACE_KEY}` must be a job id: a string of 1 to {MAX_TRACE} bytes"),
        )),
    }
}

fn depth_of(map: &Map<String, Value>) -> Result<u32, CallError> {
    match map.get(CALL_DEPTH_KEY) {
        None => Ok(0),
        Some(v) => v
            .as_u64()
            .and_then(|d| u32::try_from(d).ok())
            .ok_or_else(|| {
                CallError::new(
                    ErrorKind::InvalidInput,
                    format!("`{CALL_DEPTH_KEY}` must be a small integer"),
                )
            }),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn named_function_with_kwargs_args_or_input() {
        let c = resolve(
            &json!({"function_name": "f", "kwargs": {"a": 1}}),
            None,
            &["f", "g"],
        )
        .unwrap();
        assert_eq!(
            (c.function.as_str(), c.payload.as_str()),
            ("f", r#"{"a":1}"#)
        );
        let c = resolve(
            &json!({"function_name": "f", "args": [1, 2]}),
            None,
            &["f", "g"],
        )
        .unwrap();
        assert_eq!(c.payload, "[1,2]");
        let c = resolve(
            &json!({"function_name": "f", "input": [3], CALL_DEPTH_KEY: 2}),
            None,
            &["f"],
        )
        .unwrap();
        assert_eq!((c.payload.as_str(), c.depth), ("[3]", 2));
        let c = resolve(&json!({"function_name": "f"}), None, &["f"]).unwrap();
        assert_eq!(c.payload, "{}");
    }

    #[test]
    fn bare_input_needs_a_single_function() {
        let c = resolve(&json!({"x": 1, "__empty": true}), Some("only"), &["only"]).unwrap();
        assert_eq!(
            (c.function.as_str(), c.payload.as_str()),
            ("only", r#"{"x":1}"#)
        );
        let err = resolve(&json!({"x": 1}), None, &["f", "g"]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidInput);
        assert!(
            err.message.contains("serves several functions (f, g)"),
            "{}",
            err.message
        );
        let err = resolve(&json!(5), Some("only"), &["only"]).unwrap_err();
        assert!(
            err.message.contains("must be an object of named arguments"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_peers_trace_is_read_and_never_reaches_the_function() {
        let c = resolve(
            &json!({"function_name": "f", "input": {"a": 1}, TRACE_KEY: "job-1"}),
            None,
            &["f"],
        )
        .unwrap();
        assert_eq!(
            (c.payload.as_str(), c.trace.as_deref()),
            (r#"{"a":1}"#, Some("job-1"))
        );
        let c = resolve(&json!({"a": 1, TRACE_KEY: "job-2"}), Some("f"), &["f"]).unwrap();
        assert_eq!(
            (c.payload.as_str(), c.trace.as_deref()),
            (r#"{"a":1}"#, Some("job-2"))
        );
        let c = resolve(
            &json!({"function_name": "f", TRACE_KEY: null}),
            None,
            &["f"],
        )
        .unwrap();
        assert_eq!(c.trace, None);
        for bad in [json!(7), json!(""), json!("x".repeat(129))] {
            let err =
                resolve(&json!({"function_name": "f", TRACE_KEY: bad}), None, &["f"]).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn both_args_and_kwargs_is_an_error() {
        let err = resolve(
            &json!({"function_name": "f", "args": [1], "kwargs": {"a": 1}}),
            None,
            &["f"],
        )
        .unwrap_err();
        assert_eq!(
            err.message,
            "call to `f` passes both `args` and `kwargs`; pass one of them"
        );
    }
}
