//! `#[remote]`: parsing, validation and expansion.
//!
//! The user's function becomes a wrapper with the same name and signature. Inside it,
//! out of the user's namespace:
//!
//! * `__FLASH_CONFIG`, the resource config (a `const`), and a compile-time check that
//!   the route fits the config kind;
//! * `__flash_body`, the user's function unchanged;
//! * `__flash_handler`, the JSON entry point `invoke` dispatches to (decode the arguments,
//!   run the body, encode the result), submitted to the registry with `inventory`;
//! * the call path: the body when the config is local, a peer call otherwise.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{
    Expr, FnArg, GenericArgument, Ident, ItemFn, LitStr, Pat, PathArguments, ReturnType, Token,
    Type,
};

/// HTTP methods a load-balanced route may use (as `flash-manifest` validates them).
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH"];

/// Paths `flash-host` serves itself on load-balanced endpoints.
const RESERVED_PATHS: &[&str] = &["/execute", "/ping"];

/// `#[remote(CONFIG)]` or `#[remote(CONFIG, method = "POST", path = "/p")]`.
struct RemoteArgs {
    config: Expr,
    method: Option<LitStr>,
    path: Option<LitStr>,
}

impl Parse for RemoteArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(input.error(
                "expected a resource config: #[remote(CONFIG)] or \
                 #[remote(CONFIG, method = \"POST\", path = \"/route\")]",
            ));
        }
        let config: Expr = input.parse()?;
        let (mut method, mut path) = (None, None);
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            let key: Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            let value: LitStr = input.parse()?;
            let slot = match key.to_string().as_str() {
                "method" => &mut method,
                "path" => &mut path,
                other => {
                    return Err(syn::Error::new(
                        key.span(),
                        format!("unknown #[remote] option `{other}` (expected `method` or `path`)"),
                    ));
                }
            };
            if slot.replace(value).is_some() {
                return Err(syn::Error::new(key.span(), format!("duplicate `{key}`")));
            }
        }
        Ok(RemoteArgs {
            config,
            method,
            path,
        })
    }
}

/// A validated route: method upper-cased, path checked.
struct Route {
    method: String,
    path: String,
}

fn route(args: &RemoteArgs) -> syn::Result<Option<Route>> {
    match (&args.method, &args.path) {
        (None, None) => Ok(None),
        (Some(m), None) => Err(syn::Error::new(m.span(), "`method` needs a `path` too")),
        (None, Some(p)) => Err(syn::Error::new(p.span(), "`path` needs a `method` too")),
        (Some(m), Some(p)) => {
            let method = m.value().to_ascii_uppercase();
            if !METHODS.contains(&method.as_str()) {
                return Err(syn::Error::new(
                    m.span(),
                    format!(
                        "unsupported HTTP method `{}` (expected one of {})",
                        m.value(),
                        METHODS.join(", ")
                    ),
                ));
            }
            let path = p.value();
            if !path.starts_with('/')
                || path
                    .chars()
                    .any(|c| c.is_whitespace() || c == '?' || c == '#')
            {
                return Err(syn::Error::new(
                    p.span(),
                    "`path` must start with `/` and contain no whitespace, query or fragment",
                ));
            }
            if RESERVED_PATHS.contains(&path.as_str()) {
                return Err(syn::Error::new(
                    p.span(),
                    format!(
                        "`path` `{path}` is reserved by flash-host (`/execute` and `/ping` are built in)"
                    ),
                ));
            }
            Ok(Some(Route { method, path }))
        }
    }
}

/// One parameter of the function: the binding, its type, and its JSON name.
struct Param<'a> {
    ident: &'a Ident,
    ty: &'a Type,
    name: String,
}

fn params(func: &ItemFn) -> syn::Result<Vec<Param<'_>>> {
    func.sig
        .inputs
        .iter()
        .map(|input| {
            let FnArg::Typed(arg) = input else {
                return Err(syn::Error::new(input.span(), "#[remote] functions cannot take `self`"));
            };
            let Pat::Ident(pat) = &*arg.pat else {
                return Err(syn::Error::new(
                    arg.pat.span(),
                    "#[remote] parameters must be plain identifiers (they are the JSON argument names)",
                ));
            };
            if pat.by_ref.is_some() || pat.subpat.is_some() {
                return Err(syn::Error::new(pat.span(), "#[remote] parameters must be plain identifiers"));
            }
            match &*arg.ty {
                Type::Reference(_) => Err(syn::Error::new(
                    arg.ty.span(),
                    "#[remote] parameters must be owned types (they are decoded from JSON): use `String` for `&str`, `Vec<T>` for `&[T]`",
                )),
                Type::ImplTrait(_) => Err(syn::Error::new(
                    arg.ty.span(),
                    "#[remote] parameters must be concrete types, not `impl Trait`",
                )),
                ty => Ok(Param {
                    ident: &pat.ident,
                    ty,
                    name: pat.ident.unraw().to_string(),
                }),
            }
        })
        .collect()
}

/// The `T` of a `flash_sdk::Result<T>` return type.
fn ok_type(output: &ReturnType) -> syn::Result<&Type> {
    const MSG: &str = "#[remote] functions must return `flash_sdk::Result<T>`";
    let ReturnType::Type(_, ty) = output else {
        return Err(syn::Error::new(
            Span::call_site(),
            format!("{MSG} (this one returns `()`)"),
        ));
    };
    let Type::Path(path) = &**ty else {
        return Err(syn::Error::new(ty.span(), MSG));
    };
    let last = path
        .path
        .segments
        .last()
        .ok_or_else(|| syn::Error::new(ty.span(), MSG))?;
    let PathArguments::AngleBracketed(generics) = &last.arguments else {
        return Err(syn::Error::new(ty.span(), MSG));
    };
    let args: Vec<_> = generics.args.iter().collect();
    let ok = match (last.ident == "Result", args.as_slice()) {
        (true, [GenericArgument::Type(ok)]) => ok,
        (
            true,
            [
                GenericArgument::Type(ok),
                GenericArgument::Type(Type::Path(err)),
            ],
        ) if err.path.segments.last().is_some_and(|s| s.ident == "Error") => ok,
        _ => return Err(syn::Error::new(ty.span(), MSG)),
    };
    Ok(ok)
}

fn check_signature(func: &ItemFn) -> syn::Result<()> {
    let sig = &func.sig;
    let reject = |span: Span, what: &str| {
        Err(syn::Error::new(
            span,
            format!("#[remote] functions cannot be {what}"),
        ))
    };
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return reject(sig.generics.span(), "generic");
    }
    if let Some(t) = &sig.constness {
        return reject(t.span, "`const`");
    }
    if let Some(t) = &sig.unsafety {
        return reject(t.span, "`unsafe`");
    }
    if let Some(abi) = &sig.abi {
        return reject(abi.span(), "`extern`");
    }
    if let Some(v) = &sig.variadic {
        return reject(v.span(), "variadic");
    }
    Ok(())
}

/// Expands `#[remote(attr)] item`.
pub fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args: RemoteArgs = syn::parse2(attr)?;
    let func: ItemFn = syn::parse2(item)?;
    let route = route(&args)?;
    check_signature(&func)?;
    let params = params(&func)?;
    let ok_ty = ok_type(&func.sig.output)?;

    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = &func;
    let fn_ident = &sig.ident;
    let fn_name = fn_ident.unraw().to_string();
    if fn_name.len() > 64
        || !fn_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(syn::Error::new(
            fn_ident.span(),
            "#[remote] function names must be at most 64 ASCII letters, digits and `_` \
             (they end up in URLs and job payloads)",
        ));
    }
    let output = &sig.output;
    let asyncness = &sig.asyncness;
    let is_async = asyncness.is_some();
    let body_inputs = &sig.inputs;

    let idents: Vec<_> = params.iter().map(|p| p.ident).collect();
    let tys: Vec<_> = params.iter().map(|p| p.ty).collect();
    let names: Vec<_> = params.iter().map(|p| p.name.as_str()).collect();
    let decoded: Vec<_> = params
        .iter()
        .map(|p| format_ident!("__flash_arg_{}", p.ident.unraw()))
        .collect();

    // Spanned on the user's types, so that a missing `Serialize`/`Deserialize` impl is
    // reported on the parameter or return type rather than on the attribute.
    let slot_tys = params.iter().map(|p| {
        let ty = p.ty;
        quote_spanned! {ty.span()=> ::core::option::Option<#ty> }
    });
    let encode_args = params.iter().map(|p| {
        let (ident, name) = (p.ident, p.name.as_str());
        quote_spanned! {p.ty.span()=> .arg(#name, &#ident)? }
    });
    let encode_output = quote_spanned! {ok_ty.span()=>
        ::flash_sdk::__private::encode_output(#fn_name, &__flash_out?)
    };
    let call_remote = quote_spanned! {ok_ty.span()=>
        ::flash_sdk::__private::call_remote::<#ok_ty>(#fn_name, &__flash_payload)
    };

    let config = &args.config;
    let config_const = quote_spanned! {config.span()=>
        const __FLASH_CONFIG: ::flash_sdk::ResourceConfig = #config;
    };
    let has_route = route.is_some();
    let (method, path) = match &route {
        Some(Route { method, path }) => (
            quote!(::core::option::Option::Some(#method)),
            quote!(::core::option::Option::Some(#path)),
        ),
        None => (
            quote!(::core::option::Option::None),
            quote!(::core::option::Option::None),
        ),
    };

    let handler_call = if is_async {
        quote!(::flash_sdk::block_on(__flash_body(#(#decoded),*)))
    } else {
        quote!(__flash_body(#(#decoded),*))
    };
    let local_call = if is_async {
        quote!(__flash_body(#(#idents),*).await)
    } else {
        quote!(__flash_body(#(#idents),*))
    };
    let result_check = quote_spanned! {output.span()=>
        let __flash_out: ::flash_sdk::Result<#ok_ty> = #handler_call;
    };

    Ok(quote! {
        #(#attrs)*
        #vis #asyncness fn #fn_ident(#(#idents: #tys),*) #output {
            #config_const
            const _: () = ::flash_sdk::__private::check_route(&__FLASH_CONFIG, #has_route);

            #asyncness fn __flash_body(#body_inputs) #output #block

            fn __flash_handler(
                __flash_input: &str,
            ) -> ::flash_sdk::Result<::std::string::String> {
                let (#(#decoded,)*): (#(#tys,)*) =
                    ::flash_sdk::__private::decode_args::<(#(#slot_tys,)*)>(
                        #fn_name,
                        &[#(#names),*],
                        __flash_input,
                    )?;
                #result_check
                #encode_output
            }

            ::flash_sdk::__private::inventory::submit! {
                ::flash_sdk::__private::FunctionEntry {
                    name: #fn_name,
                    resource: &__FLASH_CONFIG,
                    module: ::core::module_path!(),
                    is_async: #is_async,
                    http_method: #method,
                    http_path: #path,
                    handler: __flash_handler,
                }
            }

            if ::flash_sdk::__private::runs_locally(&__FLASH_CONFIG) {
                #local_call
            } else {
                let __flash_payload = ::flash_sdk::__private::ArgsBuilder::new(#fn_name)
                    #(#encode_args)*
                    .finish();
                #call_remote
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(attr: TokenStream, item: TokenStream) -> String {
        match expand(attr, item) {
            Ok(tokens) => panic!("expected an error, got {tokens}"),
            Err(err) => err.to_string(),
        }
    }

    /// The error for `attr` on a well-formed function.
    fn attr_error(attr: TokenStream) -> String {
        error(
            attr,
            quote!(
                fn f() -> Result<()> {
                    Ok(())
                }
            ),
        )
    }

    /// The error for `item` under a well-formed attribute.
    fn fn_error(item: TokenStream) -> String {
        error(quote!(C), item)
    }

    #[test]
    fn expands_sync_and_async_functions() {
        let item = quote!(
            fn embed(text: String, mut dims: u32) -> Result<Vec<f32>> {
                Ok(vec![])
            }
        );
        let out = expand(quote!(GPU), item).unwrap().to_string();
        assert!(
            out.contains("fn embed (text : String , dims : u32)"),
            "{out}"
        );
        assert!(
            out.contains("fn __flash_body (text : String , mut dims : u32)"),
            "{out}"
        );
        assert!(out.contains("is_async : false"), "{out}");

        let item = quote!(
            pub async fn predict(r#type: String) -> flash_sdk::Result<f32> {
                Ok(1.0)
            }
        );
        let out = expand(quote!(API, method = "post", path = "/predict"), item)
            .unwrap()
            .to_string();
        assert!(
            out.contains("pub async fn predict (r#type : String)"),
            "{out}"
        );
        assert!(out.contains("\"type\""), "{out}");
        assert!(out.contains("Some (\"POST\")"), "{out}");
        assert!(out.contains("Some (\"/predict\")"), "{out}");
        assert!(out.contains("block_on"), "{out}");
    }

    #[test]
    fn rejects_bad_attributes() {
        let cases = [
            (quote!(), "expected a resource config"),
            (quote!(C, verb = "GET"), "unknown #[remote] option `verb`"),
            (quote!(C, method = "GET"), "`method` needs a `path` too"),
            (quote!(C, path = "/x"), "`path` needs a `method` too"),
            (
                quote!(C, method = "FETCH", path = "/x"),
                "unsupported HTTP method `FETCH`",
            ),
            (
                quote!(C, method = "GET", path = "x"),
                "`path` must start with `/`",
            ),
            (
                quote!(C, method = "GET", path = "/ping"),
                "`path` `/ping` is reserved by flash-host",
            ),
            (quote!(C, path = "/a", path = "/b"), "duplicate `path`"),
        ];
        for (attr, expected) in cases {
            let msg = attr_error(attr);
            assert!(
                msg.contains(expected),
                "{msg:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn rejects_unsupported_signatures() {
        let cases = [
            (
                quote!(
                    fn f(x: u32) -> u32 {
                        x
                    }
                ),
                "must return `flash_sdk::Result<T>`",
            ),
            (
                quote!(
                    fn f() {}
                ),
                "this one returns `()`",
            ),
            (
                quote!(
                    fn f() -> std::result::Result<u32, String> {
                        Ok(1)
                    }
                ),
                "must return",
            ),
            (
                quote!(
                    fn f<T>(x: T) -> Result<()> {
                        Ok(())
                    }
                ),
                "cannot be generic",
            ),
            (
                quote!(
                    unsafe fn f() -> Result<()> {
                        Ok(())
                    }
                ),
                "cannot be `unsafe`",
            ),
            (
                quote!(
                    const fn f() -> Result<()> {
                        Ok(())
                    }
                ),
                "cannot be `const`",
            ),
            (
                quote!(
                    fn f(x: &str) -> Result<()> {
                        Ok(())
                    }
                ),
                "must be owned types",
            ),
            (
                quote!(
                    fn f(x: impl Into<u8>) -> Result<()> {
                        Ok(())
                    }
                ),
                "not `impl Trait`",
            ),
            (
                quote!(
                    fn f((a, b): (u8, u8)) -> Result<()> {
                        Ok(())
                    }
                ),
                "plain identifiers",
            ),
            (
                quote!(
                    fn f(&self) -> Result<()> {
                        Ok(())
                    }
                ),
                "cannot take `self`",
            ),
            (
                quote!(
                    fn é() -> Result<()> {
                        Ok(())
                    }
                ),
                "ASCII letters, digits and `_`",
            ),
        ];
        for (item, expected) in cases {
            let msg = fn_error(item);
            assert!(
                msg.contains(expected),
                "{msg:?} should contain {expected:?}"
            );
        }
        // `Result<T, E>` is accepted when `E` is (syntactically) an `Error`.
        assert!(
            expand(
                quote!(C),
                quote!(
                    fn f() -> Result<u8, flash_sdk::Error> {
                        Ok(1)
                    }
                )
            )
            .is_ok()
        );
    }
}
