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
            peer_calls: flash_manifest::peer_calls::PeerCalls::Unknown,
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

// ---- Artifact bombs (#13 item 10) -------------------------------------------------------
//
// The tar crate reads GNU long-name and PAX records whole, and skips the data of entries
// the unpacker does not read; neither used to count. These archives are written raw, as an
// attacker would, and large ones are generated as a stream (never held in memory).

/// A reader that counts the bytes taken from it: how much of the compressed file the
/// unpacker consumed before refusing it.
struct Counting<R> {
    inner: R,
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: std::io::Read> std::io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// A raw header: `name` copied as is (no checks), `entry_type`, `size` declared.
fn raw_header(name: &str, entry_type: tar::EntryType, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(entry_type);
    header.set_mode(0o644);
    header.set_size(size);
    header.set_cksum();
    header
}

/// Writes `len` bytes of `byte`, then zeros up to the next 512-byte block.
fn write_repeated(w: &mut impl Write, byte: u8, len: u64) {
    let chunk = vec![byte; 1 << 16];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        w.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    let pad = (512 - len % 512) % 512;
    w.write_all(&vec![0u8; pad as usize]).unwrap();
}

/// A PAX record (`"<len> <key>=<value>\n"`, the length counting itself).
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

/// The tar stream of a valid artifact (manifest + component), without its end blocks.
fn valid_tar_entries(dir: &Path) -> Vec<u8> {
    let (manifest, files) = sample(dir, b"\0asm fake component");
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(bytes.len() as u64);
        tar.append_data(&mut header, path, bytes).unwrap();
    };
    add("flash_manifest.json", &manifest.to_json_pretty());
    add(&files[0].0, &std::fs::read(&files[0].1).unwrap());
    let mut bytes = tar.into_inner().unwrap();
    bytes.truncate(bytes.len() - 1024); // the builder's end blocks: more entries follow
    bytes
}

/// An archive whose first record is an extension record (`L` or `x`) of `len` bytes of
/// `a`, followed by a small regular file: hundreds of MB that compress to a few hundred KB.
fn extension_bomb(path: &Path, entry_type: tar::EntryType, len: u64) {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    gz.write_all(raw_header("././@LongLink", entry_type, len).as_bytes())
        .unwrap();
    write_repeated(&mut gz, b'a', len);
    gz.write_all(raw_header("x", tar::EntryType::Regular, 4).as_bytes())
        .unwrap();
    write_repeated(&mut gz, b'x', 4);
    gz.write_all(&[0u8; 1024]).unwrap();
    gz.finish().unwrap().flush().unwrap();
}

/// Unpacks `archive` from a counting reader: the error (at most 1,000 characters: a bomb's
/// path must not flood the test output) and the compressed bytes consumed.
fn unpack_counting(archive: &Path, dest: &Path, limits: UnpackLimits) -> (String, u64) {
    let read = std::rc::Rc::new(std::cell::Cell::new(0));
    let reader = Counting {
        inner: std::io::BufReader::new(std::fs::File::open(archive).unwrap()),
        read: read.clone(),
    };
    let result = flash_manifest::artifact::unpack_from(reader, dest, limits);
    let msg = match result {
        Ok(_) => "unpacked".to_string(),
        Err(err) => format!("{err:#}").chars().take(1000).collect(),
    };
    (msg, read.get())
}

const BOMB_BYTES: u64 = 300 << 20;

#[test]
fn a_gnu_longname_bomb_is_refused_before_it_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("bomb.tar.gz");
    extension_bomb(&archive, tar::EntryType::GNULongName, BOMB_BYTES);
    let compressed = std::fs::metadata(&archive).unwrap().len();
    assert!(
        compressed < 2 << 20,
        "the bomb compresses tiny: {compressed}"
    );
    let (msg, consumed) = unpack_counting(&archive, &tmp.path().join("out"), Default::default());
    assert!(
        msg.contains(&format!(
            "artifact is not valid: its GNU long name record is {BOMB_BYTES} bytes, over the \
             65536-byte limit; rebuild with `flash build`"
        )),
        "{msg}"
    );
    // Refused from its header: the record itself was never decompressed.
    assert!(consumed < compressed / 4, "{consumed} of {compressed}");
}

#[test]
fn a_pax_record_bomb_is_refused_before_it_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("bomb.tar.gz");
    extension_bomb(&archive, tar::EntryType::XHeader, BOMB_BYTES);
    let compressed = std::fs::metadata(&archive).unwrap().len();
    let (msg, consumed) = unpack_counting(&archive, &tmp.path().join("out"), Default::default());
    assert!(
        msg.contains(&format!(
            "artifact is not valid: its PAX extended header record is {BOMB_BYTES} bytes, over \
             the 65536-byte limit; rebuild with `flash build`"
        )),
        "{msg}"
    );
    assert!(consumed < compressed / 4, "{consumed} of {compressed}");
}

/// A valid artifact plus `notes.txt`, whose PAX record declares `pax_size` bytes while its
/// tar header declares `header_size`; `data` bytes of `n` follow the header.
fn pax_size_lie(path: &Path, dir: &Path, pax_size: u64, header_size: u64, data: u64) {
    let file = std::fs::File::create(path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    gz.write_all(&valid_tar_entries(dir)).unwrap();
    let record = pax_record("size", &pax_size.to_string());
    gz.write_all(
        raw_header(
            "PaxHeaders/notes.txt",
            tar::EntryType::XHeader,
            record.len() as u64,
        )
        .as_bytes(),
    )
    .unwrap();
    gz.write_all(&record).unwrap();
    gz.write_all(&vec![0u8; 512 - record.len()]).unwrap();
    gz.write_all(raw_header("notes.txt", tar::EntryType::Regular, header_size).as_bytes())
        .unwrap();
    write_repeated(&mut gz, b'n', data);
    gz.write_all(&[0u8; 1024]).unwrap();
    gz.finish().unwrap();
}

#[test]
fn a_pax_size_lie_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let limits = UnpackLimits {
        max_total_bytes: 1 << 20,
        max_entries: 100,
    };
    // The PAX record declares 8 MiB, the header 4 bytes: 8 MiB follow, past the 1 MiB limit,
    // and the file would be written with the header's 4 bytes.
    let archive = tmp.path().join("more.tar.gz");
    pax_size_lie(&archive, tmp.path(), 8 << 20, 4, 8 << 20);
    let out = tmp.path().join("more");
    let err = unpack(&archive, &out, limits).unwrap_err();
    assert!(
        format!("{err:#}").contains(
            "artifact is not valid: entry `notes.txt` declares 8388608 bytes in its PAX record \
             but 4 in its tar header; rebuild with `flash build`"
        ),
        "{err:#}"
    );
    assert!(!out.join("notes.txt").exists());
    // The PAX record declares fewer bytes than the header (and than follow it).
    let archive = tmp.path().join("fewer.tar.gz");
    pax_size_lie(&archive, tmp.path(), 4, 4096, 4096);
    let out = tmp.path().join("fewer");
    let err = unpack(&archive, &out, UnpackLimits::default()).unwrap_err();
    assert!(
        format!("{err:#}").contains(
            "artifact is not valid: entry `notes.txt` declares 4 bytes in its PAX record but \
             4096 in its tar header"
        ),
        "{err:#}"
    );
    assert!(!out.join("notes.txt").exists());
}

#[test]
fn a_truncated_entry_is_refused_not_written_short() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("short.tar.gz");
    let file = std::fs::File::create(&archive).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    gz.write_all(&valid_tar_entries(tmp.path())).unwrap();
    // Declares 4096 bytes; the stream ends after 1000.
    gz.write_all(raw_header("notes.txt", tar::EntryType::Regular, 4096).as_bytes())
        .unwrap();
    gz.write_all(&[b'n'; 1000]).unwrap();
    gz.finish().unwrap();
    let err = unpack(&archive, &tmp.path().join("out"), UnpackLimits::default()).unwrap_err();
    assert!(
        format!("{err:#}").contains(
            "artifact is not valid: entry `notes.txt` is truncated: the archive holds 1000 of \
             its 4096 bytes; rebuild with `flash build`"
        ),
        "{err:#}"
    );
}

#[test]
fn skipped_data_and_headers_count_against_the_byte_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let limits = UnpackLimits {
        max_total_bytes: 1 << 20,
        max_entries: 10_000,
    };
    // A directory entry declaring 64 MiB of data: nothing is written, but all of it would be
    // decompressed to skip it.
    let archive = tmp.path().join("dir.tar.gz");
    let file = std::fs::File::create(&archive).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    gz.write_all(&valid_tar_entries(tmp.path())).unwrap();
    gz.write_all(raw_header("d", tar::EntryType::Directory, 64 << 20).as_bytes())
        .unwrap();
    write_repeated(&mut gz, 0, 64 << 20);
    gz.write_all(&[0u8; 1024]).unwrap();
    gz.finish().unwrap();
    let (msg, _) = unpack_counting(&archive, &tmp.path().join("dir"), limits);
    assert!(
        msg.contains(
            "artifact is not valid: it unpacks to more than 1048576 bytes (file data, headers, \
             extension records and padding all count); rebuild with `flash build`"
        ),
        "{msg}"
    );
    // 4,000 empty directories: no file data, 2 MB of headers.
    let archive = tmp.path().join("headers.tar.gz");
    let file = std::fs::File::create(&archive).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    gz.write_all(&valid_tar_entries(tmp.path())).unwrap();
    for i in 0..4000 {
        gz.write_all(raw_header(&format!("d{i}"), tar::EntryType::Directory, 0).as_bytes())
            .unwrap();
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    gz.finish().unwrap();
    let (msg, _) = unpack_counting(&archive, &tmp.path().join("headers"), limits);
    assert!(
        msg.contains("it unpacks to more than 1048576 bytes"),
        "{msg}"
    );
}

#[test]
fn long_paths_in_bounded_extension_records_still_unpack() {
    let tmp = tempfile::tempdir().unwrap();
    let long = format!("models/{}/weights.bin", "deep".repeat(40));
    let archive = tmp.path().join("long.tar.gz");
    let file = std::fs::File::create(&archive).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    gz.write_all(&valid_tar_entries(tmp.path())).unwrap();
    // The tar crate's builder writes a GNU long name record for a path this long.
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(3);
    header.set_mode(0o644);
    tar.append_data(&mut header, &long, &b"gnu"[..]).unwrap();
    let mut bytes = tar.into_inner().unwrap();
    bytes.truncate(bytes.len() - 1024);
    gz.write_all(&bytes).unwrap();
    // A PAX record with a path (and a size that agrees with the header).
    let mut record = pax_record("path", &format!("{long}.pax"));
    record.extend(pax_record("size", "3"));
    gz.write_all(
        raw_header("PaxHeaders/x", tar::EntryType::XHeader, record.len() as u64).as_bytes(),
    )
    .unwrap();
    gz.write_all(&record).unwrap();
    gz.write_all(&vec![0u8; 512 - record.len()]).unwrap();
    gz.write_all(raw_header("short-name", tar::EntryType::Regular, 3).as_bytes())
        .unwrap();
    write_repeated(&mut gz, b'p', 3);
    gz.write_all(&[0u8; 1024]).unwrap();
    gz.finish().unwrap();

    let out = tmp.path().join("out");
    unpack(&archive, &out, UnpackLimits::default()).unwrap();
    assert_eq!(std::fs::read(out.join(&long)).unwrap(), b"gnu");
    assert_eq!(
        std::fs::read(out.join(format!("{long}.pax"))).unwrap(),
        b"ppp"
    );
    assert!(!out.join("short-name").exists());
}
