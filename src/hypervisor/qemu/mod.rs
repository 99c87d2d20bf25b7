//! The QEMU driver: each running server is a `qemu-system-x86_64` process.
//!
//! QEMU runs in a session of its own, so a VM outlives `extility serve` (a crash or a restart
//! of it included). Everything needed to find a VM again is in its directories (see
//! [`files`]): the pid file, and the QMP sockets. A supervisor thread per VM ([`supervisor`])
//! listens on one QMP socket and notices the VM ending; commands (ACPI power button, quit) go
//! over the other. After a restart, [`Hypervisor::adopt`] takes a VM that still runs back
//! under supervision.
//!
//! QEMU runs sandboxed (seccomp, see [`args::SANDBOX`]) and, when the server runs as root,
//! confined ([`confine`]): as a user of its own, in a cgroup of its own, with a runtime
//! directory only it and root can enter. The server opens its disks, console log and tap and
//! passes descriptors ([`passed`]); QEMU opens nothing of the data directory.
//!
//! A VM with a NIC but no tenant network is on QEMU's user-mode network, confined: DHCP and
//! the metadata service, served per VM by [`metadata_stream`] (see [`args`]), and nothing
//! else.

mod args;
pub mod confine;
mod files;
pub mod metadata_proxy;
mod metadata_stream;
mod passed;
mod process;
mod qmp;
mod supervisor;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

pub use args::{
    Accel, FW_CFG_METADATA_TOKEN, FW_CFG_METADATA_URL, METADATA_GUEST_ADDR, METADATA_GUEST_PORT,
    METADATA_PROXY_COMMAND, guest_metadata_url, tap_metadata_url,
};
use confine::{Cgroup, Confinement, Limits, Uids};
use files::{VmFiles, write_private};
use metadata_stream::DoorSpec;
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
    /// How VMs are confined (a user and cgroup each); `None` runs them as this process's
    /// user, which is all a server that is not root can do.
    pub confinement: Option<Confinement>,
}

/// How long QEMU may take to set its VM up and answer on QMP.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a starting QEMU is looked at.
const START_POLL: Duration = Duration::from_millis(50);

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
    uids: Uids,
    /// Where this server's confined VMs' runtime directories are (see
    /// [`confine::server_run_dir`]).
    run_root: Option<PathBuf>,
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
        if let Some(confinement) = &config.confinement {
            confinement.check()?;
        }
        let cgroups = config
            .confinement
            .as_ref()
            .filter(|c| c.cgroups)
            .map(|_| format!("{}-", confine::server_run_name(&vms_dir)));
        let run_root = match &config.confinement {
            Some(confinement) => Some(confine::server_run_dir(&confinement.run_dir, &vms_dir)?),
            None => None,
        };
        Ok(Qemu {
            config: QemuConfig { vms_dir, ..config },
            shared: Arc::new(Shared {
                vms: Mutex::new(HashMap::new()),
                events,
                released: AtomicBool::new(false),
                cgroups,
            }),
            adopting: Mutex::new(()),
            uids: Uids::default(),
            run_root,
        })
    }

    /// Where a VM's pid file is (for tests and tools): in its runtime directory.
    pub fn pid_file(&self, server_uuid: &str) -> Result<PathBuf, HypervisorError> {
        Ok(self.files(server_uuid)?.pid_file())
    }

    pub fn config(&self) -> &QemuConfig {
        &self.config
    }

    fn files(&self, server_uuid: &str) -> Result<VmFiles, HypervisorError> {
        VmFiles::new(&self.config.vms_dir, self.run_root.as_deref(), server_uuid)
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
        // A VM started by an earlier version keeps all its files in the data directory.
        let (files, process) = match QemuProcess::from_pid_file(&files.pid_file()) {
            Some(process) => (files, process),
            None => {
                let legacy = files.legacy();
                match QemuProcess::from_pid_file(&legacy.pid_file()) {
                    Some(process) => (legacy, process),
                    None => return Ok(Found::Gone),
                }
            }
        };
        match Qmp::connect_to(&files.events_socket(), process.pid()) {
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
                vm.serve_metadata();
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
                if let Some(prefix) = &self.shared.cgroups {
                    Cgroup::remove(&Cgroup::name(prefix, server_uuid));
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
        let owner = match &self.config.confinement {
            Some(confinement) => Some(self.uids.take(confinement, &files.run)?),
            None => None,
        };
        let started = self.prepare_and_spawn(spec, &files, owner);
        let (child, cgroup) = match started {
            Ok(started) => started,
            Err(err) => {
                files.remove_runtime_files();
                return Err(err);
            }
        };
        let pid = child.id() as i32;
        let (child, process, events) = match wait_until_ready(child, &files) {
            Ok(ready) => ready,
            Err(err) => {
                files.remove_runtime_files();
                if let Some(cgroup) = cgroup {
                    cgroup.discard();
                }
                return Err(HypervisorError(format!(
                    "{err}: {}",
                    startup_messages(&files)
                )));
            }
        };
        tracing::info!(server = %spec.server_uuid, pid, uid = ?owner,
            accel = self.config.accel.as_str(), disks = spec.disks.len(), "VM started");
        let vm = Arc::new(Vm::new(&spec.server_uuid, files, process).with_child(child));
        self.shared
            .vms
            .lock()
            .unwrap()
            .insert(spec.server_uuid.clone(), vm.clone());
        supervise(self.shared.clone(), vm.clone(), events);
        vm.serve_metadata();
        Ok(())
    }

    /// Readies the VM's files, cgroup and descriptors and starts QEMU: as `owner` (with no
    /// other group) in a session of its own, in the cgroup, with nothing of this process's
    /// environment (which may hold the database's password).
    fn prepare_and_spawn(
        &self,
        spec: &VmSpec,
        files: &VmFiles,
        owner: Option<u32>,
    ) -> Result<(Child, Option<Cgroup>), HypervisorError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |e: std::io::Error| HypervisorError(format!("{what}: {e}"))
        };
        files
            .prepare()
            .map_err(io("preparing the VM's directory"))?;
        if let Some(metadata) = &spec.metadata {
            let on_tap = spec.nic.as_ref().and_then(|n| n.tap.as_ref()).is_some();
            let url = if on_tap {
                tap_metadata_url(&metadata.url)
            } else {
                guest_metadata_url(&metadata.url)
            };
            files
                .write_for_qemu(&files.metadata_url(), url.as_bytes(), owner)
                .map_err(io("writing the metadata URL"))?;
            files
                .write_for_qemu(&files.metadata_token(), metadata.token.as_bytes(), owner)
                .map_err(io("writing the metadata secret"))?;
            if spec.nic.is_some() && !on_tap {
                let (service, path) = args::metadata_service(&metadata.url)?;
                let door = DoorSpec {
                    service,
                    path,
                    token: metadata.token.clone(),
                };
                write_private(
                    &files.metadata_door(),
                    &serde_json::to_vec(&door).unwrap_or_default(),
                )
                .map_err(io("writing the metadata forward's settings"))?;
            }
        }
        let confined_spec;
        let spec = match (&self.config.confinement, owner) {
            (Some(confinement), Some(uid)) => {
                confined_spec =
                    confine::rbd_for_vm(spec, &files.run, uid, confinement.ceph.as_ref())?;
                &confined_spec
            }
            _ => spec,
        };
        let opened = passed::open(spec, files)?;
        let args = args::command_line(spec, files, self.config.accel, &opened.fds)?;
        let cgroup = match (&self.config.confinement, owner) {
            (Some(_), Some(_)) if self.shared.cgroups.is_some() => Some(Cgroup::create(
                &Cgroup::name(
                    self.shared.cgroups.as_deref().unwrap_or_default(),
                    &spec.server_uuid,
                ),
                Limits::for_vm(spec.memory_mb, spec.processors),
            )?),
            _ => None,
        };
        let startup_log = OpenOptions::new()
            .append(true)
            .open(files.startup_log())
            .map_err(io("opening QEMU's log"))?;
        let mut command = Command::new(&self.config.binary);
        command
            .args(&args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(startup_log);
        let procs: Vec<std::ffi::CString> = cgroup
            .as_ref()
            .map(|c| c.procs_files().to_vec())
            .unwrap_or_default();
        let keep = opened.raw();
        let groups = vm_groups(self.config.accel);
        // SAFETY: the closure runs in the child between fork and exec, and makes only
        // async-signal-safe system calls on memory prepared before the fork.
        unsafe {
            command.pre_exec(move || in_child(&procs, &keep, owner, &groups));
        }
        let spawned = command.spawn();
        // The child has its copies; ours close here.
        drop(opened);
        match spawned {
            Ok(child) => Ok((child, cgroup)),
            Err(err) => {
                if let Some(cgroup) = cgroup {
                    cgroup.discard();
                }
                Err(HypervisorError(format!(
                    "running {}: {err}",
                    self.config.binary.display()
                )))
            }
        }
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

/// The VM's user's only supplementary group: `/dev/kvm`'s, when QEMU uses KVM (its user
/// cannot open the device otherwise, and QEMU takes no descriptor for it).
fn vm_groups(accel: Accel) -> Vec<libc::gid_t> {
    use std::os::unix::fs::MetadataExt;
    if accel != Accel::Kvm {
        return Vec::new();
    }
    match std::fs::metadata("/dev/kvm") {
        Ok(meta) if meta.mode() & 0o060 == 0o060 && meta.gid() != 0 => vec![meta.gid()],
        _ => Vec::new(),
    }
}

/// What the child does before it runs QEMU: a session of its own (so the VM outlives this
/// server), its cgroups, the passed descriptors kept open, and the VM's user (groups first,
/// while it still may).
fn in_child(
    procs: &[std::ffi::CString],
    keep: &[i32],
    owner: Option<u32>,
    groups: &[libc::gid_t],
) -> std::io::Result<()> {
    let fail = || Err(std::io::Error::last_os_error());
    // SAFETY (all calls): plain system calls on descriptors and C strings this child owns.
    unsafe {
        if libc::setsid() < 0 {
            return fail();
        }
        for procs in procs {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return fail();
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if written != 1 {
                return fail();
            }
        }
        for &fd in keep {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return fail();
            }
        }
        if let Some(uid) = owner
            && (libc::setgroups(groups.len(), groups.as_ptr()) < 0
                || libc::setresgid(uid, uid, uid) < 0
                || libc::setresuid(uid, uid, uid) < 0)
        {
            return fail();
        }
    }
    Ok(())
}

/// Waits until the QEMU just started answers on its events socket (it has set its VM up), or
/// has ended (it could not).
fn wait_until_ready(
    mut child: Child,
    files: &VmFiles,
) -> Result<(Child, QemuProcess, Qmp), HypervisorError> {
    let pid = child.id() as i32;
    let deadline = Instant::now() + START_TIMEOUT;
    let process = QemuProcess::open(pid);
    let failed = |child: &mut Child, why: String| {
        let _ = child.kill();
        let _ = child.wait();
        Err(HypervisorError(why))
    };
    let Some(process) = process else {
        let status = child.wait();
        return Err(HypervisorError(format!("QEMU did not start ({status:?})")));
    };
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(HypervisorError(format!("QEMU did not start ({status})")));
        }
        if files.events_socket().exists() {
            match Qmp::connect_to(&files.events_socket(), pid) {
                Ok(events) => return Ok((child, process, events)),
                Err(err) if Instant::now() >= deadline => {
                    return failed(&mut child, format!("QEMU started but QMP failed ({err})"));
                }
                Err(_) => {}
            }
        }
        if Instant::now() >= deadline {
            return failed(
                &mut child,
                format!("QEMU did not answer on QMP within {START_TIMEOUT:?}"),
            );
        }
        std::thread::sleep(START_POLL);
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

    fn running(&self) -> Vec<String> {
        let vms = self.shared.vms.lock().unwrap();
        vms.values()
            .filter(|vm| !vm.has_ended() && vm.process.is_alive())
            .map(|vm| vm.uuid.clone())
            .collect()
    }

    fn adopt(&self, server_uuid: &str) -> VmState {
        self.take_back(server_uuid)
    }

    fn console_log(&self, server_uuid: &str, max_bytes: usize) -> Result<Vec<u8>, HypervisorError> {
        self.files(server_uuid)?
            .console_tail(max_bytes)
            .map_err(|e| HypervisorError(format!("reading the console log: {e}")))
    }

    fn console_socket(
        &self,
        server_uuid: &str,
        kind: crate::hypervisor::ConsoleKind,
    ) -> Result<PathBuf, HypervisorError> {
        let Found::Supervised(vm) = self.find(server_uuid)? else {
            return Err(HypervisorError(format!(
                "the VM of server {server_uuid} is not running"
            )));
        };
        let socket = match kind {
            crate::hypervisor::ConsoleKind::Screen => vm.files.vnc_socket(),
            crate::hypervisor::ConsoleKind::Serial => vm.files.serial_socket(),
        };
        if !socket.exists() {
            return Err(HypervisorError(
                "this VM was started before interactive consoles existed: stop and start the \
                 server to have them"
                    .into(),
            ));
        }
        Ok(socket)
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
