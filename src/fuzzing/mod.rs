//! The bodies of the cargo-fuzz targets in `fuzz/`, here in the library so that a test on a
//! stable toolchain (`tests/fuzz_corpus.rs`) replays every committed corpus file and every past
//! crash through exactly the code the fuzzer runs.
//!
//! Each body takes the fuzzer's bytes and **panics only on a real defect**: a decoder that
//! panics, allocates without bound or loops on malformed input; a round trip that changes a
//! value; two composite keys that collide; an engine that disagrees with the model; a damaged
//! checkpoint that restores to anything but a typed error or exactly the original state.
//! Malformed input that is refused with a typed error is the expected, passing outcome.
//!
//! ```
//! // Any bytes are a valid input; a body returns normally unless it found a defect.
//! keyed_state::fuzzing::manifest_decode(b"KSCP\x00\x02 not really a manifest");
//! keyed_state::fuzzing::codec_roundtrip(&[3, 0xff, 0x00, 0x10]);
//! ```

// Test data: small counters and indexes made into keys and values on purpose.
#![allow(clippy::cast_possible_truncation, reason = "fuzz inputs and test data")]

mod fixture;
mod model;

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::backend::rocksdb::layout;
use crate::checkpoint::format::blocks::{DataFileWriter, read_block};
use crate::checkpoint::{FileRole, Manifest};
use crate::codec::Codec;
use crate::key::Key;
use fixture::{Kind, fixture};

pub use model::ops_vs_model;

/// A fuzz target's body.
pub type Body = fn(&[u8]);

/// Every target: its name (the `fuzz/fuzz_targets/<name>.rs` binary and the
/// `fuzz/corpus/<name>/` directory) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("manifest_decode", manifest_decode),
    ("heap_snapshot_decode", heap_snapshot_decode),
    ("savepoint_decode", savepoint_decode),
    ("codec_roundtrip", codec_roundtrip),
    ("key_layout", key_layout),
    ("ops_vs_model", ops_vs_model),
    ("restore_mutated", restore_mutated),
];

/// Decodes a manifest from arbitrary bytes, with the trailing crc32 fixed up first so that
/// mutations reach the decoder behind the checksum (without it, almost every input stops at
/// the checksum); whatever decodes must encode to bytes that decode to the same manifest.
pub fn manifest_decode(data: &[u8]) {
    let mut bytes = data.to_vec();
    if let Some(split) = bytes.len().checked_sub(4) {
        let crc = crc32fast::hash(&bytes[..split]);
        bytes[split..].copy_from_slice(&crc.to_be_bytes());
    }
    if let Ok(m) = Manifest::decode("fuzz", &bytes) {
        let bytes = m
            .encode()
            .unwrap_or_else(|e| panic!("a decoded manifest does not encode: {e}"));
        let again = Manifest::decode("fuzz", &bytes)
            .unwrap_or_else(|e| panic!("a decoded manifest does not re-decode: {e}"));
        assert_eq!(again, m, "manifest round trip");
    }
}

/// Decodes arbitrary bytes with a built-in codec chosen by the first byte; whatever decodes
/// must re-encode to the same bytes (encodings are canonical) and re-decode to the same value;
/// nested decoding must consume exactly what nested encoding wrote. Two values decoded back to
/// back must order their encodings as the values, for the codecs that promise order
/// preservation.
pub fn codec_roundtrip(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    // Order preservation is promised for integers, bool, options of them and top-level
    // strings and byte strings, not for tuples with variable-width members (their nested
    // members are length-prefixed; DESIGN.md §3).
    match which % 14 {
        0 => check_codec::<u8>(rest, true),
        1 => check_codec::<u16>(rest, true),
        2 => check_codec::<u32>(rest, true),
        3 => check_codec::<u64>(rest, true),
        4 => check_codec::<i32>(rest, true),
        5 => check_codec::<i64>(rest, true),
        6 => check_codec::<bool>(rest, true),
        7 => check_codec::<String>(rest, true),
        8 => check_codec::<Vec<u8>>(rest, true),
        9 => check_codec::<Bytes>(rest, true),
        10 => check_codec::<Option<u64>>(rest, true),
        11 => check_codec::<(u32, String)>(rest, false),
        12 => check_codec::<(Option<String>, i64, Vec<u8>)>(rest, false),
        _ => check_codec::<()>(rest, true),
    }
}

fn check_codec<T: Codec + PartialEq + PartialOrd + std::fmt::Debug>(data: &[u8], ordered: bool) {
    if let Ok(v) = T::decode(data) {
        let mut out = Vec::new();
        v.encode(&mut out);
        assert_eq!(out, data, "decoding then encoding {v:?} changed the bytes");
        assert_eq!(T::decode(&out).ok().as_ref(), Some(&v));
    }
    // Nested: two values back to back, each consuming exactly its own bytes.
    let mut input = data;
    if let Ok(a) = T::decode_nested(&mut input) {
        let used = data.len() - input.len();
        let mut out = Vec::new();
        a.encode_nested(&mut out);
        assert_eq!(out, &data[..used], "nested re-encoding of {a:?}");
        if let Ok(b) = T::decode_nested(&mut input) {
            let (mut ea, mut eb) = (Vec::new(), Vec::new());
            a.encode(&mut ea);
            b.encode(&mut eb);
            // Order preservation, where the codec promises it.
            if let Some(order) = a.partial_cmp(&b).filter(|_| ordered) {
                assert_eq!(
                    ea.cmp(&eb),
                    order,
                    "encodings of {a:?} and {b:?} order differently"
                );
            }
        }
    }
}

/// Builds RocksDB composite keys `[group][key][namespace][user key]` from two tuples read off
/// the input, with 1- and 2-byte group prefixes and fixed-width and length-prefixed parts:
/// distinct tuples never give the same key, a (key, namespace) prefix never prefixes another
/// tuple's, and every key decodes back to its tuple. The rest of the input, read as a stored
/// list with and without TTL (runs, and the per-element stamps written before them), never
/// panics, and a list that decodes is written back in canonical form with the same elements.
pub fn key_layout(data: &[u8]) {
    type Tuple = (Vec<u8>, String, u64);
    let mut input = data;
    let Ok(a) = Tuple::decode_nested(&mut input) else {
        return;
    };
    let Ok(b) = Tuple::decode_nested(&mut input) else {
        return;
    };
    for max_parallelism in [128u32, 32_768] {
        let prefix_len = layout::group_prefix_len(max_parallelism);
        let full = |t: &Tuple| {
            let key = Key::new(t.0.clone(), max_parallelism).expect("a valid parallelism");
            let mut out = Vec::new();
            layout::key_prefix::<Vec<u8>, String>(&mut out, prefix_len, &key, &t.1);
            let prefix = out.len();
            layout::write_value_part(&mut out, &t.2);
            (out, prefix, key.group())
        };
        let (ka, pa, ga) = full(&a);
        let (kb, pb, _) = full(&b);
        if (&a.0, &a.1) == (&b.0, &b.1) {
            assert_eq!(ka[..pa], kb[..pb], "equal (key, namespace), equal prefixes");
            assert_eq!(ka == kb, a.2 == b.2, "user keys decide the rest");
        } else {
            assert!(!ka[..pa].starts_with(&kb[..pb]), "{a:?} prefixed by {b:?}");
            assert!(!kb[..pb].starts_with(&ka[..pa]), "{b:?} prefixed by {a:?}");
            assert_ne!(ka, kb, "{a:?} and {b:?} collide");
        }
        let (group, key, ns, rest) =
            layout::decode_prefix::<Vec<u8>, String>(&ka, prefix_len).expect("a key decodes");
        assert_eq!((group, key, ns), (ga, a.0.clone(), a.1.clone()));
        assert_eq!(layout::read_user_key::<u64>(rest).ok(), Some(a.2));
    }
    for ttl in [false, true] {
        if let Ok(elements) = layout::read_elements::<Vec<u8>>(input, ttl) {
            let mut written = Vec::new();
            layout::write_elements(&mut written, ttl, &elements);
            let mut again = layout::list_elements(&written, ttl);
            assert_eq!(again.by_ref().count(), elements.len());
            assert!(!ttl || again.is_canonical(), "written lists are canonical");
            let read = layout::read_elements::<Vec<u8>>(&written, ttl).expect("written decodes");
            assert_eq!(read, elements);
        }
    }
}

/// Replaces the raw contents of one key-group block of a real heap checkpoint (the state file
/// or the timers file, chosen by the first byte) with the input, re-compressed and with every
/// checksum fixed up, so the record decoders behind the checksums see it; restores on the
/// heap. Any outcome but a panic is fine: a typed error, or some state.
pub fn heap_snapshot_decode(data: &[u8]) {
    replace_block(Kind::Heap, data, false);
}

/// As [`heap_snapshot_decode`] for a savepoint (canonical format) written by RocksDB, restored
/// into RocksDB (even first byte) or the heap (odd).
pub fn savepoint_decode(data: &[u8]) {
    let to_rocksdb = data.first().is_some_and(|b| b % 2 == 0);
    replace_block(Kind::Savepoint, data, to_rocksdb);
}

fn replace_block(kind: Kind, data: &[u8], to_rocksdb: bool) {
    let Some((&choice, raw)) = data.split_first() else {
        return;
    };
    let f = fixture(kind);
    let role = if choice & 2 == 0 {
        FileRole::KeyGroupData
    } else {
        FileRole::Timers
    };
    let mut manifest = f.manifest.clone();
    let Some(entry) = manifest.files.iter_mut().find(|e| e.role == role) else {
        return;
    };
    let Some(original) = f.files.get(&entry.path) else {
        return;
    };
    if entry.blocks.is_empty() {
        return;
    }
    let victim = (choice as usize >> 2) % entry.blocks.len();
    let mut writer = DataFileWriter::new();
    for (i, block) in entry.blocks.iter().enumerate() {
        let bytes = if i == victim {
            Bytes::copy_from_slice(raw)
        } else {
            read_block(&entry.path, original, block).expect("the fixture's blocks read")
        };
        writer
            .add_block(block.group, &bytes)
            .expect("compressing in memory");
    }
    let (bytes, blocks) = writer.finish();
    entry.size = bytes.len() as u64;
    entry.crc32 = crc32fast::hash(&bytes);
    entry.blocks = blocks;
    let mut files = f.files.clone();
    files.insert(entry.path.clone(), bytes);
    let _ = fixture::restore(&files, &manifest, to_rocksdb);
}

/// Mutates one file of a small real checkpoint (a heap checkpoint, a RocksDB incremental
/// checkpoint or a savepoint: the first byte chooses, and which engine restores it) — or its
/// manifest — by the rest of the input (pairs of offset and xor mask, or a truncation), and
/// restores: the result must be a typed error or exactly the original state.
pub fn restore_mutated(data: &[u8]) {
    let [choice, file, op, rest @ ..] = data else {
        return;
    };
    let (kind, to_rocksdb) = match choice % 4 {
        0 => (Kind::Heap, false),
        1 => (Kind::RocksDb, true),
        2 => (Kind::Savepoint, true),
        _ => (Kind::Savepoint, false),
    };
    let f = fixture(kind);
    let mut files: BTreeMap<String, Vec<u8>> = f.files.clone();
    let manifest_path = files
        .keys()
        .find(|p| p.ends_with("/_manifest"))
        .cloned()
        .expect("the fixture has a manifest");
    let paths: Vec<String> = files.keys().cloned().collect();
    let path = &paths[*file as usize % paths.len()];
    let Some(bytes) = files.get_mut(path) else {
        return;
    };
    if op % 4 == 0 {
        // Truncate to a length read from the input.
        let len = rest.first().map_or(0, |&b| bytes.len() * b as usize / 256);
        bytes.truncate(len);
    } else {
        for pair in rest.chunks_exact(3) {
            if bytes.is_empty() {
                break;
            }
            let offset = u16::from_le_bytes([pair[0], pair[1]]) as usize % bytes.len();
            bytes[offset] ^= pair[2];
        }
    }
    let manifest = match Manifest::decode(&manifest_path, &files[&manifest_path]) {
        Ok(m) => m,
        Err(_) => return, // a typed error: the expected outcome for a damaged manifest
    };
    if let Ok(state) = fixture::restore(&files, &manifest, to_rocksdb) {
        assert_eq!(
            state, f.dump,
            "a mutation of {path} restored without error into a different state"
        );
    }
}

/// Seed inputs for `target`, made from real checkpoints and values (see
/// `examples/fuzz_corpus.rs`, which writes them to `fuzz/corpus/<target>/`).
pub fn seed_corpus(target: &str) -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    match target {
        "manifest_decode" => {
            for kind in [Kind::Heap, Kind::RocksDb, Kind::Savepoint] {
                seeds.push(
                    fixture(kind)
                        .manifest
                        .encode()
                        .expect("the fixture's manifest encodes"),
                );
            }
        }
        "heap_snapshot_decode" | "savepoint_decode" => {
            let kind = if target == "heap_snapshot_decode" {
                Kind::Heap
            } else {
                Kind::Savepoint
            };
            let f = fixture(kind);
            for (choice, role) in [(0u8, FileRole::KeyGroupData), (2, FileRole::Timers)] {
                let Some(entry) = f.manifest.files.iter().find(|e| e.role == role) else {
                    continue;
                };
                for (i, block) in entry.blocks.iter().enumerate().take(4) {
                    let raw = read_block(&entry.path, &f.files[&entry.path], block)
                        .expect("the fixture's blocks read");
                    for engine in [0u8, 1] {
                        let mut seed = vec![choice | ((i as u8) << 2) | engine];
                        seed.extend_from_slice(&raw);
                        seeds.push(seed);
                    }
                }
            }
        }
        "codec_roundtrip" => {
            let mut push = |which: u8, f: &dyn Fn(&mut Vec<u8>)| {
                let mut s = vec![which];
                f(&mut s);
                seeds.push(s);
            };
            push(3, &|o| 42u64.encode(o));
            push(5, &|o| (-7i64).encode(o));
            push(7, &|o| "keyed-state".to_string().encode_nested(o));
            push(8, &|o| vec![0u8, 1, 0, 255].encode_nested(o));
            push(10, &|o| Some(9u64).encode_nested(o));
            push(11, &|o| (5u32, "x".to_string()).encode_nested(o));
            push(12, &|o| {
                (Some("a".to_string()), -1i64, vec![0u8]).encode_nested(o)
            });
        }
        "key_layout" => {
            let mut s = Vec::new();
            (vec![1u8, 2], "ns".to_string(), 7u64).encode_nested(&mut s);
            (vec![1u8], "\u{2}ns".to_string(), 7u64).encode_nested(&mut s);
            seeds.push(s.clone());
            // Then a TTL list: two runs, and an element stamped as before runs.
            let elements = [(5, vec![1u8, 2]), (5, Vec::new()), (9, vec![3])];
            let stamped: Vec<_> = elements
                .into_iter()
                .map(|(t, e)| crate::ttl::Stamped::new(t, e))
                .collect();
            layout::write_elements(&mut s, true, &stamped);
            s.push(9);
            s.extend_from_slice(&9u64.to_be_bytes());
            s.push(4);
            seeds.push(s);
        }
        "ops_vs_model" => {
            seeds.push((0u8..=255).collect());
            seeds.push((0..512).map(|i: u32| (i * 37 % 251) as u8).collect());
        }
        "restore_mutated" => {
            for choice in 0..4u8 {
                seeds.push(vec![choice, 0, 1, 10, 0, 0x40]);
                seeds.push(vec![choice, 1, 0, 128]);
            }
        }
        _ => {}
    }
    seeds
}
