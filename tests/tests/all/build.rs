//! `flash build` end to end: the real CLI on the real example and test guests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn flash(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(flash_tests::bin("flash"));
    cmd.args(args)
        .current_dir(dir)
        // Guest builds must not wait on the lock the outer `cargo test` holds.
        .env("CARGO_TARGET_DIR", flash_tests::guest_target_dir())
        .env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("running flash")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "flash failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The manifest without what legitimately changes between toolchains and runs.
fn redacted(manifest: &Path) -> Value {
    let mut v: Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, val) in map.iter_mut() {
                    if [
                        "generated_at",
                        "component_sha256",
                        "sha256",
                        "size",
                        "source_fingerprint",
                    ]
                    .contains(&k.as_str())
                    {
                        *val = Value::String("<redacted>".into());
                    } else {
                        walk(val);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

fn sha256_file(path: &Path) -> String {
    flash_manifest::sha256_hex(&std::fs::read(path).unwrap())
}

#[test]
fn quickstart_builds_a_manifest_matching_the_snapshot_reproducibly() {
    let example = flash_tests::repo_root().join("examples/quickstart");
    let flash_dir = example.join(".flash");
    let _ = std::fs::remove_dir_all(&flash_dir);

    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    let stdout = ok(&flash(&example, &["build"], &epoch));
    assert!(
        stdout.contains("POST /predict"),
        "summary table missing routes:\n{stdout}"
    );
    assert!(
        stdout.contains("Built quickstart (2 resources, 4 functions)"),
        "{stdout}"
    );
    assert!(stdout.contains("\n  peer calls from api ("), "{stdout}");
    let manifest_path = flash_dir.join("flash_manifest.json");
    let artifact = flash_dir.join("artifact.tar.gz");
    let first = sha256_file(&artifact);

    // Snapshot of the manifest (re-bless with FLASH_TEST_BLESS=1).
    let snapshot = flash_tests::repo_root().join("tests/snapshots/quickstart_manifest.json");
    let actual = redacted(&manifest_path);
    if std::env::var_os("FLASH_TEST_BLESS").is_some() {
        std::fs::write(
            &snapshot,
            serde_json::to_string_pretty(&actual).unwrap() + "\n",
        )
        .unwrap();
    }
    let expected: Value = serde_json::from_slice(&std::fs::read(&snapshot).unwrap()).unwrap();
    assert_eq!(
        actual,
        expected,
        "manifest differs from {}",
        snapshot.display()
    );
    let manifest: Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(manifest["generated_at"], "2023-11-14T22:13:20.000Z");
    // Only `api` calls another resource (`predict` awaits `embed`): only it will be
    // deployed with the API key that peer calls need.
    assert_eq!(manifest["resources"]["api"]["makes_remote_calls"], true);
    assert_eq!(
        manifest["resources"]["gpu_config"]["makes_remote_calls"],
        false
    );

    // The artifact round-trips: same manifest, components verified.
    let out = tempfile::tempdir().unwrap();
    let unpacked =
        flash_manifest::artifact::unpack(&artifact, out.path(), Default::default()).unwrap();
    assert_eq!(serde_json::to_value(&unpacked).unwrap(), manifest);

    // Reproducible: a build from scratch gives the same bytes.
    std::fs::remove_dir_all(&flash_dir).unwrap();
    ok(&flash(&example, &["build"], &epoch));
    assert_eq!(
        sha256_file(&artifact),
        first,
        "two builds gave different artifacts"
    );

    // Unchanged inputs: up to date, nothing rebuilt, same bytes.
    let stdout = ok(&flash(&example, &["build"], &[]));
    assert!(stdout.contains("Up to date: quickstart"), "{stdout}");
    let _ = std::fs::remove_dir_all(&flash_dir);
}

#[test]
fn python_and_rust_components_share_one_manifest() {
    let project = tempfile::tempdir().unwrap();
    let repo = flash_tests::repo_root();
    let toml = format!(
        "[app]\nname = \"polyglot\"\n\n\
         [[component]]\nname = \"rust-guest\"\nkind = \"rust\"\npath = {rust:?}\n\n\
         [[component]]\nname = \"python-guest\"\nkind = \"command\"\npath = {py:?}\n\
         command = \"componentize-py -d ../../../wit -w function componentize app -o {{output}}\"\n\
         output = {out:?}\ninputs = [\"app.py\"]\n",
        rust = repo.join("tests/guests/rust-guest").display().to_string(),
        py = repo.join("tests/guests/python-guest").display().to_string(),
        out = project
            .path()
            .join("python-guest.wasm")
            .display()
            .to_string(),
    );
    std::fs::write(project.path().join("flash.toml"), toml).unwrap();
    let path = format!(
        "{}:{}",
        flash_tests::venv_bin_dir().unwrap().display(),
        std::env::var("PATH").unwrap()
    );
    let stdout = ok(&flash(project.path(), &["build"], &[("PATH", &path)]));
    assert!(stdout.contains("py_config"), "{stdout}");
    let manifest =
        flash_manifest::Manifest::read(&project.path().join(".flash/flash_manifest.json")).unwrap();
    assert_eq!(manifest.resource_of("py_add"), Some("py_config"));
    assert_eq!(manifest.resource_of("add"), Some("test_queue"));
    let (_, py_add) = manifest.function("py_add").unwrap();
    assert_eq!(py_add.component, "components/python-guest.wasm");
    assert!(
        manifest
            .components
            .contains_key("components/rust-guest.wasm")
    );
}

#[test]
fn build_outside_a_project_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = flash(dir.path(), &["build"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "error: no flash.toml found in {} or any parent directory, and no Python module there uses flash_sdk; create a project with `flash init <name> [--lang python]` or run from a project directory",
        dir.path().canonicalize().unwrap().display()
    );
    assert_eq!(stderr.trim(), expected);
}

#[test]
fn init_scaffolds_a_project_that_builds() {
    let dir = tempfile::tempdir().unwrap();
    ok(&flash(dir.path(), &["init", "hello-app"], &[]));
    let project: PathBuf = dir.path().join("hello-app");
    let cache = dir.path().join("cache");
    let cache_env = [("FLASH_CACHE_DIR", cache.to_str().unwrap())];
    let stdout = ok(&flash(&project, &["build"], &cache_env));
    assert!(stdout.contains("POST /score"), "{stdout}");
    assert!(stdout.contains("gpu_config"), "{stdout}");
    let out = flash(dir.path(), &["init", "hello-app"], &[]);
    assert!(
        !out.status.success(),
        "init over a non-empty directory must fail"
    );

    // The build compiled the component once into the AOT cache; `flash cache` shows and
    // empties it.
    let aot = cache.join("aot");
    let info = ok(&flash(&project, &["cache", "info"], &cache_env));
    assert!(
        info.contains(&format!("AOT cache: {}", aot.display())),
        "{info}"
    );
    assert!(info.contains("holds 1 compiled entry, "), "{info}");
    assert!(
        info.contains("(bound: 2048.0 MiB, FLASH_CACHE_MAX_MB)"),
        "{info}"
    );
    let cleaned = ok(&flash(&project, &["cache", "clean"], &cache_env));
    assert!(
        cleaned.starts_with("removed 1 compiled entry, "),
        "{cleaned}"
    );
    assert_eq!(std::fs::read_dir(&aot).unwrap().count(), 0);
    let out = flash(
        &project,
        &["cache", "info"],
        &[cache_env[0], ("FLASH_CACHE_MAX_MB", "2G")],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("FLASH_CACHE_MAX_MB=`2G` is not a whole number of MiB"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn inference_example_packs_its_model_with_sha256() {
    let example = flash_tests::repo_root().join("examples/inference");
    let flash_dir = example.join(".flash");
    let _ = std::fs::remove_dir_all(&flash_dir);
    let stdout = ok(&flash(&example, &["build"], &[]));
    assert!(stdout.contains("Built inference"), "{stdout}");

    let model = example.join("model/classifier.onnx");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(flash_dir.join("flash_manifest.json")).unwrap())
            .unwrap();
    let entry = &manifest["models"]["classifier"];
    assert_eq!(entry["file"], "models/classifier.onnx");
    assert_eq!(entry["sha256"], sha256_file(&model));
    assert_eq!(entry["resources"], serde_json::json!(["classifier"]));
    assert_eq!(entry["sessions"], 4);

    // The artifact carries the model byte for byte and unpacking verifies it.
    let out = tempfile::tempdir().unwrap();
    flash_manifest::artifact::unpack(
        &flash_dir.join("artifact.tar.gz"),
        out.path(),
        Default::default(),
    )
    .unwrap();
    assert_eq!(
        std::fs::read(out.path().join("models/classifier.onnx")).unwrap(),
        std::fs::read(&model).unwrap()
    );
    // A tampered model is refused.
    std::fs::write(out.path().join("models/classifier.onnx"), b"tampered").unwrap();
    let parsed = flash_manifest::Manifest::read(&out.path().join("flash_manifest.json")).unwrap();
    let err = flash_manifest::artifact::verify_dir(out.path(), &parsed).unwrap_err();
    assert!(format!("{err:#}").contains("sha256 mismatch"), "{err:#}");
    let _ = std::fs::remove_dir_all(&flash_dir);
}

#[test]
fn the_committed_example_model_is_what_its_script_writes() {
    let dir = tempfile::tempdir().unwrap();
    flash_tests::inference_models(dir.path(), &[]).unwrap();
    assert_eq!(
        sha256_file(&dir.path().join("classifier.onnx")),
        sha256_file(&flash_tests::repo_root().join("examples/inference/model/classifier.onnx")),
        "examples/inference/model/classifier.onnx differs from what make_model.py writes; \
         regenerate it with `python3 examples/inference/model/make_model.py`"
    );
}
