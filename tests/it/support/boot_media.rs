//! Tiny boot media the QEMU tests build themselves, and helpers to watch VMs.
//!
//! `tests/fixtures/marker.asm` is a BIOS boot sector that prints a marker line on COM1,
//! then the metadata URL and secret it finds in fw_cfg, and (built with ACPI) powers the
//! machine off when the ACPI power button is pressed. It is assembled with nasm; an ISO with it
//! as El Torito no-emulation boot image is made with xorriso.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What the ACPI-aware guest prints once it listens for the power button.
pub const ACPI_READY: &str = "acpi: waiting for the power button";
/// What it prints when the button was pressed, before powering off.
pub const ACPI_PRESSED: &str = "power button pressed: powering off";

/// Assembles the boot sector printing `marker`: 512 bytes with the boot signature.
pub fn boot_sector(dir: &Path, marker: &str, acpi: bool) -> Vec<u8> {
    assert!(
        marker
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-'),
        "a marker is letters, digits and dashes"
    );
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/marker.asm");
    let out = dir.join(format!("{marker}.bin"));
    let mut nasm = Command::new("nasm");
    nasm.arg("-f")
        .arg("bin")
        .arg(format!("-DMARKER=\"{marker}\""))
        .arg("-o")
        .arg(&out)
        .arg(&source);
    if acpi {
        nasm.arg("-DACPI");
    }
    let result = nasm
        .output()
        .expect("running nasm (scripts/test.sh installs it)");
    assert!(
        result.status.success(),
        "nasm failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes.len(), 512);
    assert_eq!(&bytes[510..], &[0x55, 0xaa]);
    bytes
}

/// A raw hard disk image of `size` bytes (sparse) that boots and prints `marker`. SeaBIOS
/// does not boot a disk of a single sector, so the image is at least a few sectors long.
pub fn hard_disk(dir: &Path, marker: &str, acpi: bool, size: u64) -> PathBuf {
    let path = dir.join(format!("{marker}.img"));
    std::fs::write(&path, boot_sector(dir, marker, acpi)).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(size)
        .unwrap();
    path
}

/// A bootable ISO (El Torito, no emulation) whose boot image prints `marker`.
pub fn iso(dir: &Path, marker: &str, acpi: bool) -> PathBuf {
    let root = dir.join(format!("{marker}-iso"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("boot.bin"), boot_sector(dir, marker, acpi)).unwrap();
    let path = dir.join(format!("{marker}.iso"));
    let result = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-o"])
        .arg(&path)
        .args([
            "-b",
            "boot.bin",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-V",
            "EXTILITY_TEST",
        ])
        .arg(&root)
        .output()
        .expect("running xorriso (scripts/test.sh installs it)");
    assert!(
        result.status.success(),
        "xorriso failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    path
}

/// Polls `check` until it gives a value or `timeout` has passed (then panics, describing
/// what was awaited and the last thing seen).
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// How long a test waits for a VM to boot to its marker: SeaBIOS takes seconds, more under
/// TCG on a loaded machine.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
