//! The hygiene engine (issue 26), called directly (`extility::hygiene::{check, clean}`) on
//! images made with the tools an image maker uses (`support::hygiene_images`), in libguestfs's
//! real appliance:
//!
//! - a check finds exactly what was planted, on ext4 in an MBR partition and on XFS in a GPT
//!   one, and nothing in the clean image (links to `/dev/zero` and `/dev/null`, an empty log
//!   and locked accounts are not findings), and never writes the image;
//! - a clean of a copy gives a clean report, which a new check of the copy confirms, locks
//!   root's password to `!`, removes the named test scripts, and leaves the original
//!   byte-identical;
//! - a hostile image (random superblock, a directory loop, 30 000 entries in `/tmp`) fails as
//!   `Unreadable`, a path to remove through a link is refused before anything changes, and no
//!   process is left holding an image;
//! - cancelling a check kills the appliance;
//! - a separate `/var` partition (named by UUID in the root's fstab) is read at `/var`, and the
//!   keys sshd's own `AuthorizedKeysFile` names are found and cleaned;
//! - on Ceph RBD (the test run's cluster), an unreadable image and a refused clean leave no
//!   `qemu-nbd` and no watcher behind.
//!
//! Each appliance takes tens of seconds under TCG, so the independent ones run in parallel.
//! Needs libguestfs-tools, xfsprogs, e2fsprogs, grub-pc-bin (scripts/test.sh installs them).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use extility::hygiene::{self, CleanOp, HygieneError, Limits, Report};
use extility::progress::Progress;
use extility::storage::VolumeLocation;

use crate::support::hygiene_images::{self as images, ROOT_HASH, planted};
use crate::support::tools::{md5, run_tool};

fn limits() -> Limits {
    Limits {
        memory_mib: 512,
        timeout: Duration::from_secs(1200),
    }
}

fn check(image: &Path) -> Result<Report, HygieneError> {
    hygiene::check(
        &VolumeLocation::File(image.to_path_buf()),
        limits(),
        &Progress::default(),
    )
}

fn clean(image: &Path, ops: &[CleanOp]) -> Result<Report, HygieneError> {
    hygiene::clean(
        &VolumeLocation::File(image.to_path_buf()),
        ops,
        limits(),
        &Progress::default(),
    )
}

/// (code, paths) of each finding, in the report's order.
fn found(report: &Report) -> Vec<(String, Vec<String>)> {
    report
        .findings
        .iter()
        .map(|f| (f.code.code().to_string(), f.paths.clone()))
        .collect()
}

fn expected() -> Vec<(String, Vec<String>)> {
    planted()
        .into_iter()
        .map(|(c, p)| (c.to_string(), p.into_iter().map(String::from).collect()))
        .collect()
}

/// Processes that have `path` open.
fn holders(path: &Path) -> Vec<String> {
    let path = path.canonicalize().unwrap();
    let mut found = Vec::new();
    for proc in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(fds) = std::fs::read_dir(proc.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|t| t == path) {
                let comm = std::fs::read_to_string(proc.path().join("comm")).unwrap_or_default();
                found.push(format!(
                    "{} {}",
                    proc.file_name().to_string_lossy(),
                    comm.trim()
                ));
            }
        }
    }
    found
}

fn assert_left_nothing(images: &[&Path]) {
    for image in images {
        assert_eq!(holders(image), Vec::<String>::new(), "{}", image.display());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("hygiene"), "{mounts}");
}

fn copy(dir: &Path, image: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    run_tool(
        "cp",
        &[
            "--sparse=always",
            image.to_str().unwrap(),
            to.to_str().unwrap(),
        ],
    );
    to
}

#[test]
fn check_finds_exactly_what_was_planted() {
    let (ext4, xfs, clean) = (
        images::dirty_ext4(),
        images::dirty_xfs(),
        images::clean_ext4(),
    );
    let before: Vec<String> = [ext4, xfs, clean].iter().map(|p| md5(p)).collect();
    // The bootable one the API tests clean and boot: a real guest's disk.
    let dir = tempfile::tempdir().unwrap();
    let bootable = images::bootable_dirty(dir.path(), "#!/bin/sh\npoweroff -f\n", "quiet");
    let (a, b, c, d) = std::thread::scope(|s| {
        let a = s.spawn(|| check(ext4));
        let b = s.spawn(|| check(xfs));
        let c = s.spawn(|| check(clean));
        let d = s.spawn(|| check(&bootable));
        (
            a.join().unwrap(),
            b.join().unwrap(),
            c.join().unwrap(),
            d.join().unwrap(),
        )
    });
    let (a, b, c, d) = (a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap());
    assert_eq!(found(&d), expected(), "{d:#?}");
    assert_eq!(found(&a), expected(), "{a:#?}");
    assert_eq!(found(&b), expected(), "{b:#?}");
    assert_eq!(a.filesystems, vec!["/dev/sda1 ext4 /"]);
    assert_eq!(b.filesystems, vec!["/dev/sda1 xfs /"]);
    assert!(c.is_clean(), "{c:#?}");
    let high = a
        .findings
        .iter()
        .filter(|f| f.severity == hygiene::Severity::High);
    assert_eq!(high.count(), 3, "{a:#?}");
    let hash = &a.findings[0];
    assert!(
        hash.detail.starts_with("root has a usable password hash"),
        "{hash:?}"
    );
    let after: Vec<String> = [ext4, xfs, clean].iter().map(|p| md5(p)).collect();
    assert_eq!(before, after, "a check never writes the image");
}

#[test]
fn clean_makes_a_clean_copy_and_leaves_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let (ext4, xfs) = (images::dirty_ext4(), images::dirty_xfs());
    let before = (md5(ext4), md5(xfs));
    let ext4_copy = copy(dir.path(), ext4, "ext4.img");
    let xfs_copy = copy(dir.path(), xfs, "xfs.img");
    let mut ops = CleanOp::defaults();
    ops.push(CleanOp::RemoveAuthorizedKeys);
    ops.push(CleanOp::RemovePaths(vec![
        "/opt/tests".into(),
        "/no/such/file".into(),
    ]));
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| clean(&ext4_copy, &ops));
        let b = s.spawn(|| clean(&xfs_copy, &ops));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.is_clean(), "{a:#?}");
    assert!(b.is_clean(), "{b:#?}");
    assert_eq!((md5(ext4), md5(xfs)), before, "the originals are untouched");

    // What the clean wrote is on the disk: a new appliance reads it clean.
    let again = check(&ext4_copy).unwrap();
    assert!(again.is_clean(), "{again:#?}");

    // The ext4 copy's partition (at 1 MiB) read by debugfs: root locked with `!` alone (no
    // hash left to crack), the other accounts as they were, the test scripts gone, the
    // first-boot agent kept.
    let fs = dir.path().join("ext4.fs");
    run_tool(
        "dd",
        &[
            &format!("if={}", ext4_copy.display()),
            &format!("of={}", fs.display()),
            "bs=1M",
            "skip=1",
            "status=none",
        ],
    );
    let debugfs = |cmd: &str| {
        let out = run_tool("debugfs", &["-R", cmd, fs.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shadow = debugfs("cat /etc/shadow");
    assert!(shadow.starts_with("root:!:19700:"), "{shadow}");
    assert!(
        shadow.contains("daemon:*:19700:") && !shadow.contains(ROOT_HASH),
        "{shadow}"
    );
    let opt = debugfs("ls /opt");
    assert!(!opt.contains("tests") && opt.contains("etc-link"), "{opt}");
    assert!(debugfs("stat /usr/sbin/extility-firstboot").contains("Type: regular"));
    let id = debugfs("stat /etc/machine-id");
    assert!(id.contains("Size: 0"), "{id}");
}

#[test]
fn hostile_images_fail_as_unreadable_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (superblock, looped, huge) = (
        images::bad_superblock(),
        images::directory_loop(),
        images::huge_directory(),
    );
    let escape = copy(dir.path(), images::dirty_ext4(), "escape.img");
    let escape_md5 = md5(&escape);
    let through_link = [CleanOp::RemovePaths(vec!["/opt/etc-link/passwd".into()])];
    let (a, b, c, d) = std::thread::scope(|s| {
        let a = s.spawn(|| check(superblock));
        let b = s.spawn(|| check(looped));
        let c = s.spawn(|| check(huge));
        let d = s.spawn(|| clean(&escape, &through_link));
        (
            a.join().unwrap(),
            b.join().unwrap(),
            c.join().unwrap(),
            d.join().unwrap(),
        )
    });
    for (what, r) in [("superblock", a), ("loop", b), ("huge", c)] {
        assert!(
            matches!(r, Err(HygieneError::Unreadable(_))),
            "{what}: {r:?}"
        );
    }
    assert!(matches!(d, Err(HygieneError::InvalidPath(_))), "{d:?}");
    assert_eq!(md5(&escape), escape_md5, "a refused clean changes nothing");
    assert_left_nothing(&[superblock, looped, huge, &escape]);
}

#[test]
fn cancelling_a_check_kills_the_appliance() {
    let dir = tempfile::tempdir().unwrap();
    let image = copy(dir.path(), images::dirty_ext4(), "cancel.img");
    let progress = Arc::new(Progress::default());
    let worker = {
        let (image, progress) = (image.clone(), progress.clone());
        std::thread::spawn(move || {
            hygiene::check(&VolumeLocation::File(image), limits(), &progress)
        })
    };
    // The appliance's QEMU opens the image once it starts.
    let deadline = Instant::now() + Duration::from_secs(600);
    while holders(&image).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the appliance never opened the image"
        );
        assert!(
            !worker.is_finished(),
            "the check ended before it was cancelled"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(progress.snapshot().phase, "queued");
    progress.cancel();
    let r = worker.join().unwrap();
    assert!(matches!(r, Err(HygieneError::Cancelled)), "{r:?}");
    assert_left_nothing(&[&image]);
}

/// `/var` on a partition of its own, named by UUID in the root's fstab (after two entries a
/// check refuses: a mount point with `..`, one through a link), is read at `/var`, so its
/// syslog is found; sshd's own `AuthorizedKeysFile /etc/ssh/keys/%u`, set in a file
/// `sshd_config` includes, is followed to root's key there. A clean of a copy truncates the
/// log on the `/var` partition and removes that key (alice's empty file stays), and leaves the
/// original as it was.
#[test]
fn a_separate_var_and_sshds_own_key_files_are_read_and_cleaned() {
    let image = images::separate_var();
    let before = md5(image);
    let dir = tempfile::tempdir().unwrap();
    let copied = copy(dir.path(), image, "separate-var.img");
    let mut ops = CleanOp::defaults();
    ops.push(CleanOp::RemoveAuthorizedKeys);
    let (checked, cleaned) = std::thread::scope(|s| {
        let a = s.spawn(|| check(image));
        let b = s.spawn(|| clean(&copied, &ops));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (checked, cleaned) = (checked.unwrap(), cleaned.unwrap());
    let expected: Vec<(String, Vec<String>)> = images::planted_separate_var()
        .into_iter()
        .map(|(c, p)| (c.to_string(), p.into_iter().map(String::from).collect()))
        .collect();
    assert_eq!(found(&checked), expected, "{checked:#?}");
    let both = vec!["/dev/sda1 ext4 /", "/dev/sda2 ext4 /var"];
    assert_eq!(checked.filesystems, both);
    assert!(cleaned.is_clean(), "{cleaned:#?}");
    assert_eq!(cleaned.filesystems, both);
    assert_eq!(md5(image), before, "a check never writes the image");

    // The copy's partitions read by debugfs: / at 1 MiB (32 MiB), /var at 33 MiB (16 MiB).
    let partition = |name: &str, skip: u64, count: u64| {
        let fs = dir.path().join(name);
        run_tool(
            "dd",
            &[
                &format!("if={}", copied.display()),
                &format!("of={}", fs.display()),
                "bs=1M",
                &format!("skip={skip}"),
                &format!("count={count}"),
                "status=none",
            ],
        );
        fs
    };
    let debugfs = |fs: &Path, cmd: &str| {
        let out = run_tool("debugfs", &["-R", cmd, fs.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (root, var) = (partition("root.fs", 1, 32), partition("var.fs", 33, 16));
    let keys = debugfs(&root, "ls /etc/ssh/keys");
    assert!(!keys.contains("root") && keys.contains("alice"), "{keys}");
    let syslog = debugfs(&var, "stat /log/syslog");
    assert!(syslog.contains("Size: 0"), "{syslog}");
}

/// An image of a Ceph pool (the test run's cluster) is read through the cluster: an image
/// with random bytes over its superblock fails as `Unreadable`, and a clean of a copy asked
/// to remove a path through a link is refused before anything changes; either way nothing is
/// left behind: no `qemu-nbd`, no client watching any image, the copy's bytes as they were.
/// (A check and a clean that succeed on RBD run through the API, in `hygiene::`.)
#[test]
fn rbd_images_that_fail_leave_nothing_behind() {
    let ceph = crate::support::ceph::cluster();
    let pool = ceph.new_pool();
    ceph.rbd(&[
        "import",
        images::bad_superblock().to_str().unwrap(),
        &format!("{pool}/bad"),
    ]);
    ceph.rbd(&[
        "import",
        images::dirty_ext4().to_str().unwrap(),
        &format!("{pool}/escape"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let export = |image: &str| {
        let to = dir.path().join(format!("{image}.export"));
        let _ = std::fs::remove_file(&to);
        ceph.rbd(&["export", &format!("{pool}/{image}"), to.to_str().unwrap()]);
        md5(&to)
    };
    let before = export("escape");
    assert_eq!(before, md5(images::dirty_ext4()));
    let location = |image: &str| VolumeLocation::Rbd {
        pool: pool.clone(),
        image: image.into(),
        ceph_conf: Some(ceph.conf.clone()),
        ceph_user: None,
    };
    let through_link = [CleanOp::RemovePaths(vec!["/opt/etc-link/passwd".into()])];
    let (bad, escape) = std::thread::scope(|s| {
        let a = s.spawn(|| hygiene::check(&location("bad"), limits(), &Progress::default()));
        let b = s.spawn(|| {
            hygiene::clean(
                &location("escape"),
                &through_link,
                limits(),
                &Progress::default(),
            )
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(matches!(bad, Err(HygieneError::Unreadable(_))), "{bad:?}");
    assert!(
        matches!(escape, Err(HygieneError::InvalidPath(_))),
        "{escape:?}"
    );
    assert_eq!(export("escape"), before, "a refused clean changes nothing");
    for image in ["bad", "escape"] {
        let status: serde_json::Value = serde_json::from_str(&ceph.rbd(&[
            "status",
            "--format",
            "json",
            &format!("{pool}/{image}"),
        ]))
        .unwrap();
        assert_eq!(
            status["watchers"],
            serde_json::json!([]),
            "{image}: {status}"
        );
    }
    let exporters: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("qemu-nbd") && c.contains(&format!("file.pool={pool},")))
        .collect();
    assert_eq!(exporters, Vec::<String>::new());
    // Nothing may linger that keeps the pool's images from being deleted.
    ceph.rbd(&["rm", &format!("{pool}/bad")]);
    ceph.rbd(&["rm", &format!("{pool}/escape")]);
}
