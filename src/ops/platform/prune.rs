//! Pruning old backups (`extility backup DEST --prune-keep N --prune-older-than AGE`): once a
//! backup is made, the other backups in the same folder as it that the rule does not keep are
//! removed, and with a backup of RBD volumes its snapshots in the pool.
//!
//! Only folders that are extility backups (their `BACKUP` manifest says so) are ever
//! considered; anything else in the folder is left alone, and symbolic links are not followed.
//! A backup's time is its manifest's, written when the backup was complete. The backup just
//! made is never removed and counts as the newest.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};

use super::backup::MANIFEST;
use super::rbd_backup::{self, SNAPSHOTS};
use crate::storage::Storage;

/// Which backups to keep. A backup goes when either rule says so.
#[derive(Debug, Clone, Copy, Default)]
pub struct Keep {
    /// Keep the newest N (the new one among them).
    pub newest: Option<usize>,
    /// Keep those younger than this.
    pub younger_than: Option<Duration>,
}

impl Keep {
    /// Whether any rule is given (without one, nothing is pruned).
    pub fn prunes(&self) -> bool {
        self.newest.is_some() || self.younger_than.is_some()
    }
}

/// What pruning did.
#[derive(Debug, Default)]
pub struct Pruned {
    pub removed: Vec<PathBuf>,
    pub kept: usize,
}

/// A duration as `90s`, `30m`, `12h`, `7d` or `2w`.
pub fn parse_age(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .context("an age needs a unit: s, m, h, d or w (`30d`)")?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .with_context(|| format!("{text:?} is not an age (`30d`, `12h`)"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => bail!("{text:?} is not an age: its unit is one of s, m, h, d, w (`30d`)"),
    };
    number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .with_context(|| format!("{text:?} is too long an age"))
}

/// Removes the backups beside `made` (in its parent folder) that `keep` does not keep. Backups
/// of RBD volumes need `storage` on their pool to remove their snapshots; one in another pool
/// is left, and said.
pub fn prune(made: &Path, keep: Keep, storage: Option<&dyn Storage>) -> anyhow::Result<Pruned> {
    let made = made
        .canonicalize()
        .with_context(|| format!("finding {}", made.display()))?;
    let folder = made
        .parent()
        .context("the backup has no parent folder to prune")?;
    let now = SystemTime::now();
    let mut others: Vec<(SystemTime, PathBuf)> = Vec::new();
    for entry in fs::read_dir(folder)? {
        let entry = entry?;
        let path = entry.path();
        // Folders only, never through a link; the new backup is not a candidate.
        if !entry.file_type()?.is_dir() || path == made {
            continue;
        }
        let Ok(manifest) = fs::symlink_metadata(path.join(MANIFEST)) else {
            continue;
        };
        if !manifest.is_file() || !is_backup_manifest(&path.join(MANIFEST)) {
            continue;
        }
        others.push((manifest.modified()?, path));
    }
    // Newest first.
    others.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    let mut pruned = Pruned::default();
    for (rank, (time, path)) in others.into_iter().enumerate() {
        // The new backup is the newest: the others rank after it.
        let beyond_newest = keep.newest.is_some_and(|n| rank + 1 >= n);
        let too_old = keep
            .younger_than
            .is_some_and(|age| now.duration_since(time).unwrap_or_default() > age);
        if !(beyond_newest || too_old) {
            pruned.kept += 1;
            continue;
        }
        if path.join(SNAPSHOTS).exists() {
            let storage = storage.with_context(|| {
                format!(
                    "{} is a backup of RBD volumes: prune with --storage rbd and its pool",
                    path.display()
                )
            })?;
            rbd_backup::remove_snapshots(&path, storage)?;
        }
        fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
        pruned.removed.push(path);
    }
    Ok(pruned)
}

/// Whether a `BACKUP` file is one `extility backup` wrote.
fn is_backup_manifest(path: &Path) -> bool {
    fs::read(path).is_ok_and(|text| text.starts_with(b"extility ") && text.len() < 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_have_units() {
        assert_eq!(parse_age("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse_age("12h").unwrap(), Duration::from_secs(12 * 3600));
        assert_eq!(parse_age("2w").unwrap(), Duration::from_secs(14 * 86_400));
        assert_eq!(parse_age("90s").unwrap(), Duration::from_secs(90));
        for bad in ["30", "d", "3x", "-1d", "99999999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }

    fn backup(folder: &Path, name: &str, age: Duration) -> PathBuf {
        let path = folder.join(name);
        fs::create_dir(&path).unwrap();
        fs::write(path.join(MANIFEST), "extility 0 backup of x, 0 volumes\n").unwrap();
        fs::write(path.join("extility.db"), "db").unwrap();
        let time = SystemTime::now() - age;
        fs::File::options()
            .write(true)
            .open(path.join(MANIFEST))
            .unwrap()
            .set_modified(time)
            .unwrap();
        path
    }

    #[test]
    fn keeps_the_newest_and_the_young_and_touches_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(86_400);
        let made = backup(dir.path(), "new", Duration::ZERO);
        for n in 1..=5 {
            backup(dir.path(), &format!("b{n}"), day * n);
        }
        // Not backups: a folder without a manifest, one whose manifest is not ours, a file.
        fs::create_dir(dir.path().join("photos")).unwrap();
        fs::create_dir(dir.path().join("other")).unwrap();
        fs::write(dir.path().join("other").join(MANIFEST), "mine").unwrap();
        fs::write(dir.path().join("notes.txt"), "x").unwrap();

        let pruned = prune(
            &made,
            Keep {
                newest: Some(3),
                younger_than: None,
            },
            None,
        )
        .unwrap();
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["b1", "b2", "new", "notes.txt", "other", "photos"]);
        assert_eq!((pruned.removed.len(), pruned.kept), (3, 2));

        let pruned = prune(
            &made,
            Keep {
                newest: None,
                younger_than: Some(day + day / 2),
            },
            None,
        )
        .unwrap();
        assert_eq!((pruned.removed.len(), pruned.kept), (1, 1));
        assert!(dir.path().join("b1").exists() && !dir.path().join("b2").exists());
        // Keeping one keeps only the new backup.
        prune(
            &made,
            Keep {
                newest: Some(1),
                younger_than: None,
            },
            None,
        )
        .unwrap();
        assert!(made.exists() && !dir.path().join("b1").exists());
    }
}
