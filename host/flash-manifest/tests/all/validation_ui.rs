//! UI tests for the build-time validation rules, in the style of Spin's manifest tests:
//! each `tests/ui/<case>.json` (an app's component descriptions) sits beside
//! `tests/ui/<case>.err`, the exact error it must produce. Re-bless after an intended
//! message change with `FLASH_TEST_BLESS=1 cargo test -p flash-manifest --test all
//! validation_ui`.

use std::path::Path;

use flash_manifest::describe::Description;
use flash_manifest::{ComponentInput, ManifestBuilder};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    project: String,
    components: Vec<CaseComponent>,
    #[serde(default)]
    models: Vec<flash_manifest::ModelInput>,
}

#[derive(Deserialize)]
struct CaseComponent {
    name: String,
    description: Description,
}

fn build(case: &Case) -> Result<flash_manifest::Manifest, flash_manifest::ValidationErrors> {
    let mut builder = ManifestBuilder::new(&case.project, "2026-01-01T00:00:00.000Z");
    for c in &case.components {
        builder = builder.component(ComponentInput {
            name: c.name.clone(),
            sha256: format!("{:0>64}", c.name.len()),
            size: 1,
            description: c.description.clone(),
            peer_calls: flash_manifest::peer_calls::PeerCalls::Unknown,
        });
    }
    for m in &case.models {
        builder = builder.model(m.clone());
    }
    builder.build()
}

#[test]
fn every_rule_reports_its_exact_error() {
    // The package dir at run time (a binary reused from another checkout of the shared
    // target dir would carry that checkout's path).
    let package = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf(),
        Into::into,
    );
    let dir = package.join("tests/ui");
    let bless = std::env::var_os("FLASH_TEST_BLESS").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 15,
        "expected one case per rule, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for path in cases {
        let case: Case = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let actual = match build(&case) {
            Ok(_) => "<built without error>\n".to_string(),
            Err(errors) => format!("{errors}\n"),
        };
        let expected_path = path.with_extension("err");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                path.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
