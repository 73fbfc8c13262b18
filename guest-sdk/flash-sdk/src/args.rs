//! The JSON calling convention of `invoke` and `peer.call`.
//!
//! A payload is either an object of named arguments (`{"text": "hi", "dims": 8}`) or an
//! array of positional ones (`["hi", 8]`); `null` or an empty payload means "no
//! arguments". An argument that is absent decodes as JSON `null`, so `Option<T>`
//! parameters are optional. Every failure is an [`ErrorKind::InvalidInput`] whose
//! message names the function and the argument.
//!
//! [`Args`] decodes a payload on the callee side (`invoke`); [`ArgsBuilder`] encodes
//! one on the caller side (a `#[remote]` call that goes to a peer, always by name).

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind, Result};

/// The arguments of one call, by parameter position, still as JSON text.
///
/// Parsing only splits the payload into one borrowed slice per argument (`RawValue`, a
/// scan without allocations); each argument is then decoded straight into its
/// parameter's type. No intermediate `serde_json::Value` tree (an allocation per number)
/// is built on this path, which runs in the guest on every call.
#[derive(Debug)]
pub struct Args<'a> {
    function: &'static str,
    params: &'static [&'static str],
    values: Vec<Option<&'a RawValue>>,
}

impl<'a> Args<'a> {
    /// Splits `input` into the values of `params`, rejecting unknown names and surplus
    /// positions.
    pub fn parse(
        function: &'static str,
        params: &'static [&'static str],
        input: &'a str,
    ) -> Result<Self> {
        let invalid = |message: String| {
            Error::new(ErrorKind::InvalidInput, format!("`{function}`: {message}"))
        };
        let not_json = |e: serde_json::Error| invalid(format!("input is not valid JSON: {e}"));
        let mut values: Vec<Option<&'a RawValue>> = vec![None; params.len()];
        let input = input.trim();
        match input.as_bytes().first() {
            None => {}
            Some(b'{') => {
                let named: BTreeMap<String, &'a RawValue> =
                    serde_json::from_str(input).map_err(not_json)?;
                for (name, value) in named {
                    let Some(index) = params.iter().position(|p| *p == name) else {
                        return Err(invalid(format!(
                            "unexpected argument `{name}` (expected {})",
                            describe_params(params)
                        )));
                    };
                    values[index] = Some(value);
                }
            }
            Some(b'[') => {
                let items: Vec<&'a RawValue> = serde_json::from_str(input).map_err(not_json)?;
                if items.len() > params.len() {
                    return Err(invalid(format!(
                        "takes {} argument(s) ({}), got {}",
                        params.len(),
                        describe_params(params),
                        items.len()
                    )));
                }
                for (slot, value) in values.iter_mut().zip(items) {
                    *slot = Some(value);
                }
            }
            // A scalar (small): parse it whole, for `null` or a precise complaint.
            Some(_) => match serde_json::from_str::<Value>(input).map_err(not_json)? {
                Value::Null => {}
                other => {
                    return Err(invalid(format!(
                        "input must be a JSON object of named arguments or an array of \
                         positional arguments, got {}",
                        json_type(&other)
                    )));
                }
            },
        }
        Ok(Args {
            function,
            params,
            values,
        })
    }

    /// Decodes the argument at `index` (panics if `index` is out of range: that is a bug
    /// in the macro expansion, not bad input).
    pub fn take<T: DeserializeOwned>(&mut self, index: usize) -> Result<T> {
        let name = self.params[index];
        match self.values[index].take() {
            Some(value) => serde_json::from_str(value.get()).map_err(|e| {
                Error::invalid_input(format!(
                    "`{}`: argument `{name}`: {}",
                    self.function,
                    without_position(&e)
                ))
            }),
            // Absent: fine for types that accept `null` (`Option<T>`, `()`, `Value`).
            None => serde_json::from_str("null").map_err(|_| {
                Error::invalid_input(format!("`{}`: missing argument `{name}`", self.function))
            }),
        }
    }
}

/// `e`'s message without serde_json's ` at line L column C` suffix: positions are
/// relative to the argument's own text, which would mislead next to the whole payload.
fn without_position(e: &serde_json::Error) -> String {
    let message = e.to_string();
    if e.line() == 0 {
        return message;
    }
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    message
        .strip_suffix(&suffix)
        .map_or_else(|| message.clone(), str::to_string)
}

/// Encodes the arguments of an outgoing call as an object of named arguments.
#[derive(Debug)]
pub struct ArgsBuilder {
    function: &'static str,
    map: Map<String, Value>,
}

impl ArgsBuilder {
    /// Starts the payload of a call to `function`.
    pub fn new(function: &'static str) -> Self {
        ArgsBuilder {
            function,
            map: Map::new(),
        }
    }

    /// Adds one named argument.
    pub fn arg<T: Serialize + ?Sized>(mut self, name: &'static str, value: &T) -> Result<Self> {
        let value = serde_json::to_value(value).map_err(|e| {
            Error::invalid_input(format!(
                "calling `{}`: cannot encode argument `{name}`: {e}",
                self.function
            ))
        })?;
        self.map.insert(name.to_string(), value);
        Ok(self)
    }

    /// The JSON payload.
    pub fn finish(self) -> String {
        Value::Object(self.map).to_string()
    }
}

/// Encodes the return value of `function` (a failure here is a bug in the function's
/// types, e.g. a map with non-string keys, hence `internal`).
pub fn encode_output<T: Serialize + ?Sized>(function: &str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| {
        Error::internal(format!(
            "`{function}`: cannot encode the result as JSON: {e}"
        ))
    })
}

/// Decodes the JSON result of a peer call to `function`.
pub fn decode_output<T: DeserializeOwned>(function: &str, output: &str) -> Result<T> {
    serde_json::from_str(output).map_err(|e| {
        Error::new(
            ErrorKind::RemoteFailure,
            format!("`{function}`: the peer's result does not match the return type: {e}"),
        )
    })
}

fn describe_params(params: &[&str]) -> String {
    if params.is_empty() {
        "no arguments".to_string()
    } else {
        params
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: &[&str] = &["text", "dims"];

    fn decode(input: &str) -> Result<(String, u32)> {
        let mut args = Args::parse("embed", PARAMS, input)?;
        Ok((args.take(0)?, args.take(1)?))
    }

    fn invalid(result: Result<impl std::fmt::Debug>) -> String {
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err:#}");
        err.message().to_string()
    }

    #[test]
    fn named_and_positional_arguments() {
        assert_eq!(
            decode(r#"{"text":"hi","dims":8}"#).unwrap(),
            ("hi".into(), 8)
        );
        assert_eq!(
            decode(r#"{"dims":8,"text":"hi"}"#).unwrap(),
            ("hi".into(), 8)
        );
        assert_eq!(decode(r#"["hi", 8]"#).unwrap(), ("hi".into(), 8));
    }

    #[test]
    fn missing_arguments_are_named() {
        assert_eq!(
            invalid(decode(r#"{"text":"hi"}"#)),
            "`embed`: missing argument `dims`"
        );
        assert_eq!(
            invalid(decode(r#"["hi"]"#)),
            "`embed`: missing argument `dims`"
        );
        assert_eq!(invalid(decode("")), "`embed`: missing argument `text`");
    }

    #[test]
    fn extra_arguments_are_rejected() {
        assert_eq!(
            invalid(decode(r#"{"text":"hi","dims":8,"x":1}"#)),
            "`embed`: unexpected argument `x` (expected `text`, `dims`)"
        );
        assert_eq!(
            invalid(decode(r#"["hi", 8, 9]"#)),
            "`embed`: takes 2 argument(s) (`text`, `dims`), got 3"
        );
        let err = Args::parse("ping", &[], r#"{"x":1}"#).unwrap_err();
        assert_eq!(
            err.message(),
            "`ping`: unexpected argument `x` (expected no arguments)"
        );
    }

    #[test]
    fn mistyped_arguments_name_the_argument() {
        let msg = invalid(decode(r#"{"text":"hi","dims":"eight"}"#));
        assert!(
            msg.starts_with("`embed`: argument `dims`: invalid type: string"),
            "{msg}"
        );
        let msg = invalid(decode(r#"{"text":"hi","dims":-1}"#));
        assert!(msg.starts_with("`embed`: argument `dims`:"), "{msg}");
    }

    #[test]
    fn argument_errors_carry_no_position_and_keys_may_be_escaped() {
        let msg = invalid(decode(r#"{"text":"hi","dims":[1,2]}"#));
        assert_eq!(
            msg,
            "`embed`: argument `dims`: invalid type: sequence, expected u32"
        );
        assert_eq!(
            decode(r#"{"te\u0078t":"hi","dims":8}"#).unwrap(),
            ("hi".into(), 8)
        );
        let mut args = Args::parse("f", &["rows"], r#"{"rows":[[1.5,-2],[0.25,3e2]]}"#).unwrap();
        assert_eq!(
            args.take::<Vec<Vec<f32>>>(0).unwrap(),
            [[1.5, -2.0], [0.25, 300.0]]
        );
    }

    #[test]
    fn malformed_payloads() {
        assert!(invalid(decode("{")).starts_with("`embed`: input is not valid JSON"));
        assert_eq!(
            invalid(decode("42")),
            "`embed`: input must be a JSON object of named arguments or an array of \
             positional arguments, got a number"
        );
    }

    #[test]
    fn absent_options_are_none_and_null_means_no_arguments() {
        let mut args = Args::parse("hello", &["name"], "{}").unwrap();
        assert_eq!(args.take::<Option<String>>(0).unwrap(), None);
        let mut args = Args::parse("hello", &["name"], "null").unwrap();
        assert_eq!(args.take::<Option<String>>(0).unwrap(), None);
        let mut args = Args::parse("hello", &["name"], r#"{"name":"ada"}"#).unwrap();
        assert_eq!(
            args.take::<Option<String>>(0).unwrap().as_deref(),
            Some("ada")
        );
        assert!(Args::parse("ping", &[], "  ").is_ok());
    }

    #[test]
    fn builder_encodes_named_arguments_in_order() {
        let payload = ArgsBuilder::new("embed")
            .arg("text", "hi")
            .and_then(|b| b.arg("dims", &8u32))
            .unwrap()
            .finish();
        assert_eq!(payload, r#"{"text":"hi","dims":8}"#);
        assert_eq!(decode(&payload).unwrap(), ("hi".into(), 8));
    }

    #[test]
    fn builder_reports_unencodable_arguments() {
        let map: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let err = ArgsBuilder::new("f").arg("m", &map).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(
            err.message()
                .starts_with("calling `f`: cannot encode argument `m`"),
            "{err}"
        );
    }

    #[test]
    fn outputs() {
        assert_eq!(encode_output("f", &vec![1.5f32, 2.0]).unwrap(), "[1.5,2.0]");
        let v: Vec<f32> = decode_output("f", "[1.5,2.0]").unwrap();
        assert_eq!(v, [1.5, 2.0]);
        let err = decode_output::<u32>("f", "\"x\"").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RemoteFailure);
        let map: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert_eq!(
            encode_output("f", &map).unwrap_err().kind(),
            ErrorKind::Internal
        );
    }
}
