//! Artifact packing and unpacking: round trip, reproducibility, and hostile archives.

use std::io::Write;
use std::path::{Path, PathBuf};

use flash_manifest::artifact::{UnpackLimits, pack, unpack};
use flash_manifest::describe::{Compute, Description, EndpointKind, FunctionSpec, ResourceConfig};
use flash_manifest::{ComponentInput, Manifest, ManifestBuilder, sha256_hex};

fn sample(dir: &Path, wasm: &[u8]) -> (Manifest, Vec<(String, PathBuf)>) {
    let local = dir.join("app.wasm");
    std::fs::write(&local, wasm).unwrap();
    let description = Description {
        resources: vec![ResourceConfig {
            name: "cpu".into(),
            kind: EndpointKind::Queue,
            compute: Compute::Cpu {
                instance_ids: vec!["cpu3c-1-2".into()],
            },
            workers_min: 0,
            workers_max: 1,
            idle_timeout_s: None,
            execution_timeout_ms: None,
            scaler_type: None,
            scaler_value: None,
            env: vec![],
            placement: Default::default(),
        }],
        functions: vec![FunctionSpec {
            name: "work".into(),
            resource: "cpu".into(),
            module: "app".into(),
            is_async: false,
            http_method: None,
            http_path: None,
        }],
    };
    let manifest = ManifestBuilder::new("demo", "2026-01-01T00:00:00.000Z")
        .component(ComponentInput {
            name: "app".into(),
            sha256: sha256_hex(wasm),
            size: wasm.len() as u64,
            description,
        })
        .build()
        .unwrap();
    (manifest, vec![("components/app.wasm".into(), local)])
}

#[test]
fn round_trip_gives_back_the_manifest_and_verified_components() {
    let tmp = tempfile::tempdir().unwrap();
    let (manifest, files) = sample(tmp.path(), b"\0asm fake component");
    let archive = tmp.path().join("artifact.tar.gz");
    pack(&archive, &manifest, &files, 0).unwrap();
    let out = tmp.path().join("out");
    let unpacked = unpack(&archive, &out, UnpackLimits::default()).unwrap();
    assert_eq!(unpacked, manifest);
    assert_eq!(
        std::fs::read(out.join("components/app.wasm")).unwrap(),
        b"\0asm fake component"
    );
}

#[test]
fn packing_twice_gives_identical_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (manifest, files) = sample(tmp.path(), b"component bytes");
    let a = tmp.path().join("a.tar.gz");
    let b = tmp.path().join("b.tar.gz");
    pack(&a, &manifest, &files, 1_700_000_000).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    pack(&b, &manifest, &files, 1_700_000_000).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn tampered_component_is_rejected_with_both_digests() {
    let tmp = tempfile::tempdir().unwrap();
    let (manifest, files) = sample(tmp.path(), b"original");
    std::fs::write(&files[0].1, b"tampered").unwrap();
    let archive = tmp.path().join("artifact.tar.gz");
    pack(&archive, &manifest, &files, 0).unwrap();
    let err = unpack(&archive, &tmp.path().join("out"), UnpackLimits::default()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!(
            "artifact component `components/app.wasm` sha256 mismatch: expected {}, got {}",
            sha256_hex(b"original"),
            sha256_hex(b"tampered")
        )),
        "{msg}"
    );
}

/// Writes a raw tar.gz whose single entry has `name` (bypassing the tar crate's own path
/// checks, as an attacker would) and the given type.
fn hostile_archive(path: &Path, name: &str, entry_type: tar::EntryType, link: Option<&str>) {
    let mut header = tar::Header::new_gnu();
    {
        let raw = header.as_old_mut();
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
    }
    header.set_entry_type(entry_type);
    header.set_mode(0o644);
    header.set_size(if link.is_some() { 0 } else { 4 });
    if let Some(target) = link {
        header.set_link_name(target).unwrap();
    }
    header.set_cksum();
    let file = std::fs::File::create(path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    gz.write_all(header.as_bytes()).unwrap();
    if link.is_none() {
        let mut data = [0u8; 512];
        data[..4].copy_from_slice(b"evil");
        gz.write_all(&data).unwrap();
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    gz.finish().unwrap();
}

#[test]
fn parent_dir_entries_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("evil.tar.gz");
    hostile_archive(&archive, "../escape.txt", tar::EntryType::Regular, None);
    let out = tmp.path().join("out");
    let err = unpack(&archive, &out, UnpackLimits::default()).unwrap_err();
    assert!(
        format!("{err:#}").contains("refusing artifact entry `../escape.txt`: `..` is not allowed"),
        "{err:#}"
    );
    assert!(!tmp.path().join("escape.txt").exists());
}

#[test]
fn absolute_entries_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("evil.tar.gz");
    hostile_archive(
        &archive,
        "/tmp/flash-abs-escape.txt",
        tar::EntryType::Regular,
        None,
    );
    let err = unpack(&archive, &tmp.path().join("out"), UnpackLimits::default()).unwrap_err();
    assert!(
        format!("{err:#}").contains("absolute paths are not allowed"),
        "{err:#}"
    );
}

#[test]
fn symlinks_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("evil.tar.gz");
    hostile_archive(
        &archive,
        "components",
        tar::EntryType::Symlink,
        Some("/etc"),
    );
    let err = unpack(&archive, &tmp.path().join("out"), UnpackLimits::default()).unwrap_err();
    assert!(
        format!("{err:#}").contains("links, devices) are not allowed"),
        "{err:#}"
    );
}

#[test]
fn oversize_archives_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (manifest, files) = sample(tmp.path(), &[7u8; 4096]);
    let archive = tmp.path().join("artifact.tar.gz");
    pack(&archive, &manifest, &files, 0).unwrap();
    let limits = UnpackLimits {
        max_total_bytes: 1024,
        max_entries: 100,
    };
    let err = unpack(&archive, &tmp.path().join("out"), limits).unwrap_err();
    assert!(
        format!("{err:#}").contains("unpacks to more than 1024 bytes"),
        "{err:#}"
    );
}
