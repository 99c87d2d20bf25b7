//! Images for the hygiene tests (issue 26), built once per test run under
//! `target/tmp/hygiene-images` and shared: what a check must find is planted with the tools an
//! image maker uses (`mkfs.ext4 -d` and `fsmaker` for ext4 on MBR; `sfdisk` and
//! `mkfs.xfs -p` for XFS on GPT), never libguestfs, so the checker is not its own witness.
//!
//! - [`dirty_ext4`], [`dirty_xfs`]: the artefacts of [`planted`] (a shadow entry with a fixed
//!   hash, SSH host keys, root's authorized_keys, a non-empty syslog and wtmp, root's
//!   `.bash_history`, a machine-id), beside things that must not be reported (an empty log, a
//!   link to `/dev/zero` in `/var/log`, locked accounts, a history linked to `/dev/null`), the
//!   first-boot agent installed, and the image maker's test scripts in `/opt/tests`;
//! - [`clean_ext4`]: the same system with none of the artefacts;
//! - [`bad_superblock`]: the dirty ext4 image with random bytes over its superblock;
//!   [`directory_loop`]: an ext4 file system whose `/var/log` holds a directory linked into
//!   itself (debugfs); [`huge_directory`]: 30 000 entries in `/tmp`;
//! - [`separate_var`]: the clean system with `/var` on a second MBR partition (fstab names it
//!   by UUID), a non-empty syslog there, and an authorized key where sshd's own
//!   `AuthorizedKeysFile` says (`/etc/ssh/keys/%u`, set in a file `sshd_config` includes);
//! - [`bootable_dirty`]: a real guest's bootable disk ([`GuestDisk`]) whose root file system
//!   holds the same artefacts, for the tests that clean an image and boot it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::support::guest::GuestDisk;
use crate::support::tools::{assert_success, fsmaker, output, run_tool, system_tool};

/// The fixed hash of root's password in the dirty images (`openssl passwd -6 -salt
/// extility hunter2`).
pub const ROOT_HASH: &str = "$6$extility$IImpGz6Diy.pYisxKKEMegNfRb8hjvnMQsMR/X6gUgl.IF9Smq.0EMKBBHTI0itBjU8wIubbkZJplGNUPEzBW1";

/// What [`dirty_ext4`] and [`dirty_xfs`] plant: (finding code, its paths), in the order a
/// report lists them.
pub fn planted() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("PASSWORD_HASH", vec!["/etc/shadow"]),
        ("AUTHORIZED_KEYS", vec!["/root/.ssh/authorized_keys"]),
        (
            "SSH_HOST_KEYS",
            vec![
                "/etc/ssh/ssh_host_ed25519_key",
                "/etc/ssh/ssh_host_ed25519_key.pub",
                "/etc/ssh/ssh_host_rsa_key",
                "/etc/ssh/ssh_host_rsa_key.pub",
            ],
        ),
        ("LOGS", vec!["/var/log/syslog", "/var/log/wtmp"]),
        ("SHELL_HISTORY", vec!["/root/.bash_history"]),
        ("MACHINE_ID", vec!["/etc/machine-id"]),
    ]
}

/// One entry of an image's tree.
#[derive(Clone)]
pub enum Entry {
    File(&'static str, u32, Vec<u8>),
    Link(&'static str, &'static str),
}

use Entry::{File, Link};

fn system(clean: bool) -> Vec<Entry> {
    let shadow = if clean {
        "root:*:19700:0:99999:7:::\ndaemon:*:19700:0:99999:7:::\nalice:!:19700:0:99999:7:::\n"
            .to_string()
    } else {
        format!(
            "root:{ROOT_HASH}:19700:0:99999:7:::\ndaemon:*:19700:0:99999:7:::\nalice:!:19700:0:99999:7:::\n"
        )
    };
    let firstboot = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/firstboot/extility-firstboot"),
    )
    .unwrap();
    let mut entries = vec![
        File(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
              alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
                .to_vec(),
        ),
        File("etc/shadow", 0o640, shadow.into_bytes()),
        File("etc/hostname", 0o644, b"image\n".to_vec()),
        File(
            "etc/os-release",
            0o644,
            b"ID=debian\nVERSION_ID=12\n".to_vec(),
        ),
        File(
            "etc/fstab",
            0o644,
            b"/dev/sda1 / auto defaults 0 1\n".to_vec(),
        ),
        File(
            "etc/ssh/sshd_config",
            0o644,
            b"PermitRootLogin no\n".to_vec(),
        ),
        File("usr/sbin/extility-firstboot", 0o755, firstboot),
        File("var/log/apt/empty.log", 0o644, Vec::new()),
        Link("var/log/zero", "/dev/zero"),
        Link("home/alice/.bash_history", "/dev/null"),
        File("home/alice/.profile", 0o644, b"PS1='$ '\n".to_vec()),
        File("boot/grub/grub.cfg", 0o644, b"set timeout=0\n".to_vec()),
        File(
            "opt/tests/run-tests.sh",
            0o755,
            b"#!/bin/sh\necho testing\n".to_vec(),
        ),
        Link("opt/etc-link", "/etc"),
    ];
    if clean {
        entries.extend([
            File("etc/machine-id", 0o444, Vec::new()),
            File("var/log/syslog", 0o640, Vec::new()),
            File("var/log/wtmp", 0o664, Vec::new()),
            File("root/.profile", 0o644, b"PS1='# '\n".to_vec()),
        ]);
    } else {
        entries.extend([
            File(
                "etc/machine-id",
                0o444,
                b"4f6b8a1e2d3c4b5a69788796a5b4c3d2\n".to_vec(),
            ),
            File("etc/ssh/ssh_host_ed25519_key", 0o600, b"-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n".to_vec()),
            File("etc/ssh/ssh_host_ed25519_key.pub", 0o644, b"ssh-ed25519 AAAAfake root@image\n".to_vec()),
            File("etc/ssh/ssh_host_rsa_key", 0o600, b"-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n".to_vec()),
            File("etc/ssh/ssh_host_rsa_key.pub", 0o644, b"ssh-rsa AAAAfake root@image\n".to_vec()),
            File("root/.ssh/authorized_keys", 0o600, b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC2LHLMZX1m+4utRPDXAvGf6vVlG3EAz2RkPpEp3uufR maker@laptop\n".to_vec()),
            File("root/.bash_history", 0o600, b"ls\necho hunter2 | passwd --stdin\n".to_vec()),
            File("var/log/syslog", 0o640, b"Dec  7 10:00:00 image sshd[1]: Accepted password for root\n".to_vec()),
            File("var/log/wtmp", 0o664, vec![7u8; 384]),
        ]);
    }
    entries
}

/// The entries of a dirty system's root file system, for other trees (a guest's root).
pub fn dirty_entries() -> Vec<Entry> {
    system(false)
}

/// Writes `entries` into a host directory `root`.
fn write_tree(root: &Path, entries: &[Entry]) {
    std::fs::create_dir_all(root).unwrap();
    for e in entries {
        match e {
            File(path, mode, bytes) => {
                let p = root.join(path);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, bytes).unwrap();
                std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(*mode))
                    .unwrap();
            }
            Link(path, target) => {
                let p = root.join(path);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::os::unix::fs::symlink(target, &p).unwrap();
            }
        }
    }
    for d in ["tmp", "var/tmp", "root", "home"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
}

fn ext4_fs(dir: &Path, name: &str, size: &str, entries: &[Entry]) -> PathBuf {
    let root = dir.join(format!("{name}.root"));
    write_tree(&root, entries);
    let fs = dir.join(format!("{name}.fs"));
    run_tool(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-d",
            root.to_str().unwrap(),
            fs.to_str().unwrap(),
            size,
        ],
    );
    fs
}

/// An ext4 file system of `entries` made an MBR disk by `fsmaker`.
fn ext4_mbr(dir: &Path, name: &str, entries: &[Entry]) -> PathBuf {
    let fs = ext4_fs(dir, name, "32M", entries);
    let disk = dir.join(format!("{name}.img"));
    assert_success(&output(fsmaker().arg(&fs).arg(&disk)));
    disk
}

/// An XFS file system of `entries` (`mkfs.xfs -p`, no root needed) in partition 1 of a GPT
/// disk (`sfdisk`).
fn xfs_gpt(dir: &Path, name: &str, entries: &[Entry]) -> PathBuf {
    let root = dir.join(format!("{name}.root"));
    write_tree(&root, entries);
    let mut proto = String::from("xfs-image\n0 0\nd--755 0 0\n");
    proto_dir(&root, &mut proto);
    proto.push_str("$\n");
    let proto_file = dir.join(format!("{name}.proto"));
    std::fs::write(&proto_file, proto).unwrap();
    // XFS's smallest file system; the file stays sparse.
    const FS_MIB: u64 = 300;
    let fs = dir.join(format!("{name}.fs"));
    std::fs::File::create(&fs)
        .unwrap()
        .set_len(FS_MIB << 20)
        .unwrap();
    run_tool(
        "mkfs.xfs",
        &[
            "-q",
            "-f",
            "-p",
            proto_file.to_str().unwrap(),
            fs.to_str().unwrap(),
        ],
    );
    let disk = dir.join(format!("{name}.img"));
    let table = format!(
        "label: gpt\nstart=2048, size={}, type=linux\n",
        FS_MIB * 2048
    );
    partitioned(&disk, FS_MIB + 2, &table, &[(&fs, 1)]);
    std::fs::remove_file(&fs).unwrap();
    disk
}

/// The protofile lines of directory `dir`'s entries (names without spaces or colons).
fn proto_dir(dir: &Path, proto: &mut String) {
    use std::os::unix::fs::PermissionsExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().into_string().unwrap();
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(e.path()).unwrap();
            proto.push_str(&format!("{name} l--{mode:03o} 0 0 {}\n", target.display()));
        } else if meta.is_dir() {
            proto.push_str(&format!("{name} d--{mode:03o} 0 0\n"));
            proto_dir(&e.path(), proto);
            proto.push_str("$\n");
        } else {
            proto.push_str(&format!(
                "{name} ---{mode:03o} 0 0 {}\n",
                e.path().display()
            ));
        }
    }
}

/// The UUID of [`separate_var`]'s `/var` file system, as its fstab names it.
pub const VAR_UUID: &str = "5b3e1c9a-7d41-4e0f-9a6b-2c8d1e0f3a47";

/// What [`separate_var`] plants: (finding code, its paths), in the order a report lists them.
pub fn planted_separate_var() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("AUTHORIZED_KEYS", vec!["/etc/ssh/keys/root"]),
        ("LOGS", vec!["/var/log/syslog"]),
    ]
}

/// The clean system with `/var` on a partition of its own (named by UUID in fstab, after
/// two entries a check must refuse: a mount point with `..`, one through a link), holding a
/// non-empty syslog, and sshd told by a file it includes to read keys from
/// `/etc/ssh/keys/%u`, where root has one.
fn separate_var_image(dir: &Path) -> PathBuf {
    let mut root: Vec<Entry> = system(true)
        .into_iter()
        .filter(|e| !matches!(e, File(p, ..) | Link(p, _) if p.starts_with("var/")))
        .collect();
    root.extend([
        File(
            "etc/fstab",
            0o644,
            format!(
                "/dev/vda1 / ext4 defaults 0 1
                 /dev/vda2 /mnt/../etc ext4 defaults 0 2
                 LABEL=var /opt/etc-link ext4 defaults 0 2
                 UUID={} /var ext4 defaults 0 2
",
                VAR_UUID.to_uppercase()
            )
            .into_bytes(),
        ),
        File(
            "etc/ssh/sshd_config",
            0o644,
            b"Include /etc/ssh/sshd_config.d/*.conf
PermitRootLogin prohibit-password
".to_vec(),
        ),
        File(
            "etc/ssh/sshd_config.d/keys.conf",
            0o644,
            b"AuthorizedKeysFile /etc/ssh/keys/%u .ssh/authorized_keys
".to_vec(),
        ),
        File(
            "etc/ssh/keys/root",
            0o600,
            b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC2LHLMZX1m+4utRPDXAvGf6vVlG3EAz2RkPpEp3uufR maker@laptop
"
                .to_vec(),
        ),
        File("etc/ssh/keys/alice", 0o600, Vec::new()),
    ]);
    let root_fs = ext4_fs(dir, "separate-var-root", "32M", &root);
    let var_root = dir.join("separate-var-var.root");
    for (path, bytes) in [
        (
            "log/syslog",
            &b"Dec  7 10:00:00 image sshd[1]: Accepted key for root\n"[..],
        ),
        ("log/wtmp", b""),
    ] {
        let p = var_root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
    }
    std::fs::create_dir_all(var_root.join("tmp")).unwrap();
    let var_fs = dir.join("separate-var-var.fs");
    run_tool(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-U",
            VAR_UUID,
            "-L",
            "var",
            "-d",
            var_root.to_str().unwrap(),
            var_fs.to_str().unwrap(),
            "16M",
        ],
    );
    // MBR: / at 1 MiB (32 MiB), /var after it (16 MiB).
    let disk = dir.join("separate-var.img");
    let table = "label: dos
start=2048, size=65536, type=83
start=67584, size=32768, type=83
";
    partitioned(&disk, 50, table, &[(&root_fs, 1), (&var_fs, 33)]);
    disk
}

/// Makes `disk`, `mib` MiB, with the partition table `table` (an sfdisk script) and each file
/// system image copied in at its MiB offset.
fn partitioned(disk: &Path, mib: u64, table: &str, file_systems: &[(&Path, u64)]) {
    std::fs::File::create(disk)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    let mut sfdisk = Command::new(system_tool("sfdisk"))
        .args(["--quiet", disk.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(table.as_bytes())
        .unwrap();
    assert!(sfdisk.wait().unwrap().success(), "sfdisk");
    for (fs, at) in file_systems {
        run_tool(
            "dd",
            &[
                &format!("if={}", fs.display()),
                &format!("of={}", disk.display()),
                "bs=1M",
                &format!("seek={at}"),
                "conv=notrunc,sparse",
                "status=none",
            ],
        );
    }
}

struct Images {
    separate_var: PathBuf,
    dirty_ext4: PathBuf,
    dirty_xfs: PathBuf,
    clean_ext4: PathBuf,
    bad_superblock: PathBuf,
    directory_loop: PathBuf,
    huge_directory: PathBuf,
}

fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hygiene-images");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dirty_ext4 = ext4_mbr(&dir, "dirty-ext4", &system(false));
        let dirty_xfs = xfs_gpt(&dir, "dirty-xfs", &system(false));
        let clean_ext4 = ext4_mbr(&dir, "clean-ext4", &system(true));
        let separate_var = separate_var_image(&dir);

        // Random bytes over the superblock: 1 KiB into partition 1, which starts at 1 MiB.
        let bad_superblock = dir.join("bad-superblock.img");
        std::fs::copy(&dirty_ext4, &bad_superblock).unwrap();
        let mut noise = vec![0u8; 1024];
        rand::fill(&mut noise[..]);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&bad_superblock)
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &noise, (1 << 20) + 1024).unwrap();

        // /var/log/a/b/loop is /var/log/a again: a hard link to a directory, which only a
        // file system editor makes.
        let mut entries = system(false);
        entries.push(File("var/log/a/b/keep", 0o644, b"x".to_vec()));
        let directory_loop = ext4_fs(&dir, "directory-loop", "32M", &entries);
        run_tool(
            "debugfs",
            &[
                "-w",
                "-R",
                "ln /var/log/a /var/log/a/b/loop",
                directory_loop.to_str().unwrap(),
            ],
        );

        let root = dir.join("huge-directory.root");
        write_tree(&root, &system(true));
        for i in 0..30_000 {
            std::fs::write(root.join(format!("tmp/f{i}")), b"").unwrap();
        }
        let huge_directory = dir.join("huge-directory.fs");
        run_tool(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-N",
                "40000",
                "-d",
                root.to_str().unwrap(),
                huge_directory.to_str().unwrap(),
                "64M",
            ],
        );
        Images {
            separate_var,
            dirty_ext4,
            dirty_xfs,
            clean_ext4,
            bad_superblock,
            directory_loop,
            huge_directory,
        }
    })
}

pub fn separate_var() -> &'static Path {
    &images().separate_var
}
pub fn dirty_ext4() -> &'static Path {
    &images().dirty_ext4
}
pub fn dirty_xfs() -> &'static Path {
    &images().dirty_xfs
}
pub fn clean_ext4() -> &'static Path {
    &images().clean_ext4
}
pub fn bad_superblock() -> &'static Path {
    &images().bad_superblock
}
pub fn directory_loop() -> &'static Path {
    &images().directory_loop
}
pub fn huge_directory() -> &'static Path {
    &images().huge_directory
}

/// A bootable disk of a real Linux guest (Debian's kernel, a busybox initramfs running
/// `init`, booted with `append`) whose root file system holds the dirty system of
/// [`dirty_ext4`]: what a clean makes bootable and first-boot-ready.
pub fn bootable_dirty(dir: &Path, init: &str, append: &str) -> PathBuf {
    let mut disk = GuestDisk::new(init).append(append);
    for e in dirty_entries() {
        disk = match e {
            File(path, mode, bytes) => disk.root_file(path, mode, bytes),
            Link(path, target) => disk.root_link(path, target),
        };
    }
    disk.build(dir, "hygiene-dirty")
}
