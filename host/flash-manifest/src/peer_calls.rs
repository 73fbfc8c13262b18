//! Which resources call peers, so that only they are given the key that peer calls need.
//!
//! A peer call (a function calling a function of another resource config) needs the
//! deployer's API key: the worker finds the callee's endpoint through the State Manager and
//! authenticates to it. RunPod Flash gives that key to every endpoint (reference §7.6), so
//! a dependency of a function that never calls anyone can still read the account key.
//! Flash gives it only to resources whose manifest entry says `makes_remote_calls`, and
//! this module decides that flag at build time, in two layers:
//!
//! 1. **Capability** (exact): a component that does not import the WIT `peer` interface
//!    cannot call a peer. Toolchains drop imports the code never uses, so a Rust crate
//!    that never calls another function has none ([`PeerCalls::Impossible`]).
//! 2. **References** (a safe over-approximation): a scan of the component's sources
//!    ([`CallGraph`], written by `flash build` per language) lists, for each function in
//!    the code, the names it mentions: identifiers and string literals, and whether it
//!    calls `peer_call` with a name that is not a literal. A resource calls peers when one
//!    of its functions reaches, through the functions of its code, the name of a function
//!    that another resource serves, or a `peer_call` of a computed name.
//!
//! Anything the scan cannot see makes the answer "yes": a component without a scan
//! ([`PeerCalls::Unknown`], e.g. `kind = "command"`), or a function missing from its scan.
//! A call that the scan misses anyway (a function name computed at run time and passed
//! through something other than `peer_call`) fails with an error that says so (the host
//! refuses to call a peer from a resource built without `makes_remote_calls`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// What the build knows about the peer calls of one component's functions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PeerCalls {
    /// The component does not import `peer`: none of its functions can call another
    /// resource.
    Impossible,
    /// It imports `peer` and nothing more is known: any of its functions may call any
    /// function.
    Unknown,
    /// It imports `peer`, and a scan of its sources says what each function mentions.
    Scanned { graph: CallGraph },
}

/// What each function of a component's source code mentions, by function name.
///
/// Names are not qualified: two functions of one name (in two modules, or a method and a
/// free function) are one node whose mentions are the union of theirs. That can only add
/// calls, never hide one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallGraph {
    pub functions: BTreeMap<String, Mentions>,
}

/// What one function's body mentions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mentions {
    /// Identifiers (callees, attributes, variables) and string literals.
    pub names: BTreeSet<String>,
    /// It calls `peer_call` with a function name that is not a literal.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub computed_peer_call: bool,
}

impl CallGraph {
    /// Adds what one function mentions (merged with an earlier function of the same name).
    pub fn add(&mut self, function: &str, mentions: Mentions) {
        let node = self.functions.entry(function.to_string()).or_default();
        node.names.extend(mentions.names);
        node.computed_peer_call |= mentions.computed_peer_call;
    }

    /// Whether `function` may call one of `remote` (names of functions other resources
    /// serve), directly or through the functions of this code: `None` when it is not in
    /// the graph (nothing is known of it).
    pub fn may_call_any(&self, function: &str, remote: &BTreeSet<&str>) -> Option<bool> {
        self.functions.get(function)?;
        let mut seen = BTreeSet::from([function]);
        let mut todo = vec![function];
        while let Some(name) = todo.pop() {
            let Some(node) = self.functions.get(name) else {
                continue;
            };
            if node.computed_peer_call {
                return Some(true);
            }
            for mention in &node.names {
                if remote.contains(mention.as_str()) {
                    return Some(true);
                }
                if self.functions.contains_key(mention) && seen.insert(mention) {
                    todo.push(mention);
                }
            }
        }
        Some(false)
    }
}

impl PeerCalls {
    /// Whether any of `functions` (functions of one resource that this component serves)
    /// may call one of `remote` (the functions other resources serve).
    pub fn may_call_any<'a>(
        &self,
        mut functions: impl Iterator<Item = &'a str>,
        remote: &BTreeSet<&str>,
    ) -> bool {
        match self {
            Self::Impossible => false,
            Self::Unknown => true,
            Self::Scanned { graph } => {
                functions.any(|f| graph.may_call_any(f, remote).unwrap_or(true))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mentions(names: &[&str]) -> Mentions {
        Mentions {
            names: names.iter().map(|n| n.to_string()).collect(),
            computed_peer_call: false,
        }
    }

    fn graph(nodes: &[(&str, &[&str])]) -> CallGraph {
        let mut graph = CallGraph::default();
        for (name, names) in nodes {
            graph.add(name, mentions(names));
        }
        graph
    }

    #[test]
    fn direct_indirect_and_absent_calls() {
        let graph = graph(&[
            ("api", &["helper", "len"]),
            ("helper", &["embed"]),
            ("embed", &["numbers", "sum"]),
            ("lonely", &["sum"]),
        ]);
        let remote = BTreeSet::from(["embed"]);
        assert_eq!(
            graph.may_call_any("api", &remote),
            Some(true),
            "through helper"
        );
        assert_eq!(graph.may_call_any("helper", &remote), Some(true));
        assert_eq!(graph.may_call_any("lonely", &remote), Some(false));
        assert_eq!(graph.may_call_any("missing", &remote), None);
        // `embed` calling only local code is not a peer call of its own.
        assert_eq!(graph.may_call_any("embed", &BTreeSet::new()), Some(false));
    }

    #[test]
    fn cycles_end() {
        let graph = graph(&[("a", &["b"]), ("b", &["a", "c"]), ("c", &["a"])]);
        assert_eq!(graph.may_call_any("a", &BTreeSet::from(["z"])), Some(false));
    }

    #[test]
    fn a_computed_peer_call_may_call_anything() {
        let mut graph = graph(&[("a", &["b"])]);
        graph.add(
            "b",
            Mentions {
                names: BTreeSet::new(),
                computed_peer_call: true,
            },
        );
        assert_eq!(graph.may_call_any("a", &BTreeSet::new()), Some(true));
    }

    #[test]
    fn what_is_not_known_is_a_yes() {
        let remote = BTreeSet::from(["x"]);
        assert!(PeerCalls::Unknown.may_call_any(["f"].into_iter(), &remote));
        assert!(!PeerCalls::Impossible.may_call_any(["f"].into_iter(), &remote));
        let scanned = PeerCalls::Scanned {
            graph: graph(&[("f", &["y"])]),
        };
        assert!(!scanned.may_call_any(["f"].into_iter(), &remote));
        assert!(scanned.may_call_any(["f", "not_scanned"].into_iter(), &remote));
    }

    #[test]
    fn same_named_functions_merge() {
        let mut graph = graph(&[("run", &["a"])]);
        graph.add("run", mentions(&["b"]));
        assert_eq!(
            graph.may_call_any("run", &BTreeSet::from(["b"])),
            Some(true)
        );
    }
}
