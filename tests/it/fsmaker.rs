//! `fsmaker`, run as users run it: an ext4 image made without root (`mkfs.ext4 -d`) becomes a
//! disk image that QEMU boots with GRUB on the serial console.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::tools::*;

const MARKER_CFG: &[u8] = b"serial\nterminal_output serial\necho FSMAKER-MARKER-7f3a\n";

/// The MBR of a disk image: (disk id, partition 1 first sector, sector count, bootable).
fn partition_one(disk: &Path) -> (u32, u32, u32, bool) {
    let mbr = std::fs::read(disk).unwrap();
    let le32 = |at: usize| u32::from_le_bytes(mbr[at..at + 4].try_into().unwrap());
    assert_eq!(&mbr[510..512], &[0x55, 0xAA]);
    (le32(440), le32(446 + 8), le32(446 + 12), mbr[446] == 0x80)
}

/// What debugfs says about a file in the disk image's partition 1.
fn debugfs(disk: &Path, request: &str) -> String {
    let out = run_tool(
        "debugfs",
        &["-R", request, &format!("{}?offset=1048576", disk.display())],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The fake kernel (tests/fixtures/fake-kernel.asm), built with nasm.
fn fake_kernel(dir: &Path) -> PathBuf {
    let kernel = dir.join("vmlinuz-fake");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-kernel.asm");
    run_tool(
        "nasm",
        &[
            "-f",
            "bin",
            "-o",
            kernel.to_str().unwrap(),
            source.to_str().unwrap(),
        ],
    );
    kernel
}

#[test]
fn no_arguments_print_usage_and_fail() {
    let out = output(&mut fsmaker());
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(
        text.contains("Usage: fsmaker [OPTIONS] <FSIMAGE> <DISKIMAGE>"),
        "{text}"
    );
    assert!(
        text.contains("--kernel <K>") && text.contains("--grub <DIR>"),
        "{text}"
    );
}

#[test]
fn grub_boots_and_runs_the_file_systems_own_config() {
    let dir = tempfile::tempdir().unwrap();
    let myfs = ext4_image(
        dir.path(),
        "myfs",
        "24M",
        &[
            ("boot/grub/grub.cfg", MARKER_CFG),
            ("etc/hostname", b"test\n"),
        ],
    );
    let fs_md5 = md5(&myfs);
    let disk = dir.path().join("myimage.img");
    let out = output(fsmaker().arg(&myfs).arg(&disk));
    assert_success(&out);
    assert!(
        stderr(&out).contains("grub.cfg: kept from FSIMAGE"),
        "{}",
        stderr(&out)
    );

    let (_, first, sectors, bootable) = partition_one(&disk);
    assert_eq!((first, sectors, bootable), (2048, 24 * 2048, true));
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 25 << 20);
    assert!(
        allocated(&disk) < 12 << 20,
        "the copy is sparse: {}",
        allocated(&disk)
    );
    assert_eq!(md5(&myfs), fs_md5, "FSIMAGE is only read");

    let serial = boot_until(&disk, "FSMAKER-MARKER-7f3a");
    assert!(serial.contains("FSMAKER-MARKER-7f3a"));
}

#[test]
fn the_generated_config_boots_the_given_kernel_and_initrd() {
    let dir = tempfile::tempdir().unwrap();
    let myfs = ext4_image(dir.path(), "myfs", "16M", &[("etc/hostname", b"test\n")]);
    let kernel = fake_kernel(dir.path());
    let initrd = dir.path().join("initrd.img-fake");
    write_file(&initrd, b"INITRD-CONTENT-41c2");
    let disk = dir.path().join("myimage.img");
    let out = output(
        fsmaker()
            .arg("--kernel")
            .arg(&kernel)
            .arg("--initrd")
            .arg(&initrd)
            .args(["--size", "48M", "--append", "extra=yes"])
            .arg(&myfs)
            .arg(&disk),
    );
    assert_success(&out);

    // --size: the disk, partition 1 and the file system grow to it.
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 48 << 20);
    let (disk_id, first, sectors, _) = partition_one(&disk);
    assert_eq!((first, sectors), (2048, 47 * 2048));
    let stats = run_tool(
        "dumpe2fs",
        &["-h", &format!("{}?offset=1048576", disk.display())],
    );
    let stats = String::from_utf8_lossy(&stats.stdout).into_owned();
    assert!(stats.contains("Block count:              48128"), "{stats}");
    // Files fsmaker adds belong to root, whoever ran it.
    assert!(debugfs(&disk, "stat /boot/vmlinuz-fake").contains("User:     0   Group:     0"));

    let serial = boot_until(&disk, "FAKE-KERNEL done");
    let expected = format!(
        "FAKE-KERNEL cmdline: [BOOT_IMAGE=/boot/vmlinuz-fake root=PARTUUID={disk_id:08x}-01 ro \
         console=tty0 console=ttyS0,115200 extra=yes]"
    );
    assert!(serial.contains(&expected), "{serial}");
    assert!(
        serial.contains("FAKE-KERNEL initrd: [INITRD-CONTENT-41c2]"),
        "{serial}"
    );
}

#[test]
fn the_newest_kernel_in_the_file_system_is_used_when_none_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let myfs = ext4_image(
        dir.path(),
        "myfs",
        "16M",
        &[
            ("boot/vmlinuz-6.9.0", b"old kernel"),
            ("boot/vmlinuz-6.10.2", b"new kernel"),
            ("boot/initrd.img-6.9.0", b"old initrd"),
            ("boot/initrd.img-6.10.2", b"new initrd"),
        ],
    );
    let disk = dir.path().join("myimage.img");
    let out = output(fsmaker().arg(&myfs).arg(&disk));
    assert_success(&out);
    let cfg = debugfs(&disk, "cat /boot/grub/grub.cfg");
    assert!(
        cfg.contains("linux /boot/vmlinuz-6.10.2 root=PARTUUID="),
        "{cfg}"
    );
    assert!(cfg.contains("initrd /boot/initrd.img-6.10.2"), "{cfg}");
    // GRUB's modules are in the file system, for `insmod` at boot.
    let modules = debugfs(&disk, "ls -p /boot/grub/i386-pc");
    assert!(modules.contains("/normal.mod/") && modules.contains("/moddep.lst/"));
}

#[test]
fn a_file_that_is_not_ext_is_refused_and_nothing_is_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.img");
    write_file(&junk, &vec![0u8; 4 << 20]);
    let disk = dir.path().join("myimage.img");
    let out = output(fsmaker().arg(&junk).arg(&disk));
    assert_fails_with(&out, "is not an ext2/3/4 file system");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only junk.img should be there: {left:?}");

    let out = output(fsmaker().arg(dir.path().join("missing")).arg(&disk));
    assert_fails_with(&out, "No such file or directory");

    let myfs = ext4_image(dir.path(), "myfs", "16M", &[]);
    let out = output(fsmaker().args(["--size", "8M"]).arg(&myfs).arg(&disk));
    assert_fails_with(&out, "--size 8.0 MiB is too small");
    assert!(!disk.exists());
}

#[test]
fn a_missing_tool_is_named_with_its_debian_package() {
    let dir = tempfile::tempdir().unwrap();
    let myfs = ext4_image(dir.path(), "myfs", "16M", &[]);
    let disk = dir.path().join("myimage.img");
    let out = output(
        fsmaker()
            .arg("--grub")
            .arg(dir.path().join("no-grub"))
            .arg(&myfs)
            .arg(&disk),
    );
    assert_fails_with(&out, "(Debian package grub-pc-bin)");

    // grub-mkimage lives in /usr/bin, which this PATH leaves out.
    let out = output(
        Command::new(env!("CARGO_BIN_EXE_fsmaker"))
            .env("PATH", "/nonexistent")
            .arg(&myfs)
            .arg(&disk),
    );
    assert_fails_with(
        &out,
        "grub-mkimage is not installed (Debian package grub-common)",
    );
    assert!(!disk.exists());
}
