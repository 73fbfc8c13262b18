//! Artifact packing and unpacking: round trip, reproducibility, and hostile archives.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use flash_manifest::artifact::{Selection, UnpackLimits, pack, unpack, unpack_selected};
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

#[test]
fn a_selection_unpacks_only_the_files_it_names() {
    let tmp = tempfile::tempdir().unwrap();
    let (manifest, files) = sample(tmp.path(), b"\0asm component");
    let archive = tmp.path().join("artifact.tar.gz");
    pack(&archive, &manifest, &files, 0).unwrap();

    let none = tmp.path().join("none");
    let read = unpack_selected(
        std::fs::File::open(&archive).unwrap(),
        &none,
        UnpackLimits::default(),
        |m| {
            assert_eq!(m, &manifest, "the selection is made from the manifest");
            Selection::Only(BTreeSet::new())
        },
    )
    .unwrap();
    assert_eq!(read, manifest);
    assert!(none.join("flash_manifest.json").is_file());
    assert!(!none.join("components/app.wasm").exists());

    let some = tmp.path().join("some");
    let wanted = BTreeSet::from(["components/app.wasm".to_string()]);
    unpack_selected(
        std::fs::File::open(&archive).unwrap(),
        &some,
        UnpackLimits::default(),
        |_| Selection::Only(wanted),
    )
    .unwrap();
    assert_eq!(
        std::fs::read(some.join("components/app.wasm")).unwrap(),
        b"\0asm component"
    );
}

/// What a selection leaves out is never decompressed: an archive that turns into garbage
/// after a component unpacks when only the manifest is wanted, and fails otherwise.
#[test]
fn reading_stops_once_the_selected_files_are_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (manifest, _) = sample(tmp.path(), b"\0asm component");
    let archive = tmp.path().join("artifact.tar.gz");
    {
        let file = std::fs::File::create(&archive).unwrap();
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::default(),
        ));
        let json = manifest.to_json_pretty();
        let mut header = tar::Header::new_ustar();
        header.set_size(json.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "flash_manifest.json", &json[..])
            .unwrap();
        // A component the selection leaves out, incompressible so that it is large in the
        // stream too (the decompressor reads a little ahead of what the tar reader asks).
        let mut state = 1u32;
        let filler: Vec<u8> = (0..256 << 10)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (state >> 16) as u8
            })
            .collect();
        let mut header = tar::Header::new_ustar();
        header.set_size(filler.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "components/app.wasm", &filler[..])
            .unwrap();
        tar.get_mut().flush().unwrap();
        // Not deflate data: decompressing past the manifest fails.
        tar.get_mut().get_mut().write_all(&[0xff; 4096]).unwrap();
        std::mem::forget(tar);
    }
    let only_manifest = unpack_selected(
        std::fs::File::open(&archive).unwrap(),
        &tmp.path().join("a"),
        UnpackLimits::default(),
        |_| Selection::Only(BTreeSet::new()),
    );
    assert_eq!(only_manifest.unwrap(), manifest);
    let everything = unpack(&archive, &tmp.path().join("b"), UnpackLimits::default());
    assert!(
        everything.is_err(),
        "the garbage is reached without a selection"
    );
}

#[test]
fn a_selected_file_is_verified_and_a_missing_one_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (manifest, files) = sample(tmp.path(), b"original");
    std::fs::write(&files[0].1, b"tampered").unwrap();
    let archive = tmp.path().join("artifact.tar.gz");
    pack(&archive, &manifest, &files, 0).unwrap();
    let wanted = BTreeSet::from(["components/app.wasm".to_string()]);
    let err = unpack_selected(
        std::fs::File::open(&archive).unwrap(),
        &tmp.path().join("out"),
        UnpackLimits::default(),
        |_| Selection::Only(wanted),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("sha256 mismatch"), "{err:#}");

    // Left out, the tampered component is neither written nor used, so nothing fails.
    unpack_selected(
        std::fs::File::open(&archive).unwrap(),
        &tmp.path().join("left-out"),
        UnpackLimits::default(),
        |_| Selection::Only(BTreeSet::new()),
    )
    .unwrap();

    // Packed without its component, an artifact that needs it says which file is missing.
    pack(&archive, &manifest, &[], 0).unwrap();
    let err = unpack(
        &archive,
        &tmp.path().join("missing"),
        UnpackLimits::default(),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("artifact component `components/app.wasm` is missing"),
        "{err:#}"
    );
}
