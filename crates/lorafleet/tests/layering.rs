//! The server's folders stay layered: `storage/` is the floor and names no other module of the
//! server, and no two modules (folders or top-level files of `src/`) reach each other, however
//! far round. A module that needs a type of a module above it is the sign that the type belongs
//! lower down (entity types and change sets next to their queries in `storage/`, the domain
//! folders re-exporting them). See ARCHITECTURE.md, "Which folder may use which".
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The module at the bottom: it names nothing of the server outside itself.
const FLOOR: &str = "storage";

type Graph = BTreeMap<String, BTreeSet<String>>;

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

/// The crate's top-level modules: every folder and every file of `src/` but the crate roots.
fn top_modules(src: &Path) -> BTreeSet<String> {
    std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            if p.is_dir() {
                Some(name)
            } else {
                let stem = name.strip_suffix(".rs")?;
                (stem != "lib" && stem != "main").then(|| stem.to_string())
            }
        })
        .collect()
}

/// The module path of a file below `src/` (`devices/record.rs` -> devices, record).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    parts
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first segment of each path in a `{...}` group (`{a::X, b::{Y, Z}, self}` -> a, b, self).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => start = true,
            c if start && (c.is_alphanumeric() || c == '_') && depth == 0 => {
                heads.push(ident_at(&group[i..]).to_string());
                start = false;
            }
            _ => {}
        }
    }
    heads
}

/// The top-level modules a file's code names through `crate::` (grouped or not) or through
/// enough `super::` to reach the crate root. Comment lines do not count: a doc link is not a
/// dependency.
fn named_modules(code: &str, depth: usize) -> BTreeSet<String> {
    let code: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let mut add_after = |rest: &str| {
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find(';').unwrap_or(group.len());
            found.extend(group_heads(&group[..end]));
        } else {
            found.insert(ident_at(rest).to_string());
        }
    };
    for (i, _) in code.match_indices("crate::") {
        let before = code[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `lorafleet_crate::`, not this crate
        }
        add_after(&code[i + "crate::".len()..]);
    }
    let climb = "super::".repeat(depth);
    for (i, _) in code.match_indices(&climb) {
        let before = code[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // part of a longer chain, counted from its start
        }
        add_after(&code[i + climb.len()..]);
    }
    found
}

/// Which top-level module names which (self-references left out).
fn module_graph(src: &Path) -> Graph {
    let tops = top_modules(src);
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: Graph = tops.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let path = module_path(rel);
        let Some(top) = path.first().filter(|t| tops.contains(*t)) else {
            continue; // lib.rs and main.rs: the crate roots list every module
        };
        let code = std::fs::read_to_string(&file).unwrap();
        let named = named_modules(&code, path.len());
        let edges = graph.get_mut(top).unwrap();
        edges.extend(named.into_iter().filter(|m| m != top && tops.contains(m)));
    }
    graph
}

/// What the floor names of the modules above it.
fn floor_reaches_up(graph: &Graph) -> Vec<String> {
    graph
        .get(FLOOR)
        .map(|e| e.iter().cloned().collect())
        .unwrap_or_default()
}

/// Every circle, each as the modules round it (first one repeated at the end), found once.
fn circles(graph: &Graph) -> Vec<Vec<String>> {
    fn walk(
        graph: &Graph,
        node: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut circle = stack[at..].to_vec();
            circle.push(node.to_string());
            found.push(circle);
            return;
        }
        if done.contains(node) {
            return;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            walk(graph, next, stack, done, found);
        }
        stack.pop();
        done.insert(node.to_string());
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        walk(graph, node, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn storage_names_no_module_above_it() {
    let graph = module_graph(&src());
    assert!(
        graph.contains_key(FLOOR),
        "no src/{FLOOR}/ found: {graph:?}"
    );
    let up = floor_reaches_up(&graph);
    assert!(
        up.is_empty(),
        "src/{FLOOR}/ names {up:?}; move the type it needs into src/{FLOOR}/ next to its \
         queries and re-export it from the domain folder"
    );
}

#[test]
fn no_two_modules_reach_each_other() {
    let graph = module_graph(&src());
    let found = circles(&graph);
    assert!(
        found.is_empty(),
        "modules that reach each other (move what both need below both): {}",
        found
            .iter()
            .map(|c| c.join(" -> "))
            .collect::<Vec<_>>()
            .join("; ")
    );
    // The graph is not empty by accident (a scan that finds nothing passes everything).
    assert!(graph["web"].contains("storage") && graph["devices"].contains("storage"));
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn the_checks_find_an_upward_import_and_a_circle() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    write(
        src,
        "lib.rs",
        "pub mod storage; pub mod devices; pub mod ingest;",
    );
    write(src, "main.rs", "use lorafleet::devices;");
    write(
        src,
        "storage/uplinks.rs",
        "use crate::{\n    devices::UplinkDto,\n    storage::Db,\n};\n",
    );
    write(
        src,
        "storage/mod.rs",
        "// [`crate::ingest`] in a comment does not count\n",
    );
    write(
        src,
        "devices/mod.rs",
        "pub mod record;\nuse crate::storage;\n",
    );
    write(
        src,
        "devices/record.rs",
        "fn f(e: &crate::ingest::Event) {}\n",
    );
    write(src, "ingest/mod.rs", "use super::devices::record;\n");
    write(src, "config.rs", "fn f() { super::ingest::g(); }\n");

    let graph = module_graph(src);
    assert_eq!(floor_reaches_up(&graph), vec!["devices".to_string()]);
    assert_eq!(
        graph["config"].iter().collect::<Vec<_>>(),
        vec!["ingest"],
        "super:: from a top-level file reaches the crate root"
    );
    let found = circles(&graph);
    let as_text: Vec<String> = found.iter().map(|c| c.join(" -> ")).collect();
    assert!(
        as_text.contains(&"devices -> ingest -> devices".to_string())
            || as_text.contains(&"ingest -> devices -> ingest".to_string()),
        "{as_text:?}"
    );
    assert!(
        as_text.iter().any(|c| c.contains("storage")),
        "storage -> devices -> storage: {as_text:?}"
    );
}

#[test]
fn group_heads_reads_nested_groups() {
    assert_eq!(
        group_heads("a::X, b::{Y, Z}, self, c"),
        vec!["a", "b", "self", "c"]
    );
}
