//! Supervision: one thread per running VM listens to QEMU's events on the VM's QMP socket.
//! When QEMU exits the connection ends; the thread then works out why (the guest powered off,
//! the guest panicked, QEMU was killed or crashed), cleans up, and reports it as a [`VmEvent`]
//! unless the driver itself was stopping the VM.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use super::confine::Cgroup;
use super::files::VmFiles;
use super::metadata_stream::{self, DoorSpec};
use super::process::QemuProcess;
use super::qmp::{Qmp, QmpError, check_peer};
use crate::hypervisor::{VmEvent, VmState};

/// How often the supervisor looks after the console log while QEMU is quiet.
const HOUSEKEEPING: Duration = Duration::from_secs(5);
/// The console log is cut back to its last `CONSOLE_KEEP` bytes past `CONSOLE_LIMIT`.
const CONSOLE_LIMIT: u64 = 4 << 20;
const CONSOLE_KEEP: usize = 256 << 10;

/// What the driver shares with its supervisors: the VMs under supervision, and where to
/// report VMs that end on their own.
pub struct Shared {
    pub vms: Mutex<HashMap<String, Arc<Vm>>>,
    pub events: UnboundedSender<VmEvent>,
    /// Set when the driver is dropped: supervisors let go of their VMs, which run on.
    pub released: AtomicBool,
    /// The prefix of the VMs' cgroups' names (`<server>-`, see [`Cgroup::name`]) when VMs get
    /// cgroups, to remove once they end.
    pub cgroups: Option<String>,
}

impl Shared {
    /// Ends supervision without touching the VMs, as the end of this process would: a new
    /// driver can adopt them.
    pub fn release_all(&self) {
        self.released.store(true, Ordering::SeqCst);
        for vm in self.vms.lock().unwrap().values() {
            for socket in [&vm.events_socket, &vm.metadata_stream] {
                if let Some(socket) = socket.lock().unwrap().as_ref() {
                    let _ = socket.shutdown(std::net::Shutdown::Both);
                }
            }
        }
    }
}

/// A VM under supervision.
pub struct Vm {
    pub uuid: String,
    pub files: VmFiles,
    pub process: QemuProcess,
    /// Set when the driver stops the VM: its end is then no news to report.
    stop_requested: AtomicBool,
    /// How the VM ended, once its supervisor has finished.
    ended: Mutex<Option<VmState>>,
    ended_changed: Condvar,
    /// QEMU serves one client per QMP socket: one command connection at a time.
    control: Mutex<()>,
    /// The supervisor's connection, to cut it when the driver lets go.
    events_socket: Mutex<Option<UnixStream>>,
    /// The metadata forward's stream (user-mode network), likewise.
    metadata_stream: Mutex<Option<UnixStream>>,
    /// The QEMU process when this server started it: reaped once it has ended.
    child: Mutex<Option<Child>>,
}

impl Vm {
    pub fn new(uuid: &str, files: VmFiles, process: QemuProcess) -> Vm {
        Vm {
            uuid: uuid.to_string(),
            files,
            process,
            stop_requested: AtomicBool::new(false),
            ended: Mutex::new(None),
            ended_changed: Condvar::new(),
            control: Mutex::new(()),
            events_socket: Mutex::new(None),
            metadata_stream: Mutex::new(None),
            child: Mutex::new(None),
        }
    }

    /// Keeps the QEMU child this server started, to reap it once it has ended.
    pub fn with_child(self, child: Child) -> Vm {
        *self.child.lock().unwrap() = Some(child);
        self
    }

    /// Runs one QMP command on the control socket.
    pub fn command(&self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let _one_at_a_time = self.control.lock().unwrap();
        Qmp::connect_to(&self.files.control_socket(), self.process.pid())?
            .execute(command, arguments)
    }

    /// Serves the guest's metadata connections (user-mode network) on the VM's forward
    /// socket, in a thread of its own, until QEMU ends or the driver lets go.
    pub fn serve_metadata(&self) {
        let door = match DoorSpec::load(&self.files.metadata_door()) {
            Ok(door) => door,
            Err(err) => {
                tracing::debug!(server = %self.uuid, error = %err, "no metadata forward to serve");
                return;
            }
        };
        let stream = match UnixStream::connect(self.files.metadata_socket())
            .and_then(|s| check_peer(&s, self.process.pid()).map(|()| s))
        {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(server = %self.uuid, error = %err,
                    "cannot serve the VM's metadata forward");
                return;
            }
        };
        *self.metadata_stream.lock().unwrap() = stream.try_clone().ok();
        let name = format!("md-{}", &self.uuid[..self.uuid.len().min(8)]);
        if let Err(err) = std::thread::Builder::new()
            .name(name)
            .spawn(move || metadata_stream::serve(stream, &door))
        {
            tracing::error!(error = %err, "could not start a VM's metadata thread");
        }
    }

    pub fn request_stop(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
    }

    pub fn has_ended(&self) -> bool {
        self.ended.lock().unwrap().is_some()
    }

    /// Waits until the supervisor has seen the VM end and cleaned up, at most `timeout`.
    pub fn wait_ended(&self, timeout: Duration) -> Option<VmState> {
        let ended = self.ended.lock().unwrap();
        let (ended, _) = self
            .ended_changed
            .wait_timeout_while(ended, timeout, |ended| ended.is_none())
            .unwrap();
        ended.clone()
    }

    fn set_ended(&self, state: VmState) {
        *self.ended.lock().unwrap() = Some(state);
        self.ended_changed.notify_all();
    }
}

/// Starts supervising `vm` with `events`, a QMP connection to its events socket.
pub fn supervise(shared: Arc<Shared>, vm: Arc<Vm>, events: Qmp) {
    *vm.events_socket.lock().unwrap() = events.socket().ok();
    let name = format!("vm-{}", &vm.uuid[..vm.uuid.len().min(8)]);
    let spawned = std::thread::Builder::new()
        .name(name)
        .spawn(move || watch(&shared, &vm, events));
    if let Err(err) = spawned {
        tracing::error!(error = %err, "could not start a VM supervisor thread");
    }
}

fn watch(shared: &Shared, vm: &Arc<Vm>, mut qmp: Qmp) {
    let mut shutdown_reason: Option<String> = None;
    let mut panicked = false;
    let mut last_housekeeping = Instant::now();
    loop {
        match qmp.next_event(HOUSEKEEPING) {
            Ok(Some(event)) => match event.name.as_str() {
                "SHUTDOWN" => {
                    shutdown_reason = event
                        .data
                        .get("reason")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                }
                "GUEST_PANICKED" => panicked = true,
                _ => {}
            },
            Ok(None) => {}
            Err(QmpError::Protocol(message)) => {
                tracing::warn!(server = %vm.uuid, %message, "QEMU sent an unreadable QMP message");
            }
            // The connection is over: QEMU has exited or is exiting.
            Err(_) => break,
        }
        if last_housekeeping.elapsed() >= HOUSEKEEPING {
            if let Err(err) = vm.files.trim_console_log(CONSOLE_LIMIT, CONSOLE_KEEP) {
                tracing::warn!(server = %vm.uuid, error = %err, "could not trim the console log");
            }
            last_housekeeping = Instant::now();
        }
    }
    if shared.released.load(Ordering::SeqCst) {
        return;
    }
    if !vm.process.wait_exit(Duration::from_secs(30)) {
        // QMP is gone but the process lingers: it can be neither controlled nor supervised.
        tracing::error!(server = %vm.uuid, pid = vm.process.pid(),
            "QEMU closed its QMP socket without exiting; killing it");
        let _ = vm.process.kill();
        vm.process.wait_exit(Duration::from_secs(10));
    }
    if let Some(mut child) = vm.child.lock().unwrap().take() {
        let _ = child.wait();
    }
    let state = outcome(shutdown_reason.as_deref(), panicked);
    vm.files.remove_runtime_files();
    if let Some(prefix) = &shared.cgroups {
        Cgroup::remove(&Cgroup::name(prefix, &vm.uuid));
    }
    {
        let mut vms = shared.vms.lock().unwrap();
        if vms.get(&vm.uuid).is_some_and(|v| Arc::ptr_eq(v, vm)) {
            vms.remove(&vm.uuid);
        }
    }
    if !vm.stop_requested.load(Ordering::SeqCst) {
        tracing::info!(server = %vm.uuid, state = ?state, "a VM ended on its own");
        let _ = shared.events.send(VmEvent {
            server_uuid: vm.uuid.clone(),
            state: state.clone(),
        });
    }
    vm.set_ended(state);
}

/// How a VM ended, from the reason of QEMU's last SHUTDOWN event (none if QEMU died without
/// one: killed with SIGKILL, or crashed).
fn outcome(shutdown_reason: Option<&str>, panicked: bool) -> VmState {
    if panicked {
        return VmState::Failed("the guest operating system panicked".into());
    }
    match shutdown_reason {
        Some("guest-shutdown" | "host-qmp-quit" | "guest-reset" | "host-qmp-system-reset") => {
            VmState::Stopped
        }
        Some("guest-panic") => VmState::Failed("the guest operating system panicked".into()),
        Some("host-signal") => {
            VmState::Failed("QEMU was stopped by a signal from outside extility".into())
        }
        Some(other) => VmState::Failed(format!("QEMU shut down unexpectedly ({other})")),
        None => VmState::Failed("QEMU ended unexpectedly: it crashed or was killed".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_power_off_is_a_stop_and_a_vanished_qemu_an_error() {
        assert_eq!(outcome(Some("guest-shutdown"), false), VmState::Stopped);
        assert_eq!(outcome(Some("host-qmp-quit"), false), VmState::Stopped);
        assert!(matches!(outcome(None, false), VmState::Failed(r) if r.contains("crashed")));
        assert!(
            matches!(outcome(Some("guest-shutdown"), true), VmState::Failed(r) if r.contains("panicked"))
        );
        assert!(
            matches!(outcome(Some("host-signal"), false), VmState::Failed(r) if r.contains("signal"))
        );
    }
}
