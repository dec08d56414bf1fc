//! Bundles the reference cases of `crates/downhill/tests/reference/` (and its `modern/` and
//! `heldout/`) into the binary.

use std::{env, fs, path::PathBuf};

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("../downhill/tests/reference");
    let mut out = String::from("/// The bundled reference cases: (file name, JSON text).\npub const CASES: &[(&str, &str)] = &[\n");
    // The lecture's cases, then the newer optimizers' (`modern/`, from PyTorch and optax) and
    // their held-out settings (`heldout/`, made by `scripts/heldout/gen.py`).
    for (sub, prefix) in [("", ""), ("modern", "modern/"), ("heldout", "heldout/")] {
        let dir = root.join(sub);
        println!("cargo:rerun-if-changed={}", dir.display());
        let Ok(entries) = fs::read_dir(&dir) else {
            assert!(!sub.is_empty(), "reference cases directory");
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for f in &files {
            let name = f
                .file_name()
                .and_then(|n| n.to_str())
                .expect("utf-8 file name");
            let path = fs::canonicalize(f).expect("canonical path");
            out.push_str(&format!(
                "    (\"{prefix}{name}\", include_str!({:?})),\n",
                path.display().to_string()
            ));
        }
    }
    out.push_str("];\n");
    let dest = PathBuf::from(env::var("OUT_DIR").expect("set by cargo")).join("bundled.rs");
    fs::write(dest, out).expect("write bundled.rs");
}
