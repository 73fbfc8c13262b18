//! The source scans behind `makes_remote_calls` (see [`flash_manifest::peer_calls`]).
//!
//! Only the resource configs whose functions may call a function of another config get
//! the API key that peer calls need. What a component *can* do comes from its imports (no
//! `peer` import, no peer call); within a component that can, a scan of its sources says
//! which functions mention which names:
//!
//! - Rust (`kind = "rust"`): every `.rs` file under the crate directory, parsed with `syn`;
//!   each `fn` (free, method or nested) is a node, and its body's paths, method names,
//!   string literals and the identifiers and literals inside macro calls are its mentions.
//!   A `peer_call` whose first argument is not a string literal may call anything.
//! - Python (`kind = "python"`): `flash_sdk._calls` (the same rules, with Python's `ast`),
//!   run on the staged sources with the toolchain's Python ([`super::python::call_graph`]).
//! - JavaScript and TypeScript (`kind = "js"`): the build's own reading of the app's
//!   modules with acorn, after TypeScript is compiled away (`js_toolchain/build.mjs`): each
//!   named function, method or `const` binding is a node, and its identifiers, property
//!   names and string literals are its mentions (an anonymous function's count for the one
//!   around it). A `peerCall` whose first argument is not a string literal may call
//!   anything. It reads the call graph that build wrote ([`super::js::call_graph`]).
//! - Anything else (`kind = "command"`): not scanned; a component that imports `peer` then
//!   counts as calling from every function.

use std::path::Path;

use anyhow::{Context, Result};
use flash_manifest::peer_calls::{CallGraph, Mentions, PeerCalls};
use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

use crate::project::{ComponentDecl, ComponentKind, Project};

/// Folders of a crate never scanned: build output and tool state.
const SKIPPED_DIRS: &[&str] = &["target", "node_modules", ".flash", ".git"];

/// Rust's and Python's function that calls a Flash function by a name given at run time
/// (JavaScript's is `peerCall`, which `build.mjs` looks for).
const PEER_CALL: &str = "peer_call";

/// What the build knows of the peer calls of component `decl`, given whether it imports
/// `peer`.
pub fn peer_calls(project: &Project, decl: &ComponentDecl, imports_peer: bool) -> PeerCalls {
    if !imports_peer {
        return PeerCalls::Impossible;
    }
    let graph = match decl.kind {
        ComponentKind::Rust => scan_rust_crate(&project.root.join(&decl.path)),
        ComponentKind::Python => super::python::call_graph(project, decl),
        ComponentKind::Js => super::js::call_graph(project, decl),
        ComponentKind::Command => return PeerCalls::Unknown,
    };
    match graph {
        Ok(graph) => PeerCalls::Scanned { graph },
        Err(e) => {
            tracing::warn!(
                "component `{}`: scanning its sources for peer calls failed ({e:#}); every \
                 resource it serves gets the API key for peer calls",
                decl.name
            );
            PeerCalls::Unknown
        }
    }
}

/// Scans every `.rs` file under `dir`.
pub fn scan_rust_crate(dir: &Path) -> Result<CallGraph> {
    let mut graph = CallGraph::default();
    scan_rust_dir(dir, &mut graph)?;
    Ok(graph)
}

fn scan_rust_dir(dir: &Path, graph: &mut CallGraph) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type()?.is_dir() {
            if !SKIPPED_DIRS.contains(&name.as_ref()) {
                scan_rust_dir(&path, graph)?;
            }
        } else if name.ends_with(".rs") {
            let source = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            scan_rust_source(&source, graph)
                .with_context(|| format!("parsing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Adds what the functions of one Rust file mention to `graph`.
pub fn scan_rust_source(source: &str, graph: &mut CallGraph) -> Result<()> {
    let file = syn::parse_file(source)?;
    let mut scanner = RustScanner {
        graph,
        owners: Vec::new(),
    };
    scanner.visit_file(&file);
    Ok(())
}

struct RustScanner<'g> {
    graph: &'g mut CallGraph,
    /// The functions what is visited now belongs to, innermost last.
    owners: Vec<(String, Mentions)>,
}

impl RustScanner<'_> {
    fn mention(&mut self, name: impl Into<String>) {
        if let Some((_, mentions)) = self.owners.last_mut() {
            mentions.names.insert(name.into());
        }
    }

    fn within(&mut self, name: &syn::Ident, visit: impl FnOnce(&mut Self)) {
        // The enclosing function (if any) mentions a nested one by name.
        self.mention(name.to_string());
        self.owners.push((name.to_string(), Mentions::default()));
        visit(self);
        let (name, mentions) = self.owners.pop().expect("pushed above");
        self.graph.add(&name, mentions);
    }

    fn mention_tokens(&mut self, tokens: &TokenStream) {
        for tree in tokens.clone() {
            match tree {
                TokenTree::Ident(ident) => self.mention(ident.to_string()),
                TokenTree::Literal(literal) => {
                    if let Ok(text) = syn::parse2::<syn::LitStr>(TokenTree::Literal(literal).into())
                    {
                        self.mention(text.value());
                    }
                }
                TokenTree::Group(group) => self.mention_tokens(&group.stream()),
                TokenTree::Punct(_) => {}
            }
        }
    }
}

impl<'ast> Visit<'ast> for RustScanner<'_> {
    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        self.within(&item.sig.ident, |s| syn::visit::visit_item_fn(s, item));
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        self.within(&item.sig.ident, |s| syn::visit::visit_impl_item_fn(s, item));
    }

    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        self.within(&item.sig.ident, |s| {
            syn::visit::visit_trait_item_fn(s, item)
        });
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        for segment in &path.segments {
            self.mention(segment.ident.to_string());
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        self.mention(call.method.to_string());
        syn::visit::visit_expr_method_call(self, call);
    }

    fn visit_expr_call(&mut self, call: &'ast syn::ExprCall) {
        if let syn::Expr::Path(callee) = &*call.func
            && callee
                .path
                .segments
                .last()
                .is_some_and(|s| s.ident == PEER_CALL)
            && !matches!(
                call.args.first(),
                Some(syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(_),
                    ..
                }))
            )
            && let Some((_, mentions)) = self.owners.last_mut()
        {
            mentions.computed_peer_call = true;
        }
        syn::visit::visit_expr_call(self, call);
    }

    fn visit_lit_str(&mut self, literal: &'ast syn::LitStr) {
        self.mention(literal.value());
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.mention_tokens(&mac.tokens);
        syn::visit::visit_macro(self, mac);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn scan(source: &str) -> CallGraph {
        let mut graph = CallGraph::default();
        scan_rust_source(source, &mut graph).unwrap();
        graph
    }

    #[test]
    fn rust_calls_through_helpers_methods_and_macros() {
        let graph = scan(
            r#"
            #[remote(API, method = "POST", path = "/p")]
            fn predict(text: String) -> Result<f32> { Ok(score(&text)?) }
            fn score(text: &str) -> Result<f32> { let v = embed(text.into())?; Ok(v[0]) }
            #[remote(GPU)]
            fn embed(text: String) -> Result<Vec<f32>> { Ok(vec![text.len() as f32]) }
            struct Model;
            impl Model { fn run(&self) -> String { format!("{}", headline_of(1)) } }
            fn uses_model() { Model.run(); }
            fn by_name() -> Result<String> { flash_sdk::peer_call("summarize", "{}") }
            fn computed(name: &str) -> Result<String> { flash_sdk::peer_call(name, "{}") }
            fn nested() { fn inner() { let _ = summarize2(); } inner(); }
            "#,
        );
        let remote = |names: &[&'static str]| names.iter().copied().collect::<BTreeSet<_>>();
        assert_eq!(
            graph.may_call_any("predict", &remote(&["embed"])),
            Some(true)
        );
        assert_eq!(
            graph.may_call_any("embed", &remote(&["predict"])),
            Some(false)
        );
        assert_eq!(
            graph.may_call_any("uses_model", &remote(&["headline_of"])),
            Some(true)
        );
        assert_eq!(
            graph.may_call_any("by_name", &remote(&["summarize"])),
            Some(true)
        );
        assert_eq!(
            graph.may_call_any("by_name", &remote(&["other"])),
            Some(false)
        );
        assert_eq!(graph.may_call_any("computed", &remote(&[])), Some(true));
        assert_eq!(
            graph.may_call_any("nested", &remote(&["summarize2"])),
            Some(true)
        );
    }

    #[test]
    fn the_polyglot_example_calls_from_headline_only() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/polyglot/rust");
        let graph = scan_rust_crate(&dir).unwrap();
        let remote = BTreeSet::from(["summarize", "analyze", "preview"]);
        assert_eq!(graph.may_call_any("headline", &remote), Some(true));
        assert_eq!(graph.may_call_any("word_stats", &remote), Some(false));
    }

    #[test]
    fn a_file_that_does_not_parse_is_an_error() {
        let mut graph = CallGraph::default();
        assert!(scan_rust_source("fn broken( {", &mut graph).is_err());
    }
}
