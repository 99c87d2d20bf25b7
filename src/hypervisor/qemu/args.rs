//! QEMU's command line for a server.
//!
//! The machine is a plain i440FX PC with SeaBIOS. Hard disks are virtio-blk in attach order
//! (SeaBIOS boots the first one; up to 16 fit, unlike IDE's 4). ISO disks are IDE CD-ROMs,
//! which every installer can read. Boot order is CD, then hard disk, as the platform
//! documents: each device gets a `bootindex` (CDs first) and `-boot order=dc` says the same to
//! firmware that only reads the legacy order. The serial console is a socket that also logs to
//! a file, the screen a VNC server on a socket (the interactive consoles), the
//! metadata URL and secret to the guest through fw_cfg files (read from files of the VM's
//! directory, so the secret never shows in the process list).
//!
//! The NIC is on QEMU's user-mode network, confined (`restrict=on`): the guest gets its address
//! by DHCP and reaches one thing, the metadata service at [`METADATA_GUEST_ADDR`]:80, which
//! QEMU forwards to a socket the server serves for this VM alone (see
//! [`super::metadata_stream`]). No egress, nothing of the host's loopback or networks, no DNS.
//! On a tenant network the NIC is a tap the server attached and passed as a descriptor.
//!
//! QEMU runs sandboxed (`-sandbox`, [`SANDBOX`]) and opens no file of the data directory: the
//! console log and every layer of every file disk are descriptors the server passes
//! (`-add-fd`, `/dev/fdset/N`), so the VM's own user needs no access to them.

use std::ffi::OsString;
use std::path::Path;

use super::files::{VmFiles, option_path};
use crate::hypervisor::{HypervisorError, Media, VmSpec};
use crate::storage::VolumeLocation;

/// The fw_cfg names a guest reads its metadata URL and secret from
/// (`/sys/firmware/qemu_fw_cfg/by_name/opt/com.extility/metadata-token/raw` on Linux).
pub const FW_CFG_METADATA_URL: &str = "opt/com.extility/metadata-url";
pub const FW_CFG_METADATA_TOKEN: &str = "opt/com.extility/metadata-token";

/// Where the guest reaches the metadata service on its user-mode network (port 80). Not the
/// network's host (10.0.2.2) nor its DNS (10.0.2.3), which QEMU does not let a forward take,
/// and outside the addresses its DHCP hands out (10.0.2.15 on).
pub const METADATA_GUEST_ADDR: &str = "10.0.2.100";
pub const METADATA_GUEST_PORT: u16 = 80;
/// The hidden subcommand of `extility` that QEMU ran for each metadata connection before
/// VMs were sandboxed: VMs started then still run it until they stop.
pub const METADATA_PROXY_COMMAND: &str = "metadata-proxy";

/// The PC's two IDE channels hold four drives.
pub const MAX_CDROMS: usize = 4;

/// How the guest's CPUs are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// QEMU's emulator: slower, works anywhere.
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The files the server opened for QEMU, by descriptor number (see [`super::passed`]): QEMU
/// opens no path of the data directory itself, so the VM's user needs no access to it.
#[derive(Debug, Clone, Default)]
pub struct PassedFds {
    /// The serial console's log, opened for appending.
    pub console: i32,
    /// One entry per disk of the spec, in its order: the layers of a file volume, top first
    /// (its backing chain below), or `None` for an RBD image, which librbd opens.
    pub disks: Vec<Option<Vec<Layer>>>,
    /// The tap of a NIC on a tenant network, attached.
    pub tap: Option<i32>,
}

/// One layer of a disk's chain: a descriptor and the format of what it holds.
#[derive(Debug, Clone)]
pub struct Layer {
    pub fd: i32,
    pub format: crate::storage::VolumeFormat,
}

/// QEMU's seccomp filter: no obsolete system calls, no change of user or group, no new
/// processes (so no helper a guest could make QEMU run), no change of scheduling or limits.
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// Builds the argument list (without the program name).
pub fn command_line(
    spec: &VmSpec,
    files: &VmFiles,
    accel: Accel,
    passed: &PassedFds,
) -> Result<Vec<OsString>, HypervisorError> {
    let mut args = Args::default();
    args.push("-name")
        .push(format!("extility-{}", spec.server_uuid));
    if uuid::Uuid::parse_str(&spec.server_uuid).is_ok() {
        // The guest sees the server's uuid as its SMBIOS system uuid.
        args.push("-uuid").push(&spec.server_uuid);
    }
    args.push("-no-user-config").push("-nodefaults");
    args.push("-sandbox").push(SANDBOX);
    args.push("-machine").push("pc");
    // QEMU's default CPU model: `-cpu host` would pass more features on, but it fails to
    // start on some (nested) KVM hosts that report MSRs they cannot set.
    args.push("-accel").push(accel.as_str());
    args.push("-smp").push(spec.processors.max(1).to_string());
    args.push("-m").push(format!("{}M", spec.memory_mb.max(16)));
    args.push("-display").push("none");
    args.push("-vga").push("std");
    args.push("-device").push("pvpanic");

    // Not `-daemonize`: the server starts QEMU in a session of its own already (and the
    // sandbox forbids the fork and setsid that daemonizing takes).
    args.push("-pidfile").push(files.pid_file());
    for socket in [files.events_socket(), files.control_socket()] {
        args.push("-qmp")
            .push(option("unix:", &socket, ",server=on,wait=off"));
    }
    add_fd(&mut args, passed.console);
    // The serial port is a socket the server connects to for the interactive console, and
    // everything the guest writes to it also goes to the log GetConsoleLog reads (connected
    // or not).
    let mut serial = OsString::from("socket,id=console,path=");
    serial.push(option_path(&files.serial_socket()));
    serial.push(format!(
        ",server=on,wait=off,logfile=/dev/fdset/{},logappend=on",
        passed.console
    ));
    args.push("-chardev").push(serial);
    args.push("-serial").push("chardev:console");
    // The screen: QEMU's VNC server on a socket of the runtime directory, never a TCP port.
    args.push("-vnc")
        .push(option("unix:", &files.vnc_socket(), ""));
    if spec.metadata.is_some() {
        for (name, path) in [
            (FW_CFG_METADATA_URL, files.metadata_url()),
            (FW_CFG_METADATA_TOKEN, files.metadata_token()),
        ] {
            args.push("-fw_cfg")
                .push(option(&format!("name={name},file="), &path, ""));
        }
    }

    if let (Some(metadata), Some(nic)) = (&spec.metadata, &spec.nic) {
        // cloud-init's NoCloud datasource, announced in the SMBIOS serial number: stock cloud
        // images find their password, keys and network there. No secret in it (it shows in
        // the process list): the guest's network names it (see `super::metadata_stream`).
        let document = match nic.tap {
            Some(_) => tap_metadata_url(&metadata.url),
            None => guest_metadata_url(&metadata.url),
        };
        args.push("-smbios").push(format!(
            "type=1,serial=ds=nocloud-net;s={}",
            nocloud_seed(&document).replace(',', ",,")
        ));
    }

    args.push("-boot").push("order=dc");
    if passed.disks.len() != spec.disks.len() {
        return Err(HypervisorError(
            "the disks' descriptors do not match the disks".into(),
        ));
    }
    let (cdroms, hard_disks): (Vec<_>, Vec<_>) = spec
        .disks
        .iter()
        .zip(&passed.disks)
        .partition(|(d, _)| d.media == Media::Iso);
    if cdroms.len() > MAX_CDROMS {
        return Err(HypervisorError(format!(
            "a server can have at most {MAX_CDROMS} ISO disks (CD-ROM drives), this one has {}",
            cdroms.len()
        )));
    }
    for (i, (cd, layers)) in cdroms.iter().enumerate() {
        let id = format!("cd{i}");
        match layers {
            Some(layers) => blockdevs(&mut args, &id, layers, true),
            None => {
                args.push("-drive").push(drive(
                    &format!(
                        "if=none,id={id},media=cdrom,readonly=on,format={}",
                        cd.format.as_str()
                    ),
                    &cd.location,
                ));
            }
        }
        args.push("-device").push(format!(
            "ide-cd,drive={id},bus=ide.{},unit={},bootindex={i}",
            i / 2,
            i % 2
        ));
    }
    for (i, (disk, layers)) in hard_disks.iter().enumerate() {
        let id = format!("disk{i}");
        match layers {
            Some(layers) => blockdevs(&mut args, &id, layers, false),
            None => {
                args.push("-drive").push(drive(
                    &format!(
                        "if=none,id={id},discard=unmap,format={}",
                        disk.format.as_str()
                    ),
                    &disk.location,
                ));
            }
        }
        args.push("-device").push(format!(
            "virtio-blk-pci,drive={id},bootindex={}",
            MAX_CDROMS + i
        ));
    }

    if let Some(nic) = &spec.nic {
        if !is_mac_address(&nic.mac) {
            return Err(HypervisorError(format!(
                "'{}' is not a MAC address",
                nic.mac
            )));
        }
        match &nic.tap {
            // A tenant network: the tap the network engine made on the VLAN's bridge,
            // attached by the server; QEMU runs no script on it.
            Some(tap) => {
                if !is_interface_name(tap) {
                    return Err(HypervisorError(format!("'{tap}' is not a tap device name")));
                }
                let fd = passed.tap.ok_or_else(|| {
                    HypervisorError(format!("the tap {tap} was not opened for QEMU"))
                })?;
                args.push("-netdev").push(format!("tap,id=net0,fd={fd}"));
            }
            // Confined user-mode networking: DHCP, and the metadata forward if the VM has
            // metadata; no route anywhere else (restrict=on), no IPv6.
            None => {
                args.push("-netdev")
                    .push(netdev(spec.metadata.is_some(), files));
            }
        }
        // No boot ROM: nothing boots from the NIC.
        args.push("-device").push(format!(
            "virtio-net-pci,netdev=net0,mac={},romfile=",
            nic.mac
        ));
    }
    Ok(args.0)
}

/// `-add-fd fd=N,set=N`: the descriptor becomes `/dev/fdset/N` to QEMU.
fn add_fd(args: &mut Args, fd: i32) {
    args.push("-add-fd").push(format!("fd={fd},set={fd}"));
}

/// A disk's chain as block nodes, bottom first, each layer's file a passed descriptor; the
/// top node is named `id`. Layers below the top are read-only, as is a CD.
fn blockdevs(args: &mut Args, id: &str, layers: &[Layer], read_only: bool) {
    let mut below: Option<String> = None;
    for (depth, layer) in layers.iter().enumerate().rev() {
        add_fd(args, layer.fd);
        let top = depth == 0;
        let name = if top {
            id.to_string()
        } else {
            format!("{id}-layer{depth}")
        };
        let layer_read_only = read_only || !top;
        let mut node = serde_json::json!({
            "node-name": name,
            "driver": layer.format.as_str(),
            "read-only": layer_read_only,
            "file": {
                "driver": "file",
                "filename": format!("/dev/fdset/{}", layer.fd),
                "read-only": layer_read_only,
            },
        });
        if !layer_read_only {
            node["discard"] = "unmap".into();
            node["file"]["discard"] = "unmap".into();
        }
        if layer.format == crate::storage::VolumeFormat::Qcow2 {
            // The layer below is named here, never found through the file's header.
            node["backing"] = below.clone().map_or(serde_json::Value::Null, Into::into);
        }
        args.push("-blockdev").push(node.to_string());
        below = Some(name);
    }
}

/// A Linux interface name that needs no quoting in a QEMU option: 1 to 15 letters, digits,
/// `-` or `_`.
fn is_interface_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The `-netdev` value: `user,id=net0,restrict=on,ipv6=off` and, for a VM with metadata, a
/// forward of the metadata address to a socket of the VM's runtime directory that QEMU
/// listens on and the server serves ([`super::metadata_stream`]): no process per connection
/// (the sandbox forbids them), and every connection of this guest reaches its own VM's stream.
fn netdev(metadata: bool, files: &VmFiles) -> OsString {
    let mut value = OsString::from("user,id=net0,restrict=on,ipv6=off");
    if metadata {
        value.push(format!(
            ",guestfwd=tcp:{METADATA_GUEST_ADDR}:{METADATA_GUEST_PORT}-unix:"
        ));
        // The socket's options are part of the forward's value: their commas are doubled.
        value.push(option_path(Path::new(&option_path(
            &files.metadata_socket(),
        ))));
        value.push(",,server=on,,wait=off");
    }
    value
}

/// Where the proxy connects to (`host:port` of the service's URL, a wildcard address being
/// this host's loopback) and the document's path.
pub fn metadata_service(url: &str) -> Result<(String, String), HypervisorError> {
    let bad = |why: &str| HypervisorError(format!("metadata URL '{url}': {why}"));
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if parsed.scheme() != "http" {
        return Err(bad(
            "the metadata forward speaks plain HTTP to this node's listener",
        ));
    }
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| bad("no port"))?;
    let host = match parsed.host() {
        Some(url::Host::Ipv4(ip)) if ip.is_unspecified() => "127.0.0.1".to_string(),
        Some(url::Host::Ipv6(ip)) if ip.is_unspecified() => "[::1]".to_string(),
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
        Some(host) => host.to_string(),
        None => return Err(bad("no host")),
    };
    if parsed.query().is_some() {
        return Err(bad("a query"));
    }
    Ok((format!("{host}:{port}"), parsed.path().to_string()))
}

/// The metadata URL as the guest uses it: the service's path at the metadata address of its
/// user-mode network.
pub fn guest_metadata_url(url: &str) -> String {
    let path = url::Url::parse(url)
        .map(|u| u.path().to_string())
        .unwrap_or_else(|_| "/".to_string());
    format!("http://{METADATA_GUEST_ADDR}{path}")
}

/// Where cloud-init finds the NoCloud datasource (`meta-data`, `user-data`, ...) beside the
/// Extility document at `document_url`: `nocloud/` in the document's directory.
pub fn nocloud_seed(document_url: &str) -> String {
    let directory = document_url
        .rsplit_once('/')
        .map_or(document_url, |(dir, _)| dir);
    format!("{directory}/nocloud/")
}

/// The metadata URL as a guest on a tap (tenant network) uses it: the service's path at the
/// conventional 169.254.169.254, which the network redirects to this node's metadata listener.
pub fn tap_metadata_url(url: &str) -> String {
    let path = url::Url::parse(url)
        .map(|u| u.path().to_string())
        .unwrap_or_else(|_| "/".to_string());
    format!("http://{TAP_METADATA_ADDR}{path}")
}

/// Where a guest on a tenant network reaches the metadata service (port 80).
pub const TAP_METADATA_ADDR: &str = "169.254.169.254";

fn is_mac_address(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `prefix` + the path with its commas doubled + `suffix`.
/// A `-drive` value: `options` (which always name the format: QEMU never guesses it from the
/// guest's bytes), then where the bytes are. An RBD image is opened through librbd with the
/// cluster's configuration file and user, never a path the guest could choose.
fn drive(options: &str, location: &VolumeLocation) -> OsString {
    match location {
        VolumeLocation::File(path) => option(&format!("{options},file="), path, ""),
        VolumeLocation::Rbd {
            pool,
            image,
            ceph_conf,
            ceph_user,
        } => {
            let mut value = OsString::from(format!(
                "{options},file.driver=rbd,file.pool={},file.image={}",
                pool.replace(',', ",,"),
                image.replace(',', ",,")
            ));
            if let Some(conf) = ceph_conf {
                value.push(option(",file.conf=", conf, ""));
            }
            if let Some(user) = ceph_user {
                value.push(format!(",file.user={}", user.replace(',', ",,")));
            }
            value
        }
    }
}

fn option(prefix: &str, path: &Path, suffix: &str) -> OsString {
    let mut value = OsString::from(prefix);
    value.push(option_path(path));
    value.push(suffix);
    value
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn push(&mut self, arg: impl Into<OsString>) -> &mut Self {
        self.0.push(arg.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::hypervisor::{MetadataAccess, VmDisk, VmNic};
    use crate::storage::VolumeFormat;

    /// Descriptors as `passed::open` would hand them: the console 3, each disk one layer
    /// from 10 on (RBD none), the tap 30.
    fn fds(spec: &VmSpec) -> PassedFds {
        PassedFds {
            console: 3,
            disks: spec
                .disks
                .iter()
                .enumerate()
                .map(|(i, d)| match d.location {
                    VolumeLocation::File(_) => Some(vec![Layer {
                        fd: 10 + i as i32,
                        format: d.format,
                    }]),
                    VolumeLocation::Rbd { .. } => None,
                })
                .collect(),
            tap: spec.nic.as_ref().and_then(|n| n.tap.as_ref()).map(|_| 30),
        }
    }

    fn args_of(
        spec: &VmSpec,
        files: &VmFiles,
        accel: Accel,
    ) -> Result<Vec<OsString>, HypervisorError> {
        command_line(spec, files, accel, &fds(spec))
    }

    fn spec(disks: Vec<VmDisk>) -> VmSpec {
        VmSpec {
            server_uuid: "0f5c6a1e-8f0e-4b8e-9a53-0d6f4c3a7b21".into(),
            name: "web, \"front\"".into(),
            processors: 2,
            memory_mb: 1024,
            disks,
            nic: Some(VmNic {
                tap: None,
                vlan_id: 3,
                mac: "52:54:00:aa:bb:cc".into(),
            }),
            metadata: Some(MetadataAccess {
                url: "http://127.0.0.1:8080/metadata/v1/server.xml".into(),
                token: "s3cret".into(),
            }),
        }
    }

    fn disk(path: &str, media: Media) -> VmDisk {
        VmDisk {
            location: VolumeLocation::File(PathBuf::from(path)),
            format: VolumeFormat::Raw,
            media,
        }
    }

    fn render(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn hard_disks_keep_attach_order_and_cds_boot_first() {
        let files = VmFiles::new(
            Path::new("/data/vms"),
            Some(Path::new("/run/extility/vms")),
            "0f5c6a1e-8f0e-4b8e-9a53-0d6f4c3a7b21",
        )
        .unwrap();
        let spec = spec(vec![
            disk("/v/boot.raw", Media::Disk),
            disk("/v/install.iso", Media::Iso),
            disk("/v/data,1.raw", Media::Disk),
        ]);
        let line = render(&args_of(&spec, &files, Accel::Tcg).unwrap());
        // Every disk is a descriptor: QEMU opens no path of the data directory.
        assert!(!line.contains("/v/"), "{line}");
        let boot = line.find("/dev/fdset/10").unwrap();
        let data = line.find("/dev/fdset/12").unwrap();
        assert!(boot < data, "hard disks in attach order: {line}");
        assert!(line.contains("-add-fd fd=11,set=11"));
        assert!(line.contains("ide-cd,drive=cd0,bus=ide.0,unit=0,bootindex=0"));
        assert!(
            line.contains(r#"{"node-name":"cd0","driver":"raw","read-only":true,"file":{"driver":"file","filename":"/dev/fdset/11","read-only":true}}"#),
            "{line}"
        );
        assert!(line.contains("virtio-blk-pci,drive=disk0,bootindex=4"));
        assert!(line.contains("virtio-blk-pci,drive=disk1,bootindex=5"));
        // The consoles: sockets of the runtime directory, the serial one logging to the
        // passed log; no TCP port.
        let run = "/run/extility/vms/0f5c6a1e-8f0e-4b8e-9a53-0d6f4c3a7b21";
        assert!(
            line.contains(&format!(
                "-chardev socket,id=console,path={run}/serial.sock,server=on,wait=off,\
                 logfile=/dev/fdset/3,logappend=on -serial chardev:console"
            )),
            "{line}"
        );
        assert!(
            line.contains(&format!("-vnc unix:{run}/vnc.sock ")),
            "{line}"
        );
        assert!(line.contains(&format!("-sandbox {SANDBOX}")));
        assert!(!line.contains("-daemonize"));
        assert!(line.contains("-boot order=dc"));
        assert!(line.contains("-smp 2 -m 1024M"));
        assert!(line.contains("virtio-net-pci,netdev=net0,mac=52:54:00:aa:bb:cc"));
        assert!(
            !line.contains("s3cret"),
            "the secret stays off the command line"
        );
        assert!(line.contains("name=opt/com.extility/metadata-token,file=/run/extility/vms/0f5c"));
        assert!(
            !line.contains("front"),
            "the customer's server name is not an option"
        );
    }

    #[test]
    fn a_nic_on_a_tenant_network_opens_its_tap_and_nothing_else() {
        let files = VmFiles::new(
            Path::new("/data/vms"),
            Some(Path::new("/run/extility/vms")),
            "0f5c6a1e-8f0e-4b8e-9a53-0d6f4c3a7b21",
        )
        .unwrap();
        let mut spec = spec(vec![disk("/v/boot.raw", Media::Disk)]);
        spec.nic.as_mut().unwrap().tap = Some("extap12".into());
        let line = render(&args_of(&spec, &files, Accel::Tcg).unwrap());
        assert!(line.contains("-netdev tap,id=net0,fd=30 -device"), "{line}");
        assert!(
            !line.contains("guestfwd") && !line.contains("user,"),
            "{line}"
        );
        spec.nic.as_mut().unwrap().tap = Some("x,script=/tmp/evil".into());
        assert!(args_of(&spec, &files, Accel::Tcg).is_err());
        assert_eq!(
            tap_metadata_url("http://127.0.0.1:8080/metadata/v1/server.xml"),
            "http://169.254.169.254/metadata/v1/server.xml"
        );
        spec.nic.as_mut().unwrap().tap = Some("extap7".into());
        let line = render(&args_of(&spec, &files, Accel::Tcg).unwrap());
        assert!(
            line.contains("serial=ds=nocloud-net;s=http://169.254.169.254/metadata/v1/nocloud/"),
            "{line}"
        );
    }

    #[test]
    fn no_nic_without_a_vlan_and_at_most_four_cdroms() {
        let files = VmFiles::new(Path::new("/data/vms"), None, "abc").unwrap();
        let mut spec = spec(vec![disk("/v/a.iso", Media::Iso); 4]);
        spec.nic = None;
        let line = render(&args_of(&spec, &files, Accel::Kvm).unwrap());
        assert!(!line.contains("-netdev") && !line.contains("-smbios"));
        assert!(line.contains("-accel kvm"));
        assert!(line.contains("bus=ide.1,unit=1,bootindex=3"));
        spec.disks.push(disk("/v/e.iso", Media::Iso));
        let err = args_of(&spec, &files, Accel::Kvm).unwrap_err();
        assert!(err.0.contains("at most 4"), "{err}");
    }

    #[test]
    fn the_nic_is_confined_to_dhcp_and_the_metadata_forward() {
        let files = VmFiles::new(Path::new("/data/vms"), None, "abc").unwrap();
        let spec = spec(vec![]);
        let args = args_of(&spec, &files, Accel::Tcg).unwrap();
        let at = args.iter().position(|a| a == "-netdev").unwrap();
        assert_eq!(
            args[at + 1],
            "user,id=net0,restrict=on,ipv6=off,\
             guestfwd=tcp:10.0.2.100:80-unix:/data/vms/abc/metadata.sock,,server=on,,wait=off"
        );
        assert_eq!(args.iter().filter(|a| *a == "-netdev").count(), 1);
        // cloud-init finds its NoCloud datasource through the SMBIOS serial, without a secret.
        let at = args.iter().position(|a| a == "-smbios").unwrap();
        assert_eq!(
            args[at + 1],
            "type=1,serial=ds=nocloud-net;s=http://10.0.2.100/metadata/v1/nocloud/"
        );

        // Without metadata: no forward at all.
        let mut bare = spec.clone();
        bare.metadata = None;
        let args = args_of(&bare, &files, Accel::Tcg).unwrap();
        let at = args.iter().position(|a| a == "-netdev").unwrap();
        assert_eq!(args[at + 1], "user,id=net0,restrict=on,ipv6=off");

        // A comma of the socket's path is doubled twice: for the forward, and for the netdev.
        let files = VmFiles::new(Path::new("/data,x/vms"), None, "abc").unwrap();
        let args = args_of(&spec, &files, Accel::Tcg).unwrap();
        let at = args.iter().position(|a| a == "-netdev").unwrap();
        assert!(
            args[at + 1]
                .to_string_lossy()
                .contains("-unix:/data,,,,x/vms/abc/metadata.sock,,server=on"),
            "{:?}",
            args[at + 1]
        );
    }

    #[test]
    fn the_forward_goes_to_this_nodes_listener() {
        assert_eq!(
            metadata_service("http://0.0.0.0:8080/metadata/v1/server.xml").unwrap(),
            ("127.0.0.1:8080".into(), "/metadata/v1/server.xml".into())
        );
        assert_eq!(
            metadata_service("http://[::]:9/m").unwrap(),
            ("[::1]:9".into(), "/m".into())
        );
        assert_eq!(
            metadata_service("http://192.0.2.7/m").unwrap(),
            ("192.0.2.7:80".into(), "/m".into())
        );
        assert!(metadata_service("https://api.example.com/m").is_err());
        assert!(metadata_service("http://127.0.0.1:1/m?x=1").is_err());
    }

    #[test]
    fn the_guest_reads_its_metadata_at_the_forward() {
        assert_eq!(
            guest_metadata_url("http://127.0.0.1:8080/metadata/v1/server.xml"),
            "http://10.0.2.100/metadata/v1/server.xml"
        );
        assert_eq!(
            guest_metadata_url("http://0.0.0.0:9/m"),
            "http://10.0.2.100/m"
        );
    }
}
