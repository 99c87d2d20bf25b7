//! One appliance session: mount the image's file systems (each operating system libguestfs's
//! inspection finds, with its own mount points; every other file system alone), read each
//! tree, clean it if asked, and read it again.

use crate::progress::Progress;
use crate::storage::VolumeLocation;

use super::fstab;
use super::inventory::Inventory;
use super::session::{Drive, Session, quote};
use super::tree::{join, show};
use super::{CleanOp, Finding, HygieneError, Limits, Report, accounts};

/// One tree to read: what is mounted where (`(mount point, device, type)`, `/` first).
struct Tree {
    mounts: Vec<(String, String, String)>,
}

pub(super) fn run(
    volume: &VolumeLocation,
    ops: Option<&[CleanOp]>,
    limits: Limits,
    progress: &Progress,
) -> Result<Report, HygieneError> {
    let drive = match volume {
        VolumeLocation::File(path) => Drive::File(path),
        VolumeLocation::Rbd {
            pool,
            image,
            ceph_conf,
            ceph_user,
        } => Drive::Rbd {
            pool,
            image,
            conf: ceph_conf.as_deref(),
            user: ceph_user.as_deref(),
        },
    };
    let writable = ops.is_some();
    let mut s = Session::launch(&drive, writable, limits, progress)?;
    progress.set_phase("reading file systems");
    let trees = trees(&mut s)?;
    if trees.is_empty() {
        return Err(HygieneError::Unreadable(
            "no file system libguestfs can read was found".into(),
        ));
    }
    if let Some(ops) = ops {
        // A path to remove through a link refuses the clean before any file system is
        // mounted writable (a writable mount alone changes bytes of the image).
        for tree in &trees {
            mount(&mut s, tree, false)?;
            check_paths(&mut s, ops)?;
            s.run("umount-all")?;
        }
    }
    let mut report = Report::default();
    let several = trees.len() > 1;
    for tree in &trees {
        mount(&mut s, tree, writable)?;
        let prefix = if several {
            format!("{}:", tree.mounts[0].1)
        } else {
            String::new()
        };
        if let Some(ops) = ops {
            progress.set_phase("cleaning");
            let before = s.inventory()?;
            apply(&mut s, &before, ops)?;
            progress.set_phase("checking the cleaned image");
        } else {
            progress.set_phase("checking");
        }
        let inventory = s.inventory()?;
        merge(&mut report.findings, inventory.findings(&prefix));
        for (mp, dev, fstype) in &tree.mounts {
            report.filesystems.push(format!("{dev} {fstype} {mp}"));
        }
        s.run("umount-all")?;
    }
    report
        .findings
        .sort_by_key(|f| std::cmp::Reverse(f.severity));
    s.finish()?;
    Ok(report)
}

/// Adds `new` to `all`, one finding per code.
fn merge(all: &mut Vec<Finding>, new: Vec<Finding>) {
    for f in new {
        match all.iter_mut().find(|a| a.code == f.code) {
            Some(a) => {
                a.paths.extend(f.paths);
                if a.detail != f.detail {
                    a.detail = format!("{} {}", a.detail, f.detail);
                }
            }
            None => all.push(f),
        }
    }
}

/// The trees: each operating system inspection finds, then each other file system alone.
fn trees(s: &mut Session) -> Result<Vec<Tree>, HygieneError> {
    let listed = String::from_utf8_lossy(&s.run("list-filesystems")?).into_owned();
    let filesystems: Vec<(String, String)> = listed
        .lines()
        .filter_map(|l| l.rsplit_once(": "))
        .map(|(d, t)| (d.trim().to_string(), t.trim().to_string()))
        .filter(|(d, t)| {
            d.starts_with("/dev/") && !t.is_empty() && !matches!(t.as_str(), "unknown" | "swap")
        })
        .collect();
    let fstype = |dev: &str| {
        filesystems
            .iter()
            .find(|(d, _)| d == dev)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| "unknown".into())
    };
    let mut trees = Vec::new();
    let mut covered = Vec::new();
    // Inspection reads a hostile image in the appliance too; when it fails or finds nothing,
    // every file system is read alone below.
    let roots = String::from_utf8_lossy(&s.run("-inspect-os")?).into_owned();
    for root in roots
        .lines()
        .map(str::trim)
        .filter(|r| r.starts_with("/dev/"))
    {
        if covered.iter().any(|c| c == root) {
            continue;
        }
        let answer = s.run(&format!(
            "inspect-get-mountpoints {}",
            quote(root.as_bytes())
        ))?;
        let mut mounts: Vec<(String, String, String)> = String::from_utf8_lossy(&answer)
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(mp, dev)| (mp.trim().to_string(), dev.trim().to_string()))
            .filter(|(mp, dev)| mp.starts_with('/') && dev.starts_with("/dev/"))
            .map(|(mp, dev)| {
                let t = fstype(&dev);
                (mp, dev, t)
            })
            .filter(|(_, dev, _)| filesystems.iter().any(|(d, _)| d == dev))
            .collect();
        mounts.sort_by_key(|(mp, _, _)| mp.len());
        mounts.dedup_by(|a, b| a.1 == b.1);
        if mounts.first().is_none_or(|(mp, _, _)| mp != "/") {
            continue;
        }
        covered.extend(mounts.iter().map(|(_, d, _)| d.clone()));
        trees.push(Tree { mounts });
    }
    // What inspection did not take for an operating system (it wants /bin and the like): each
    // file system with an /etc/fstab is a root, with the others its fstab names mounted where
    // it says; then each one left, alone.
    let mut ids: Option<Vec<(String, String, String)>> = None;
    for (dev, t) in &filesystems {
        if covered.contains(dev) {
            continue;
        }
        let mut mounts = vec![("/".to_string(), dev.clone(), t.clone())];
        for entry in fstab_entries(s, dev)? {
            let found = match &entry.source {
                fstab::Source::Device(d) => {
                    let d = fstab::appliance_device(d);
                    filesystems
                        .iter()
                        .find(|(f, _)| *f == d)
                        .map(|(f, _)| f.clone())
                }
                fstab::Source::Uuid(_) | fstab::Source::Label(_) => {
                    if ids.is_none() {
                        ids = Some(identities(s, &filesystems)?);
                    }
                    ids.iter()
                        .flatten()
                        .find(|(_, uuid, label)| match &entry.source {
                            fstab::Source::Uuid(u) => uuid == u,
                            fstab::Source::Label(l) => label == l,
                            fstab::Source::Device(_) => false,
                        })
                        .map(|(f, _, _)| f.clone())
                }
            };
            let Some(found) = found else { continue };
            if covered.contains(&found)
                || mounts
                    .iter()
                    .any(|(mp, d, _)| *d == found || *mp == entry.mount_point)
            {
                continue;
            }
            let t = fstab_type(&filesystems, &found);
            mounts.push((entry.mount_point, found, t));
        }
        if mounts.len() > 1 {
            mounts.sort_by_key(|(mp, _, _)| mp.len());
            covered.extend(mounts.iter().map(|(_, d, _)| d.clone()));
            trees.push(Tree { mounts });
        }
    }
    for (dev, t) in &filesystems {
        if !covered.contains(dev) {
            trees.push(Tree {
                mounts: vec![("/".into(), dev.clone(), t.clone())],
            });
        }
    }
    Ok(trees)
}

fn fstab_type(filesystems: &[(String, String)], dev: &str) -> String {
    filesystems
        .iter()
        .find(|(d, _)| d == dev)
        .map(|(_, t)| t.clone())
        .unwrap_or_else(|| "unknown".into())
}

/// The entries of `dev`'s `/etc/fstab` (mounted read-only, then unmounted) whose mount point
/// is a directory of `dev` reached without a link: none if it has no fstab. (A file system
/// mounted on another one's directory, `/var/log` on a separate `/var`, is read alone.)
fn fstab_entries(s: &mut Session, dev: &str) -> Result<Vec<fstab::Entry>, HygieneError> {
    s.run(&format!("mount-ro {} /", quote(dev.as_bytes())))?;
    let mut entries = Vec::new();
    if let Some((path, st)) = s.resolve(b"/etc/fstab")?
        && st.is_file()
    {
        for entry in fstab::parse(&s.read_file(&path, st.size)?) {
            if s.resolve_dir(entry.mount_point.as_bytes())?.as_deref()
                == Some(entry.mount_point.as_bytes())
            {
                entries.push(entry);
            }
        }
    }
    s.run("umount-all")?;
    Ok(entries)
}

/// (device, UUID in lower case, label) of each file system; empty when it has none.
fn identities(
    s: &mut Session,
    filesystems: &[(String, String)],
) -> Result<Vec<(String, String, String)>, HygieneError> {
    let mut out = Vec::new();
    for (dev, _) in filesystems {
        let line = |b: Vec<u8>| String::from_utf8_lossy(&b).trim().to_string();
        let uuid = line(s.run(&format!("vfs-uuid {}", quote(dev.as_bytes())))?);
        let label = line(s.run(&format!("vfs-label {}", quote(dev.as_bytes())))?);
        out.push((dev.clone(), uuid.to_ascii_lowercase(), label));
    }
    Ok(out)
}

/// Mounts a tree's file systems; a mount point the tree lacks (or reaches through a link) is
/// left out, and its file system read as part of nothing.
fn mount(s: &mut Session, tree: &Tree, writable: bool) -> Result<(), HygieneError> {
    let verb = if writable { "mount" } else { "mount-ro" };
    for (i, (mp, dev, _)) in tree.mounts.iter().enumerate() {
        let target = if i == 0 {
            b"/".to_vec()
        } else {
            match s.resolve_dir(mp.as_bytes())? {
                Some(p) if p == mp.as_bytes() => p,
                _ => continue,
            }
        };
        s.run(&format!(
            "{verb} {} {}",
            quote(dev.as_bytes()),
            quote(&target)
        ))?;
    }
    Ok(())
}

/// Does `ops` to the tree mounted at `/`, whose inventory is `inv`.
fn check_paths(s: &mut Session, ops: &[CleanOp]) -> Result<(), HygieneError> {
    for op in ops {
        if let CleanOp::RemovePaths(paths) = op {
            for p in paths {
                remove_path(s, p, false)?;
            }
        }
    }
    Ok(())
}

fn apply(s: &mut Session, inv: &Inventory, ops: &[CleanOp]) -> Result<(), HygieneError> {
    for op in ops {
        match op {
            CleanOp::RemoveSshHostKeys => remove_all(s, &inv.host_keys)?,
            CleanOp::RemoveAuthorizedKeys => remove_all(s, &inv.authorized_keys)?,
            CleanOp::RemoveShellHistories => remove_all(s, &inv.histories)?,
            CleanOp::RemoveCloudInitState => remove_all(s, &inv.cloud_init)?,
            CleanOp::RemoveDhcpLeases => remove_all(s, &inv.leases)?,
            CleanOp::RemovePersistentNetRules => remove_all(s, &inv.net_rules)?,
            CleanOp::EmptyTmp => remove_all(s, &inv.tmp)?,
            CleanOp::LockPasswords => lock_passwords(s, inv)?,
            CleanOp::TruncateLogs => {
                for log in &inv.logs {
                    // A journal file emptied is a corrupt journal: journald starts a new one
                    // when the file is gone.
                    let journal = log.ends_with(b".journal")
                        || log.ends_with(b".journal~")
                        || log.windows(9).any(|w| w == b"/journal/");
                    if journal {
                        s.run(&format!("rm-f {}", quote(log)))?;
                    } else {
                        s.run(&format!("truncate {}", quote(log)))?;
                    }
                }
            }
            CleanOp::EmptyMachineId => {
                if let Some(id) = &inv.machine_id {
                    // Empty, not gone: systemd then makes a new one at the first boot.
                    s.run(&format!("truncate {}", quote(id)))?;
                }
                if let Some(id) = &inv.dbus_machine_id {
                    s.run(&format!("rm-f {}", quote(id)))?;
                }
            }
            CleanOp::RemovePaths(paths) => {
                for p in paths {
                    remove_path(s, p, true)?;
                }
            }
        }
    }
    Ok(())
}

fn remove_all(s: &mut Session, paths: &[Vec<u8>]) -> Result<(), HygieneError> {
    for p in paths {
        s.run(&format!("rm-rf {}", quote(p)))?;
    }
    Ok(())
}

/// `!` for every open account in shadow; in passwd, `x` where shadow has the account (login
/// then reads shadow) and `!` where it has not.
fn lock_passwords(s: &mut Session, inv: &Inventory) -> Result<(), HygieneError> {
    let in_shadow: Vec<String> = inv
        .shadow
        .as_ref()
        .map(|f| {
            accounts::accounts(&f.bytes)
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        })
        .unwrap_or_default();
    if let Some(shadow) = &inv.shadow
        && let Some(new) = accounts::lock(&shadow.bytes, |_| "!")
    {
        s.write_file(&shadow.path, &new)?;
    }
    if let Some(passwd) = &inv.passwd
        && let Some(new) = accounts::lock(&passwd.bytes, |name| {
            if in_shadow.iter().any(|n| n == name) {
                "x"
            } else {
                "!"
            }
        })
    {
        s.write_file(&passwd.path, &new)?;
    }
    Ok(())
}

/// Removes `path` (already validated; with `remove` false, only checks it) unless a part of it before the last is a link: that
/// is refused, whatever the link points to, since it could take the removal elsewhere.
fn remove_path(s: &mut Session, path: &str, remove: bool) -> Result<(), HygieneError> {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let mut dir = b"/".to_vec();
    for (i, part) in parts.iter().enumerate() {
        let Some(st) = s.lstat(&dir, part.as_bytes())? else {
            return Ok(());
        };
        let here = join(&dir, part.as_bytes());
        if i + 1 == parts.len() {
            if remove {
                s.run(&format!("rm-rf {}", quote(&here)))?;
            }
            return Ok(());
        }
        if st.is_link() {
            return Err(HygieneError::InvalidPath(format!(
                "{path:?}: {} is a symbolic link in the image",
                show(&here)
            )));
        }
        if !st.is_dir() {
            return Ok(());
        }
        dir = here;
    }
    Ok(())
}
