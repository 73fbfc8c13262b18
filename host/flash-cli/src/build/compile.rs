//! Building guest components with their own toolchains.
//!
//! Rust components are built with `cargo build --release --target wasm32-wasip2` and the
//! `.wasm` is taken from cargo's JSON messages (no guessing of target paths); cargo's
//! fingerprints make an unchanged crate a no-op. Python components are built by
//! [`super::python`], JavaScript and TypeScript ones by [`super::js`]. Other languages use a `command` whose `inputs` are compared with the
//! output's mtime.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::project::{ComponentDecl, ComponentKind, Project};

/// Builds one component and returns the path of its `.wasm`.
pub fn compile(project: &Project, decl: &ComponentDecl, output: &dyn Fn(&str)) -> Result<PathBuf> {
    let dir = project.root.join(&decl.path);
    if !dir.is_dir() {
        bail!("component directory {} does not exist", dir.display());
    }
    match decl.kind {
        ComponentKind::Rust => cargo_build(&dir, output),
        ComponentKind::Python => super::python::build(project, decl, output),
        ComponentKind::Js => super::js::build(project, decl, output),
        ComponentKind::Command => command_build(&dir, decl, output),
    }
}

fn cargo_build(dir: &Path, output: &dyn Fn(&str)) -> Result<PathBuf> {
    let mut child = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running cargo (is Rust installed? see https://rustup.rs)")?;
    let stderr = child.stderr.take().expect("piped stderr");
    // Cargo's human output (progress, diagnostics) arrives on stderr.
    let (stderr_lines, wasm) =
        std::thread::scope(|scope| -> Result<(Vec<String>, Option<PathBuf>)> {
            let reader = scope.spawn(move || {
                BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                    .collect::<Vec<_>>()
            });
            let stdout = child.stdout.take().expect("piped stdout");
            let mut wasm = None;
            for line in BufReader::new(stdout).lines() {
                let line = line?;
                let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                match msg["reason"].as_str() {
                    Some("compiler-artifact") => {
                        if let Some(name) = msg["target"]["name"].as_str() {
                            output(&format!("compiled {name}"));
                        }
                        for f in msg["filenames"].as_array().into_iter().flatten() {
                            if let Some(f) = f.as_str().filter(|f| f.ends_with(".wasm")) {
                                wasm = Some(PathBuf::from(f));
                            }
                        }
                    }
                    Some("compiler-message") => {
                        if let Some(rendered) = msg["message"]["rendered"].as_str() {
                            rendered.lines().for_each(output);
                        }
                    }
                    _ => {}
                }
            }
            Ok((reader.join().unwrap_or_default(), wasm))
        })?;
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!(
            "cargo build failed ({status}):\n{}\nhint: is the target installed? `rustup target add wasm32-wasip2`",
            stderr_lines.join("\n")
        );
    }
    wasm.context(
        "cargo built no .wasm file: the crate needs `crate-type = [\"cdylib\"]` in its [lib] section",
    )
}

fn command_build(dir: &Path, decl: &ComponentDecl, output: &dyn Fn(&str)) -> Result<PathBuf> {
    let command = decl
        .command
        .as_deref()
        .context("`command` is required for kind = \"command\"")?;
    let out = dir.join(
        decl.output
            .as_deref()
            .context("`output` is required for kind = \"command\"")?,
    );
    if up_to_date(dir, &out, &decl.inputs) {
        output("up to date");
        return Ok(out);
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let command = command.replace("{output}", &shell_quote(&out.to_string_lossy()));
    output(&format!("$ {command}"));
    let result = Command::new("sh")
        .arg("-c")
        .arg(&command)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `{command}`"))?;
    for line in String::from_utf8_lossy(&result.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&result.stderr).lines())
    {
        output(line);
    }
    if !result.status.success() {
        bail!(
            "`{command}` failed ({}):\n{}{}",
            result.status,
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        );
    }
    if !out.is_file() {
        bail!("`{command}` succeeded but did not write {}", out.display());
    }
    Ok(out)
}

/// The output exists and is newer than every declared input (no inputs: always rebuild).
fn up_to_date(dir: &Path, out: &Path, inputs: &[PathBuf]) -> bool {
    let Ok(out_time) = std::fs::metadata(out).and_then(|m| m.modified()) else {
        return false;
    };
    !inputs.is_empty()
        && inputs.iter().all(|input| {
            std::fs::metadata(dir.join(input))
                .and_then(|m| m.modified())
                .is_ok_and(|t| t <= out_time)
        })
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
