//! `rust-version` in Cargo.toml is what the locked dependencies really
//! need: at least the highest `rust-version` any of them declares, so a
//! toolchain that Cargo.toml accepts builds the lock (a user once followed
//! the README's "1.85" and could not build `jsonwebtoken` 11.1).
//!
//! Only the dependencies of the host's platform are read: `cargo metadata
//! --offline` over every platform needs crates (Windows-only ones) that a
//! fresh machine's build never downloaded, and fails there.

use std::process::Command;

use serde_json::Value;

fn version(text: &str) -> Vec<u64> {
    let mut parts: Vec<u64> = text
        .split('.')
        .map(|p| p.parse().unwrap_or_else(|_| panic!("bad version {text}")))
        .collect();
    parts.resize(3, 0);
    parts
}

/// The host's target triple, from `rustc -vV`.
fn host() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

#[test]
fn rust_version_covers_every_locked_dependency() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &host()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let ours = packages
        .iter()
        .find(|p| p["name"] == "fanout")
        .and_then(|p| p["rust_version"].as_str())
        .expect("fanout declares rust-version");
    let (needed, by) = packages
        .iter()
        .filter_map(|p| {
            let v = p["rust_version"].as_str()?;
            Some((version(v), format!("{} {}", p["name"], p["version"])))
        })
        .max()
        .unwrap();
    assert!(
        version(ours) >= needed,
        "Cargo.toml says rust-version {ours}, but {by} needs {needed:?}"
    );
    // The README states the same minimum.
    let readme = include_str!("../README.md");
    let minimum = ours.trim_end_matches(".0");
    assert!(
        readme.contains(&format!("({minimum} or newer")),
        "README.md should say \"({minimum} or newer\""
    );
}
