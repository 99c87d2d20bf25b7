//! The layers of ARCHITECTURE.md, checked on the sources: every `crate::<module>` a file of
//! `src/` names (`extility::<module>` in the binaries) must be a module its own may depend on,
//! and every module of `ops` a file of `ops` names must be in a domain its own may use. Both
//! tables are checked for cycles, so that "may use" stays an order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module may use, besides itself. `main` is `src/main.rs` and `bin` is
/// `src/bin/`: the binaries, which name the library as `extility::`.
const MAY_USE: &[(&str, &[&str])] = &[
    (
        "main",
        &[
            "api",
            "cli",
            "config",
            "hypervisor",
            "network",
            "ops",
            "startup",
        ],
    ),
    ("bin", &["tools", "size", "error"]),
    // Building and running a node: it wires every engine to the operation layer and the API.
    (
        "startup",
        &[
            "api",
            "ops",
            "jobs",
            "fetch",
            "storage",
            "hypervisor",
            "network",
            "config",
            "db",
            "size",
            "progress",
            "metrics",
            "error",
        ],
    ),
    (
        "api",
        &[
            "ops", "jobs", "db", "error", "progress", "config", "metrics",
        ],
    ),
    (
        "ops",
        &[
            "jobs",
            "fetch",
            "storage",
            "hygiene",
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
    ("jobs", &["db", "progress", "metrics", "error"]),
    ("fetch", &["sparse", "progress", "qemu_img", "error"]),
    (
        "storage",
        &["db", "sparse", "progress", "qemu_img", "error"],
    ),
    // Reading and cleaning images' file systems in libguestfs's appliance.
    ("hygiene", &["storage", "progress", "error"]),
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

/// The domains of `ops`, bottom first, and the domains each may use besides itself (the
/// module doc of each says what it owns). A domain is a folder of `src/ops`; `core` is the
/// files at the top of `src/ops` (the operation table's machinery, the audit trail, the
/// server statuses every domain reads) but for the frame.
const OPS_MAY_USE: &[(&str, &[&str])] = &[
    ("core", &[]),
    ("accounts", &["core"]),
    ("network", &["core", "accounts"]),
    ("storage", &["core", "accounts"]),
    ("server", &["core", "accounts", "network", "storage"]),
    ("jobs", &["core", "accounts", "storage"]),
    ("platform", &["core"]),
];

/// The frame of `ops`, which every domain may name and which names every domain: the table
/// (`ops/mod.rs`: `operations!`, `job_kinds!`, `Ctx`, `Caller`, the generated `args` and
/// `results`) and the state it hands each call and job (`ops/state.rs`).
const OPS_FRAME: &[&str] = &[
    "Ctx",
    "Caller",
    "args",
    "results",
    "call",
    "OPERATIONS",
    "JOB_KINDS",
    "state",
];

/// A cycle in a "may use" table, as the names along it (the first again at the end).
fn find_cycle(table: &[(&str, &[&str])]) -> Option<Vec<String>> {
    fn visit<'a>(
        node: &'a str,
        table: &BTreeMap<&'a str, &'a [&'a str]>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut cycle: Vec<String> = path[at..].iter().map(|n| n.to_string()).collect();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for next in table.get(node).copied().unwrap_or(&[]) {
            if let Some(cycle) = visit(next, table, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let map: BTreeMap<&str, &[&str]> = table.iter().copied().collect();
    let mut done = BTreeSet::new();
    for &(node, _) in table {
        if let Some(cycle) = visit(node, &map, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

/// The text of a file without comments, and without its `#[cfg(test)] mod tests` at the end
/// when `code_only`.
fn code_of(text: &str, code_only: bool) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) if code_only => &text[..at],
        _ => text,
    };
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The first segments of the paths `prefix` leads to in `code`: `prefix::a::b` gives `a`,
/// `prefix::{a, b::c, d::{e}}` gives `a`, `b` and `d`. `prefix` must not follow a word or
/// `::` (so `crate::ops::` is not `ops::`).
fn paths_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    _ => {}
                }
                if c == ',' && depth == 0 {
                    found.insert(ident(item.trim()));
                    item.clear();
                } else {
                    item.push(c);
                }
            }
            found.insert(ident(item.trim()));
        } else {
            found.insert(ident(rest));
        }
    }
    found.remove("");
    found.remove("self");
    found
}

/// The top-level modules a file names with `crate::` or `extility::`, outside comments.
fn named_modules(text: &str) -> BTreeSet<String> {
    let code = code_of(text, false);
    let mut named = paths_after(&code, "crate::");
    named.extend(paths_after(&code, "extility::"));
    // `$crate::` in a macro.
    named.extend(paths_after(
        &code.replace("$crate::", " crate::"),
        "crate::",
    ));
    named
}

/// What a file of `src/ops` (at `path`, relative to it) names of `ops`, as the names at the
/// top of `ops` (`crate::ops::storage::disk` and, in `ops/storage/disk.rs`,
/// `super::image` give `storage`; `super::super::page` gives `page`) and the names inside
/// its own folder (`super::image` in `ops/storage/disk.rs`: "storage").
fn ops_names(path: &str, text: &str) -> BTreeSet<String> {
    let code = code_of(text, true);
    let mut named = paths_after(&code.replace("$crate::", " crate::"), "crate::ops::");
    // `use crate::ops;` or `use crate::ops::{self, ...}` and then `ops::x`.
    named.extend(paths_after(&code, "ops::"));
    let parts: Vec<&str> = path.trim_end_matches(".rs").split('/').collect();
    // The folder `super` is in: for `ops/a.rs` and `ops/a/mod.rs` it is `ops` itself.
    let in_folder = match parts.as_slice() {
        [_] | [_, "mod"] => None,
        [folder, ..] => Some(folder.to_string()),
        [] => None,
    };
    let supers = paths_after(&code, "super::");
    match in_folder {
        None => named.extend(supers),
        Some(folder) => {
            if supers.iter().any(|name| name != "super") {
                named.insert(folder);
            }
            named.extend(paths_after(&code, "super::super::"));
        }
    }
    named.remove("super");
    named
}

/// The domain a name at the top of `ops` belongs to: a folder is a domain, a file is `core`,
/// the frame is none; anything else (a re-export, an alias) is an error.
fn ops_domain(
    name: &str,
    folders: &BTreeSet<String>,
    files: &BTreeSet<String>,
) -> Result<Option<String>, String> {
    if OPS_FRAME.contains(&name) {
        Ok(None)
    } else if folders.contains(name) {
        Ok(Some(name.to_string()))
    } else if files.contains(name) {
        Ok(Some("core".to_string()))
    } else {
        Err(format!(
            "crate::ops::{name} is no module of ops: name it by its module's path"
        ))
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
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
                macros.push((ident(rest.trim_start()), module.clone()));
            }
        }
    }
    macros
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn every_module_depends_only_on_the_layers_below_it() {
    let src = src();
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
fn every_module_of_src_has_its_place_in_the_layers() {
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(src()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let module = name.trim_end_matches(".rs");
        if module != "lib" && !MAY_USE.iter().any(|(m, _)| *m == module) {
            missing.push(module.to_string());
        }
    }
    assert!(missing.is_empty(), "not in MAY_USE: {missing:?}");
}

#[test]
fn the_tables_are_orders() {
    assert_eq!(find_cycle(MAY_USE), None);
    assert_eq!(find_cycle(OPS_MAY_USE), None);
    for (_, uses) in MAY_USE.iter().chain(OPS_MAY_USE) {
        for used in *uses {
            assert!(
                MAY_USE.iter().chain(OPS_MAY_USE).any(|(m, _)| m == used),
                "{used} is in no table"
            );
        }
    }
}

#[test]
fn a_cycle_in_a_table_is_found() {
    let cycle: &[(&str, &[&str])] = &[("d", &[]), ("a", &["d", "b"]), ("b", &["c"]), ("c", &["a"])];
    assert_eq!(
        find_cycle(cycle),
        Some(["a", "b", "c", "a"].map(String::from).to_vec())
    );
    let onto_itself: &[(&str, &[&str])] = &[("a", &["a"])];
    assert!(find_cycle(onto_itself).is_some());
    let order: &[(&str, &[&str])] = &[("a", &["b", "c"]), ("b", &["c"]), ("c", &[])];
    assert_eq!(find_cycle(order), None);
}

/// What a file of `src/ops` (`rel`, relative to it) names against the order of the domains.
fn ops_file_wrongs(
    rel: &str,
    text: &str,
    folders: &BTreeSet<String>,
    files: &BTreeSet<String>,
) -> Vec<String> {
    let own = match rel.split_once('/') {
        Some((folder, _)) => folder,
        None => "core",
    };
    let may_use = OPS_MAY_USE
        .iter()
        .find(|(domain, _)| *domain == own)
        .unwrap_or_else(|| panic!("src/ops/{rel}: {own} is no domain of OPS_MAY_USE"))
        .1;
    let mut wrong = Vec::new();
    for name in ops_names(rel, text) {
        match ops_domain(&name, folders, files) {
            Ok(None) => {}
            Ok(Some(domain)) if domain == own || may_use.contains(&domain.as_str()) => {}
            Ok(Some(domain)) => wrong.push(format!("src/ops/{rel} ({own}) uses {name} ({domain})")),
            Err(error) => wrong.push(format!("src/ops/{rel}: {error}")),
        }
    }
    wrong
}

fn ops_modules() -> (BTreeSet<String>, BTreeSet<String>) {
    let mut folders = BTreeSet::new();
    let mut files = BTreeSet::new();
    for entry in std::fs::read_dir(src().join("ops")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() {
            folders.insert(name);
        } else if let Some(stem) = name.strip_suffix(".rs")
            && stem != "mod"
            && !OPS_FRAME.contains(&stem)
        {
            files.insert(stem.to_string());
        }
    }
    (folders, files)
}

#[test]
fn every_ops_domain_uses_only_the_domains_below_it() {
    let ops = src().join("ops");
    let (folders, files) = ops_modules();
    let domains: BTreeSet<String> = OPS_MAY_USE.iter().map(|(d, _)| d.to_string()).collect();
    let mut expected = folders.clone();
    expected.insert("core".into());
    assert_eq!(
        domains, expected,
        "the folders of src/ops are the domains of OPS_MAY_USE"
    );
    let mut wrong = Vec::new();
    for folder in &folders {
        let doc = std::fs::read_to_string(ops.join(folder).join("mod.rs")).unwrap();
        if !doc.starts_with("//! ") {
            wrong.push(format!(
                "src/ops/{folder}/mod.rs does not begin with what it owns"
            ));
        }
    }
    let mut all = Vec::new();
    rust_files(&ops, &mut all);
    let mut checked = 0;
    for file in all {
        let rel = file.strip_prefix(&ops).unwrap().display().to_string();
        if rel == "mod.rs" || rel == "state.rs" {
            continue; // the frame
        }
        checked += 1;
        let text = std::fs::read_to_string(&file).unwrap();
        wrong.extend(ops_file_wrongs(&rel, &text, &folders, &files));
    }
    assert!(checked > 30, "only {checked} files were read");
    assert!(
        wrong.is_empty(),
        "imports against the domains of ops (ARCHITECTURE.md):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn a_domain_naming_one_above_it_is_found() {
    let folders: BTreeSet<String> = ["accounts", "network", "server", "storage"]
        .map(String::from)
        .into();
    let files: BTreeSet<String> = ["page", "validate"].map(String::from).into();
    let text = "use super::{image, page};\nuse crate::ops::{Ctx, accounts::quota};\n\
                use super::super::validate;\n// crate::ops::server in a comment\n";
    assert_eq!(
        ops_names("storage/disk.rs", text),
        ["Ctx", "accounts", "storage", "validate"]
            .map(String::from)
            .into()
    );
    assert!(ops_file_wrongs("storage/disk.rs", text, &folders, &files).is_empty());
    let upward = "pub async fn f() { crate::ops::server::lock(); }\n\
                  #[cfg(test)]\nmod tests {\n    use crate::ops::network::x;\n}\n";
    assert_eq!(
        ops_file_wrongs("storage/disk.rs", upward, &folders, &files),
        ["src/ops/storage/disk.rs (storage) uses server (server)"]
    );
    let in_core = "use super::{Ctx, network};\nuse crate::ops::vdc;\n";
    assert_eq!(
        ops_file_wrongs("page.rs", in_core, &folders, &files),
        [
            "src/ops/page.rs (core) uses network (network)",
            "src/ops/page.rs: crate::ops::vdc is no module of ops: name it by its module's path",
        ]
    );
    // `use crate::ops;` then `ops::x`.
    let bare = "use crate::ops;\nfn f() { ops::storage::disk::g(); }\n";
    assert_eq!(
        ops_file_wrongs("accounts/quota.rs", bare, &folders, &files),
        ["src/ops/accounts/quota.rs (accounts) uses storage (storage)"]
    );
}

#[test]
fn imports_are_found_in_every_form() {
    let named = named_modules(
        "use crate::db::Tx;\nuse crate::{error::ApiError, jobs};\n// crate::api in a comment\n\
         let x = crate::ops::f(); // crate::state\nuse extility::{size, tools::x};\n\
         $crate::metrics::count();",
    );
    let expected: BTreeSet<String> = ["db", "error", "jobs", "metrics", "ops", "size", "tools"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(named, expected);
}
