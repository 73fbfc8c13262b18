//! Embeds what `flash build` needs to build Python components on any machine: the Python
//! SDK (`guest-sdk/python/flash_sdk`) and the WIT contract (`wit/`). They are written to
//! the cache directory at build time (see `src/build/embedded.rs`), so a `flash` binary
//! works outside a checkout of this repository.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest_dir.join("../..");
    let mut out = String::new();
    for (name, dir, extension) in [
        ("PYTHON_SDK", root.join("guest-sdk/python/flash_sdk"), "py"),
        ("WIT", root.join("wit"), "wit"),
    ] {
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut files = Vec::new();
        collect(&dir, &dir, extension, &mut files);
        files.sort();
        writeln!(out, "pub const {name}: &[(&str, &str)] = &[").unwrap();
        for (relative, absolute) in files {
            writeln!(out, "    ({relative:?}, include_str!({absolute:?})),").unwrap();
        }
        writeln!(out, "];").unwrap();
    }
    let dest =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join("embedded.rs");
    std::fs::write(dest, out).expect("writing embedded.rs");
}

/// Every file with `extension` under `dir`, as (path relative to `base`, absolute path).
fn collect(base: &Path, dir: &Path, extension: &str, files: &mut Vec<(String, String)>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with('.') || name == "__pycache__" {
            continue;
        }
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect(base, &path, extension, files);
        } else if path.extension().and_then(|e| e.to_str()) == Some(extension) {
            let relative = path
                .strip_prefix(base)
                .expect("under base")
                .to_string_lossy()
                .replace('\\', "/");
            let absolute = path.canonicalize().expect("canonical path");
            files.push((relative, absolute.to_string_lossy().into_owned()));
        }
    }
}
