//! The JSON calling convention of `invoke` and `peer.call`.
//!
//! A payload is either an object of named arguments (`{"text": "hi", "dims": 8}`) or an
//! array of positional ones (`["hi", 8]`); `null` or an empty payload means "no
//! arguments". An argument that is absent decodes as JSON `null`, so `Option<T>`
//! parameters are optional. Every failure is an [`ErrorKind::InvalidInput`] whose
//! message names the function and the argument.
//!
//! [`decode_args`] decodes a payload on the callee side (`invoke`); [`ArgsBuilder`] encodes
//! one on the caller side (a `#[remote]` call that goes to a peer, always by name).

use std::cell::Cell;
use std::fmt;

use serde::Serialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind, Result};

/// The typed arguments of one function: a tuple of `Option<T>`, one per parameter, that a
/// payload is decoded into in a single pass (each value straight into its parameter's
/// type, no intermediate `serde_json::Value`; this runs in the guest on every call).
///
/// Implemented for up to 12 parameters (the tuples `Default` covers); `#[remote]` names
/// the tuple.
pub trait ArgSlots: Default {
    /// The decoded arguments, `(T0, T1, ...)`.
    type Values;

    /// Decodes parameter `index` from the map's next value.
    fn fill_named<'de, A: MapAccess<'de>>(
        &mut self,
        index: usize,
        map: &mut A,
    ) -> Result<(), A::Error>;

    /// Decodes parameter `index` from the sequence's next element; `false` at its end.
    fn fill_positional<'de, A: SeqAccess<'de>>(
        &mut self,
        index: usize,
        seq: &mut A,
    ) -> Result<bool, A::Error>;

    /// The values, absent ones decoded from `null` (so `Option<T>` parameters are
    /// optional); `Err(index)` names the first absent parameter that cannot be `null`.
    fn finish(self) -> std::result::Result<Self::Values, usize>;
}

/// The absent value of a parameter: what its type makes of `null`.
fn from_null<T: DeserializeOwned>() -> Option<T> {
    T::deserialize(serde::de::value::UnitDeserializer::<de::value::Error>::new()).ok()
}

macro_rules! arg_slots {
    ($($index:tt $t:ident),*) => {
        impl<$($t: DeserializeOwned),*> ArgSlots for ($(Option<$t>,)*) {
            type Values = ($($t,)*);

            // `unused`, `unreachable`: the impl for no parameters never fills a slot.
            #[allow(unused_variables, unreachable_code)]
            fn fill_named<'de, A: MapAccess<'de>>(
                &mut self,
                index: usize,
                map: &mut A,
            ) -> Result<(), A::Error> {
                match index {
                    $($index => self.$index = Some(map.next_value()?),)*
                    _ => unreachable!("argument index out of range"),
                }
                Ok(())
            }

            #[allow(unused_variables, unreachable_code)]
            fn fill_positional<'de, A: SeqAccess<'de>>(
                &mut self,
                index: usize,
                seq: &mut A,
            ) -> Result<bool, A::Error> {
                match index {
                    $($index => match seq.next_element()? {
                        Some(value) => self.$index = Some(value),
                        None => return Ok(false),
                    },)*
                    _ => unreachable!("argument index out of range"),
                }
                Ok(true)
            }

            fn finish(self) -> std::result::Result<Self::Values, usize> {
                Ok(($(match self.$index {
                    Some(value) => value,
                    None => from_null::<$t>().ok_or::<usize>($index)?,
                },)*))
            }
        }
    };
}

arg_slots!();
arg_slots!(0 T0);
arg_slots!(0 T0, 1 T1);
arg_slots!(0 T0, 1 T1, 2 T2);
arg_slots!(0 T0, 1 T1, 2 T2, 3 T3);
arg_slots!(0 T0, 1 T1, 2 T2, 3 T3, 4 T4);
arg_slots!(0 T0, 1 T1, 2 T2, 3 T3, 4 T4, 5 T5);
arg_slots!(0 T0, 1 T1, 2 T2, 3 T3, 4 T4, 5 T5, 6 T6);
arg_slots!(0 T0, 1 T1, 2 T2, 3 T3, 4 T4, 5 T5, 6 T6, 7 T7);
arg_slots!(0 T0, 1 T1, 2 T2, 3 T3, 4 T4, 5 T5, 6 T6, 7 T7, 8 T8);
arg_slots!(0 T0, 1 T1, 2 T2, 3 T3, 4 T4, 5 T5, 6 T6, 7 T7, 8 T8, 9 T9);
arg_slots!(0 T0, 1 T1, 2 T2, 3 T3, 4 T4, 5 T5, 6 T6, 7 T7, 8 T8, 9 T9, 10 T10);
arg_slots!(0 T0, 1 T1, 2 T2, 3 T3, 4 T4, 5 T5, 6 T6, 7 T7, 8 T8, 9 T9, 10 T10, 11 T11);

/// Decodes the payload `input` of a call to `function` (parameters `params`, in order)
/// into its typed arguments.
pub fn decode_args<S: ArgSlots>(
    function: &'static str,
    params: &'static [&'static str],
    input: &str,
) -> Result<S::Values> {
    let invalid =
        |message: String| Error::new(ErrorKind::InvalidInput, format!("`{function}`: {message}"));
    let input = input.trim();
    let mut slots = S::default();
    if !input.is_empty() {
        // The argument being decoded when a value does not fit its type.
        let current = Cell::new(None);
        let visitor = PayloadVisitor {
            params,
            slots: &mut slots,
            current: &current,
        };
        let mut deserializer = serde_json::Deserializer::from_str(input);
        let decoded = deserializer
            .deserialize_any(visitor)
            .and_then(|()| deserializer.end());
        if let Err(e) = decoded {
            return Err(match (e.classify(), current.get()) {
                (serde_json::error::Category::Data, Some(name)) => {
                    invalid(format!("argument `{name}`: {}", without_position(&e)))
                }
                (serde_json::error::Category::Data, None) => invalid(without_position(&e)),
                _ => invalid(format!("input is not valid JSON: {e}")),
            });
        }
    }
    slots
        .finish()
        .map_err(|index| invalid(format!("missing argument `{}`", params[index])))
}

struct PayloadVisitor<'s, S> {
    params: &'static [&'static str],
    slots: &'s mut S,
    current: &'s Cell<Option<&'static str>>,
}

impl<S> PayloadVisitor<'_, S> {
    fn not_arguments<E: de::Error>(&self, what: &str) -> E {
        E::custom(format!(
            "input must be a JSON object of named arguments or an array of positional \
             arguments, got {what}"
        ))
    }
}

impl<'de, S: ArgSlots> Visitor<'de> for PayloadVisitor<'_, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object of named arguments or an array of positional arguments")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let Some(index) = self.params.iter().position(|p| *p == name) else {
                return Err(de::Error::custom(format!(
                    "unexpected argument `{name}` (expected {})",
                    describe_params(self.params)
                )));
            };
            self.current.set(Some(self.params[index]));
            self.slots.fill_named(index, &mut map)?;
            self.current.set(None);
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for (index, name) in self.params.iter().enumerate() {
            self.current.set(Some(name));
            let more = self.slots.fill_positional(index, &mut seq)?;
            self.current.set(None);
            if !more {
                return Ok(());
            }
        }
        let mut surplus = 0;
        while seq.next_element::<de::IgnoredAny>()?.is_some() {
            surplus += 1;
        }
        if surplus > 0 {
            return Err(de::Error::custom(format!(
                "takes {} argument(s) ({}), got {}",
                self.params.len(),
                describe_params(self.params),
                self.params.len() + surplus
            )));
        }
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.not_arguments("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(self.not_arguments("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(self.not_arguments("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(self.not_arguments("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(self.not_arguments("a string"))
    }
}

/// `e`'s message without serde_json's ` at line L column C` suffix (the position of a
/// value that does not fit its type adds nothing to the argument's name).
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

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: &[&str] = &["text", "dims"];

    fn decode(input: &str) -> Result<(String, u32)> {
        decode_args::<(Option<String>, Option<u32>)>("embed", PARAMS, input)
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
        let err = decode_args::<()>("ping", &[], r#"{"x":1}"#).unwrap_err();
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
        let (rows,) = decode_args::<(Option<Vec<Vec<f32>>>,)>(
            "f",
            &["rows"],
            r#"{"rows":[[1.5,-2],[0.25,3e2]]}"#,
        )
        .unwrap();
        assert_eq!(rows, [[1.5, -2.0], [0.25, 300.0]]);
        // A syntax error is an invalid payload, with its position in the payload.
        let msg = invalid(decode(r#"{"text":"hi","dims":8,}"#));
        assert!(
            msg.starts_with("`embed`: input is not valid JSON: ") && msg.contains("column"),
            "{msg}"
        );
        // Trailing garbage after the payload is one too.
        assert!(invalid(decode(r#"["hi", 8] x"#)).starts_with("`embed`: input is not valid JSON"));
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
        type Name = (Option<Option<String>>,);
        let hello = |input| decode_args::<Name>("hello", &["name"], input).map(|(n,)| n);
        assert_eq!(hello("{}").unwrap(), None);
        assert_eq!(hello("null").unwrap(), None);
        assert_eq!(hello("[]").unwrap(), None);
        assert_eq!(hello(r#"{"name":"ada"}"#).unwrap().as_deref(), Some("ada"));
        assert!(decode_args::<()>("ping", &[], "  ").is_ok());
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
