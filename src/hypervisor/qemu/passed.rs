//! The files the server opens for a VM's QEMU and passes it as descriptors, so that QEMU (and
//! the VM's user it runs as) opens no path of the data directory: the console log, every
//! layer of every file disk (a qcow2 overlay's backing chain included), and the tap of a NIC
//! on a tenant network.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::args::{Layer, PassedFds};
use super::files::VmFiles;
use crate::hypervisor::{HypervisorError, Media, VmSpec};
use crate::storage::{VolumeFormat, VolumeLocation};

/// The descriptors, held open until QEMU has its copies, and what they are.
#[derive(Debug)]
pub struct Opened {
    pub files: Vec<OwnedFd>,
    pub fds: PassedFds,
}

impl Opened {
    /// The raw numbers, for the child to keep open across exec.
    pub fn raw(&self) -> Vec<i32> {
        self.files.iter().map(|f| f.as_raw_fd()).collect()
    }

    fn keep(&mut self, fd: OwnedFd) -> i32 {
        let raw = fd.as_raw_fd();
        self.files.push(fd);
        raw
    }
}

/// Opens what `spec`'s QEMU needs.
pub fn open(spec: &VmSpec, files: &VmFiles) -> Result<Opened, HypervisorError> {
    let mut opened = Opened {
        files: Vec::new(),
        fds: PassedFds::default(),
    };
    let console = OpenOptions::new()
        .append(true)
        .open(files.console_log())
        .map_err(|e| HypervisorError(format!("opening the console log: {e}")))?;
    opened.fds.console = opened.keep(console.into());
    for disk in &spec.disks {
        let layers = match &disk.location {
            VolumeLocation::File(path) => {
                let read_only = disk.media == Media::Iso;
                let chain = chain(path, disk.format)?;
                let mut layers = Vec::new();
                for (depth, (path, format)) in chain.into_iter().enumerate() {
                    let file = OpenOptions::new()
                        .read(true)
                        .write(depth == 0 && !read_only)
                        .open(&path)
                        .map_err(|e| {
                            HypervisorError(format!("opening the volume {}: {e}", path.display()))
                        })?;
                    let fd = opened.keep(file.into());
                    layers.push(Layer { fd, format });
                }
                Some(layers)
            }
            VolumeLocation::Rbd { .. } => None,
        };
        opened.fds.disks.push(layers);
    }
    if let Some(tap) = spec.nic.as_ref().and_then(|n| n.tap.as_ref()) {
        let fd = open_tap(tap)?;
        opened.fds.tap = Some(opened.keep(fd));
    }
    Ok(opened)
}

/// A file volume's layers, top first: itself, and for a qcow2 overlay its backing chain as
/// `qemu-img` reads it. Every layer must be a file of the volume's own directory (the
/// storage makes overlays of its own volumes only).
fn chain(
    top: &Path,
    format: VolumeFormat,
) -> Result<Vec<(PathBuf, VolumeFormat)>, HypervisorError> {
    if format != VolumeFormat::Qcow2 {
        return Ok(vec![(top.to_path_buf(), format)]);
    }
    let output = Command::new("qemu-img")
        .args([
            "info",
            "--output=json",
            "--backing-chain",
            "-U",
            "-f",
            "qcow2",
        ])
        .arg(top)
        .output()
        .map_err(|e| HypervisorError(format!("running qemu-img: {e}")))?;
    if !output.status.success() {
        return Err(HypervisorError(format!(
            "qemu-img info {}: {}",
            top.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let images: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout)
        .map_err(|e| HypervisorError(format!("qemu-img info's answer: {e}")))?;
    let directory = top
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .ok_or_else(|| HypervisorError(format!("resolving {}", top.display())))?;
    let mut layers = Vec::new();
    for image in images {
        let (Some(filename), Some(format)) = (
            image.get("filename").and_then(|v| v.as_str()),
            image.get("format").and_then(|v| v.as_str()),
        ) else {
            return Err(HypervisorError(
                "qemu-img info: a layer without a file".into(),
            ));
        };
        let path = Path::new(filename)
            .canonicalize()
            .map_err(|e| HypervisorError(format!("resolving the layer {filename}: {e}")))?;
        if path.parent() != Some(directory.as_path()) {
            return Err(HypervisorError(format!(
                "the volume {} has a layer outside its directory: {}",
                top.display(),
                path.display()
            )));
        }
        let format = match format {
            "raw" => VolumeFormat::Raw,
            "qcow2" => VolumeFormat::Qcow2,
            other => {
                return Err(HypervisorError(format!(
                    "the volume {} has a layer of format {other}",
                    top.display()
                )));
            }
        };
        layers.push((path, format));
    }
    if layers.is_empty() {
        return Err(HypervisorError(format!(
            "qemu-img info {}: no layer",
            top.display()
        )));
    }
    Ok(layers)
}

/// Attaches to the tap `name` (made by the network engine): QEMU gets the descriptor and
/// never opens `/dev/net/tun` itself.
fn open_tap(name: &str) -> Result<OwnedFd, HypervisorError> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const IFF_TAP: libc::c_short = 0x0002;
    const IFF_NO_PI: libc::c_short = 0x1000;
    const IFF_VNET_HDR: libc::c_short = 0x4000;
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(HypervisorError(format!(
            "'{name}' is not a tap device name"
        )));
    }
    let tun: File = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")
        .map_err(|e| HypervisorError(format!("opening /dev/net/tun: {e}")))?;
    let mut request = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    request.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `request` is (laid out as
    // the kernel's, and as large).
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF as _, &mut request) };
    if rc < 0 {
        return Err(HypervisorError(format!(
            "attaching to the tap {name}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(tun.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_is_read_top_first_and_stays_in_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
        let top = dir.path().join("top.qcow2");
        let status = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw"])
            .arg(&top)
            .status();
        let Ok(status) = status else {
            eprintln!("qemu-img is not installed: skipped");
            return;
        };
        assert!(status.success());
        let layers = chain(&top, VolumeFormat::Qcow2).unwrap();
        assert_eq!(
            layers,
            vec![
                (top.canonicalize().unwrap(), VolumeFormat::Qcow2),
                (base.canonicalize().unwrap(), VolumeFormat::Raw)
            ]
        );
        // An overlay whose backing file is elsewhere is refused.
        let other = tempfile::tempdir().unwrap();
        let stray = other.path().join("stray.qcow2");
        let status = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&base)
            .arg(&stray)
            .status()
            .unwrap();
        assert!(status.success());
        let err = chain(&stray, VolumeFormat::Qcow2).unwrap_err();
        assert!(err.0.contains("outside its directory"), "{err}");
    }
}
