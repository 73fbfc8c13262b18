//! The registry of `#[remote]` functions, and what `describe` and `invoke` do with it.
//!
//! Every `#[remote]` function submits a static [`FunctionEntry`] through `inventory`.
//! In a component, the entries are linked in by static constructors, which the
//! wit-bindgen export glue runs (`run_ctors_once`) before the first export call; natively
//! they are ordinary ELF/Mach-O constructors. The logic below works on plain slices of
//! entries so that it is testable without the global registry.

use std::collections::BTreeMap;

use crate::bindings::flash::runtime::types as wit;
use crate::config::{EndpointKind, ResourceConfig};
use crate::error::{Error, ErrorKind, Result};

/// One registered `#[remote]` function. Built by the macro; not public API.
#[derive(Debug)]
pub struct FunctionEntry {
    /// Unique name within the app (the Rust function name).
    pub name: &'static str,
    /// The resource config whose endpoint serves the function.
    pub resource: &'static ResourceConfig,
    /// `module_path!()` of the definition.
    pub module: &'static str,
    /// Whether the source function is `async`.
    pub is_async: bool,
    /// HTTP method of the route (load-balanced configs only).
    pub http_method: Option<&'static str>,
    /// HTTP path of the route (load-balanced configs only).
    pub http_path: Option<&'static str>,
    /// Decodes the JSON arguments, runs the body, encodes the JSON result.
    pub handler: fn(&str) -> Result<String>,
}

inventory::collect!(FunctionEntry);

/// Compile-time check (in a `const`) that a function's route fits its config:
/// load-balanced configs serve HTTP routes, queue configs have one handler.
pub const fn check_route(resource: &ResourceConfig, has_route: bool) {
    match (resource.kind(), has_route) {
        (EndpointKind::LoadBalanced, false) => panic!(
            "#[remote] on a load-balanced resource config needs a route: \
             #[remote(CONFIG, method = \"POST\", path = \"/...\")]"
        ),
        (EndpointKind::Queue, true) => panic!(
            "#[remote] on a queue resource config takes no `method`/`path`: \
             queue endpoints have a single handler"
        ),
        _ => {}
    }
}

/// Every registered function, sorted by name (inventory's order is unspecified).
pub fn entries() -> Vec<&'static FunctionEntry> {
    let mut entries: Vec<_> = inventory::iter::<FunctionEntry>.into_iter().collect();
    entries.sort_by_key(|e| e.name);
    entries
}

/// The `describe` answer: the functions, and the configs they reference (each once, by
/// name; if two different configs share a name, the first one, by function name, wins
/// and the host's validation sees only it).
pub fn describe(entries: &[&FunctionEntry]) -> wit::Description {
    let mut resources = BTreeMap::new();
    for entry in entries {
        resources
            .entry(entry.resource.name())
            .or_insert_with(|| entry.resource.to_wit());
    }
    wit::Description {
        resources: resources.into_values().collect(),
        functions: entries
            .iter()
            .map(|e| wit::FunctionSpec {
                name: e.name.to_string(),
                resource: e.resource.name().to_string(),
                module: e.module.to_string(),
                is_async: e.is_async,
                http_method: e.http_method.map(str::to_string),
                http_path: e.http_path.map(str::to_string),
            })
            .collect(),
    }
}

/// The `invoke` answer: runs `function` on `input`.
pub fn invoke(entries: &[&FunctionEntry], function: &str, input: &str) -> Result<String> {
    match entries.iter().find(|e| e.name == function) {
        Some(entry) => (entry.handler)(input),
        None => {
            let known: Vec<_> = entries.iter().map(|e| e.name).collect();
            Err(Error::new(
                ErrorKind::UnknownFunction,
                format!(
                    "no function `{function}` in this component (it provides: {})",
                    if known.is_empty() {
                        "nothing".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: ResourceConfig = ResourceConfig::queue("q").cpu(&["cpu3c-1-2"]);
    const LB: ResourceConfig = ResourceConfig::load_balanced("lb");

    fn ok(input: &str) -> Result<String> {
        Ok(format!("[{input}]"))
    }

    fn fail(_: &str) -> Result<String> {
        Err(Error::msg("nope"))
    }

    fn entry(
        name: &'static str,
        resource: &'static ResourceConfig,
        handler: fn(&str) -> Result<String>,
    ) -> FunctionEntry {
        FunctionEntry {
            name,
            resource,
            module: "app::m",
            is_async: false,
            http_method: None,
            http_path: None,
            handler,
        }
    }

    #[test]
    fn describe_lists_functions_and_deduplicated_configs() {
        let a = entry("a", &Q, ok);
        let b = entry("b", &Q, ok);
        let c = FunctionEntry {
            is_async: true,
            http_method: Some("POST"),
            http_path: Some("/c"),
            ..entry("c", &LB, ok)
        };
        let d = describe(&[&a, &b, &c]);
        let names: Vec<_> = d.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["lb", "q"]);
        assert_eq!(d.functions.len(), 3);
        let c = &d.functions[2];
        assert_eq!(
            (c.name.as_str(), c.resource.as_str(), c.module.as_str()),
            ("c", "lb", "app::m")
        );
        assert!(c.is_async);
        assert_eq!(
            (c.http_method.as_deref(), c.http_path.as_deref()),
            (Some("POST"), Some("/c"))
        );
    }

    #[test]
    fn invoke_dispatches_by_name() {
        let a = entry("a", &Q, ok);
        let f = entry("f", &Q, fail);
        assert_eq!(invoke(&[&a, &f], "a", "1").unwrap(), "[1]");
        assert_eq!(
            invoke(&[&a, &f], "f", "").unwrap_err().kind(),
            ErrorKind::UserError
        );
        let err = invoke(&[&a, &f], "zzz", "").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnknownFunction);
        assert_eq!(
            err.message(),
            "no function `zzz` in this component (it provides: a, f)"
        );
        let err = invoke(&[], "zzz", "").unwrap_err();
        assert!(err.message().ends_with("(it provides: nothing)"), "{err}");
    }
}
