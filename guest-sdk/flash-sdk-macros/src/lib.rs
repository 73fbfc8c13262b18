//! Procedural macros of the Flash guest SDK. Use them through `flash_sdk`, which
//! re-exports them; the expansions name `::flash_sdk` paths.

use proc_macro::TokenStream;

mod remote;

/// Makes a function a Flash remote function served by a resource config.
///
/// ```ignore
/// #[remote(GPU)]                                       // a queue config
/// fn embed(text: String, dims: u32) -> Result<Vec<f32>> { .. }
///
/// #[remote(API, method = "POST", path = "/predict")]   // a load-balanced config
/// async fn predict(text: String) -> Result<Prediction> { .. }
/// ```
///
/// The first argument is a `const` expression of type `flash_sdk::ResourceConfig`.
/// Load-balanced configs need `method` and `path`; queue configs take neither (checked
/// at compile time). The function keeps its name and signature: calling it runs the body
/// when its config is the one this instance serves (or none is set), and otherwise calls
/// the endpoint that serves it through the host, encoding the arguments by name.
///
/// Requirements: a free `fn` or `async fn` without generics; each parameter a plain
/// identifier of an owned `serde::Deserialize + serde::Serialize` type; the return type
/// `flash_sdk::Result<T>` with `T: Serialize + Deserialize`.
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    match remote::expand(attr.into(), item.into()) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}
