//! `keyed-state inspect`: a checkpoint's manifest for people (states, key groups, files,
//! sizes, totals) or for tools (`--json`), and `--verify`: every listed file's presence, size
//! and crc32.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use keyed_state::checkpoint::{
    CheckpointStorage, FileRole, LocalStorage, MANIFEST_FILE, MAX_MANIFEST_BYTES, Manifest,
    parse_checkpoint_dir, verify_files,
};
use keyed_state::error::IoAt;
use keyed_state::{CheckpointError, Result};
use serde_json::json;

/// What [`inspect`] found.
#[derive(Debug)]
pub struct Inspection {
    /// The checkpoint's manifest.
    pub manifest: Manifest,
    /// One problem per bad file (`verify` only; empty when every file is intact).
    pub problems: Vec<CheckpointError>,
}

/// Reads the manifest of the checkpoint directory `dir` (`<root>/chk-<id>`) and, with
/// `verify`, checks every file it lists against its size and crc32.
///
/// # Errors
///
/// The directory or its manifest cannot be read, or the manifest does not decode.
pub fn inspect(dir: &Path, verify: bool) -> Result<Inspection> {
    let dir = dir.canonicalize().at(dir)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let root = dir.parent().unwrap_or(&dir).to_path_buf();
    let manifest_path = format!("{name}/{MANIFEST_FILE}");
    let Some(id) = parse_checkpoint_dir(&name) else {
        return Err(CheckpointError::StorageConfig(format!(
            "{}: not a checkpoint directory (chk-<id>)",
            dir.display()
        ))
        .into());
    };
    // Through the storage: never a symbolic link, a FIFO or a device, and no larger than any
    // manifest can be, so a hostile directory can neither hang nor exhaust memory here.
    let storage = Arc::new(LocalStorage::new(&root)?);
    match storage.size(&manifest_path)? {
        Some(n) if n > MAX_MANIFEST_BYTES => {
            return Err(CheckpointError::Corrupt {
                path: manifest_path,
                reason: format!("{n} bytes, more than any manifest ({MAX_MANIFEST_BYTES})"),
            }
            .into());
        }
        _ => {}
    }
    let bytes = storage.get(&manifest_path)?;
    let manifest = Manifest::decode_for(id, &manifest_path, &bytes)?;
    let problems = if verify {
        verify_files(storage.as_ref(), &manifest)
    } else {
        Vec::new()
    };
    Ok(Inspection { manifest, problems })
}

/// Writes `inspection` for people; with `verified`, the verification's verdict too.
///
/// # Errors
///
/// Writing to `out` failed.
pub fn print_human(out: &mut dyn Write, i: &Inspection, verified: bool) -> std::io::Result<()> {
    let m = &i.manifest;
    writeln!(
        out,
        "checkpoint {} ({} snapshot, {} engine)",
        m.checkpoint_id,
        m.kind,
        shown(&m.engine)
    )?;
    writeln!(
        out,
        "key groups {} of {} (max_parallelism {})",
        m.range,
        m.range.len(),
        m.max_parallelism
    )?;
    writeln!(out, "taken at {} ms (engine clock)", m.created_at_millis)?;
    for (name, offset) in &m.offsets {
        writeln!(out, "input offset {} = {offset}", shown(name))?;
    }
    writeln!(out, "states ({}):", m.states.len())?;
    for s in &m.states {
        let ttl = s
            .ttl
            .as_ref()
            .map(|t| format!(", ttl {:?}", t.ttl()))
            .unwrap_or_default();
        let user_key = s
            .user_key_codec
            .as_ref()
            .map(|c| format!(", user key {}", shown(c)))
            .unwrap_or_default();
        writeln!(
            out,
            "  {:<24} {:<12} key {}, namespace {}{user_key}, value {}{ttl}",
            shown(&s.name),
            s.kind,
            shown(&s.key_codec),
            shown(&s.namespace_codec),
            shown(&s.value_codec)
        )?;
    }
    if !m.timers.is_empty() {
        writeln!(out, "timer services ({}):", m.timers.len())?;
        for t in &m.timers {
            writeln!(
                out,
                "  {:<24} key {}, namespace {}",
                shown(&t.name),
                shown(&t.key_codec),
                shown(&t.namespace_codec)
            )?;
        }
    }
    writeln!(out, "files ({}):", m.files.len())?;
    for f in &m.files {
        let blocks = if f.blocks.is_empty() {
            String::new()
        } else {
            format!(", {} key-group blocks", f.blocks.len())
        };
        writeln!(
            out,
            "  {:<48} {:>12} crc32 {:08x} {}{blocks}",
            f.path,
            human_bytes(f.size),
            f.crc32,
            role(f.role)
        )?;
    }
    writeln!(
        out,
        "total: full size {} ({} bytes), uploaded by this checkpoint {} ({} bytes)",
        human_bytes(m.full_size()),
        m.full_size(),
        human_bytes(m.uploaded_bytes),
        m.uploaded_bytes
    )?;
    if verified {
        if i.problems.is_empty() {
            writeln!(
                out,
                "verify: all {} files present, sizes and crc32 match",
                m.files.len()
            )?;
        } else {
            for p in &i.problems {
                writeln!(out, "BAD {p}")?;
            }
        }
    }
    Ok(())
}

/// `inspection` as the JSON object `--json` prints; with `verified`, a `verify` member.
pub fn to_json(i: &Inspection, verified: bool) -> serde_json::Value {
    let m = &i.manifest;
    let states: Vec<_> = m
        .states
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "kind": s.kind.to_string(),
                "key_codec": s.key_codec,
                "namespace_codec": s.namespace_codec,
                "user_key_codec": s.user_key_codec,
                "value_codec": s.value_codec,
                "ttl_millis": s.ttl.as_ref().map(|t| t.ttl_millis()),
            })
        })
        .collect();
    let files: Vec<_> = m
        .files
        .iter()
        .map(|f| {
            json!({
                "path": f.path,
                "role": role(f.role),
                "size": f.size,
                "crc32": f.crc32,
                "blocks": f.blocks.iter().map(|b| json!({
                    "group": b.group, "offset": b.offset, "len": b.len,
                    "raw_len": b.raw_len, "crc32": b.crc32,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut out = json!({
        "checkpoint_id": m.checkpoint_id,
        "kind": m.kind.to_string(),
        "engine": m.engine,
        "max_parallelism": m.max_parallelism,
        "key_groups": { "start": m.range.start(), "end": m.range.end(), "count": m.range.len() },
        "created_at_millis": m.created_at_millis,
        "offsets": m.offsets.iter().map(|(n, o)| json!({"name": n, "offset": o})).collect::<Vec<_>>(),
        "states": states,
        "timer_services": m.timers.iter().map(|t| json!({
            "name": t.name, "key_codec": t.key_codec, "namespace_codec": t.namespace_codec,
        })).collect::<Vec<_>>(),
        "files": files,
        "full_size": m.full_size(),
        "uploaded_bytes": m.uploaded_bytes,
    });
    if verified {
        out["verify"] = json!({
            "ok": i.problems.is_empty(),
            "problems": i.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        });
    }
    out
}

/// `text` as a terminal may show it: names in a manifest are anyone's bytes, and control
/// characters (escape sequences) are printed escaped rather than interpreted.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        std::borrow::Cow::Owned(text.escape_debug().to_string())
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// `n` bytes with a binary unit (`1.5 MiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    let mut scaled = n;
    while scaled >= 1024 && unit + 1 < UNITS.len() {
        scaled /= 1024;
        unit += 1;
    }
    if unit == 0 {
        return format!("{n} B");
    }
    // One decimal, from integers: n / 1024^unit to a tenth.
    let divisor = 1u64 << (10 * unit);
    let tenths = (u128::from(n) * 10 + u128::from(divisor) / 2) / u128::from(divisor);
    format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit])
}

fn role(r: FileRole) -> &'static str {
    match r {
        FileRole::SharedSst => "shared sst",
        FileRole::Private => "private",
        FileRole::KeyGroupData => "key-group data",
        FileRole::Timers => "timers",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::{human_bytes, shown};

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(shown("count"), "count");
        assert_eq!(shown("evil\u{1b}[2Jname"), "evil\\u{1b}[2Jname");
        assert_eq!(shown("a\nb"), "a\\nb");
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(20 * 1024 * 1024 + 200 * 1024), "20.2 MiB");
        assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB");
    }
}
