//! The component's exports: `describe` and `invoke` over the registry.
//!
//! A panic cannot be caught in a WebAssembly guest (it aborts, and the host sees a trap), so
//! `invoke` installs a panic hook first: it hands the panic's message and location to the
//! host (`diagnostics.panicked`), which reports them as the call's error instead of a bare
//! trap, then runs the default hook (the message on stderr, as usual).

use std::sync::Once;

use crate::bindings::exports::flash::runtime::{describe, invoke};
use crate::bindings::flash::runtime::diagnostics;
use crate::bindings::flash::runtime::types as wit;
use crate::registry;

/// Installs the panic hook once per instance.
fn report_panics_to_the_host() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "Box<dyn Any>".to_string());
            let message = match info.location() {
                Some(at) => format!(
                    "panicked at {}:{}:{}: {payload}",
                    at.file(),
                    at.line(),
                    at.column()
                ),
                None => format!("panicked: {payload}"),
            };
            diagnostics::panicked(&message);
            default(info);
        }));
    });
}

/// The type `export_app!()` exports as the component's implementation.
pub struct FlashApp;

impl describe::Guest for FlashApp {
    fn describe() -> wit::Description {
        registry::describe(&registry::entries())
    }
}

impl invoke::Guest for FlashApp {
    fn invoke(function: String, input: String) -> Result<String, wit::CallError> {
        report_panics_to_the_host();
        registry::invoke(&registry::entries(), &function, &input).map_err(|e| e.into_wit())
    }
}
