//! The storage layer stays one layer: no file of the server outside `src/storage/` names sqlx,
//! so every statement has its place next to its entity and a second backend (issue 9) is a
//! second implementation of `storage`, not a hunt through the domain modules.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use std::path::{Path, PathBuf};

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

/// The `src/`-relative paths of the server's files outside `src/storage/` that name sqlx.
fn sqlx_outside_storage(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut found: Vec<String> = files
        .iter()
        .filter(|p| !p.starts_with(src.join("storage")))
        .filter(|p| std::fs::read_to_string(p).unwrap().contains("sqlx"))
        .map(|p| {
            p.strip_prefix(src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect();
    found.sort();
    found
}

#[test]
fn no_sqlx_outside_the_storage_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = sqlx_outside_storage(&src);
    assert!(
        found.is_empty(),
        "these files name sqlx; move their statements into src/storage/ (one module per entity) \
         and call typed functions: {found:?}"
    );
}

#[test]
fn the_check_finds_sqlx_in_a_domain_module() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("storage")).unwrap();
    std::fs::create_dir_all(src.join("devices")).unwrap();
    std::fs::write(src.join("storage/devices.rs"), "use sqlx::Row;").unwrap();
    std::fs::write(src.join("devices/mod.rs"), "sqlx::query(\"SELECT 1\")").unwrap();
    std::fs::write(src.join("devices/pure.rs"), "fn f() {}").unwrap();
    std::fs::write(src.join("auth.rs"), "use sqlx::Row;").unwrap();
    assert_eq!(
        sqlx_outside_storage(src),
        vec!["auth.rs".to_string(), "devices/mod.rs".to_string()]
    );
}
