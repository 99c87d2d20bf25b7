//! The layers of ARCHITECTURE.md, checked on the sources: every `crate::<module>` a file of
//! `src/` names must be a module its own may depend on.

use std::collections::BTreeSet;
use std::path::Path;

/// What each top-level module may use, besides itself.
const MAY_USE: &[(&str, &[&str])] = &[
    (
        "api",
        &[
            "ops", "state", "jobs", "db", "error", "progress", "config", "metrics",
        ],
    ),
    (
        "ops",
        &[
            "state",
            "jobs",
            "fetch",
            "storage",
            "hypervisor",
            "network",
            "config",
            "db",
            "sparse",
            "progress",
            "metrics",
            "error",
        ],
    ),
    (
        "state",
        &[
            "ops",
            "config",
            "jobs",
            "fetch",
            "storage",
            "hypervisor",
            "network",
            "db",
        ],
    ),
    ("jobs", &["db", "progress", "metrics", "error"]),
    ("fetch", &["sparse", "progress", "qemu_img", "error"]),
    (
        "storage",
        &["db", "sparse", "progress", "qemu_img", "error"],
    ),
    // The one type the engines share: a disk's format.
    ("hypervisor", &["storage", "error"]),
    ("network", &["error"]),
    ("config", &["db", "size"]),
    // Reading the command line: clap's errors with hints.
    ("cli", &["config"]),
    ("db", &[]),
    ("sparse", &[]),
    ("progress", &[]),
    ("metrics", &[]),
    ("qemu_img", &[]),
    ("size", &[]),
    ("error", &[]),
    ("tools", &["sparse", "size", "error"]),
];

/// The top-level modules a file names with `crate::`, outside comments.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let module: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !module.is_empty() {
                named.insert(module);
            }
        }
        // `use crate::{a, b}` names several.
        if let Some(group) = code.split("crate::{").nth(1) {
            for part in group.split(['}', ',']) {
                let module = part.trim().split("::").next().unwrap_or("").trim();
                if !module.is_empty()
                    && module
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    named.insert(module.to_string());
                }
            }
        }
    }
    named
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Macros exported at the crate root (`crate::wire_struct!`), by the module that defines them.
fn exported_macros(src: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut macros = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let module = file.strip_prefix(src).unwrap().iter().next().unwrap();
        let module = module.to_string_lossy().trim_end_matches(".rs").to_string();
        for exported in text.split("#[macro_export]").skip(1) {
            if let Some(rest) = exported.trim_start().strip_prefix("macro_rules!") {
                let name: String = rest
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                macros.push((name, module.clone()));
            }
        }
    }
    macros
}

#[test]
fn every_module_depends_only_on_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let macros = exported_macros(&src);
    assert!(
        macros
            .iter()
            .any(|(name, home)| name == "job_kinds" && home == "jobs")
    );
    let mut wrong = Vec::new();
    let mut checked = 0;
    for &(module, may_use) in MAY_USE {
        let mut files = Vec::new();
        let single = src.join(format!("{module}.rs"));
        if single.exists() {
            files.push(single);
        }
        if src.join(module).is_dir() {
            rust_files(&src.join(module), &mut files);
        }
        assert!(!files.is_empty(), "src/{module} is gone: update MAY_USE");
        for file in files {
            checked += 1;
            let text = std::fs::read_to_string(&file).unwrap();
            for named in named_modules(&text) {
                let named = match macros.iter().find(|(name, _)| *name == named) {
                    Some((_, home)) => home.clone(),
                    None => named,
                };
                if named != module && !may_use.contains(&named.as_str()) {
                    let file = file.strip_prefix(&src).unwrap().display().to_string();
                    wrong.push(format!("src/{file} uses crate::{named}"));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} files were read");
    assert!(
        wrong.is_empty(),
        "imports against the layers of ARCHITECTURE.md:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn imports_are_found_in_every_form() {
    let named = named_modules(
        "use crate::db::Tx;\nuse crate::{error::ApiError, jobs};\n// crate::api in a comment\n\
         let x = crate::ops::f(); // crate::state",
    );
    let expected: BTreeSet<String> = ["db", "error", "jobs", "ops"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(named, expected);
}
