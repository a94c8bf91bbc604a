//! No import circles: within every crate of the workspace, the modules that share a parent
//! depend on each other in one direction only.
//!
//! The check reads the source. Each file is a module (`a/b.rs` and `a/b/mod.rs` are
//! `a::b`). Every path that names a module of the crate, in a `use` or in code
//! (`crate::a::b::X`, `super::x`, `self::x`, or a bare `x::` of a `use`d or declared
//! module), is an edge from the file's module to the deepest module it names; a re-export
//! at the crate root (`crate::X` where lib.rs has `pub use a::X`) resolves to its module.
//! An edge between a module and one of its ancestors is the tree itself and is left out.
//! Any other edge is lifted to the two children of the lowest common ancestor it runs
//! between, and the graph of those children must have no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::tree::{rust_files, workspace};

/// The source roots checked: every library in the workspace, the test support, the fuzz
/// harnesses and the examples split into modules.
const ROOTS: &[&str] = &[
    "proto/src",
    "kwik-core/src",
    "kwik-async/src",
    "kwik-tokio/src",
    "kwik-smol/src",
    "kwik-h3/src",
    "tests/src",
    "tests/sim/src",
    "examples/src",
    "examples/perf",
];

type Module = Vec<String>;

/// The module a file is, relative to its crate's `src`.
fn module_of(root: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(root).expect("file under its root");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Code without comments and string literals, so that neither can add an edge.
fn code_of(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && next.is_some_and(|n| n != '\\') && chars.get(i + 2) == Some(&'\'') {
            // A character literal such as '{' or '"'.
            i += 3;
        } else if c == '\'' && next == Some('\\') {
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every path in `code`, `use` groups expanded: `use a::{b, c::d}` gives `a::b`, `a::c::d`.
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if !is_ident(chars[i]) || (i > 0 && (is_ident(chars[i - 1]) || chars[i - 1] == ':')) {
            i += 1;
            continue;
        }
        let (prefixes, end) = path_at(&chars, i, Vec::new());
        out.extend(prefixes);
        i = end.max(i + 1);
    }
    out
}

/// The paths starting at `i`, each prefixed by `base`, and where they end.
fn path_at(chars: &[char], mut i: usize, base: Vec<String>) -> (Vec<Vec<String>>, usize) {
    let mut path = base;
    loop {
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        if i > start {
            path.push(chars[start..i].iter().collect());
        }
        let mut j = i;
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        if chars.get(j) == Some(&':') && chars.get(j + 1) == Some(&':') {
            j += 2;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            if chars.get(j) == Some(&'{') {
                // A group: each member is a path of its own under this prefix.
                let mut out = Vec::new();
                let mut k = j + 1;
                loop {
                    while k < chars.len() && (chars[k].is_whitespace() || chars[k] == ',') {
                        k += 1;
                    }
                    match chars.get(k) {
                        None => return (out, k),
                        Some('}') => return (out, k + 1),
                        Some(c) if is_ident(*c) => {
                            let (inner, end) = path_at(chars, k, path.clone());
                            out.extend(inner);
                            k = end;
                            // Skip `as name` and anything else up to the next member.
                            while k < chars.len() && chars[k] != ',' && chars[k] != '}' {
                                k += 1;
                            }
                        }
                        Some(_) => k += 1,
                    }
                }
            }
            i = j;
            if !chars.get(i).copied().is_some_and(is_ident) {
                return (vec![path], i);
            }
        } else {
            return (vec![path], i);
        }
    }
}

struct Crate {
    name: String,
    modules: BTreeSet<Module>,
    /// Items the crate root re-exports, by name: the module they come from.
    reexports: BTreeMap<String, Module>,
    /// The module of each file and its code.
    files: Vec<(Module, String)>,
}

fn load(root: &str) -> Option<Crate> {
    let dir = workspace().join(root);
    let mut files = Vec::new();
    // Binaries under src/bin are crates of their own.
    rust_files(&dir, "bin", &mut files);
    if files.is_empty() {
        return None;
    }
    files.sort();
    let files: Vec<(Module, String)> = files
        .iter()
        .map(|f| {
            let source = std::fs::read_to_string(f).expect("readable source");
            (module_of(&dir, f), code_of(&source))
        })
        .collect();
    let modules: BTreeSet<Module> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut reexports = BTreeMap::new();
    if let Some((_, lib)) = files.iter().find(|(m, _)| m.is_empty()) {
        for statement in lib.split(';') {
            let statement = statement.trim();
            let Some(rest) = statement.strip_prefix("pub use ") else {
                continue;
            };
            for path in paths_in(rest) {
                let module: Module = path[..path.len() - 1].to_vec();
                if modules.contains(&module) && !module.is_empty() {
                    reexports.insert(path[path.len() - 1].clone(), module);
                }
            }
        }
    }
    Some(Crate {
        name: root.to_owned(),
        modules,
        reexports,
        files,
    })
}

/// The deepest module of the crate that `path`, written in `from`, names.
fn resolve(krate: &Crate, from: &Module, path: &[String]) -> Option<Module> {
    let (mut base, rest): (Module, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self") => (from.clone(), &path[1..]),
        Some("super") => {
            let mut base = from.clone();
            let mut rest = path;
            while rest.first().is_some_and(|p| p == "super") {
                base.pop();
                rest = &rest[1..];
            }
            (base, rest)
        }
        // A bare path: a child module of this one (declared with `mod`), or nothing here.
        Some(_) => (from.clone(), path),
        None => return None,
    };
    let bare = !matches!(path[0].as_str(), "crate" | "self" | "super");
    let mut found = None;
    for (n, part) in rest.iter().enumerate() {
        base.push(part.clone());
        if krate.modules.contains(&base) {
            found = Some(base.clone());
        } else {
            if n == 0 && bare {
                return None;
            }
            if n == 0 && path[0] == "crate" {
                return krate.reexports.get(part).cloned();
            }
            break;
        }
    }
    found
}

/// Cycles among siblings, each as the list of modules it runs through.
fn circles(krate: &Crate) -> Vec<String> {
    // parent -> (child -> children it depends on)
    let mut graphs: BTreeMap<Module, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut why: BTreeMap<(Module, String, String), String> = BTreeMap::new();
    for (from, code) in &krate.files {
        for path in paths_in(code) {
            let Some(to) = resolve(krate, from, &path) else {
                continue;
            };
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common == from.len() || common == to.len() {
                continue;
            }
            let parent = from[..common].to_vec();
            let (a, b) = (from[common].clone(), to[common].clone());
            why.entry((parent.clone(), a.clone(), b.clone()))
                .or_insert_with(|| format!("{} uses {}", from.join("::"), path.join("::")));
            graphs
                .entry(parent)
                .or_default()
                .entry(a)
                .or_default()
                .insert(b);
        }
    }
    let mut found = Vec::new();
    for (parent, graph) in &graphs {
        for start in graph.keys() {
            // A path back to `start`, by depth-first search.
            let mut stack = vec![(start.clone(), vec![start.clone()])];
            let mut seen = BTreeSet::new();
            while let Some((node, trail)) = stack.pop() {
                for next in graph.get(&node).into_iter().flatten() {
                    if next == start {
                        // Report each cycle once, from its smallest member.
                        if trail.iter().all(|m| m >= start) {
                            let mut steps = Vec::new();
                            let mut ring = trail.clone();
                            ring.push(start.clone());
                            for w in ring.windows(2) {
                                let key = (parent.clone(), w[0].clone(), w[1].clone());
                                steps.push(why[&key].clone());
                            }
                            found.push(format!(
                                "{} (under `{}`): {}",
                                krate.name,
                                parent.join("::"),
                                steps.join(" -> ")
                            ));
                        }
                    } else if seen.insert(next.clone()) {
                        let mut t = trail.clone();
                        t.push(next.clone());
                        stack.push((next.clone(), t));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn no_import_circles() {
    let mut all = Vec::new();
    for root in ROOTS {
        // A root that moved or is misspelt fails here rather than going unchecked.
        let krate = load(root).unwrap_or_else(|| panic!("no Rust source under {root}"));
        all.extend(circles(&krate));
    }
    assert!(all.is_empty(), "import circles:\n{}", all.join("\n"));
}

#[test]
fn the_check_sees_a_circle() {
    let krate = |files: &[(&str, &str)]| {
        let files: Vec<(Module, String)> = files
            .iter()
            .map(|(m, c)| {
                let module = m.split("::").filter(|s| !s.is_empty()).map(str::to_owned);
                (module.collect(), code_of(c))
            })
            .collect();
        Crate {
            name: "test".into(),
            modules: files.iter().map(|(m, _)| m.clone()).collect(),
            reexports: BTreeMap::from([("Id".to_owned(), vec!["ids".to_owned()])]),
            files,
        }
    };
    let circle = krate(&[
        ("", "mod a; mod b; mod c; pub use ids::Id;"),
        ("a", "use crate::b::X; // crate::c::Y in a comment"),
        ("b", "fn f() { crate::c::Y::new(); }"),
        ("c", "use crate::{ids::Id, a::{Z, W as V}};"),
        ("ids", "pub struct Id;"),
        ("a::inner", "use super::Z;"),
    ]);
    let found = circles(&circle);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("a uses crate::b::X"), "{found:?}");
    assert!(found[0].contains("c uses crate::a::Z"), "{found:?}");

    let tree = krate(&[
        ("", "mod a; mod b;"),
        (
            "a",
            "use crate::b::X; use crate::Id; mod inner; use inner::Q;",
        ),
        (
            "a::inner",
            "use super::Z; use crate::a::W; super::super::b::f();",
        ),
        ("b", "use crate::Id; let s = \"crate::a::Z\";"),
        ("ids", ""),
    ]);
    assert_eq!(circles(&tree), Vec::<String>::new());
}
