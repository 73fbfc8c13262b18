//! The component's exports: `describe` and `invoke` over the registry.

use crate::bindings::exports::flash::runtime::{describe, invoke};
use crate::bindings::flash::runtime::types as wit;
use crate::registry;

/// The type `export_app!()` exports as the component's implementation.
pub struct FlashApp;

impl describe::Guest for FlashApp {
    fn describe() -> wit::Description {
        registry::describe(&registry::entries())
    }
}

impl invoke::Guest for FlashApp {
    fn invoke(function: String, input: String) -> Result<String, wit::CallError> {
        registry::invoke(&registry::entries(), &function, &input).map_err(|e| e.into_wit())
    }
}
