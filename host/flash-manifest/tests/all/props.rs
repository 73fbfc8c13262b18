//! Property tests with hostile generators for the two parsers of `flash-manifest` that read
//! what a stranger may have written: the artifact unpacker and the manifest parser.
//!
//! - [`unpack_from`] and [`unpack_tar_from`] get random bytes, random tar streams (hostile
//!   paths, every entry type, declared sizes that lie, GNU long name and PAX records, some
//!   over their cap, bad checksums, garbage) and mutations of a valid artifact. They must
//!   never panic, never write outside the destination, never create a link, never read
//!   more decompressed bytes than the limit (+1), never write more bytes or files than the
//!   limits, and return a manifest only for an artifact that verifies.
//! - [`Manifest::from_slice`] gets random bytes, random JSON, and a valid manifest edited at
//!   random (members added, removed, retyped or given other values). It must never panic,
//!   and what it accepts must write back to the same manifest; [`verify_dir`] on a hostile
//!   manifest never reads outside its directory.
//!
//! In the normal test suite each unpacker property runs 64 cases and each manifest property
//! 256 (about two seconds in all). A longer run, e.g. after touching `artifact.rs` or
//! `manifest.rs` (`PROPTEST_CASES` sets every property's count):
//!
//! ```sh
//! PROPTEST_CASES=20000 cargo test -p flash-manifest --release --test all props::
//! ```
//!
//! A failure prints the shrunk input and saves its seed in `tests/all/props.proptest-regressions`;
//! commit that file, so the case runs first from then on. docs/architecture.md ("Property
//! tests") lists every property test of Flash.

use std::io::Write;
use std::path::Path;

use flash_manifest::artifact::{UnpackLimits, pack, unpack_from, unpack_tar_from, verify_dir};
use flash_manifest::describe::{Compute, Description, EndpointKind, FunctionSpec, ResourceConfig};
use flash_manifest::{ComponentInput, Manifest, ManifestBuilder, sha256_hex};
use proptest::prelude::*;
use serde_json::Value;

/// The limits every unpacker property runs under: small, so that generated archives reach
/// them.
const LIMITS: UnpackLimits = UnpackLimits {
    max_total_bytes: 64 << 10,
    max_entries: 24,
};

/// Stands for the test's temporary root in generated paths and link targets, so absolute
/// paths aim at a place the property can check.
const ROOT: &str = "{root}";

// ---- Generators -------------------------------------------------------------------------

/// Paths an attacker would try, and a few ordinary ones.
fn hostile_path() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"flash_manifest.json".to_vec()),
        Just(b"components/app.wasm".to_vec()),
        Just(b"components".to_vec()),
        Just(b"components/".to_vec()),
        Just(b"../escape".to_vec()),
        Just(b"../../escape".to_vec()),
        Just(b"a/../../escape".to_vec()),
        Just(b"components/../../escape".to_vec()),
        Just(format!("{ROOT}/escape").into_bytes()),
        Just(format!("{ROOT}/dest/../escape").into_bytes()),
        Just(b"/".to_vec()),
        Just(b".".to_vec()),
        Just(b"./".to_vec()),
        Just(b"".to_vec()),
        Just(b"a//b".to_vec()),
        Just(b"./a/./b".to_vec()),
        Just(b"..\\escape".to_vec()),
        Just(b"x\0y".to_vec()),
        Just(b"\xff\xfe".to_vec()),
        Just("deep/".repeat(30).into_bytes()),
        "[a-c./]{1,12}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..24),
    ]
}

/// Entry types: every kind tar knows, and any byte.
fn entry_type() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => prop::sample::select(b"0\x0012345678gxLKSVMN".to_vec()),
        1 => any::<u8>(),
    ]
}

/// One record of a hostile tar stream.
#[derive(Debug, Clone)]
enum Record {
    /// A header: `size` declared, `data` bytes following (padded to a block), a link
    /// target, and whether the checksum is left wrong.
    Entry {
        path: Vec<u8>,
        kind: u8,
        size: u64,
        data: u64,
        link: Vec<u8>,
        bad_checksum: bool,
    },
    /// A GNU long name record holding `name`, declaring `size` bytes.
    LongName { name: Vec<u8>, size: Option<u64> },
    /// A PAX record of `key=value` lines, declaring `size` bytes when set.
    Pax {
        records: Vec<(String, String)>,
        size: Option<u64>,
    },
    /// Bytes that are no tar header.
    Garbage(Vec<u8>),
    /// A block of zeros (an end-of-archive marker, early).
    Zeros,
}

/// Sizes that lie: none, small, exact-ish, one block off, the limit's edge, huge.
fn declared_size() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        0u64..2048,
        Just(LIMITS.max_total_bytes),
        Just(LIMITS.max_total_bytes + 1),
        Just(64 << 10),
        Just((64 << 10) + 1),
        Just(1 << 33),
        Just(u64::MAX >> 1),
    ]
}

fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        6 => (
            hostile_path(),
            entry_type(),
            declared_size(),
            prop_oneof![0u64..2048, Just(LIMITS.max_total_bytes + 512)],
            hostile_path(),
            prop::bool::weighted(0.05),
        )
            .prop_map(|(path, kind, size, data, link, bad_checksum)| Record::Entry {
                path,
                kind,
                size,
                data,
                link,
                bad_checksum,
            }),
        2 => (
            prop_oneof![9 => hostile_path(), 1 => Just(vec![b'n'; 70_000])],
            prop::option::weighted(0.3, declared_size()),
        )
            .prop_map(|(name, size)| Record::LongName { name, size }),
        2 => (
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("path".to_string()),
                        Just("size".to_string()),
                        Just("linkpath".to_string()),
                        Just("GNU.sparse.map".to_string()),
                        Just("mtime".to_string()),
                        "[a-z.]{0,8}",
                    ],
                    prop_oneof![
                        hostile_path().prop_map(|p| String::from_utf8_lossy(&p).into_owned()),
                        declared_size().prop_map(|s| s.to_string()),
                        Just("v".repeat(70_000)),
                        Just("-1".to_string()),
                        Just("\n".to_string()),
                        ".{0,8}",
                    ],
                ),
                0..4,
            ),
            prop::option::weighted(0.3, declared_size()),
        )
            .prop_map(|(records, size)| Record::Pax { records, size }),
        1 => prop::collection::vec(any::<u8>(), 1..700).prop_map(Record::Garbage),
        1 => Just(Record::Zeros),
    ]
}

/// The tar bytes of `records` (raw: nothing the tar crate's builder would refuse is
/// refused), optionally closed with the two end blocks.
fn write_records(records: &[Record], root: &Path, end: bool) -> Vec<u8> {
    let root = root
        .to_str()
        .expect("temporary directories have UTF-8 paths");
    let fill = |bytes: &[u8]| -> Vec<u8> {
        match std::str::from_utf8(bytes) {
            Ok(s) => s.replace(ROOT, root).into_bytes(),
            Err(_) => bytes.to_vec(),
        }
    };
    let mut out = Vec::new();
    let header_for = |out: &mut Vec<u8>, name: &[u8], kind: u8, size: u64, link: &[u8]| {
        let mut header = tar::Header::new_gnu();
        let raw = header.as_old_mut();
        let name = fill(name);
        let n = name.len().min(raw.name.len());
        raw.name[..n].copy_from_slice(&name[..n]);
        let link = fill(link);
        let n = link.len().min(raw.linkname.len());
        raw.linkname[..n].copy_from_slice(&link[..n]);
        header.set_entry_type(tar::EntryType::new(kind));
        header.set_mode(0o644);
        header.set_size(size);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
    };
    let pad = |out: &mut Vec<u8>| out.resize(out.len().div_ceil(512) * 512, 0);
    for record in records {
        match record {
            Record::Entry {
                path,
                kind,
                size,
                data,
                link,
                bad_checksum,
            } => {
                let start = out.len();
                header_for(&mut out, path, *kind, *size, link);
                if *bad_checksum {
                    out[start + 148] ^= 0x01;
                }
                out.extend((0..*data).map(|i| (i % 251) as u8));
                pad(&mut out);
            }
            Record::LongName { name, size } => {
                let mut name = fill(name);
                name.push(0);
                header_for(
                    &mut out,
                    b"././@LongLink",
                    b'L',
                    size.unwrap_or(name.len() as u64),
                    b"",
                );
                out.extend_from_slice(&name);
                pad(&mut out);
            }
            Record::Pax { records, size } => {
                let body: Vec<u8> = records
                    .iter()
                    .flat_map(|(k, v)| pax_line(k, &String::from_utf8_lossy(&fill(v.as_bytes()))))
                    .collect();
                header_for(
                    &mut out,
                    b"PaxHeaders/x",
                    b'x',
                    size.unwrap_or(body.len() as u64),
                    b"",
                );
                out.extend_from_slice(&body);
                pad(&mut out);
            }
            Record::Garbage(bytes) => out.extend_from_slice(bytes),
            Record::Zeros => out.extend_from_slice(&[0; 512]),
        }
    }
    if end {
        out.extend_from_slice(&[0; 1024]);
    }
    out
}

/// One PAX line: `"<len> <key>=<value>\n"`, the length counting itself.
fn pax_line(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("writing to memory");
    gz.finish().expect("writing to memory")
}

/// A valid artifact (manifest and one component) as tar bytes, for mutation.
fn valid_artifact_tar() -> Vec<u8> {
    static TAR: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    TAR.get_or_init(pack_valid_artifact).clone()
}

fn pack_valid_artifact() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let wasm = b"\0asm fake component";
    let local = dir.path().join("app.wasm");
    std::fs::write(&local, wasm).expect("writing the component");
    let manifest = sample_manifest(wasm);
    let archive = dir.path().join("artifact.tar.gz");
    pack(
        &archive,
        &manifest,
        &[("components/app.wasm".into(), local)],
        0,
    )
    .expect("packing");
    let mut tar = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&archive).expect("archive")),
        &mut tar,
    )
    .expect("decompressing");
    tar
}

fn sample_manifest(wasm: &[u8]) -> Manifest {
    let description = Description {
        resources: vec![
            ResourceConfig {
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
                env: vec![("K".into(), "v".into())],
                placement: Default::default(),
            },
            ResourceConfig {
                name: "api".into(),
                kind: EndpointKind::LoadBalanced,
                compute: Compute::Cpu {
                    instance_ids: vec!["cpu3c-1-2".into()],
                },
                workers_min: 1,
                workers_max: 2,
                idle_timeout_s: None,
                execution_timeout_ms: Some(5000),
                scaler_type: None,
                scaler_value: None,
                env: vec![],
                placement: Default::default(),
            },
        ],
        functions: vec![
            FunctionSpec {
                name: "work".into(),
                resource: "cpu".into(),
                module: "app".into(),
                is_async: false,
                http_method: None,
                http_path: None,
            },
            FunctionSpec {
                name: "predict".into(),
                resource: "api".into(),
                module: "app".into(),
                is_async: true,
                http_method: Some("POST".into()),
                http_path: Some("/predict".into()),
            },
        ],
    };
    ManifestBuilder::new("demo", "2026-01-01T00:00:00.000Z")
        .component(ComponentInput {
            name: "app".into(),
            sha256: sha256_hex(wasm),
            size: wasm.len() as u64,
            description,
            peer_calls: flash_manifest::peer_calls::PeerCalls::Unknown,
        })
        .build()
        .expect("a valid sample app")
}

/// A mutation of a byte string: flip, overwrite, insert, delete or cut.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, byte: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        4 => (at, 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        3 => (at, any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        1 => (at, prop::collection::vec(any::<u8>(), 1..600))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (at, 1usize..600).prop_map(|(at, len)| Mutation::Delete { at, len }),
        1 => at.prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        if bytes.is_empty() {
            return;
        }
        let len = bytes.len();
        match m {
            Mutation::Flip { at, bit } => bytes[at % len] ^= 1 << bit,
            Mutation::Set { at, byte } => bytes[at % len] = *byte,
            Mutation::Insert { at, bytes: new } => {
                let at = at % (len + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Delete { at, len: n } => {
                let at = at % len;
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Truncate { at } => bytes.truncate(at % len),
        }
    }
}

// ---- The unpacker's invariants ----------------------------------------------------------

/// What an unpacker property feeds the unpacker.
enum Input {
    /// gzip'd bytes, for [`unpack_from`].
    Gz(Vec<u8>),
    /// A decompressed tar stream, for [`unpack_tar_from`]: how much of it is read is
    /// checked against the limit (every decompressed byte counts).
    Tar(Vec<u8>),
}

/// A reader that counts what is taken from it.
struct Counting<'a> {
    bytes: &'a [u8],
    read: u64,
}

impl std::io::Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.bytes.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Unpacks `input` into `<root>/a/b/dest` (deep enough that the `../..` of a generated path
/// still lands inside `root`) and checks every invariant; `root` holds nothing else but a
/// sentinel file.
fn check_unpack(root: &Path, input: Input) -> Result<(), TestCaseError> {
    let dest = root.join("a/b/dest");
    let sentinel = root.join("sentinel");
    std::fs::write(&sentinel, b"untouched").map_err(fail)?;
    let result = match input {
        Input::Gz(gz) => unpack_from(&gz[..], &dest, LIMITS),
        Input::Tar(tar) => {
            let mut reader = Counting {
                bytes: &tar,
                read: 0,
            };
            let result = unpack_tar_from(&mut reader, &dest, LIMITS);
            // The limit, plus the one byte that tells "over the limit" from "ends there".
            prop_assert!(
                reader.read <= LIMITS.max_total_bytes + 1,
                "{} decompressed bytes read",
                reader.read
            );
            result
        }
    };

    // Nothing outside `dest`: around it, `root` holds what it held before.
    prop_assert_eq!(names(root)?, ["a", "sentinel"]);
    prop_assert_eq!(names(&root.join("a"))?, ["b"]);
    prop_assert_eq!(names(&root.join("a/b"))?, ["dest"]);
    prop_assert_eq!(
        std::fs::read(&sentinel).map_err(fail)?,
        b"untouched".to_vec()
    );

    // Inside: only files and directories, within the limits.
    let (mut files, mut bytes) = (0usize, 0u64);
    let mut stack = vec![dest.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(fail)? {
            let entry = entry.map_err(fail)?;
            let meta = std::fs::symlink_metadata(entry.path()).map_err(fail)?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                prop_assert!(
                    meta.is_file(),
                    "{} is neither file nor directory",
                    entry.path().display()
                );
                files += 1;
                bytes += meta.len();
            }
        }
    }
    prop_assert!(files <= LIMITS.max_entries, "{files} files");
    prop_assert!(bytes <= LIMITS.max_total_bytes, "{bytes} bytes");

    match result {
        Ok(manifest) => {
            // A manifest comes back only for an artifact whose components verify.
            prop_assert!(verify_dir(&dest.canonicalize().map_err(fail)?, &manifest).is_ok());
        }
        Err(err) => {
            let msg = format!("{err:#}");
            prop_assert!(!msg.is_empty());
        }
    }
    Ok(())
}

/// The sorted names in `dir`.
fn names(dir: &Path) -> Result<Vec<String>, TestCaseError> {
    let mut names = std::fs::read_dir(dir)
        .map_err(fail)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(fail)?;
    names.sort();
    Ok(names)
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn unpacking_random_bytes_is_refused_cleanly(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        as_tar in any::<bool>(),
    ) {
        let tmp = tempfile::tempdir().map_err(fail)?;
        let input = if as_tar { Input::Tar(bytes) } else { Input::Gz(bytes) };
        check_unpack(tmp.path(), input)?;
    }

    #[test]
    fn unpacking_hostile_tar_streams_keeps_every_invariant(
        records in prop::collection::vec(record(), 0..8),
        end in prop::bool::weighted(0.8),
    ) {
        let tmp = tempfile::tempdir().map_err(fail)?;
        let tar = write_records(&records, tmp.path(), end);
        check_unpack(tmp.path(), Input::Tar(tar))?;
    }

    #[test]
    fn a_valid_artifact_with_hostile_records_appended_keeps_every_invariant(
        records in prop::collection::vec(record(), 1..6),
    ) {
        let tmp = tempfile::tempdir().map_err(fail)?;
        let mut tar = valid_artifact_tar();
        tar.truncate(tar.len() - 1024);
        tar.extend(write_records(&records, tmp.path(), true));
        check_unpack(tmp.path(), Input::Tar(tar))?;
    }

    #[test]
    fn unpacking_a_mutated_artifact_keeps_every_invariant(
        mutations in prop::collection::vec(mutation(), 1..6),
        after_compression in any::<bool>(),
    ) {
        let tmp = tempfile::tempdir().map_err(fail)?;
        let mut tar = valid_artifact_tar();
        let input = if after_compression {
            let mut gz = gzip(&tar);
            mutate(&mut gz, &mutations);
            Input::Gz(gz)
        } else {
            mutate(&mut tar, &mutations);
            Input::Tar(tar)
        };
        check_unpack(tmp.path(), input)?;
    }
}

// ---- The manifest parser ----------------------------------------------------------------

/// Any JSON value, nested a few levels.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| {
            serde_json::Number::from_f64(f).map(Value::Number)
        }),
        ".{0,12}".prop_map(Value::from),
        hostile_path().prop_map(|p| Value::from(String::from_utf8_lossy(&p).into_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((manifest_key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Keys of the manifest, and others.
fn manifest_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "version",
            "generated_at",
            "project_name",
            "flash_contract",
            "resources",
            "function_registry",
            "routes",
            "components",
            "models",
            "source_fingerprint",
            "resources_endpoints",
            "resource_type",
            "functions",
            "is_load_balanced",
            "config_hash",
            "gpuIds",
            "instanceIds",
            "workersMin",
            "workersMax",
            "idleTimeout",
            "scalerType",
            "scalerValue",
            "env",
            "name",
            "module",
            "component",
            "component_sha256",
            "sha256",
            "size",
            "file",
            "sessions",
        ])
        .prop_map(str::to_string),
        "[a-zA-Z_]{0,10}",
    ]
}

/// One edit of a manifest's JSON, at the `pick`-th node (pre-order, the root is 0).
#[derive(Debug, Clone)]
enum Edit {
    /// The node becomes any JSON value.
    Replace { pick: usize, value: Value },
    /// A string, number or boolean node gets another value of its type.
    SameType {
        pick: usize,
        string: String,
        number: serde_json::Number,
        boolean: bool,
    },
    /// An object node loses one member.
    Remove { pick: usize, member: usize },
    /// An object node gains a member (a known key or not).
    Add {
        pick: usize,
        key: String,
        value: Value,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    let pick = any::<usize>();
    let number = prop_oneof![
        any::<u64>().prop_map(serde_json::Number::from),
        any::<i64>().prop_map(serde_json::Number::from),
        any::<u32>().prop_map(serde_json::Number::from),
        any::<f64>().prop_filter_map("finite", serde_json::Number::from_f64),
    ];
    let string = prop_oneof![
        hostile_path().prop_map(|p| String::from_utf8_lossy(&p).into_owned()),
        ".{0,16}",
    ];
    prop_oneof![
        2 => (pick, json()).prop_map(|(pick, value)| Edit::Replace { pick, value }),
        3 => (pick, string, number, any::<bool>()).prop_map(
            |(pick, string, number, boolean)| Edit::SameType { pick, string, number, boolean }
        ),
        1 => (pick, any::<usize>()).prop_map(|(pick, member)| Edit::Remove { pick, member }),
        2 => (pick, manifest_key(), json())
            .prop_map(|(pick, key, value)| Edit::Add { pick, key, value }),
    ]
}

fn apply(value: &mut Value, edit: &Edit) {
    let (Edit::Replace { pick, .. }
    | Edit::SameType { pick, .. }
    | Edit::Remove { pick, .. }
    | Edit::Add { pick, .. }) = edit;
    let mut pick = pick % count_nodes(value);
    let Some(node) = nth_node(value, &mut pick) else {
        return;
    };
    match (edit, node) {
        (Edit::Replace { value, .. }, node) => *node = value.clone(),
        (Edit::SameType { string, .. }, Value::String(s)) => *s = string.clone(),
        (Edit::SameType { number, .. }, Value::Number(n)) => *n = number.clone(),
        (Edit::SameType { boolean, .. }, Value::Bool(b)) => *b = *boolean,
        (Edit::Remove { member, .. }, Value::Object(map)) if !map.is_empty() => {
            let key = map.keys().nth(member % map.len()).cloned();
            if let Some(key) = key {
                map.shift_remove(&key);
            }
        }
        (Edit::Add { key, value, .. }, Value::Object(map)) => {
            map.insert(key.clone(), value.clone());
        }
        _ => {}
    }
}

fn nth_node<'a>(value: &'a mut Value, pick: &mut usize) -> Option<&'a mut Value> {
    if *pick == 0 {
        return Some(value);
    }
    *pick -= 1;
    match value {
        Value::Object(map) => map.values_mut().find_map(|v| nth_node(v, pick)),
        Value::Array(items) => items.iter_mut().find_map(|v| nth_node(v, pick)),
        _ => None,
    }
}

fn count_nodes(value: &Value) -> usize {
    1 + match value {
        Value::Object(map) => map.values().map(count_nodes).sum::<usize>(),
        Value::Array(items) => items.iter().map(count_nodes).sum::<usize>(),
        _ => 0,
    }
}

/// What the parser accepts writes back to the same manifest.
fn check_round_trip(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(manifest) = Manifest::from_slice(bytes) {
        let again = Manifest::from_slice(&manifest.to_json_pretty())
            .map_err(|e| TestCaseError::fail(format!("written manifest does not parse: {e:#}")))?;
        prop_assert_eq!(again, manifest);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parsing_random_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_round_trip(&bytes)?;
    }

    #[test]
    fn parsing_random_json_never_panics_and_round_trips(value in json()) {
        check_round_trip(value.to_string().as_bytes())?;
    }

    #[test]
    fn an_edited_manifest_round_trips_or_is_refused(edits in prop::collection::vec(edit(), 1..4)) {
        let mut value = serde_json::to_value(sample_manifest(b"component")).map_err(fail)?;
        for edit in &edits {
            apply(&mut value, edit);
        }
        check_round_trip(value.to_string().as_bytes())?;
    }

    #[test]
    fn verify_dir_never_reads_outside_its_directory(
        path in hostile_path(),
        function_component in hostile_path(),
    ) {
        // `<root>/secret` exists and the manifest lists it with its true digest, under a
        // path that reaches it from the empty `<root>/dir` if anything does: verification
        // succeeds only if it read outside `dir`.
        let tmp = tempfile::tempdir().map_err(fail)?;
        let root = tmp.path().to_str().ok_or_else(|| fail("non-UTF-8 temp dir"))?;
        let dir = tmp.path().join("dir");
        std::fs::create_dir(&dir).map_err(fail)?;
        std::fs::write(tmp.path().join("secret"), b"secret").map_err(fail)?;
        std::fs::write(tmp.path().join("escape"), b"secret").map_err(fail)?;
        let fill = |p: &[u8]| String::from_utf8_lossy(p).replace(ROOT, root);
        let mut manifest = sample_manifest(b"secret");
        let component = manifest.components.pop_first().ok_or_else(|| fail("no component"))?.1;
        manifest.components.insert(fill(&path), component);
        for entry in manifest.resources.values_mut() {
            for f in &mut entry.functions {
                f.component = fill(&function_component);
            }
        }
        prop_assert!(verify_dir(&dir, &manifest).is_err());
    }
}
