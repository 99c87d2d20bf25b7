//! The book (`docs/`, an mdBook) builds, every page under `docs/src/` is in it, and every
//! relative link and `#anchor` of the book, of README.md, ARCHITECTURE.md and docs/README.md
//! leads somewhere. The book's links are checked on the HTML mdBook writes, so an anchor is the
//! id mdBook gave the heading, and a link that leaves the book (to a source file, say) is
//! caught as the 404 it would be. External (`http`) links are not checked.
//!
//! mdBook is the pinned `cargo install mdbook --locked --version 0.5.4` that `scripts/test.sh`
//! installs.

use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The book, built once per test run into the test's own folder under `target/`.
static BUILT: LazyLock<PathBuf> = LazyLock::new(|| {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("book");
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new("mdbook")
        .arg("build")
        .arg(repository().join("docs"))
        .arg("--dest-dir")
        .arg(&out)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "mdbook could not be run ({e}): scripts/test.sh installs it \
                 (cargo install mdbook --locked --version 0.5.4)"
            )
        });
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "mdbook build docs failed:\n{said}");
    assert!(
        !said.contains("WARN") && !said.contains("ERROR"),
        "mdbook build docs warned:\n{said}"
    );
    out
});

#[test]
fn every_page_is_in_the_book() {
    let src = repository().join("docs/src");
    let mut missing = Vec::new();
    for page in files(&src, "md") {
        let relative = page.strip_prefix(&src).unwrap();
        if relative == Path::new("SUMMARY.md") {
            continue;
        }
        if !BUILT.join(relative.with_extension("html")).exists() {
            missing.push(relative.display().to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "pages under docs/src that docs/src/SUMMARY.md does not list (so not in the book): {missing:?}"
    );
}

#[test]
fn every_link_of_the_book_leads_somewhere() {
    let broken = broken_links(&BUILT);
    assert!(
        broken.is_empty(),
        "broken links in the book (page: link):\n{}",
        broken.join("\n")
    );
}

/// The Markdown files outside the book that link into it.
const OUTSIDE: [&str; 3] = ["README.md", "ARCHITECTURE.md", "docs/README.md"];

#[test]
fn every_link_of_the_readme_and_architecture_leads_somewhere() {
    let src = repository().join("docs/src");
    let mut ids = Ids::default();
    let mut broken = Vec::new();
    for file in OUTSIDE {
        let path = repository().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let own_ids: BTreeSet<String> = markdown_headings(&text).map(|h| heading_id(&h)).collect();
        for link in markdown_links(&text) {
            if is_external(&link) {
                continue;
            }
            let (target, anchor) = split_anchor(&link);
            let ok = if target.is_empty() {
                own_ids.contains(anchor.unwrap_or_default())
            } else {
                let target = resolve(path.parent().unwrap(), target);
                target.exists()
                    && anchor.is_none_or(|anchor| {
                        // An anchor into the book is checked on the page mdBook made of it.
                        target.strip_prefix(&src).is_ok_and(|page| {
                            ids.of(&BUILT.join(page.with_extension("html")))
                                .contains(anchor)
                        })
                    })
            };
            if !ok {
                broken.push(format!("{file}: {link}"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:?}");
}

/// The checker itself finds a missing page and a missing anchor.
#[test]
fn a_broken_link_is_found() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("api")).unwrap();
    std::fs::write(
        dir.path().join("index.html"),
        r##"<h1 id="top">x</h1><a href="api/page.html#here">ok</a> <a href="#top">ok</a>
           <a href="api/page.html#gone">no anchor</a> <a href="missing.html">no page</a>
           <a href="https://example.com/x">external</a>"##,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("api/page.html"),
        r#"<h2 id="here">y</h2><a href="../index.html#top">ok</a><img src="../nothing.png">"#,
    )
    .unwrap();
    let broken = broken_links(dir.path());
    assert_eq!(
        broken,
        vec![
            "api/page.html: ../nothing.png",
            "index.html: api/page.html#gone",
            "index.html: missing.html",
        ]
    );
}

/// Every relative `href` and `src` of the HTML pages under `root` whose file or anchor is not
/// there, as `page: link`, sorted.
fn broken_links(root: &Path) -> Vec<String> {
    let mut ids = Ids::default();
    let mut broken = Vec::new();
    for page in files(root, "html") {
        let html = std::fs::read_to_string(&page).unwrap();
        let name = page.strip_prefix(root).unwrap().display().to_string();
        // mdBook's 404 page takes its links from the site's root (`<base href="/">`).
        let base = if html.contains("<base href=\"/\">") {
            root.to_path_buf()
        } else {
            page.parent().unwrap().to_path_buf()
        };
        for link in attributes(&html, "href").chain(attributes(&html, "src")) {
            if is_external(&link) {
                continue;
            }
            let (path, anchor) = split_anchor(&link);
            let path = path.split('?').next().unwrap();
            let target = if path.is_empty() {
                page.clone()
            } else if let Some(from_root) = path.strip_prefix('/') {
                resolve(root, from_root)
            } else {
                resolve(&base, path)
            };
            let target = if target.is_dir() {
                target.join("index.html")
            } else {
                target
            };
            let ok = target.starts_with(root)
                && target.exists()
                && anchor.is_none_or(|a| ids.of(&target).contains(a));
            if !ok {
                broken.push(format!("{name}: {link}"));
            }
        }
    }
    broken.sort();
    broken.dedup();
    broken
}

/// The ids of HTML pages, read once each.
#[derive(Default)]
struct Ids(HashMap<PathBuf, BTreeSet<String>>);

impl Ids {
    fn of(&mut self, page: &Path) -> &BTreeSet<String> {
        self.0.entry(page.to_path_buf()).or_insert_with(|| {
            std::fs::read_to_string(page)
                .map(|html| attributes(&html, "id").collect())
                .unwrap_or_default()
        })
    }
}

fn is_external(link: &str) -> bool {
    link.contains("://")
        || link.starts_with("//")
        || link.starts_with("mailto:")
        || link.starts_with("javascript:")
        || link.starts_with("data:")
}

fn split_anchor(link: &str) -> (&str, Option<&str>) {
    match link.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (link, None),
    }
}

/// `path` taken from `dir`, with `..` and `.` folded (the target need not exist).
fn resolve(dir: &Path, path: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for part in dir.join(path).components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The values of `name="..."` attributes in `html`, entities left as they are but `&amp;`.
fn attributes<'a>(html: &'a str, name: &str) -> impl Iterator<Item = String> + 'a {
    let needle = format!(" {name}=\"");
    html.match_indices(needle.clone().as_str())
        .map(|(at, _)| at)
        .collect::<Vec<_>>()
        .into_iter()
        .filter_map(move |at| {
            let start = at + needle.len();
            let end = start + html[start..].find('"')?;
            Some(html[start..end].replace("&amp;", "&"))
        })
}

/// The targets of the inline links and images of a Markdown text (`[text](target)`), outside
/// code blocks and code spans.
fn markdown_links(markdown: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, part)| part)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].split_whitespace().next().unwrap_or_default();
            links.push(target.to_string());
            rest = &after[end..];
        }
    }
    links
}

/// The text of a Markdown text's `#` headings, outside code blocks.
fn markdown_headings(markdown: &str) -> impl Iterator<Item = String> + '_ {
    let mut fenced = false;
    markdown.lines().filter_map(move |line| {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            return None;
        }
        Some(line.trim_start_matches('#').trim().replace('`', ""))
    })
}

/// The id mdBook (and GitHub) give a heading: letters, digits, `-` and `_` in lower case,
/// spaces as `-`, everything else dropped.
fn heading_id(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                Some(c.to_ascii_lowercase())
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path, extension));
        } else if path.extension().is_some_and(|e| e == extension) {
            found.push(path);
        }
    }
    found.sort();
    found
}
