//! Storage on Ceph RBD: every volume is an image of one pool, which all the nodes of a cluster
//! reach, so a server can start on any node.
//!
//! - A volume is a raw image named `extility-vol-<created ms>-<uuid>`; the time in the name is
//!   what the orphan sweep reads as the volume's age (RBD keeps no modification time that
//!   `rbd ls` shows).
//! - A thin clone is an RBD clone of the backing image's protected snapshot `clone-base`,
//!   taken the first time the image is cloned. A backing volume is never written again (see
//!   [`super::volumes`]), so the snapshot is the image; a volume is deleted only when nothing
//!   stands on it, and then its snapshot goes with it.
//! - New data is staged under `extility-stage-<staging name>` and renamed to a volume's name
//!   only once complete, so a crash leaves a staging image for [`Storage::sweep_staging`],
//!   never a half-written volume. Fetches are assembled, converted and checked in a local
//!   staging file first (the conversion of qcow2 or VMDK needs random access, and nothing
//!   unchecked must reach the pool), then written into the image by `qemu-img convert`, which
//!   reads only the file's data extents and writes no zero blocks.
//!
//! Everything is done with Ceph's own tools (`rbd`, `ceph`) and `qemu-img`'s librbd driver,
//! as the QEMU that runs the guests opens the images.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use super::qemu_img;
use super::{
    CopyProgress, Storage, StorageError, StorageResult, StoredFile, VolumeFile, VolumeFormat,
    VolumeLocation,
};

const VOLUME_PREFIX: &str = "extility-vol-";
const STAGING_PREFIX: &str = "extility-stage-";
/// The snapshot clones of a volume are made from.
const CLONE_SNAPSHOT: &str = "clone-base";
/// What the snapshots `extility backup` takes are named after (then the backup's time).
pub const BACKUP_SNAPSHOT_PREFIX: &str = "extility-backup-";
/// How long a Ceph tool waits for the cluster before it fails (its default is 5 minutes).
const MOUNT_TIMEOUT_SECONDS: &str = "30";

/// Where the volumes live: a pool, and how to reach its cluster.
#[derive(Debug, Clone)]
pub struct RbdConfig {
    pub pool: String,
    /// `ceph.conf` (Ceph's default search when `None`).
    pub ceph_conf: Option<PathBuf>,
    /// The Ceph user, without `client.` (Ceph's default, `admin`, when `None`).
    pub ceph_user: Option<String>,
}

pub struct RbdStorage {
    config: RbdConfig,
    /// Local files where fetches are assembled before they are written into the pool.
    staging: PathBuf,
    /// Staging images being removed in the background (cancelled copies): sweeps leave them
    /// to that.
    removing: Arc<Mutex<BTreeSet<String>>>,
    /// The cluster's daemon addresses, read at most once per [`DAEMON_MAPS_TTL`]: every
    /// network change asks for them.
    daemons: Mutex<Option<(Instant, Vec<IpAddr>)>>,
}

/// How long the daemons' addresses read from the cluster's maps are used before they are read
/// again (a new OSD is denied to guests within this time, or at once by `--guest-deny`).
const DAEMON_MAPS_TTL: Duration = Duration::from_secs(60);

/// Pool, image and user names are passed to tools and into QEMU's option strings: only
/// characters none of them treats specially.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[derive(Deserialize)]
struct SnapshotInfo {
    name: String,
    #[serde(default)]
    protected: String,
}

#[derive(Deserialize)]
struct ImageStatus {
    #[serde(default)]
    watchers: Vec<Watcher>,
}

#[derive(Deserialize)]
struct Watcher {
    address: String,
}

#[derive(Deserialize)]
struct ImageInfo {
    size: u64,
}

#[derive(Deserialize)]
struct DiskUsage {
    images: Vec<DiskUsageImage>,
}

#[derive(Deserialize)]
struct DiskUsageImage {
    name: String,
    used_size: u64,
}

fn lock(set: &Mutex<BTreeSet<String>>) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
    set.lock().unwrap_or_else(|e| e.into_inner())
}

/// The age a volume's name records.
fn created_of(name: &str) -> Option<SystemTime> {
    let rest = name.strip_prefix(VOLUME_PREFIX)?;
    let (millis, _) = rest.split_once('-')?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_millis(millis.parse().ok()?))
}

impl RbdStorage {
    /// Checks the names and that the pool answers (a node that cannot reach its storage
    /// should not start).
    pub fn open(config: RbdConfig, data_dir: &Path) -> StorageResult<Self> {
        if !is_plain_name(&config.pool) {
            return Err(StorageError::Tool(format!(
                "{:?} is not a usable RBD pool name",
                config.pool
            )));
        }
        if let Some(user) = &config.ceph_user
            && !is_plain_name(user)
        {
            return Err(StorageError::Tool(format!(
                "{user:?} is not a usable Ceph user name"
            )));
        }
        if let Some(conf) = &config.ceph_conf
            && !conf.is_file()
        {
            return Err(StorageError::Tool(format!(
                "the Ceph configuration file {} does not exist",
                conf.display()
            )));
        }
        let staging = data_dir.join("staging");
        fs::create_dir_all(&staging)
            .map_err(|e| StorageError::io(format!("creating {}", staging.display()), e))?;
        let storage = RbdStorage {
            config,
            staging,
            removing: Arc::default(),
            daemons: Mutex::default(),
        };
        storage.image_names()?;
        Ok(storage)
    }

    /// Runs a Ceph tool (`rbd`, `ceph`) against the cluster; its output.
    fn ceph_tool(&self, tool: &str, args: &[&str]) -> StorageResult<Vec<u8>> {
        let mut command = Command::new(tool);
        if let Some(conf) = &self.config.ceph_conf {
            command.arg("--conf").arg(conf);
        }
        if let Some(user) = &self.config.ceph_user {
            command.args(["--id", user]);
        }
        command.args(["--client-mount-timeout", MOUNT_TIMEOUT_SECONDS]);
        let output = command.args(args).output().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StorageError::Tool(format!(
                    "{tool} is not installed (Debian package ceph-common); RBD storage needs it"
                ))
            } else {
                StorageError::io(format!("running {tool}"), e)
            }
        })?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.code() == Some(2) || stderr.contains("No such file or directory") {
            return Err(StorageError::io(
                format!("{tool} {}", args.first().unwrap_or(&"")),
                std::io::Error::new(std::io::ErrorKind::NotFound, stderr.trim().to_string()),
            ));
        }
        Err(StorageError::Tool(format!(
            "{tool} {} failed: {}",
            args.iter()
                .take_while(|a| !a.starts_with('-'))
                .cloned()
                .collect::<Vec<_>>()
                .join(" "),
            stderr.trim()
        )))
    }

    fn rbd(&self, args: &[&str]) -> StorageResult<Vec<u8>> {
        self.ceph_tool("rbd", args)
    }

    fn rbd_json<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> StorageResult<T> {
        let mut all = args.to_vec();
        all.extend(["--format", "json"]);
        let out = self.rbd(&all)?;
        serde_json::from_slice(&out).map_err(|e| {
            StorageError::Tool(format!("rbd {} printed unexpected JSON: {e}", args[0]))
        })
    }

    fn spec(&self, image: &str) -> String {
        format!("{}/{image}", self.config.pool)
    }

    /// The image as `qemu-img --image-opts` names it (commas in the path doubled).
    fn image_opts(&self, image: &str) -> OsString {
        let mut opts = OsString::from(format!(
            "driver=raw,file.driver=rbd,file.pool={},file.image={image}",
            self.config.pool
        ));
        if let Some(conf) = &self.config.ceph_conf {
            opts.push(",file.conf=");
            opts.push(conf.to_string_lossy().replace(',', ",,"));
        }
        if let Some(user) = &self.config.ceph_user {
            opts.push(format!(",file.user={user}"));
        }
        opts
    }

    fn new_volume_name() -> String {
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        format!("{VOLUME_PREFIX}{millis}-{}", uuid::Uuid::new_v4().simple())
    }

    fn staging_image(staging: &str) -> String {
        format!("{STAGING_PREFIX}{staging}")
    }

    fn image_names(&self) -> StorageResult<Vec<String>> {
        self.rbd_json(&["ls", &self.config.pool])
    }

    fn create_image(&self, name: &str, size: u64) -> StorageResult<()> {
        self.rbd(&["create", "--size", &format!("{size}B"), &self.spec(name)])
            .map(drop)
    }

    fn remove_image_if_present(&self, name: &str) -> StorageResult<()> {
        match self.delete_image(name) {
            Err(StorageError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(())
            }
            other => other,
        }
    }

    /// Blocklists every client that has the image open (a watch on it): each client
    /// instance has an address of its own, so only those are cut off, and for good (an hour
    /// on the cluster's list, by which time they have failed). What librbd itself does when it
    /// breaks a dead owner's lock. Returns how many there were; none for a missing image.
    fn blocklist_watchers(&self, name: &str) -> StorageResult<usize> {
        let status: ImageStatus = match self.rbd_json(&["status", &self.spec(name)]) {
            Ok(status) => status,
            Err(StorageError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(0);
            }
            Err(err) => return Err(err),
        };
        for watcher in &status.watchers {
            self.ceph_tool(
                "ceph",
                &["osd", "blocklist", "add", &watcher.address, "3600"],
            )?;
        }
        Ok(status.watchers.len())
    }

    /// Removes a staging image whose writer is gone (killed when its job was cancelled, or
    /// dead with the attempt that ran it): the watch a killed client leaves on an image holds
    /// `rbd rm` off for half a minute, so it is blocklisted first.
    fn remove_abandoned_staging(&self, name: &str) -> StorageResult<()> {
        debug_assert!(name.starts_with(STAGING_PREFIX));
        self.blocklist_watchers(name)?;
        self.remove_image_if_present(name)
    }

    /// Deletes an image and its snapshots (backup snapshots too). Fails while a clone stands
    /// on it. A backup may snapshot the image between the purge and the removal: then the
    /// purge is done again.
    fn delete_image(&self, name: &str) -> StorageResult<()> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.purge_and_remove(name) {
                Err(StorageError::Tool(_)) if attempts < 3 && self.has_backup_snapshot(name) => {
                    continue;
                }
                other => return other,
            }
        }
    }

    fn has_snapshot(&self, name: &str, snapshot: &str) -> bool {
        self.rbd_json::<Vec<SnapshotInfo>>(&["snap", "ls", &self.spec(name)])
            .map(|snapshots| snapshots.iter().any(|s| s.name == snapshot))
            .unwrap_or(true)
    }

    fn has_backup_snapshot(&self, name: &str) -> bool {
        self.rbd_json::<Vec<SnapshotInfo>>(&["snap", "ls", &self.spec(name)])
            .map(|snapshots| {
                snapshots
                    .iter()
                    .any(|s| s.name.starts_with(BACKUP_SNAPSHOT_PREFIX))
            })
            .unwrap_or(false)
    }

    fn purge_and_remove(&self, name: &str) -> StorageResult<()> {
        let spec = self.spec(name);
        let snapshots: Vec<SnapshotInfo> = self.rbd_json(&["snap", "ls", &spec])?;
        for snapshot in &snapshots {
            if snapshot.protected == "true" {
                self.rbd(&["snap", "unprotect", &format!("{spec}@{}", snapshot.name)])?;
            }
        }
        if !snapshots.is_empty() {
            self.rbd(&["snap", "purge", "--no-progress", &spec])?;
        }
        self.rbd(&["rm", "--no-progress", &spec]).map(drop)
    }

    /// The protected snapshot clones of `image` are made from, taken on first use. Two nodes
    /// cloning one image at once both end up with it.
    fn clone_snapshot(&self, image: &str) -> StorageResult<String> {
        let spec = self.spec(image);
        let snapshot = format!("{spec}@{CLONE_SNAPSHOT}");
        let state = |this: &Self| -> StorageResult<Option<bool>> {
            let snapshots: Vec<SnapshotInfo> = this.rbd_json(&["snap", "ls", &spec])?;
            Ok(snapshots
                .iter()
                .find(|s| s.name == CLONE_SNAPSHOT)
                .map(|s| s.protected == "true"))
        };
        if state(self)? == Some(true) {
            return Ok(snapshot);
        }
        if let Err(err) = self.rbd(&["snap", "create", "--no-progress", &snapshot])
            && state(self)?.is_none()
        {
            return Err(err);
        }
        if let Err(err) = self.rbd(&["snap", "protect", &snapshot])
            && state(self)? != Some(true)
        {
            return Err(err);
        }
        Ok(snapshot)
    }

    fn image_size(&self, image: &str) -> StorageResult<u64> {
        let info: ImageInfo = self.rbd_json(&["info", &self.spec(image)])?;
        Ok(info.size)
    }

    /// Writes `source` (given as `qemu-img convert` source arguments) into the staging image
    /// `stage` of `size` bytes, then renames it to a new volume. Leaves nothing on failure.
    fn write_volume(
        &self,
        source: &[OsString],
        stage: &str,
        size: u64,
        progress: &dyn CopyProgress,
    ) -> StorageResult<VolumeFile> {
        // Left by an interrupted attempt with this staging name: replaced.
        self.remove_abandoned_staging(stage)?;
        self.create_image(stage, size)?;
        let mut command = Command::new("qemu-img");
        command
            .args(["convert", "-p", "-n", "--target-is-zero", "-S", "4k"])
            .args(source)
            .arg("--target-image-opts")
            .arg(self.image_opts(stage));
        let written = qemu_img::convert(command, size, progress).and_then(|()| {
            let volume = VolumeFile {
                file: Self::new_volume_name(),
                format: VolumeFormat::Raw,
                size,
            };
            self.rbd(&["rename", &self.spec(stage), &self.spec(&volume.file)])?;
            Ok(volume)
        });
        match &written {
            // The job is told at once; the partial copy goes right after (blocklisting its
            // killed writer, and removing a large image whose object map that writer left
            // unsure, take a few seconds). If this node dies first, the staging sweep of its
            // restart removes it.
            Err(StorageError::Cancelled) => {
                let remover = RbdStorage {
                    config: self.config.clone(),
                    staging: self.staging.clone(),
                    removing: self.removing.clone(),
                    daemons: Mutex::default(),
                };
                let stage = stage.to_string();
                lock(&self.removing).insert(stage.clone());
                std::thread::spawn(move || {
                    if let Err(err) = remover.remove_abandoned_staging(&stage) {
                        tracing::warn!(image = %stage, error = %err,
                            "could not remove a cancelled copy's staging image");
                    }
                    lock(&remover.removing).remove(&stage);
                });
            }
            Err(_) => {
                let _ = self.remove_abandoned_staging(stage);
            }
            Ok(_) => {}
        }
        written
    }
}

impl Storage for RbdStorage {
    fn create_blank(&self, size: u64) -> StorageResult<VolumeFile> {
        let volume = VolumeFile {
            file: Self::new_volume_name(),
            format: VolumeFormat::Raw,
            size,
        };
        self.create_image(&volume.file, size)?;
        Ok(volume)
    }

    fn create_thin_clone(&self, backing: &VolumeFile, size: u64) -> StorageResult<VolumeFile> {
        let volume = VolumeFile {
            file: Self::new_volume_name(),
            format: VolumeFormat::Raw,
            size: size.max(backing.size),
        };
        let spec = self.spec(&volume.file);
        // Most clones are of a volume cloned before: one `rbd` run. The first takes the
        // snapshot (the clone fails without it) and tries again.
        let snapshot = format!("{}@{CLONE_SNAPSHOT}", self.spec(&backing.file));
        if self.rbd(&["clone", &snapshot, &spec]).is_err() {
            let snapshot = self.clone_snapshot(&backing.file)?;
            self.rbd(&["clone", &snapshot, &spec])?;
        }
        if volume.size > backing.size
            && let Err(err) = self.rbd(&[
                "resize",
                "--no-progress",
                "--size",
                &format!("{}B", volume.size),
                &spec,
            ])
        {
            let _ = self.delete_image(&volume.file);
            return Err(err);
        }
        Ok(volume)
    }

    fn copy_flat(
        &self,
        source: &VolumeFile,
        staging: &str,
        progress: &dyn CopyProgress,
    ) -> StorageResult<VolumeFile> {
        if progress.cancelled() {
            return Err(StorageError::Cancelled);
        }
        let args = [
            OsString::from("--image-opts"),
            self.image_opts(&source.file),
        ];
        let volume =
            self.write_volume(&args, &Self::staging_image(staging), source.size, progress)?;
        progress.reached(source.size);
        Ok(volume)
    }

    fn staging_path(&self, name: &str) -> PathBuf {
        self.staging.join(format!("{name}.part"))
    }

    fn adopt_staged(&self, staged: &Path, size: u64) -> StorageResult<VolumeFile> {
        OpenOptions::new()
            .write(true)
            .open(staged)
            .and_then(|f| f.set_len(size))
            .map_err(|e| StorageError::io("sizing a staged file", e))?;
        let stem = staged
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = stem.split('.').next().unwrap_or_default().to_string();
        let args = [
            OsString::from("-f"),
            "raw".into(),
            staged.as_os_str().into(),
        ];
        let volume =
            self.write_volume(&args, &Self::staging_image(&stem), size, &super::Unobserved)?;
        let _ = fs::remove_file(staged);
        Ok(volume)
    }

    fn sweep_staging(&self, keep: &dyn Fn(&str) -> bool) -> StorageResult<usize> {
        let mut removed = super::sweep_staging_folder(&self.staging, keep)?;
        for image in self.image_names()? {
            if let Some(stem) = image.strip_prefix(STAGING_PREFIX)
                && !keep(stem)
                && !lock(&self.removing).contains(&image)
                && self.remove_abandoned_staging(&image).is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn grow(&self, volume: &VolumeFile, size: u64) -> StorageResult<VolumeFile> {
        let now = self.image_size(&volume.file)?;
        if now < size {
            self.rbd(&[
                "resize",
                "--no-progress",
                "--size",
                &format!("{size}B"),
                &self.spec(&volume.file),
            ])?;
        }
        Ok(VolumeFile {
            size: now.max(size),
            ..volume.clone()
        })
    }

    fn delete(&self, volume: &VolumeFile) -> StorageResult<()> {
        self.remove_image_if_present(&volume.file)
    }

    fn list_files(&self) -> StorageResult<Vec<StoredFile>> {
        Ok(self
            .image_names()?
            .into_iter()
            .filter_map(|name| {
                let modified = created_of(&name)?;
                Some(StoredFile { name, modified })
            })
            .collect())
    }

    fn delete_file(&self, name: &str) -> StorageResult<()> {
        if created_of(name).is_none() || !is_plain_name(name) {
            return Err(StorageError::Tool(format!(
                "{name:?} is not a volume image's name"
            )));
        }
        self.remove_image_if_present(name)
    }

    fn snapshot_volume(&self, file: &str, snapshot: &str) -> StorageResult<bool> {
        if !is_plain_name(file) || !is_plain_name(snapshot) {
            return Err(StorageError::Tool(format!(
                "{file:?}@{snapshot:?} is not a snapshot's name"
            )));
        }
        let spec = format!("{}@{snapshot}", self.spec(file));
        match self.rbd(&["snap", "create", "--no-progress", &spec]) {
            Ok(_) => Ok(true),
            // Deleted meanwhile (or being deleted: its removal purges what was taken).
            Err(_) if !self.image_names()?.iter().any(|n| n == file) => Ok(false),
            Err(err) => Err(err),
        }
    }

    fn rollback_volume(&self, file: &str, snapshot: &str) -> StorageResult<bool> {
        if !is_plain_name(file) || !is_plain_name(snapshot) {
            return Err(StorageError::Tool(format!(
                "{file:?}@{snapshot:?} is not a snapshot's name"
            )));
        }
        let spec = format!("{}@{snapshot}", self.spec(file));
        match self.rbd(&["snap", "rollback", "--no-progress", &spec]) {
            Ok(_) => Ok(true),
            Err(StorageError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    fn remove_volume_snapshot(&self, file: &str, snapshot: &str) -> StorageResult<bool> {
        if !is_plain_name(file) || !is_plain_name(snapshot) {
            return Err(StorageError::Tool(format!(
                "{file:?}@{snapshot:?} is not a snapshot's name"
            )));
        }
        let spec = format!("{}@{snapshot}", self.spec(file));
        match self.rbd(&["snap", "rm", "--no-progress", &spec]) {
            Ok(_) => Ok(true),
            // The image went with its snapshots, or the snapshot is gone already.
            Err(_)
                if !self.image_names()?.iter().any(|n| n == file)
                    || !self.has_snapshot(file, snapshot) =>
            {
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    fn pool(&self) -> Option<&str> {
        Some(&self.config.pool)
    }

    fn location(&self, volume: &VolumeFile) -> VolumeLocation {
        VolumeLocation::Rbd {
            pool: self.config.pool.clone(),
            image: volume.file.clone(),
            ceph_conf: self.config.ceph_conf.clone(),
            ceph_user: self.config.ceph_user.clone(),
        }
    }

    fn is_shared(&self) -> bool {
        true
    }

    /// Every address of the cluster's monitors and OSDs, from its maps; the last ones read
    /// when the cluster does not answer now.
    fn service_addresses(&self) -> StorageResult<Vec<IpAddr>> {
        let mut cached = self.daemons.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((read, addresses)) = &*cached
            && read.elapsed() < DAEMON_MAPS_TTL
        {
            return Ok(addresses.clone());
        }
        let read = self
            .ceph_tool("ceph", &["mon", "dump", "--format", "json"])
            .and_then(|mons| {
                let osds = self.ceph_tool("ceph", &["osd", "dump", "--format", "json"])?;
                super::ceph_maps::daemon_addresses(&mons, &osds)
                    .map_err(|e| StorageError::Tool(format!("reading Ceph's maps: {e}")))
            });
        match (read, cached.take()) {
            (Ok(addresses), _) => {
                *cached = Some((Instant::now(), addresses.clone()));
                Ok(addresses)
            }
            (Err(err), Some((_, known))) => {
                tracing::warn!(error = %err, "Ceph's maps: using the daemons' addresses read before");
                // Asked again at the next change, not at every one while the cluster is away.
                *cached = Some((Instant::now(), known.clone()));
                Ok(known)
            }
            (Err(err), None) => Err(err),
        }
    }

    fn fence(&self, volume: &VolumeFile) -> StorageResult<usize> {
        let fenced = self.blocklist_watchers(&volume.file)?;
        if fenced > 0 {
            tracing::warn!(volume = %volume.file, clients = fenced,
                "cut off clients that still had a starting server's volume open");
        }
        Ok(fenced)
    }

    fn allocated_bytes(&self, volume: &VolumeFile) -> StorageResult<u64> {
        let usage: DiskUsage = self.rbd_json(&["du", &self.spec(&volume.file)])?;
        Ok(usage
            .images
            .iter()
            .filter(|i| i.name == volume.file)
            .map(|i| i.used_size)
            .sum())
    }

    fn free_bytes(&self) -> StorageResult<Option<u64>> {
        #[derive(Deserialize)]
        struct Df {
            pools: Vec<DfPool>,
        }
        #[derive(Deserialize)]
        struct DfPool {
            name: String,
            stats: DfStats,
        }
        #[derive(Deserialize)]
        struct DfStats {
            max_avail: u64,
        }
        let out = self.ceph_tool("ceph", &["df", "--format", "json"])?;
        let df: Df = serde_json::from_slice(&out)
            .map_err(|e| StorageError::Tool(format!("ceph df printed unexpected JSON: {e}")))?;
        Ok(df
            .pools
            .into_iter()
            .find(|p| p.name == self.config.pool)
            .map(|p| p.stats.max_avail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_carry_their_creation_time() {
        let name = RbdStorage::new_volume_name();
        assert!(is_plain_name(&name), "{name}");
        let created = created_of(&name).unwrap();
        let age = SystemTime::now().duration_since(created).unwrap();
        assert!(age < Duration::from_secs(5));
        assert_eq!(
            created_of("extility-vol-1000-abc"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1))
        );
        for foreign in [
            "volume-1",
            "extility-stage-x",
            "extility-vol-x-1",
            "extility-vol-12",
        ] {
            assert_eq!(created_of(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn only_plain_names_reach_the_tools() {
        for good in ["rbd", "extility_volumes", "pool-1.a"] {
            assert!(is_plain_name(good), "{good}");
        }
        for bad in ["", "-rf", "a/b", "a,b", "a:b", "a b", "a@snap", "ü"] {
            assert!(!is_plain_name(bad), "{bad}");
        }
    }
}
