//! The engine's contract (see the crate docs): no clock, no sockets, no async runtime, no
//! threads, no unseeded randomness. This test reads the source: every `.rs` file under
//! `src/` must be free, outside comments, of the names that would break it, and
//! `Cargo.toml` must not depend on an async runtime.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// Names that must not appear in the engine's code.
const FORBIDDEN: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "std::net::UdpSocket",
    "UdpSocket",
    "tokio",
    "async_io",
    "smol",
    "thread_rng",
    "rand::rng(",
    "from_entropy",
    "OsRng",
    "std::thread",
    "async fn",
    ".await",
];

/// Crates the engine must not depend on (a name or its `name-*` family).
const FORBIDDEN_DEPS: &[&str] = &["tokio", "async-io", "smol", "mio", "futures"];

/// `source` with every comment (line, block, doc) blanked out; string and character
/// literals are kept, and line breaks stay where they were.
fn strip_comments(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    out.push(' ');
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                // Block comments nest in Rust.
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        out.push_str("  ");
                        i += 2;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        out.push_str("  ");
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        out.push(blank(chars[i]));
                        i += 1;
                    }
                }
            }
            'r' if matches!(next, Some('"' | '#')) && starts_literal(&chars, i) => {
                // Raw string r"..." or r#"..."#: copy up to the matching close.
                let mut j = i + 1;
                let mut hashes = 0;
                while chars.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if chars.get(j) != Some(&'"') {
                    out.push(c);
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    match chars.get(j) {
                        None => break,
                        Some('"') if (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) => {
                            j += 1 + hashes;
                            break;
                        }
                        _ => j += 1,
                    }
                }
                out.extend(&chars[i..j]);
                i = j;
            }
            '"' => {
                let mut j = i + 1;
                while j < chars.len() && chars[j] != '"' {
                    j += if chars[j] == '\\' { 2 } else { 1 };
                }
                let end = (j + 1).min(chars.len());
                out.extend(&chars[i..end]);
                i = end;
            }
            '\'' => {
                // A character literal ('x', '\n', '"') or a lifetime ('a).
                let end = if next == Some('\\') {
                    // Skip the backslash and the escaped character, which may be a quote.
                    let mut j = i + 3;
                    while j < chars.len() && chars[j] != '\'' {
                        j += 1;
                    }
                    j + 1
                } else if chars.get(i + 2) == Some(&'\'') {
                    i + 3
                } else {
                    i + 1
                };
                let end = end.min(chars.len());
                out.extend(&chars[i..end]);
                i = end;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Whether the `r` at `i` starts a raw string (`r"`, `br"`) rather than ending a name.
fn starts_literal(chars: &[char], i: usize) -> bool {
    let ident = |k: usize| {
        chars
            .get(k)
            .is_some_and(|p| p.is_alphanumeric() || *p == '_')
    };
    if i == 0 || !ident(i - 1) {
        return true;
    }
    chars[i - 1] == 'b' && (i == 1 || !ident(i - 2))
}

/// Every forbidden name in `source` outside comments, as `(line, name)`.
fn violations(source: &str) -> Vec<(usize, &'static str)> {
    let code = strip_comments(source);
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        for name in FORBIDDEN {
            if line.contains(name) {
                found.push((n + 1, *name));
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Scans every `.rs` file under `src`: one line per violation.
fn scan_tree(src: &Path) -> (usize, Vec<String>) {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut report = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file).unwrap();
        for (line, name) in violations(&source) {
            report.push(format!("{}:{line}: `{name}`", file.display()));
        }
    }
    (files.len(), report)
}

/// Forbidden crates among the `[dependencies]` (and target-specific dependencies) of a
/// manifest; dev- and build-dependencies may use anything.
fn dependency_violations(manifest: &str) -> Vec<String> {
    let forbidden = |name: &str| {
        FORBIDDEN_DEPS
            .iter()
            .any(|f| name == *f || name.strip_prefix(f).is_some_and(|r| r.starts_with('-')))
    };
    let mut found = Vec::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_end_matches(']').trim();
            // `[dependencies]`, `[target.'cfg(..)'.dependencies]`, `[dependencies.tokio]`.
            in_deps = header == "dependencies" || header.ends_with(".dependencies");
            if let Some((table, name)) = header.rsplit_once('.')
                && (table == "dependencies" || table.ends_with(".dependencies"))
            {
                let name = name.trim_matches('"');
                if forbidden(name) {
                    found.push(name.to_owned());
                }
            }
            continue;
        }
        if !in_deps {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim().trim_matches('"');
        let key = key.split('.').next().unwrap_or(key);
        let renamed = value
            .split_once("package")
            .and_then(|(_, rest)| rest.split('"').nth(1));
        for name in [Some(key), renamed].into_iter().flatten() {
            if forbidden(name) {
                found.push(name.to_owned());
            }
        }
    }
    found
}

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn source_has_no_clock_socket_runtime_thread_or_entropy() {
    let (files, report) = scan_tree(&crate_dir().join("src"));
    assert!(files >= 10, "only {files} source files found");
    assert!(
        report.is_empty(),
        "contract violations:\n{}",
        report.join("\n")
    );
}

#[test]
fn manifest_has_no_async_runtime_dependency() {
    let manifest = std::fs::read_to_string(crate_dir().join("Cargo.toml")).unwrap();
    assert!(manifest.contains("[dependencies]"));
    let found = dependency_violations(&manifest);
    assert!(found.is_empty(), "forbidden dependencies: {found:?}");
    // The same manifest with a runtime added fails.
    let scratch = manifest.replacen("[dependencies]", "[dependencies]\ntokio = \"1\"", 1);
    assert_eq!(dependency_violations(&scratch), ["tokio"]);
}

/// The scan fails on a scratch copy of `src` with one offending line added.
#[test]
fn scan_catches_an_offending_line_in_a_scratch_copy() {
    let scratch = std::env::temp_dir().join(format!("kwik-contract-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let mut files = Vec::new();
    let src = crate_dir().join("src");
    rust_files(&src, &mut files);
    for file in &files {
        let to = scratch.join(file.strip_prefix(&src).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(file, &to).unwrap();
    }
    let (_, clean) = scan_tree(&scratch);
    assert!(clean.is_empty(), "{clean:?}");
    let victim = scratch.join("streams").join("mod.rs");
    let mut text = std::fs::read_to_string(&victim).unwrap();
    text.push_str("\nfn clock() -> std::time::Instant {\n    std::time::Instant::now()\n}\n");
    std::fs::write(&victim, text).unwrap();
    let (_, dirty) = scan_tree(&scratch);
    std::fs::remove_dir_all(&scratch).unwrap();
    assert_eq!(dirty.len(), 1, "{dirty:?}");
    assert!(dirty[0].contains("mod.rs:"), "{dirty:?}");
    assert!(dirty[0].ends_with("`Instant::now`"), "{dirty:?}");
}

#[test]
fn every_forbidden_name_is_caught_in_code_and_ignored_in_comments() {
    for name in FORBIDDEN {
        let code = format!("fn f() {{ let x = {name}; }}\n");
        assert!(
            violations(&code).iter().any(|(_, n)| n == name),
            "{name} not caught in {code:?}"
        );
        for comment in [
            format!("// {name}\n"),
            format!("/// uses {name}\nfn f() {{}}\n"),
            format!("/* {name} /* nested */ {name} */ fn f() {{}}\n"),
            format!("//! {name}\n"),
        ] {
            assert_eq!(violations(&comment), vec![], "{comment:?}");
        }
    }
    // Strings are code; comment markers inside them do not start comments.
    assert_eq!(
        violations("let s = \"http://x\"; tokio::spawn(f);"),
        vec![(1, "tokio")]
    );
    assert_eq!(violations("let c = '\"'; smol::run();"), vec![(1, "smol")]);
    assert_eq!(
        violations("let c = '\\''; let s = \"//\"; OsRng"),
        vec![(1, "OsRng")]
    );
    assert_eq!(
        violations("let b = br\"\\\"; // tokio\nlet t = UdpSocket;"),
        vec![(2, "UdpSocket")]
    );
    assert_eq!(
        violations("let r = r#\"a \" // b\"#; let t = OsRng;"),
        vec![(1, "OsRng")]
    );
    assert_eq!(
        violations("fn f<'a>(x: &'a u8) {}\n\n.await"),
        vec![(3, ".await")]
    );
    // Line numbers survive block comments.
    assert_eq!(
        violations("/*\n\n*/\nstd::thread::spawn(f);"),
        vec![(4, "std::thread")]
    );
}

#[test]
fn dependency_check_catches_runtimes() {
    let manifest = r#"
[package]
name = "x"

[dependencies]
bytes = "1"
tokio = { version = "1" }
futures-lite.workspace = true
rt = { package = "smol", version = "2" }

[dependencies.mio]
version = "1"

[target.'cfg(unix)'.dependencies]
async-io = "2"

[dev-dependencies]
tokio = "1"
"#;
    assert_eq!(
        dependency_violations(manifest),
        vec!["tokio", "futures-lite", "smol", "mio", "async-io"]
    );
    assert_eq!(
        dependency_violations("[dependencies]\nbytes = \"1\"\nmiok = \"1\"\n"),
        Vec::<String>::new()
    );
}
