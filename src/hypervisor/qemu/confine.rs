//! Confinement of a VM's QEMU when the server runs as root: a user of its own (a numeric uid
//! from `--vm-uids`, with the same number as its group and no supplementary groups; no
//! `/etc/passwd` entry is needed), a runtime directory only that user and root can enter, and
//! a cgroup of its own that bounds its memory, CPU and I/O share.
//!
//! A uid is taken by the VM whose runtime directory it owns: the lowest uid of the range that
//! owns none and runs no process is free. The directory lives as long as the VM (it is made
//! before QEMU starts and removed once QEMU has ended), so a restarted server sees which uids
//! its VMs hold without any record of its own.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::hypervisor::HypervisorError;

/// Where confined VMs' runtime directories are, unless configured otherwise.
pub const DEFAULT_RUN_DIR: &str = "/run/extility/vms";
/// The uids VMs run as, unless configured otherwise: outside the ranges Debian, systemd
/// (dynamic users and containers) and podman hand out.
pub const DEFAULT_UIDS: (u32, u32) = (1_950_000_000, 1_950_009_999);

/// The memory QEMU needs beside the guest's: its own code and heap, device emulation, and
/// the translation cache when it emulates (TCG).
const QEMU_OVERHEAD_MB: u64 = 384;
/// cgroup v1's CPU period, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;
/// Every VM's I/O weight: VMs share the disks evenly, however many threads each runs.
const IO_WEIGHT: u32 = 100;

/// How the driver confines VMs.
#[derive(Debug, Clone)]
pub struct Confinement {
    /// Where the VMs' runtime directories are.
    pub run_dir: PathBuf,
    /// The range of uids VMs run as, inclusive.
    pub uids: (u32, u32),
    /// Whether each VM gets a cgroup (the host may have none that the server can write).
    pub cgroups: bool,
    /// The Ceph identity VMs open RBD images as: user (without `client.`) and keyring.
    pub ceph: Option<(String, PathBuf)>,
}

impl Confinement {
    /// The default confinement: `--vm-uids` unset.
    pub fn with_defaults() -> Confinement {
        Confinement {
            run_dir: PathBuf::from(DEFAULT_RUN_DIR),
            uids: DEFAULT_UIDS,
            cgroups: true,
            ceph: None,
        }
    }

    /// Checks the range against the accounts of this host (a VM must never run as a user that
    /// owns anything), and makes the runtime root: root's, entered by anyone (mode 0711) but
    /// listed by root only.
    pub fn check(&self) -> Result<(), HypervisorError> {
        let (first, last) = self.uids;
        if first == 0 || first > last {
            return Err(HypervisorError(format!(
                "--vm-uids {first}-{last} is not a range of unprivileged uids"
            )));
        }
        if let Ok(passwd) = fs::read_to_string("/etc/passwd") {
            for line in passwd.lines() {
                let mut fields = line.split(':');
                let (Some(name), Some(_), Some(uid)) =
                    (fields.next(), fields.next(), fields.next())
                else {
                    continue;
                };
                if uid
                    .parse::<u32>()
                    .is_ok_and(|u| (first..=last).contains(&u))
                {
                    return Err(HypervisorError(format!(
                        "--vm-uids {first}-{last} includes the uid of the account '{name}': VMs \
                         need uids of their own"
                    )));
                }
            }
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.run_dir)
            .map_err(|e| HypervisorError(format!("creating {}: {e}", self.run_dir.display())))?;
        fs::set_permissions(&self.run_dir, fs::Permissions::from_mode(0o711)).map_err(|e| {
            HypervisorError(format!("setting {}'s mode: {e}", self.run_dir.display()))
        })?;
        // Every directory above must let the VMs' users through.
        let mut dir = self.run_dir.parent();
        while let Some(parent) = dir {
            if let Ok(meta) = fs::metadata(parent)
                && meta.mode() & 0o001 == 0
            {
                return Err(HypervisorError(format!(
                    "{} is not searchable by other users: the VMs' runtime directories under {} \
                     would be out of their own QEMU's reach",
                    parent.display(),
                    self.run_dir.display()
                )));
            }
            dir = parent.parent();
        }
        Ok(())
    }
}

/// Makes what the data directory holds for the server alone private to root: its files (the
/// SQLite database, the secret key, the node id), and the volumes, staging and VMs'
/// directories. (dnsmasq, which drops its privileges, keeps its files out of the data
/// directory, under `--network-run-dir`; an earlier release's `network` directory is left
/// as it is until the network engine removes it.)
pub fn make_private(data_dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(data_dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        let mode = meta.permissions().mode();
        let private = if meta.is_file() {
            mode & 0o700
        } else if meta.is_dir()
            && ["volumes", "staging", "vms"].contains(&entry.file_name().to_string_lossy().as_ref())
        {
            0o700
        } else {
            continue;
        };
        if mode & 0o777 != private {
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(private))?;
        }
    }
    Ok(())
}

/// This server's directory under the runtime root: named after its VMs' directory (a short
/// hash of its path), so that servers sharing a host (nodes of a test, say) keep apart VMs of
/// the same server uuid. Made root's, entered by anyone (mode 0711).
pub fn server_run_dir(run_dir: &Path, vms_dir: &Path) -> Result<PathBuf, HypervisorError> {
    let dir = run_dir.join(server_run_name(vms_dir));
    fs::DirBuilder::new()
        .mode(0o711)
        .create(&dir)
        .or_else(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => Ok(()),
            _ => Err(e),
        })
        .and_then(|()| fs::set_permissions(&dir, fs::Permissions::from_mode(0o711)))
        .map_err(|e| HypervisorError(format!("creating {}: {e}", dir.display())))?;
    Ok(dir)
}

/// The name of the directory of [`server_run_dir`]: 8 hex digits of the SHA-256 of the
/// (canonical) VMs' directory's path.
pub fn server_run_name(vms_dir: &Path) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(vms_dir.as_os_str().as_bytes())[..4])
}

/// Hands out the uids of [`Confinement::uids`].
#[derive(Debug, Default)]
pub struct Uids {
    /// Taken one at a time, so two VMs starting together never get the same uid.
    choosing: Mutex<()>,
}

impl Uids {
    /// Makes `run`, the VM's runtime directory, owned by a free uid of the range, and returns
    /// that uid. A runtime directory left by an earlier start of this VM is reused with its
    /// uid when that uid runs no process.
    pub fn take(&self, confinement: &Confinement, run: &Path) -> Result<u32, HypervisorError> {
        let _one_at_a_time = self.choosing.lock().unwrap_or_else(|e| e.into_inner());
        // Servers sharing the runtime root (nodes on one host, tests) choose one at a time too:
        // the lock ends with the descriptor.
        let root = fs::File::open(&confinement.run_dir).map_err(|e| {
            HypervisorError(format!("opening {}: {e}", confinement.run_dir.display()))
        })?;
        rustix::fs::flock(&root, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
            HypervisorError(format!("locking {}: {e}", confinement.run_dir.display()))
        })?;
        let (first, last) = confinement.uids;
        // Every server's VMs: `<run_dir>/<server's directory>/<server uuid>`.
        let mut taken: std::collections::BTreeSet<u32> = fs::read_dir(&confinement.run_dir)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|server| fs::read_dir(server.path()).into_iter().flatten().flatten())
            .filter(|entry| entry.path() != run)
            .filter_map(|entry| entry.metadata().ok())
            .map(|meta| meta.uid())
            .collect();
        taken.extend(process_uids(first, last));
        let uid = (first..=last)
            .find(|uid| !taken.contains(uid))
            .ok_or_else(|| {
                HypervisorError(format!(
                    "every uid of --vm-uids {first}-{last} belongs to a running VM"
                ))
            })?;
        match fs::remove_dir_all(run) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                return Err(HypervisorError(format!(
                    "removing the old runtime directory {}: {err}",
                    run.display()
                )));
            }
            _ => {}
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(run)
            .and_then(|()| std::os::unix::fs::chown(run, Some(uid), Some(uid)))
            .map_err(|e| HypervisorError(format!("making {}: {e}", run.display())))?;
        Ok(uid)
    }
}

/// A confined VM's RBD images: opened by QEMU as the VM's user, which cannot read the
/// server's Ceph configuration or keyrings. The VM gets a copy of the configuration in its
/// runtime directory, with the keyring of `ceph` (the VMs' Ceph user, whose caps reach only
/// the pool's images) copied beside it; the returned spec opens its images that way.
pub fn rbd_for_vm(
    spec: &crate::hypervisor::VmSpec,
    run: &Path,
    owner: u32,
    ceph: Option<&(String, PathBuf)>,
) -> Result<crate::hypervisor::VmSpec, HypervisorError> {
    use crate::storage::VolumeLocation;
    let mut spec = spec.clone();
    for disk in &mut spec.disks {
        let VolumeLocation::Rbd {
            ceph_conf,
            ceph_user,
            ..
        } = &mut disk.location
        else {
            continue;
        };
        let source = ceph_conf
            .clone()
            .unwrap_or_else(|| PathBuf::from("/etc/ceph/ceph.conf"));
        let copy = run.join("ceph.conf");
        let mut conf = fs::read_to_string(&source)
            .map_err(|e| HypervisorError(format!("reading {}: {e}", source.display())))?;
        if let Some((user, keyring)) = ceph {
            let keyring_copy = run.join("ceph.keyring");
            let key = fs::read(keyring)
                .map_err(|e| HypervisorError(format!("reading {}: {e}", keyring.display())))?;
            write_owned(&keyring_copy, &key, owner)?;
            conf.push_str(&format!(
                "\n[client.{user}]\nkeyring = {}\n",
                keyring_copy.display()
            ));
            *ceph_user = Some(user.clone());
        }
        write_owned(&copy, conf.as_bytes(), owner)?;
        *ceph_conf = Some(copy);
    }
    Ok(spec)
}

fn write_owned(path: &Path, contents: &[u8], owner: u32) -> Result<(), HypervisorError> {
    super::files::write_private(path, contents)
        .and_then(|()| std::os::unix::fs::chown(path, Some(owner), Some(owner)))
        .map_err(|e| HypervisorError(format!("writing {}: {e}", path.display())))
}

/// The uids in `first..=last` that some process of this host runs as.
fn process_uids(first: u32, last: u32) -> Vec<u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name().as_bytes().iter().all(u8::is_ascii_digit))
        .filter_map(|entry| entry.metadata().ok())
        .map(|meta| meta.uid())
        .filter(|uid| (first..=last).contains(uid))
        .collect()
}

/// What a VM's cgroup allows it.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: u64,
    /// Relative CPU weight (cgroup v1 `cpu.shares`: 1024 a vCPU).
    pub cpu_shares: u64,
    /// CPU time per [`CPU_PERIOD_US`].
    pub cpu_quota_us: u64,
    pub io_weight: u32,
}

impl Limits {
    /// The offer's memory plus QEMU's overhead; a vCPU's worth of CPU per vCPU, and half a
    /// CPU more for QEMU's own threads (device emulation, I/O).
    pub fn for_vm(memory_mb: u64, processors: u32) -> Limits {
        let cpus = u64::from(processors.max(1));
        Limits {
            memory_bytes: (memory_mb + QEMU_OVERHEAD_MB + memory_mb / 16) << 20,
            cpu_shares: 1024 * cpus,
            cpu_quota_us: CPU_PERIOD_US * cpus + CPU_PERIOD_US / 2,
            io_weight: IO_WEIGHT,
        }
    }
}

/// The cgroups a VM's QEMU runs in (one per v1 hierarchy, or one v2 group).
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
    /// Each directory's `cgroup.procs`, ready for the child to join between fork and exec
    /// (where nothing may allocate).
    procs: Vec<CString>,
}

/// The root of the cgroup file system.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The group under which the VMs' groups are made, in each hierarchy.
const CGROUP_PARENT: &str = "extility";

impl Cgroup {
    /// A VM's group's name: `prefix` (this server's, `<server>-`, so that servers sharing a
    /// host keep apart) and the server's uuid.
    pub fn name(prefix: &str, server_uuid: &str) -> String {
        format!("{prefix}{server_uuid}")
    }

    /// Makes the VM's cgroup `name` with `limits` (cgroup v2 where the host has it, else v1).
    pub fn create(name: &str, limits: Limits) -> Result<Cgroup, HypervisorError> {
        let root = Path::new(CGROUP_ROOT);
        let fail = |what: &str, path: &Path, e: io::Error| {
            HypervisorError(format!("{what} {}: {e}", path.display()))
        };
        let mut cgroup = Cgroup {
            dirs: Vec::new(),
            procs: Vec::new(),
        };
        if root.join("cgroup.controllers").exists() {
            // v2: one group; its parent must hand the controllers down.
            let parent = root.join(CGROUP_PARENT);
            fs::create_dir_all(&parent).map_err(|e| fail("creating", &parent, e))?;
            for controllers in [root, parent.as_path()] {
                let control = controllers.join("cgroup.subtree_control");
                fs::write(&control, "+memory +cpu +io")
                    .or_else(|_| fs::write(&control, "+memory +cpu"))
                    .map_err(|e| fail("enabling controllers in", &control, e))?;
            }
            let dir = cgroup.make(&parent.join(name))?;
            write(&dir, "memory.max", &limits.memory_bytes.to_string())?;
            write(&dir, "memory.swap.max", "0").ok();
            write(
                &dir,
                "cpu.weight",
                &(limits.cpu_shares * 100 / 1024)
                    .clamp(1, 10_000)
                    .to_string(),
            )?;
            write(
                &dir,
                "cpu.max",
                &format!("{} {CPU_PERIOD_US}", limits.cpu_quota_us),
            )?;
            optional_io_weight(&dir, &["io.weight", "io.bfq.weight"], limits.io_weight);
        } else {
            let memory = cgroup.make(&root.join("memory").join(CGROUP_PARENT).join(name))?;
            write(
                &memory,
                "memory.limit_in_bytes",
                &limits.memory_bytes.to_string(),
            )?;
            // Swap counts too where the host accounts it.
            write(
                &memory,
                "memory.memsw.limit_in_bytes",
                &limits.memory_bytes.to_string(),
            )
            .ok();
            let cpu = cgroup.make(&root.join("cpu").join(CGROUP_PARENT).join(name))?;
            write(&cpu, "cpu.shares", &limits.cpu_shares.to_string())?;
            write(&cpu, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
            write(&cpu, "cpu.cfs_quota_us", &limits.cpu_quota_us.to_string())?;
            let blkio_root = root.join("blkio");
            if blkio_root.is_dir() {
                let blkio = cgroup.make(&blkio_root.join(CGROUP_PARENT).join(name))?;
                // Only with the CFQ or BFQ I/O scheduler; without, every VM shares alike anyway.
                optional_io_weight(
                    &blkio,
                    &["blkio.weight", "blkio.bfq.weight"],
                    limits.io_weight * 5,
                );
            }
        }
        Ok(cgroup)
    }

    fn make(&mut self, dir: &Path) -> Result<PathBuf, HypervisorError> {
        fs::create_dir_all(dir)
            .map_err(|e| HypervisorError(format!("creating the cgroup {}: {e}", dir.display())))?;
        self.procs.push(
            CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
                .map_err(|_| HypervisorError("a cgroup path with a NUL".into()))?,
        );
        self.dirs.push(dir.to_path_buf());
        Ok(dir.to_path_buf())
    }

    /// The `cgroup.procs` files the child joins (by writing "0") before it runs QEMU.
    pub fn procs_files(&self) -> &[CString] {
        &self.procs
    }

    /// Removes the cgroups `name` of a VM whose QEMU has ended (by name: after a restart of
    /// the server nothing else names them).
    pub fn remove(name: &str) {
        let root = Path::new(CGROUP_ROOT);
        let mut dirs = vec![root.join(CGROUP_PARENT).join(name)];
        for hierarchy in ["memory", "cpu", "blkio"] {
            dirs.push(root.join(hierarchy).join(CGROUP_PARENT).join(name));
        }
        for dir in dirs {
            match fs::remove_dir(&dir) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => {
                    tracing::warn!(cgroup = %dir.display(), error = %err, "could not remove a VM's cgroup");
                }
                _ => {}
            }
        }
    }

    /// Removes the groups made for a VM that did not start.
    pub fn discard(self) {
        for dir in self.dirs.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Whether this host lets the server make VMs' cgroups; why not if it does not.
pub fn cgroups_available() -> Result<(), String> {
    let root = Path::new(CGROUP_ROOT);
    let parent = if root.join("cgroup.controllers").exists() {
        root.join(CGROUP_PARENT)
    } else if root.join("memory").is_dir() && root.join("cpu").is_dir() {
        root.join("memory").join(CGROUP_PARENT)
    } else {
        return Err(format!(
            "{CGROUP_ROOT} has neither cgroup v2 nor v1's memory and cpu"
        ));
    };
    fs::create_dir_all(&parent).map_err(|e| format!("creating {}: {e}", parent.display()))
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), HypervisorError> {
    let path = dir.join(file);
    fs::write(&path, value)
        .map_err(|e| HypervisorError(format!("setting {} to {value}: {e}", path.display())))
}

/// Sets the first of `files` the host has; says once when it has none.
fn optional_io_weight(dir: &Path, files: &[&str], weight: u32) {
    if files
        .iter()
        .any(|file| fs::write(dir.join(file), weight.to_string()).is_ok())
    {
        return;
    }
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        tracing::info!(
            "this host's block I/O scheduler has no I/O weights (no CFQ or BFQ): VMs get no \
             I/O weight, and share the disks as the scheduler decides"
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_offer() {
        let one = Limits::for_vm(1024, 1);
        assert_eq!(one.memory_bytes, (1024 + 384 + 64) << 20);
        assert_eq!(one.cpu_shares, 1024);
        assert_eq!(one.cpu_quota_us, 150_000);
        let four = Limits::for_vm(4096, 4);
        assert_eq!(four.cpu_shares, 4096);
        assert_eq!(four.cpu_quota_us, 450_000);
        assert!(four.memory_bytes > 4096 << 20);
    }

    #[test]
    fn a_range_holding_an_account_is_refused() {
        let mut confinement = Confinement::with_defaults();
        confinement.run_dir = tempfile::tempdir().unwrap().path().join("vms");
        confinement.uids = (0, 10);
        assert!(confinement.check().is_err(), "root's uid");
        confinement.uids = (20, 10);
        assert!(confinement.check().is_err(), "an empty range");
    }
}
