//! The QEMU driver: each running server is a `qemu-system-x86_64` process.
//!
//! QEMU runs daemonized in a session of its own, so a VM outlives `extility serve` (a crash or
//! a restart of it included). Everything needed to find a VM again is in its directory
//! (`<data-dir>/vms/<server-uuid>/`, see [`files`]): the pid file, and the QMP sockets. A
//! supervisor thread per VM ([`supervisor`]) listens on one QMP socket and notices the VM
//! ending; commands (ACPI power button, quit) go over the other. After a restart,
//! [`Hypervisor::adopt`] takes a VM that still runs back under supervision.
//!
//! A VM with a NIC is on QEMU's user-mode network, confined: DHCP and the metadata service,
//! reached through [`metadata_proxy`] (see [`args`]), and nothing else.

mod args;
mod files;
pub mod metadata_proxy;
mod process;
mod qmp;
mod supervisor;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

pub use args::{
    Accel, FW_CFG_METADATA_TOKEN, FW_CFG_METADATA_URL, METADATA_GUEST_ADDR, METADATA_GUEST_PORT,
    METADATA_PROXY_COMMAND, guest_metadata_url, tap_metadata_url,
};
use files::{VmFiles, write_private};
use process::QemuProcess;
use qmp::Qmp;
use supervisor::{Shared, Vm, supervise};

use super::{Hypervisor, HypervisorError, StopMethod, VmEvent, VmSpec, VmState};

/// The QEMU program the driver runs.
pub const BINARY: &str = "qemu-system-x86_64";

/// While waiting for a guest to shut down, the power button is pressed again this often: a
/// guest still booting when it was first pressed may not have been listening.
const POWERDOWN_REPEAT: Duration = Duration::from_secs(5);
/// How long QEMU may take to exit after `quit` (or SIGKILL).
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a supervisor may take to clean up after its VM ended.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// The `qemu-system-x86_64` to run.
    pub binary: PathBuf,
    /// Where the VMs' directories are: `<data-dir>/vms`.
    pub vms_dir: PathBuf,
    pub accel: Accel,
    /// How long `StopServer` method 1 waits for the guest to shut down before powering off.
    pub shutdown_timeout: Duration,
    /// The `extility` program QEMU runs (`metadata-proxy`) for each connection a guest opens
    /// to the metadata service: `serve` passes its own executable.
    pub metadata_proxy: PathBuf,
}

/// `qemu-system-x86_64` on `PATH`, if installed.
pub fn find_binary() -> Option<PathBuf> {
    which::which(BINARY).ok()
}

/// Whether this process may use KVM: `/dev/kvm` opens read-write and answers with the stable
/// API version.
pub fn kvm_usable() -> bool {
    const KVM_GET_API_VERSION: u64 = 0xae00;
    const KVM_API_VERSION: i32 = 12;
    let Ok(kvm) = OpenOptions::new().read(true).write(true).open("/dev/kvm") else {
        return false;
    };
    // SAFETY: KVM_GET_API_VERSION takes no argument and touches no memory of ours.
    let version = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
    version == KVM_API_VERSION
}

pub struct Qemu {
    config: QemuConfig,
    shared: Arc<Shared>,
    /// Taking a found QEMU under supervision happens once at a time, so that one VM never
    /// gets two supervisors.
    adopting: Mutex<()>,
}

/// What runs of a server's VM.
enum Found {
    Supervised(Arc<Vm>),
    /// A QEMU of this VM runs but does not answer on QMP: it can be neither supervised nor
    /// controlled.
    Unreachable(QemuProcess, String),
    Gone,
}

impl Qemu {
    pub fn new(
        config: QemuConfig,
        events: UnboundedSender<VmEvent>,
    ) -> Result<Qemu, HypervisorError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.vms_dir)
            .map_err(|e| HypervisorError(format!("creating {}: {e}", config.vms_dir.display())))?;
        // Absolute, because QEMU is told these paths and the pid check compares them.
        let vms_dir = config
            .vms_dir
            .canonicalize()
            .map_err(|e| HypervisorError(format!("resolving {}: {e}", config.vms_dir.display())))?;
        Ok(Qemu {
            config: QemuConfig { vms_dir, ..config },
            shared: Arc::new(Shared {
                vms: Mutex::new(HashMap::new()),
                events,
                released: AtomicBool::new(false),
            }),
            adopting: Mutex::new(()),
        })
    }

    pub fn config(&self) -> &QemuConfig {
        &self.config
    }

    fn files(&self, server_uuid: &str) -> Result<VmFiles, HypervisorError> {
        VmFiles::new(&self.config.vms_dir, server_uuid)
    }

    fn supervised(&self, server_uuid: &str) -> Option<Arc<Vm>> {
        self.shared.vms.lock().unwrap().get(server_uuid).cloned()
    }

    /// The server's VM: under supervision already, or taken under supervision now if a QEMU
    /// of it runs (left by an earlier `extility serve`).
    fn find(&self, server_uuid: &str) -> Result<Found, HypervisorError> {
        let files = self.files(server_uuid)?;
        let _one_at_a_time = self.adopting.lock().unwrap();
        if let Some(vm) = self.supervised(server_uuid) {
            if !vm.has_ended() && vm.process.is_alive() {
                return Ok(Found::Supervised(vm));
            }
            // It is ending: let its supervisor finish cleaning up before anything new happens
            // in its directory.
            vm.wait_ended(CLEANUP_TIMEOUT);
        }
        let Some(process) = QemuProcess::from_pid_file(&files.pid_file()) else {
            return Ok(Found::Gone);
        };
        match Qmp::connect(&files.events_socket()) {
            Ok(events) => {
                tracing::info!(server = %server_uuid, pid = process.pid(),
                    "taking a running VM back under supervision");
                let vm = Arc::new(Vm::new(server_uuid, files, process));
                self.shared
                    .vms
                    .lock()
                    .unwrap()
                    .insert(server_uuid.to_string(), vm.clone());
                supervise(self.shared.clone(), vm.clone(), events);
                Ok(Found::Supervised(vm))
            }
            Err(err) => Ok(Found::Unreachable(
                process,
                format!("QEMU runs but does not answer on QMP ({err})"),
            )),
        }
    }

    /// What `state` and `adopt` answer: a QEMU that cannot be supervised is ended, so that
    /// nothing runs that the platform does not know about.
    fn take_back(&self, server_uuid: &str) -> VmState {
        match self.find(server_uuid) {
            Ok(Found::Supervised(_)) => VmState::Running,
            Ok(Found::Gone) => {
                if let Ok(files) = self.files(server_uuid) {
                    files.remove_runtime_files();
                }
                VmState::Stopped
            }
            Ok(Found::Unreachable(process, reason)) => {
                tracing::error!(server = %server_uuid, pid = process.pid(), %reason,
                    "killing a VM that cannot be supervised");
                match kill_and_wait(&process) {
                    Ok(()) => VmState::Failed(reason),
                    Err(err) => VmState::Failed(format!("{reason}; {}", err.0)),
                }
            }
            Err(err) => VmState::Failed(err.0),
        }
    }

    fn launch(&self, spec: &VmSpec, files: VmFiles) -> Result<(), HypervisorError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |e: std::io::Error| HypervisorError(format!("{what}: {e}"))
        };
        files
            .prepare()
            .map_err(io("preparing the VM's directory"))?;
        if let Some(metadata) = &spec.metadata {
            write_private(
                &files.metadata_url(),
                match spec.nic.as_ref().and_then(|n| n.tap.as_ref()) {
                    Some(_) => tap_metadata_url(&metadata.url),
                    None => guest_metadata_url(&metadata.url),
                }
                .as_bytes(),
            )
            .map_err(io("writing the metadata URL"))?;
            write_private(&files.metadata_token(), metadata.token.as_bytes())
                .map_err(io("writing the metadata secret"))?;
        }
        let args =
            args::command_line(spec, &files, self.config.accel, &self.config.metadata_proxy)?;
        let startup_log = OpenOptions::new()
            .append(true)
            .open(files.startup_log())
            .map_err(io("opening QEMU's log"))?;
        // With -daemonize this returns when the VM is set up and running (or failed to be).
        let status = Command::new(&self.config.binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(startup_log)
            .status()
            .map_err(io(&format!("running {}", self.config.binary.display())))?;
        let failed = |what: &str| {
            files.remove_runtime_files();
            HypervisorError(format!("{what}: {}", startup_messages(&files)))
        };
        if !status.success() {
            return Err(failed(&format!("QEMU did not start ({status})")));
        }
        let Some(process) = QemuProcess::from_pid_file(&files.pid_file()) else {
            return Err(failed("QEMU started but is gone"));
        };
        let events = match Qmp::connect(&files.events_socket()) {
            Ok(events) => events,
            Err(err) => {
                let _ = kill_and_wait(&process);
                return Err(failed(&format!("QEMU started but QMP failed ({err})")));
            }
        };
        tracing::info!(server = %spec.server_uuid, pid = process.pid(),
            accel = self.config.accel.as_str(), disks = spec.disks.len(), "VM started");
        let vm = Arc::new(Vm::new(&spec.server_uuid, files, process));
        self.shared
            .vms
            .lock()
            .unwrap()
            .insert(spec.server_uuid.clone(), vm.clone());
        supervise(self.shared.clone(), vm, events);
        Ok(())
    }

    /// Presses the power button until the guest has shut down or the timeout has passed;
    /// says whether it has.
    fn acpi_shutdown(&self, vm: &Vm) -> bool {
        let deadline = Instant::now() + self.config.shutdown_timeout;
        loop {
            if let Err(err) = vm.command("system_powerdown", None) {
                tracing::debug!(server = %vm.uuid, error = %err, "system_powerdown failed");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if vm.process.wait_exit(left.min(POWERDOWN_REPEAT)) {
                return true;
            }
            if left <= POWERDOWN_REPEAT {
                return false;
            }
        }
    }
}

/// SIGKILL, then waits for the process to be gone.
fn kill_and_wait(process: &QemuProcess) -> Result<(), HypervisorError> {
    process
        .kill()
        .map_err(|e| HypervisorError(format!("killing QEMU {}: {e}", process.pid())))?;
    if process.wait_exit(EXIT_TIMEOUT) {
        Ok(())
    } else {
        Err(HypervisorError(format!(
            "QEMU {} does not end even after SIGKILL",
            process.pid()
        )))
    }
}

/// The end of what QEMU said while starting, for error messages.
fn startup_messages(files: &VmFiles) -> String {
    let bytes = std::fs::read(files.startup_log()).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    let mut start = text.len().saturating_sub(1000);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    match &text[start..] {
        "" => "QEMU said nothing".to_string(),
        tail => tail.to_string(),
    }
}

impl Hypervisor for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn start(&self, spec: &VmSpec) -> Result<(), HypervisorError> {
        let files = self.files(&spec.server_uuid)?;
        match self.find(&spec.server_uuid)? {
            // A start resumed after a restart may find its VM already up.
            Found::Supervised(_) => Ok(()),
            Found::Unreachable(process, reason) => {
                tracing::warn!(server = %spec.server_uuid, %reason, "replacing a VM that cannot be controlled");
                kill_and_wait(&process)?;
                self.launch(spec, files)
            }
            Found::Gone => self.launch(spec, files),
        }
    }

    fn stop(&self, server_uuid: &str, method: StopMethod) -> Result<(), HypervisorError> {
        let files = self.files(server_uuid)?;
        let vm = match self.find(server_uuid)? {
            Found::Supervised(vm) => vm,
            Found::Unreachable(process, reason) => {
                tracing::warn!(server = %server_uuid, %reason, "killing a VM that cannot be controlled");
                kill_and_wait(&process)?;
                files.remove_runtime_files();
                return Ok(());
            }
            Found::Gone => {
                files.remove_runtime_files();
                return Ok(());
            }
        };
        vm.request_stop();
        if method == StopMethod::Shutdown && !self.acpi_shutdown(&vm) {
            tracing::info!(server = %server_uuid, timeout = ?self.config.shutdown_timeout,
                "the guest did not shut down in time; powering it off");
        }
        if vm.process.is_alive() {
            // QEMU may hang up before it answers: the exit is what counts.
            if let Err(err) = vm.command("quit", None) {
                tracing::debug!(server = %server_uuid, error = %err, "quit");
            }
            if !vm.process.wait_exit(EXIT_TIMEOUT) {
                tracing::warn!(server = %server_uuid, "QEMU ignored quit; killing it");
                kill_and_wait(&vm.process)?;
            }
        }
        match vm.wait_ended(CLEANUP_TIMEOUT) {
            Some(_) => Ok(()),
            None => Err(HypervisorError(format!(
                "QEMU of server {server_uuid} has exited, but its supervisor did not finish"
            ))),
        }
    }

    fn state(&self, server_uuid: &str) -> VmState {
        self.take_back(server_uuid)
    }

    fn adopt(&self, server_uuid: &str) -> VmState {
        self.take_back(server_uuid)
    }

    fn console_log(&self, server_uuid: &str, max_bytes: usize) -> Result<Vec<u8>, HypervisorError> {
        self.files(server_uuid)?
            .console_tail(max_bytes)
            .map_err(|e| HypervisorError(format!("reading the console log: {e}")))
    }

    fn discard(&self, server_uuid: &str) -> Result<(), HypervisorError> {
        self.stop(server_uuid, StopMethod::PowerOff)?;
        self.files(server_uuid)?
            .remove_all()
            .map_err(|e| HypervisorError(format!("removing the VM's files: {e}")))
    }
}

/// Dropping the driver ends supervision but leaves the VMs running, as a restart of
/// `extility serve` does; a new driver takes them back with `adopt`.
impl Drop for Qemu {
    fn drop(&mut self) {
        self.shared.release_all();
    }
}

impl std::fmt::Debug for Qemu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qemu")
            .field("config", &self.config)
            .finish()
    }
}

/// The directory VMs live in, under a data directory.
pub fn vms_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("vms")
}
