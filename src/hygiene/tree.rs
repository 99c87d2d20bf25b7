//! Reading the image's file tree through a [`Session`], as the image's own system would see
//! it: links are followed inside the image's root (never the appliance's), nothing but regular
//! files is ever read, and every listing and file is bounded.

use super::HygieneError;
use super::session::{Session, quote};

/// The most bytes of one listing (`find0`, `ls0`) and one file read.
const MAX_LISTING: u64 = 16 << 20;
const MAX_ENTRIES: usize = 20_000;
pub(crate) const MAX_FILE: u64 = 4 << 20;
/// Links followed in one path before it counts as a loop (the kernel's limit).
const MAX_LINKS: usize = 40;

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) mode: u32,
    pub(crate) size: i64,
}

impl Stat {
    pub(crate) fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
    pub(crate) fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
    pub(crate) fn is_link(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }
    /// A regular file with bytes, or anything else that is not a directory (a link, a
    /// device): something to report.
    pub(crate) fn has_content(&self) -> bool {
        !self.is_dir() && (!self.is_file() || self.size > 0)
    }
}

/// The stat structures guestfish printed, in order (`st_ino: -1` is a missing name).
fn parse_stats(out: &[u8]) -> Result<Vec<Option<Stat>>, HygieneError> {
    let text = String::from_utf8_lossy(out);
    let mut stats = Vec::new();
    let mut current: (Option<i64>, Option<u32>, Option<i64>) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        let Some((key, value)) = line.split_once(": ") else {
            continue;
        };
        let Ok(value) = value.parse::<i64>() else {
            continue;
        };
        match key {
            "st_ino" => current.0 = Some(value),
            "st_mode" => current.1 = Some(value as u32),
            "st_size" => current.2 = Some(value),
            "st_ctime_nsec" => {
                let (ino, mode, size) = std::mem::take(&mut current);
                match (ino, mode, size) {
                    (Some(-1), _, _) => stats.push(None),
                    (Some(_), Some(mode), Some(size)) => stats.push(Some(Stat { mode, size })),
                    _ => return Err(unexpected("a stat")),
                }
            }
            _ => {}
        }
    }
    Ok(stats)
}

fn unexpected(what: &str) -> HygieneError {
    HygieneError::Unreadable(format!("the appliance answered {what} unexpectedly"))
}

/// A name guestfish's string lists carry as it is.
fn list_safe(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'@'))
}

pub(crate) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

pub(crate) fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

impl Session<'_> {
    /// `lstat` of each name in `dir` (a path with no links in it); `None` for a missing one.
    pub(crate) fn lstat_names(
        &mut self,
        dir: &[u8],
        names: &[&[u8]],
    ) -> Result<Vec<Option<Stat>>, HygieneError> {
        let mut out = Vec::with_capacity(names.len());
        let mut batch: Vec<&[u8]> = Vec::new();
        let mut listed: Option<Vec<Vec<u8>>> = None;
        let flush = |s: &mut Self, batch: &mut Vec<&[u8]>, out: &mut Vec<Option<Stat>>| {
            if batch.is_empty() {
                return Ok::<(), HygieneError>(());
            }
            let list = batch
                .iter()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            let answer = s.run(&format!("lstatnslist {} \"{list}\"", quote(dir)))?;
            let stats = parse_stats(&answer)?;
            if stats.len() != batch.len() {
                return Err(unexpected("a stat list"));
            }
            out.extend(stats);
            batch.clear();
            Ok(())
        };
        for name in names {
            if list_safe(name) {
                batch.push(name);
                if batch.len() == 200 {
                    flush(self, &mut batch, &mut out)?;
                }
                continue;
            }
            flush(self, &mut batch, &mut out)?;
            // A name a list cannot carry: stat it alone, if the directory has it.
            if listed.is_none() {
                listed = Some(self.list_dir(dir)?);
            }
            if listed.iter().flatten().any(|n| n == name) {
                let answer = self.run(&format!("lstatns {}", quote(&join(dir, name))))?;
                let mut stats = parse_stats(&answer)?;
                if stats.len() != 1 {
                    return Err(unexpected("a stat"));
                }
                out.push(stats.remove(0));
            } else {
                out.push(None);
            }
        }
        flush(self, &mut batch, &mut out)?;
        Ok(out)
    }

    pub(crate) fn lstat(&mut self, dir: &[u8], name: &[u8]) -> Result<Option<Stat>, HygieneError> {
        Ok(self.lstat_names(dir, &[name])?.remove(0))
    }

    /// The names in directory `dir` (a path with no links in it).
    pub(crate) fn list_dir(&mut self, dir: &[u8]) -> Result<Vec<Vec<u8>>, HygieneError> {
        let file = self.host_file();
        let what = format!("the listing of {}", show(dir));
        self.run_watching(
            &format!(
                "ls0 {} {}",
                quote(dir),
                quote(file.as_os_str().as_encoded_bytes())
            ),
            Some((&file, MAX_LISTING, &what)),
        )?;
        read_listing(&file, &what)
    }

    /// Every path under directory `dir` (a path with no links in it), relative to it, without
    /// following links.
    pub(crate) fn find(&mut self, dir: &[u8]) -> Result<Vec<Vec<u8>>, HygieneError> {
        let file = self.host_file();
        let what = format!("the listing of {}", show(dir));
        self.run_watching(
            &format!(
                "find0 {} {}",
                quote(dir),
                quote(file.as_os_str().as_encoded_bytes())
            ),
            Some((&file, MAX_LISTING, &what)),
        )?;
        let mut names = read_listing(&file, &what)?;
        for n in &mut names {
            if n.first() == Some(&b'/') {
                n.remove(0);
            }
        }
        Ok(names)
    }

    /// `path` resolved as the image's own system would: each link followed inside the image's
    /// root. `None` when a part is missing, or the links loop.
    pub(crate) fn resolve(&mut self, path: &[u8]) -> Result<Option<(Vec<u8>, Stat)>, HygieneError> {
        let mut done: Vec<Vec<u8>> = Vec::new();
        let mut todo: std::collections::VecDeque<Vec<u8>> = components(path).into();
        let mut links = 0;
        let mut last = None;
        while let Some(c) = todo.pop_front() {
            if c == b".." {
                done.pop();
                continue;
            }
            let parent = to_path(&done);
            let Some(stat) = self.lstat(&parent, &c)? else {
                return Ok(None);
            };
            if stat.is_link() {
                links += 1;
                if links > MAX_LINKS {
                    return Ok(None);
                }
                let target = self.readlink(&join(&parent, &c))?;
                if target.first() == Some(&b'/') {
                    done.clear();
                }
                for t in components(&target).into_iter().rev() {
                    todo.push_front(t);
                }
                continue;
            }
            if !todo.is_empty() && !stat.is_dir() {
                return Ok(None);
            }
            done.push(c);
            last = Some(stat);
        }
        Ok(last.map(|s| (to_path(&done), s)))
    }

    /// A directory, resolved; `None` if the image has none there.
    pub(crate) fn resolve_dir(&mut self, path: &[u8]) -> Result<Option<Vec<u8>>, HygieneError> {
        Ok(self
            .resolve(path)?
            .filter(|(_, s)| s.is_dir())
            .map(|(p, _)| p))
    }

    pub(crate) fn readlink(&mut self, path: &[u8]) -> Result<Vec<u8>, HygieneError> {
        let mut out = self.run(&format!("readlink {}", quote(path)))?;
        if out.last() == Some(&b'\n') {
            out.pop();
        }
        Ok(out)
    }

    /// The bytes of regular file `path` (no links in it) of `size` bytes, at most
    /// [`MAX_FILE`]: a larger one is the image's fault.
    pub(crate) fn read_file(&mut self, path: &[u8], size: i64) -> Result<Vec<u8>, HygieneError> {
        if size < 0 || size as u64 > MAX_FILE {
            return Err(HygieneError::Unreadable(format!(
                "{} is larger than {MAX_FILE} bytes",
                show(path)
            )));
        }
        let file = self.host_file();
        let what = show(path);
        self.run_watching(
            &format!(
                "download {} {}",
                quote(path),
                quote(file.as_os_str().as_encoded_bytes())
            ),
            Some((&file, MAX_FILE, &what)),
        )?;
        let bytes = std::fs::read(&file)
            .map_err(|e| HygieneError::Unavailable(format!("reading a downloaded file: {e}")))?;
        let _ = std::fs::remove_file(&file);
        Ok(bytes)
    }

    /// Writes `bytes` over regular file `path` (no links in it), keeping its owner and mode.
    pub(crate) fn write_file(&mut self, path: &[u8], bytes: &[u8]) -> Result<(), HygieneError> {
        let file = self.host_file();
        std::fs::write(&file, bytes)
            .map_err(|e| HygieneError::Unavailable(format!("writing a temporary file: {e}")))?;
        self.run(&format!(
            "upload {} {}",
            quote(file.as_os_str().as_encoded_bytes()),
            quote(path)
        ))?;
        let _ = std::fs::remove_file(&file);
        Ok(())
    }
}

fn read_listing(file: &std::path::Path, what: &str) -> Result<Vec<Vec<u8>>, HygieneError> {
    let bytes = std::fs::read(file)
        .map_err(|e| HygieneError::Unavailable(format!("reading a listing: {e}")))?;
    let _ = std::fs::remove_file(file);
    let names: Vec<Vec<u8>> = bytes
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| n.to_vec())
        .collect();
    if names.len() > MAX_ENTRIES {
        return Err(HygieneError::Unreadable(format!(
            "{what}: more than {MAX_ENTRIES} entries"
        )));
    }
    Ok(names)
}

fn components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| c.to_vec())
        .collect()
}

fn to_path(components: &[Vec<u8>]) -> Vec<u8> {
    let mut p = Vec::new();
    for c in components {
        p.push(b'/');
        p.extend_from_slice(c);
    }
    if p.is_empty() {
        p.push(b'/');
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_parse_with_missing_names() {
        let out = b"[0] = {\n  st_dev: 1\n  st_ino: 5\n  st_mode: 33188\n  st_size: 6\n  st_ctime_nsec: 0\n}\n\
                    [1] = {\n  st_dev: 0\n  st_ino: -1\n  st_mode: 0\n  st_size: 0\n  st_ctime_nsec: 0\n}\n";
        let stats = parse_stats(out).unwrap();
        assert_eq!(stats.len(), 2);
        assert!(stats[0].unwrap().is_file());
        assert_eq!(stats[0].unwrap().size, 6);
        assert_eq!(stats[1], None);
    }

    #[test]
    fn paths_split_and_join() {
        assert_eq!(components(b"//a/./b/"), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(to_path(&[]), b"/");
        assert_eq!(join(b"/", b"etc"), b"/etc");
        assert!(!list_safe(b"a b") && !list_safe(b"a'b") && list_safe(b"ssh_host_rsa_key.pub"));
    }
}
