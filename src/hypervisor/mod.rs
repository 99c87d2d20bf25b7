//! Hypervisors: what runs a server's virtual machine.
//!
//! [`Hypervisor`] is the driver interface. [`qemu::Qemu`] boots real VMs; [`none::RecordOnly`]
//! only records state (for hosts without QEMU). Methods block (they spawn processes and talk to them), so async code calls
//! them through `spawn_blocking`. A driver reports VMs that end on their own as [`VmEvent`]s
//! on the channel it was built with.

pub mod none;
pub mod qemu;

use crate::storage::{VolumeFormat, VolumeLocation};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Disk,
    Iso,
}

#[derive(Debug, Clone)]
pub struct VmDisk {
    pub location: VolumeLocation,
    pub format: VolumeFormat,
    pub media: Media,
}

#[derive(Debug, Clone)]
pub struct VmNic {
    pub vlan_id: i64,
    pub mac: String,
    /// The tap device (made by the network engine, attached to the VLAN's bridge) the NIC
    /// uses; `None`: QEMU's user-mode network, confined to DHCP and the metadata service.
    pub tap: Option<String>,
}

/// How the VM reaches its metadata document: the URL and the per-server secret that
/// authenticates it.
#[derive(Debug, Clone)]
pub struct MetadataAccess {
    /// Where this node serves the document (its own API listener, plain HTTP). The guest does
    /// not use it directly: QEMU's driver forwards the guest's metadata address to it.
    pub url: String,
    pub token: String,
}

/// Everything needed to boot a server.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub server_uuid: String,
    pub name: String,
    pub processors: u32,
    pub memory_mb: u64,
    /// In attach order. Hard disks in this order; `Media::Iso` ones as CD-ROMs. Boot order is
    /// CD, then hard disk.
    pub disks: Vec<VmDisk>,
    pub nic: Option<VmNic>,
    pub metadata: Option<MetadataAccess>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMethod {
    /// Ask the guest to shut down (ACPI), power off after a timeout.
    Shutdown,
    /// Power off at once.
    PowerOff,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmState {
    Running,
    Stopped,
    /// The VM ended abnormally; the reason is for the server's status.
    Failed(String),
}

/// A VM that changed state on its own (the guest powered off, QEMU crashed).
#[derive(Debug, Clone)]
pub struct VmEvent {
    pub server_uuid: String,
    pub state: VmState,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HypervisorError(pub String);

impl From<HypervisorError> for crate::error::ApiError {
    fn from(err: HypervisorError) -> Self {
        crate::error::ApiError::Hypervisor(err.0)
    }
}

/// A VM's interactive consoles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsoleKind {
    /// The graphical screen, keyboard and mouse: RFB (VNC).
    Screen,
    /// The first serial port: raw bytes.
    Serial,
}

impl ConsoleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsoleKind::Screen => "screen",
            ConsoleKind::Serial => "serial",
        }
    }

    pub fn parse(name: &str) -> Option<ConsoleKind> {
        match name {
            "screen" => Some(ConsoleKind::Screen),
            "serial" => Some(ConsoleKind::Serial),
            _ => None,
        }
    }
}

pub trait Hypervisor: Send + Sync + 'static {
    /// The driver's name, as `--hypervisor` takes it.
    fn name(&self) -> &'static str;

    /// Boots the VM; returns once it runs.
    fn start(&self, spec: &VmSpec) -> Result<(), HypervisorError>;

    /// Stops the VM; returns once nothing of it runs any more.
    fn stop(&self, server_uuid: &str, method: StopMethod) -> Result<(), HypervisorError>;

    fn state(&self, server_uuid: &str) -> VmState;

    /// The servers whose VMs run under this driver now: what a node cut off from its
    /// database powers off (`ops::server::self_fence`).
    fn running(&self) -> Vec<String>;

    /// After `extility serve` restarts: takes a VM that may still run back under supervision
    /// and says what it found.
    fn adopt(&self, server_uuid: &str) -> VmState;

    /// The end of the VM's serial console output, at most `max_bytes`.
    fn console_log(&self, server_uuid: &str, max_bytes: usize) -> Result<Vec<u8>, HypervisorError>;

    /// The Unix socket of a running VM's interactive console of `kind`: QEMU's VNC server
    /// (RFB) for the screen, the serial port's socket chardev for the serial console. Only
    /// the server (root) can open it; one connection at a time is a console.
    fn console_socket(
        &self,
        server_uuid: &str,
        kind: ConsoleKind,
    ) -> Result<std::path::PathBuf, HypervisorError> {
        let _ = (server_uuid, kind);
        Err(HypervisorError(format!(
            "the '{}' hypervisor has no interactive consoles",
            self.name()
        )))
    }

    /// The server is being destroyed: powers its VM off if it runs and removes what the
    /// driver keeps for it (console log, ...).
    fn discard(&self, server_uuid: &str) -> Result<(), HypervisorError> {
        self.stop(server_uuid, StopMethod::PowerOff)
    }
}
