//! Dependencies point one way. Every module of the server has a layer, and
//! a file may use `crate::` paths only into modules of a lower layer (or
//! its own module's files). This test reads `src/` and fails on any import
//! that runs back up a layer, naming the file and the import; it is how
//! docs/architecture.md's dependency rule is checked.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// Lowest first. A module may import only modules listed before its own
/// line.
const LAYERS: &[&[&str]] = &[
    &["ids", "shutdown", "http_error", "log_limit"],
    &["protocol"],
    &["config", "metrics"],
    &["stages"],
    &["auth", "session", "origin", "limits"],
    &["hub"],
    &["broker"],
    &["node"],
    &["client"],
    &["state"],
    &["api", "transport", "web"],
    &["server"],
    &["app", "dev"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The crate modules a file's code names through `crate::` paths, whether
/// in `use crate::{a, b::c}` groups or inline (`crate::ids::unix_ms()`).
/// Comments (and so doc links) are skipped.
fn crate_imports(source: &str) -> BTreeSet<String> {
    let code: String = source
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // Top-level names of the braced group.
            let mut depth = 0;
            let mut item = String::new();
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        push_first_ident(&item, &mut found);
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(ch);
                }
            }
            push_first_ident(&item, &mut found);
        } else {
            push_first_ident(after, &mut found);
        }
        rest = after;
    }
    found
}

fn push_first_ident(text: &str, found: &mut BTreeSet<String>) {
    let ident: String = text
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if !ident.is_empty() && ident != "self" {
        found.insert(ident);
    }
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

/// No file imports a module of its own layer or a higher one.
#[test]
fn no_import_runs_back_up_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" || module == "bin" {
            continue;
        }
        let own = layer_of(&module)
            .unwrap_or_else(|| panic!("src/{} has no layer in LAYERS", rel.display()));
        checked += 1;
        let source = std::fs::read_to_string(&file).unwrap();
        for import in crate_imports(&source) {
            if import == module {
                continue;
            }
            match layer_of(&import) {
                Some(l) if l < own => {}
                Some(_) => violations.push(format!(
                    "src/{} ({module}) imports crate::{import}",
                    rel.display()
                )),
                None => violations.push(format!(
                    "src/{} imports crate::{import}, which has no layer",
                    rel.display()
                )),
            }
        }
    }
    assert!(checked > 20, "only {checked} files found under {src:?}");
    assert!(
        violations.is_empty(),
        "imports running back up a layer:\n  {}",
        violations.join("\n  ")
    );
}

/// The parser finds grouped, nested and inline imports and ignores
/// comments, so the check above cannot pass by missing them.
#[test]
fn imports_are_found_in_every_form() {
    let src = "use crate::{\n    a::{self, X},\n    b,\n    c::d::E,\n};\n\
               use crate::f::G;\nfn x() { crate::h::go(); }\n\
               // crate::comment\n/// [`crate::doc`]\n";
    let found: Vec<String> = crate_imports(src).into_iter().collect();
    assert_eq!(found, ["a", "b", "c", "f", "h"]);
}
