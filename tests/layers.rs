//! The architecture's one rule, checked: no module of the library imports a module above it
//! (DESIGN.md §1). Every `crate::<module>` path in every non-test source file must point to a
//! module of the same layer or a lower one; the fuzz harness, a test body that ships with the
//! library, may import anything.

use std::collections::BTreeSet;
use std::path::Path;

#[path = "support/package.rs"]
mod package;

/// Top-level modules by layer, top first.
const LAYERS: &[(&str, u8)] = &[
    ("fuzzing", 9),
    ("keyed", 6),
    ("state", 5),
    ("timer", 5),
    ("backend", 4),
    ("checkpoint", 3),
    ("types", 2),
    ("key", 1),
    ("ttl", 1),
    ("key_group", 0),
    ("codec", 0),
    ("clock", 0),
    ("error", 0),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_imports_one_above_it() {
    let src = package::manifest_dir().join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(
        files.len() > 40,
        "the library's sources are where this test expects them"
    );
    let mut upward = BTreeSet::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap()
            .trim_end_matches(".rs")
            .to_owned();
        let Some(own) = layer(&top) else { continue }; // lib.rs
        if rel.file_name().is_some_and(|n| n == "tests.rs") {
            continue; // a unit-test module in its own file
        }
        let text = std::fs::read_to_string(&file).unwrap();
        // Unit tests may use anything.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for line in code.lines().map(str::trim) {
            if line.starts_with("//") {
                continue; // comments and doc links may point anywhere
            }
            for (i, _) in line.match_indices("crate::") {
                let name: String = line[i + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if let Some(other) = layer(&name)
                    && name != top
                    && other > own
                {
                    upward.insert(format!("{}: {top} -> {name}: {line}", rel.display()));
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "upward imports:\n{}",
        upward.into_iter().collect::<Vec<_>>().join("\n")
    );
}
