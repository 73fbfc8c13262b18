//! The Flash manifest: the contract between build time and run time.
//!
//! One crate defines the manifest once for every part of Flash — `flash build` writes it,
//! `flash-host` serves from it, the control plane stores it and the CLI deploys it:
//!
//! - [`describe`]: plain-Rust mirrors of the WIT `describe` records, the scanner's output;
//! - [`manifest`]: the `flash_manifest.json` document (RunPod Flash keys plus ours);
//! - [`builder`]: [`ManifestBuilder`], which merges component descriptions into a manifest;
//! - [`validate`]: the build-time rules, each with an error that names the culprit;
//! - [`config_hash`]: the canonical per-resource hash used for drift detection;
//! - [`peer_calls`]: which resources call peers (`makes_remote_calls`, who gets the key);
//! - [`artifact`]: packing a reproducible `artifact.tar.gz` and unpacking one safely.

pub mod artifact;
pub mod atomic;
pub mod builder;
pub mod config_hash;
pub mod describe;
pub mod manifest;
pub mod package;
pub mod peer_calls;
pub mod validate;

pub use builder::{ComponentInput, ManifestBuilder, ModelInput};
pub use manifest::{
    ComponentEntry, FunctionEntry, MANIFEST_FILE_NAME, MANIFEST_VERSION, Manifest, ModelEntry,
    ResourceEntry, ResourceType,
};
pub use validate::{ValidationError, ValidationErrors};

/// The WIT package every component of this Flash version must target.
pub const CONTRACT: &str = "flash:runtime@0.4.0";

/// Hex-encoded SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
