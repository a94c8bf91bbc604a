//! No source file over 800 lines: a file that long holds more than one owner's code. Files
//! that hold only `#[cfg(test)]` code (declared as `#[cfg(test)] mod x;`) may have 1,600.

use std::path::Path;

use crate::tree::{rust_files, workspace};

/// Most lines a source file may have.
const MAX_LINES: usize = 800;

/// Most lines a file of `#[cfg(test)]` code only may have: unit tests sit beside their
/// subject, but one file still holds one subject's tests.
const MAX_TEST_ONLY_LINES: usize = 1600;

/// Where the rule holds: the libraries, the examples, the test support and the fuzz
/// harnesses (integration test files under `*/tests/` are scenarios, not code to reuse).
const ROOTS: &[&str] = &[
    "proto/src",
    "kwik-core/src",
    "kwik-async/src",
    "kwik-tokio/src",
    "kwik-smol/src",
    "kwik-h3/src",
    "examples",
    "tests/src",
    "tests/sim/src",
    "fuzz/fuzz_targets",
];

/// Whether `file` is a module its parent declares under `#[cfg(test)]`.
fn test_only(file: &Path) -> bool {
    let Some(stem) = file.file_stem().and_then(|s| s.to_str()) else {
        return false;
    };
    let Some(dir) = file.parent() else {
        return false;
    };
    let (name, parents) = if stem == "mod" {
        let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
            return false;
        };
        let up = dir.parent().unwrap_or(dir);
        (
            name.to_owned(),
            vec![
                up.join("mod.rs"),
                up.join("lib.rs"),
                up.join("main.rs"),
                up.with_extension("rs"),
            ],
        )
    } else {
        (
            stem.to_owned(),
            vec![
                dir.join("mod.rs"),
                dir.join("lib.rs"),
                dir.join("main.rs"),
                dir.with_extension("rs"),
            ],
        )
    };
    parents
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .any(|text| declared_under_cfg_test(&text, &name))
}

/// Whether `text` declares `mod name;` with `#[cfg(test)]` among the attributes above it.
fn declared_under_cfg_test(text: &str, name: &str) -> bool {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    lines.iter().enumerate().any(|(i, line)| {
        let declared = line
            .trim_start_matches("pub ")
            .trim_start_matches("pub(crate) ")
            .strip_prefix("mod ")
            .is_some_and(|rest| rest == format!("{name};"));
        declared
            && lines[..i]
                .iter()
                .rev()
                .take_while(|l| l.starts_with("#["))
                .any(|l| *l == "#[cfg(test)]")
    })
}

#[test]
fn no_source_file_over_800_lines() {
    let root = workspace();
    let mut files = Vec::new();
    for dir in ROOTS {
        let dir = root.join(dir);
        assert!(dir.is_dir(), "missing source root {}", dir.display());
        // An example's own integration tests are scenarios like any crate's.
        rust_files(&dir, "tests", &mut files);
    }
    assert!(files.len() > 50, "found only {} files", files.len());
    let mut long = Vec::new();
    for file in &files {
        let lines = std::fs::read_to_string(file)
            .expect("readable source")
            .lines()
            .count();
        let max = if test_only(file) {
            MAX_TEST_ONLY_LINES
        } else {
            MAX_LINES
        };
        if lines > max {
            long.push(format!(
                "{} ({lines} lines)",
                file.strip_prefix(&root).unwrap_or(file).display()
            ));
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines ({MAX_TEST_ONLY_LINES} for #[cfg(test)] code): {long:#?}"
    );
}

#[test]
fn only_a_cfg_test_declaration_exempts_a_file() {
    assert!(declared_under_cfg_test(
        "#[cfg(test)]\n#[allow(clippy::unwrap_used)]\nmod tests;\n",
        "tests"
    ));
    assert!(!declared_under_cfg_test("mod tests;\n", "tests"));
    assert!(!declared_under_cfg_test(
        "#[cfg(test)]\nfn helper() {}\nmod tests;\n",
        "tests"
    ));
    assert!(!declared_under_cfg_test(
        "#[cfg(test)]\nmod other;\n",
        "tests"
    ));
    // The exemption the rule relies on today: the stream state's unit tests.
    let streams = workspace().join("kwik-core/src/streams/tests.rs");
    assert!(test_only(&streams));
    assert!(!test_only(
        &workspace().join("kwik-core/src/streams/send.rs")
    ));
}
