//! Embeds what `flash build` needs to build Python components on any machine: the Python
//! SDK (`guest-sdk/python/flash_sdk`) and the WIT contract (`wit/`). They are written to
//! the cache directory at build time (see `src/build/embedded.rs`), so a `flash` binary
//! works outside a checkout of this repository.
//!
//! On x86_64 Linux it also compiles `src/build/preinit_shim.c` into a shared library that
//! `flash build` preloads into componentize-py to make Python components reproducible (see
//! that file and `src/build/interpreted.rs`), and sets `cfg(flash_preinit_shim)`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest_dir.join("../..");
    let mut out = String::new();
    for (name, dir, extension) in [
        ("PYTHON_SDK", root.join("guest-sdk/python/flash_sdk"), "py"),
        ("JS_SDK", root.join("guest-sdk/js/src"), "ts"),
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
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    std::fs::write(out_dir.join("embedded.rs"), out).expect("writing embedded.rs");

    println!("cargo::rustc-check-cfg=cfg(flash_preinit_shim)");
    let shim = manifest_dir.join("src/build/preinit_shim.c");
    println!("cargo:rerun-if-changed={}", shim.display());
    let target = |key: &str| std::env::var(key).unwrap_or_default();
    if target("CARGO_CFG_TARGET_OS") == "linux"
        && target("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && target("CARGO_CFG_TARGET_ENV") == "gnu"
    {
        compile_shim(&shim, &out_dir.join("libflash_preinit.so"));
        println!("cargo:rustc-cfg=flash_preinit_shim");
    }
}

/// Compiles the pre-initialisation shim into the shared library `output` with the C
/// compiler `cc` finds for the target (the one that also builds `ring`).
fn compile_shim(source: &Path, output: &Path) {
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .opt_level(2)
        .debug(false)
        .get_compiler();
    let mut command = compiler.to_command();
    command
        .args(["-shared", "-fPIC", "-Wall", "-Wextra", "-o"])
        .arg(output)
        .arg(source);
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("running the C compiler ({command:?}): {e}"));
    assert!(
        status.success(),
        "compiling {} failed ({status}): `flash` needs a C compiler for x86_64 Linux \
         (it already needs one for `ring`)",
        source.display()
    );
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
