//! The QEMU driver on its own: real VMs booted from boot media the tests build (see
//! `support/boot_media.rs`), without the API or a database.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use extility::hypervisor::qemu::{self, Accel, Qemu, QemuConfig};
use extility::hypervisor::{
    Hypervisor, Media, MetadataAccess, StopMethod, VmDisk, VmEvent, VmNic, VmSpec, VmState,
};
use extility::storage::{VolumeFormat, VolumeLocation};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::support::boot_media::{
    ACPI_PRESSED, ACPI_READY, BOOT_TIMEOUT, hard_disk, iso, wait_for,
};
use crate::support::{MIB, kill_vms, running_vms};

/// A test's directory, where its drivers keep their VMs.
struct Bench {
    dir: tempfile::TempDir,
}

/// QEMU outlives the driver that started it: whatever a test leaves running ends with it.
impl Drop for Bench {
    fn drop(&mut self) {
        kill_vms(&self.vms_dir());
    }
}

impl Bench {
    fn new() -> Bench {
        Bench {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn vms_dir(&self) -> PathBuf {
        self.path().join("vms")
    }

    fn driver(&self, shutdown_timeout: Duration) -> (Qemu, UnboundedReceiver<VmEvent>) {
        self.driver_with(shutdown_timeout, accel())
    }

    fn driver_with(
        &self,
        shutdown_timeout: Duration,
        accel: Accel,
    ) -> (Qemu, UnboundedReceiver<VmEvent>) {
        let (events, received) = unbounded_channel();
        let binary = qemu::find_binary().expect("qemu-system-x86_64 (scripts/test.sh installs it)");
        let driver = Qemu::new(
            QemuConfig {
                binary,
                vms_dir: self.vms_dir(),
                accel,
                shutdown_timeout,
                confinement: None,
            },
            events,
        )
        .unwrap();
        (driver, received)
    }

    /// The pid in the VM's pid file, checked to be a running QEMU.
    fn qemu_pid(&self, uuid: &str) -> i32 {
        let pid_file = self.pid_file(uuid);
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .expect("a running VM has a pid file")
            .trim()
            .parse()
            .unwrap();
        assert!(qemu_runs(pid, &pid_file), "QEMU {pid} runs");
        pid
    }

    fn pid_file(&self, uuid: &str) -> PathBuf {
        self.vms_dir()
            .canonicalize()
            .unwrap()
            .join(uuid)
            .join("qemu.pid")
    }
}

fn accel() -> Accel {
    if qemu::kvm_usable() {
        Accel::Kvm
    } else {
        Accel::Tcg
    }
}

fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn spec(uuid: &str, disks: Vec<(PathBuf, Media)>) -> VmSpec {
    VmSpec {
        server_uuid: uuid.to_string(),
        name: "test".into(),
        processors: 1,
        memory_mb: 64,
        disks: disks
            .into_iter()
            .map(|(path, media)| VmDisk {
                location: VolumeLocation::File(path),
                format: VolumeFormat::Raw,
                media,
            })
            .collect(),
        nic: None,
        metadata: None,
    }
}

fn console(driver: &Qemu, uuid: &str) -> String {
    String::from_utf8_lossy(&driver.console_log(uuid, 64 * 1024).unwrap()).into_owned()
}

/// Waits until the console shows `text`.
fn wait_console(driver: &Qemu, uuid: &str, text: &str) -> String {
    wait_for(BOOT_TIMEOUT, &format!("'{text}' on the console"), || {
        let log = console(driver, uuid);
        if log.contains(text) {
            Ok(log)
        } else {
            Err(log)
        }
    })
}

/// Whether `pid` is a live QEMU started with `pid_file`.
fn qemu_runs(pid: i32, pid_file: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == pid_file.as_os_str().as_encoded_bytes())
    })
}

fn gone(pid: i32, pid_file: &Path) -> bool {
    !qemu_runs(pid, pid_file)
}

#[test]
fn boots_a_hard_disk_and_hands_over_the_metadata_secret() {
    let bench = Bench::new();
    let (driver, mut events) = bench.driver(Duration::from_secs(60));
    let uuid = new_uuid();
    let disk = hard_disk(bench.path(), "DISK-BOOTED", false, MIB);
    let mut spec = spec(&uuid, vec![(disk, Media::Disk)]);
    spec.nic = Some(VmNic {
        tap: None,
        vlan_id: 1,
        mac: "52:54:00:12:34:56".into(),
    });
    spec.metadata = Some(MetadataAccess {
        url: "http://127.0.0.1:8080/metadata/v1/server.xml".into(),
        token: "0123456789abcdef-secret".into(),
    });
    driver.start(&spec).unwrap();
    assert_eq!(driver.state(&uuid), VmState::Running);
    let log = wait_console(&driver, &uuid, "metadata-token=0123456789abcdef-secret");
    assert!(log.contains("DISK-BOOTED"), "{log}");
    assert!(
        log.contains("metadata-url=http://10.0.2.100/metadata/v1/server.xml"),
        "the guest reaches the metadata service at its forward, 10.0.2.100: {log}"
    );

    let pid = bench.qemu_pid(&uuid);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("secret"),
        "the metadata secret is not in QEMU's command line"
    );
    driver.stop(&uuid, StopMethod::PowerOff).unwrap();
    assert!(gone(pid, &bench.pid_file(&uuid)), "no QEMU left after stop");
    assert_eq!(driver.state(&uuid), VmState::Stopped);
    assert!(
        console(&driver, &uuid).contains("DISK-BOOTED"),
        "the console log outlives the VM"
    );
    assert!(events.try_recv().is_err(), "a requested stop is no news");
}

#[test]
fn boots_the_cd_before_the_hard_disk() {
    let bench = Bench::new();
    let (driver, _events) = bench.driver(Duration::from_secs(60));
    let uuid = new_uuid();
    // Attach order: the hard disk first, the CD second; the CD boots all the same.
    let disk = hard_disk(bench.path(), "FROM-DISK", false, MIB);
    let cd = iso(bench.path(), "FROM-CD", false);
    driver
        .start(&spec(&uuid, vec![(disk, Media::Disk), (cd, Media::Iso)]))
        .unwrap();
    let log = wait_console(&driver, &uuid, "FROM-CD");
    assert!(!log.contains("FROM-DISK"), "{log}");
    driver.stop(&uuid, StopMethod::PowerOff).unwrap();
}

#[test]
fn acpi_shutdown_lets_the_guest_power_itself_off() {
    let bench = Bench::new();
    // Far longer than the test takes: the guest, not the timeout, ends this VM.
    let (driver, mut events) = bench.driver(Duration::from_secs(600));
    let uuid = new_uuid();
    let disk = hard_disk(bench.path(), "ACPI-GUEST", true, MIB);
    driver
        .start(&spec(&uuid, vec![(disk, Media::Disk)]))
        .unwrap();
    wait_console(&driver, &uuid, ACPI_READY);
    let pid = bench.qemu_pid(&uuid);
    driver.stop(&uuid, StopMethod::Shutdown).unwrap();
    assert!(console(&driver, &uuid).contains(ACPI_PRESSED));
    assert!(gone(pid, &bench.pid_file(&uuid)));
    assert!(events.try_recv().is_err(), "a requested stop is no news");
}

#[test]
fn a_guest_ignoring_acpi_is_powered_off_after_the_timeout() {
    let bench = Bench::new();
    let (driver, _events) = bench.driver(Duration::from_secs(2));
    let uuid = new_uuid();
    let disk = hard_disk(bench.path(), "DEAF-GUEST", false, MIB);
    driver
        .start(&spec(&uuid, vec![(disk, Media::Disk)]))
        .unwrap();
    wait_console(&driver, &uuid, "metadata-token=");
    let pid = bench.qemu_pid(&uuid);
    driver.stop(&uuid, StopMethod::Shutdown).unwrap();
    assert!(gone(pid, &bench.pid_file(&uuid)));
    assert_eq!(driver.state(&uuid), VmState::Stopped);
}

/// Presses the VM's power button from outside the driver, over its QMP control socket.
fn press_power_button(pid_file: &Path) {
    let socket = pid_file.with_file_name("qmp-control.sock");
    let stream = UnixStream::connect(socket).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line).unwrap(); // greeting
    for command in ["qmp_capabilities", "system_powerdown"] {
        writeln!(writer, "{{\"execute\": \"{command}\"}}").unwrap();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line.contains("\"return\"") {
                break;
            }
        }
    }
}

fn next_event(events: &mut UnboundedReceiver<VmEvent>) -> VmEvent {
    wait_for(Duration::from_secs(60), "a VM event", || {
        events.try_recv().map_err(|e| e.to_string())
    })
}

#[test]
fn a_guest_powering_off_on_its_own_is_reported_stopped() {
    let bench = Bench::new();
    let (driver, mut events) = bench.driver(Duration::from_secs(60));
    let uuid = new_uuid();
    let disk = hard_disk(bench.path(), "SELF-OFF", true, MIB);
    driver
        .start(&spec(&uuid, vec![(disk, Media::Disk)]))
        .unwrap();
    wait_console(&driver, &uuid, ACPI_READY);
    press_power_button(&bench.pid_file(&uuid));
    let event = next_event(&mut events);
    assert_eq!(event.server_uuid, uuid);
    assert_eq!(event.state, VmState::Stopped);
    assert_eq!(driver.state(&uuid), VmState::Stopped);
}

#[test]
fn a_vm_outlives_its_driver_and_a_new_driver_takes_it_back() {
    let bench = Bench::new();
    let uuid = new_uuid();
    let disk = hard_disk(bench.path(), "LONG-LIVED", false, MIB);
    let (first, _first_events) = bench.driver(Duration::from_secs(60));
    first
        .start(&spec(&uuid, vec![(disk, Media::Disk)]))
        .unwrap();
    wait_console(&first, &uuid, "LONG-LIVED");
    let pid = bench.qemu_pid(&uuid);
    drop(first);
    assert_eq!(
        bench.qemu_pid(&uuid),
        pid,
        "the VM runs on without its driver"
    );

    let (second, mut events) = bench.driver(Duration::from_secs(60));
    assert_eq!(second.adopt(&uuid), VmState::Running);
    assert_eq!(second.state(&uuid), VmState::Running);
    // Supervised again: a QEMU killed from outside is noticed and reported.
    // SAFETY: kill(2) on the test's own QEMU, just checked to run.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let event = next_event(&mut events);
    assert_eq!(event.server_uuid, uuid);
    assert!(
        matches!(&event.state, VmState::Failed(reason) if reason.contains("killed")),
        "{event:?}"
    );
    assert_eq!(second.state(&uuid), VmState::Stopped);
}

#[test]
fn adopting_a_vm_that_died_meanwhile_finds_it_stopped() {
    let bench = Bench::new();
    let uuid = new_uuid();
    let disk = hard_disk(bench.path(), "SHORT-LIVED", false, MIB);
    let (first, _events) = bench.driver(Duration::from_secs(60));
    first
        .start(&spec(&uuid, vec![(disk, Media::Disk)]))
        .unwrap();
    let pid = bench.qemu_pid(&uuid);
    drop(first);
    // SAFETY: kill(2) on the test's own QEMU, just checked to run.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let pid_file = bench.pid_file(&uuid);
    wait_for(Duration::from_secs(30), "QEMU to die", || {
        if gone(pid, &pid_file) {
            Ok(())
        } else {
            Err("still there".into())
        }
    });
    let (second, _events) = bench.driver(Duration::from_secs(60));
    assert_eq!(second.adopt(&uuid), VmState::Stopped);
    assert!(!pid_file.exists(), "the stale pid file is cleared away");
}

#[test]
fn a_vm_that_cannot_start_says_why_and_leaves_nothing_running() {
    let bench = Bench::new();
    let (driver, _events) = bench.driver(Duration::from_secs(60));
    let uuid = new_uuid();
    let missing = bench.path().join("no-such-disk.img");
    let err = driver
        .start(&spec(&uuid, vec![(missing, Media::Disk)]))
        .unwrap_err();
    assert!(err.0.contains("no-such-disk.img"), "{err}");
    assert_eq!(driver.state(&uuid), VmState::Stopped);
    assert!(running_vms(&bench.vms_dir()).is_empty());
}

#[test]
fn boots_under_the_tcg_emulator_too() {
    let bench = Bench::new();
    let (driver, _events) = bench.driver_with(Duration::from_secs(60), Accel::Tcg);
    let uuid = new_uuid();
    let disk = hard_disk(bench.path(), "EMULATED", false, MIB);
    driver
        .start(&spec(&uuid, vec![(disk, Media::Disk)]))
        .unwrap();
    wait_console(&driver, &uuid, "EMULATED");
    let pid = bench.qemu_pid(&uuid);
    driver.discard(&uuid).unwrap();
    assert!(gone(pid, &bench.pid_file(&uuid)));
    assert!(
        !bench.vms_dir().join(&uuid).exists(),
        "discard removes the VM's files"
    );
}
