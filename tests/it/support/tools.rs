//! Helpers for the tool-chain tests (`sparsecopy`, `fsmaker`): they run the real binaries and
//! the system tools a user would, and need no database.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn sparsecopy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sparsecopy"))
}

pub fn fsmaker() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fsmaker"))
}

/// Runs a command to the end; the panic message shows what it printed.
pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "exit {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
}

/// Asserts a failure with exit status 1 and a message containing `needle`; returns stderr.
pub fn assert_fails_with(out: &Output, needle: &str) -> String {
    let text = stderr(out);
    assert_eq!(out.status.code(), Some(1), "expected exit 1: {text}");
    assert!(text.contains(needle), "expected {needle:?} in: {text}");
    text
}

/// A system tool by name, also from the sbin folders an ordinary user's PATH lacks.
pub fn system_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed (scripts/test.sh installs it)"))
}

pub fn run_tool(name: &str, args: &[&str]) -> Output {
    let out = output(Command::new(system_tool(name)).args(args));
    assert_success(&out);
    out
}

pub fn md5(path: &Path) -> String {
    let out = run_tool("md5sum", &[path.to_str().unwrap()]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Bytes the file system really gives the file.
pub fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// An ext4 image of `size` (e.g. "32M") holding `files` (path, content), made the way a user
/// without root would: `mkfs.ext4 -d`.
pub fn ext4_image(dir: &Path, name: &str, size: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let root = dir.join(format!("{name}.root"));
    for (path, content) in files {
        let file = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, content).unwrap();
    }
    std::fs::create_dir_all(&root).unwrap();
    let image = dir.join(name);
    run_tool(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-d",
            root.to_str().unwrap(),
            image.to_str().unwrap(),
            size,
        ],
    );
    image
}

/// A QEMU that is killed when dropped, whatever the test did.
struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Boots `disk` in QEMU (BIOS, serial console to a file) until the serial output contains
/// `marker` or a deadline passes; returns the serial output.
///
/// TCG unless `EXTILITY_QEMU_ACCEL` says otherwise (e.g. `kvm:tcg`): a boot loader needs no
/// KVM, and on nested hosts KVM can open fine and then never run the guest.
pub fn boot_until(disk: &Path, marker: &str) -> String {
    let serial = disk.with_extension("serial.log");
    let qemu_log = disk.with_extension("qemu.log");
    let accel = std::env::var("EXTILITY_QEMU_ACCEL").unwrap_or_else(|_| "tcg".into());
    let mut cmd = Command::new("qemu-system-x86_64");
    for a in accel.split(':') {
        cmd.args(["-accel", a]);
    }
    cmd.args([
        "-machine",
        "pc",
        "-m",
        "128",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
    ])
    .arg("-serial")
    .arg(format!("file:{}", serial.display()))
    .arg("-drive")
    .arg(format!(
        "file={},format=raw,if=ide,snapshot=on",
        disk.display()
    ))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&qemu_log).unwrap());
    let mut vm = Vm(cmd
        .spawn()
        .expect("qemu-system-x86_64 (Debian qemu-system-x86)"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text =
            String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
        if text.contains(marker) {
            return text;
        }
        let exited = vm.0.try_wait().unwrap();
        if exited.is_some() || Instant::now() > deadline {
            let qemu = std::fs::read_to_string(&qemu_log).unwrap_or_default();
            panic!(
                "no {marker:?} on the serial console ({}); serial: {text:?}; qemu: {qemu}",
                match exited {
                    Some(status) => format!("QEMU ended: {status}"),
                    None => "deadline passed".into(),
                }
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes `data` to a new file.
pub fn write_file(path: &Path, data: &[u8]) {
    std::fs::File::create(path)
        .unwrap()
        .write_all(data)
        .unwrap();
}
