//! Storage on Ceph RBD: every volume is an image of one pool, which all the nodes of a cluster
//! reach, so a server can start on any node.
//!
//! - A volume is a raw image named `extility-vol-<created ms>-<uuid>`; the time in the name is
//!   what the orphan sweep reads as the volume's age (RBD keeps no modification time that
//!   listing shows).
//! - A thin clone is an RBD clone of the backing image's protected snapshot `clone-base`,
//!   taken the first time the image is cloned; a larger clone is one of `clone-base-<bytes>`,
//!   a snapshot of that size taken the first time a clone of that size is made (the image's
//!   head grown for it, and set back), so that no clone needs a resize: a clone of an image
//!   cloned before is one librbd call. A backing volume is never written again (see
//!   [`super::volumes`]), so the snapshots are the image; a volume is deleted only when
//!   nothing stands on it, and then its snapshots go with it.
//! - New data is staged under `extility-stage-<staging name>` and renamed to a volume's name
//!   only once complete, so a crash leaves a staging image for [`Storage::sweep_staging`],
//!   never a half-written volume. A fetched raw image (or ISO) streams straight into its
//!   staging image ([`Storage::create_staging_volume`]), zero blocks skipped, with no local
//!   file; an image that needs converting (qcow2, VMDK, VHD, VHDX) is fetched and converted in
//!   a local staging file first (conversion needs random access), whose data extents are then
//!   written into the image ([`Storage::adopt_staged`]).
//!
//! Everything is done in process with librbd and librados ([`super::librbd`]), as the QEMU
//! that runs the guests opens the images: the node's client of the cluster is made when the
//! storage opens and kept (made again if the cluster ever cuts it off), so a clone or a
//! snapshot is a few round trips to the cluster, not a process. Each copy into a staging image
//! writes through a client of its own: when a stale writer (an attempt whose job another node
//! took over) is cut off by a blocklisting, only that writer is.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use serde_json::json;

use super::librbd::{self, Cluster, Connect, Image, Pool};
use super::{
    CopyProgress, StagingVolume, Storage, StorageError, StorageResult, StoredFile, VolumeFile,
    VolumeFormat, VolumeLocation,
};
use crate::sparse::{self, SparseWriter};

const VOLUME_PREFIX: &str = "extility-vol-";
const STAGING_PREFIX: &str = "extility-stage-";
/// The snapshot clones of a volume are made from (of its own size; `clone-base-<bytes>` for
/// larger clones).
const CLONE_SNAPSHOT: &str = "clone-base";
/// What the snapshots `extility backup` takes are named after (then the backup's time).
pub const BACKUP_SNAPSHOT_PREFIX: &str = "extility-backup-";
/// How long a client waits for the cluster's monitors before it fails (Ceph's default is 5
/// minutes), when connecting and for each monitor command.
const MOUNT_TIMEOUT_SECONDS: u32 = 30;
/// How long the removal of an abandoned staging image waits for the OSDs to drop the watch of
/// the writer it has just blocklisted.
const UNWATCH_WAIT: Duration = Duration::from_secs(15);
/// Bytes read from a source image at a time when copying.
const COPY_PIECE: usize = 4 << 20;

/// Where the volumes live: a pool, and how to reach its cluster.
#[derive(Debug, Clone)]
pub struct RbdConfig {
    pub pool: String,
    /// `ceph.conf` (Ceph's default search when `None`).
    pub ceph_conf: Option<PathBuf>,
    /// The Ceph user, without `client.` (Ceph's default, `admin`, when `None`).
    pub ceph_user: Option<String>,
}

/// A client of the cluster with the pool open.
struct Session {
    pool: Pool,
    /// The client's address, as watchers and the blocklist name it.
    address: String,
}

impl Session {
    fn connect(config: &RbdConfig) -> librbd::Result<Session> {
        let cluster = Cluster::connect(&Connect {
            conf: config.ceph_conf.as_deref(),
            user: config.ceph_user.as_deref(),
            timeout_seconds: MOUNT_TIMEOUT_SECONDS,
        })?;
        let address = cluster.address()?;
        let pool = cluster.pool(&config.pool)?;
        Ok(Session { pool, address })
    }
}

pub struct RbdStorage {
    config: RbdConfig,
    /// Local files where container images are fetched and converted before they are written
    /// into the pool.
    staging: PathBuf,
    /// Staging images being removed in the background (cancelled copies): sweeps leave them
    /// to that.
    removing: Arc<Mutex<BTreeSet<String>>>,
    /// The cluster's daemon addresses, read at most once per [`DAEMON_MAPS_TTL`]: every
    /// network change asks for them.
    daemons: Mutex<Option<(Instant, Vec<IpAddr>)>>,
    /// The node's client of the cluster; `None` after the cluster cut it off, until the next
    /// call connects again.
    session: Arc<Mutex<Option<Arc<Session>>>>,
}

/// How long the daemons' addresses read from the cluster's maps are used before they are read
/// again (a new OSD is denied to guests within this time, or at once by `--guest-deny`).
const DAEMON_MAPS_TTL: Duration = Duration::from_secs(60);

/// Pool, image and user names are passed to librbd and into QEMU's option strings: only
/// characters none of them treats specially.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Whether two client addresses (`127.0.0.1:0/3541452934`, perhaps with a `v1:` or `any:`
/// type, or as a one-address vector in brackets) are the same client instance.
fn same_client(a: &str, b: &str) -> bool {
    fn plain(address: &str) -> &str {
        let address = address.trim_matches(|c| c == '[' || c == ']');
        let address = address.split(',').next().unwrap_or(address);
        match address.split_once(':') {
            Some(("v1" | "v2" | "any", rest)) => rest,
            _ => address,
        }
    }
    plain(a) == plain(b)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The snapshot clones of `target` bytes of a volume of `size` bytes are made from:
/// `clone-base`, or for a larger clone `clone-base-<target>`.
fn clone_snapshot_name(size: u64, target: u64) -> String {
    if target == size {
        CLONE_SNAPSHOT.to_string()
    } else {
        format!("{CLONE_SNAPSHOT}-{target}")
    }
}

/// The age a volume's name records.
fn created_of(name: &str) -> Option<SystemTime> {
    let rest = name.strip_prefix(VOLUME_PREFIX)?;
    let (millis, _) = rest.split_once('-')?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_millis(millis.parse().ok()?))
}

/// A librbd error as the storage reports it: a missing image or snapshot is an I/O error of
/// kind `NotFound` (callers treat it as "gone"), anything else a tool's failure.
fn storage_error(e: librbd::Error) -> StorageError {
    if e.is_not_found() {
        StorageError::io(
            e.to_string(),
            std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()),
        )
    } else {
        StorageError::Tool(e.to_string())
    }
}

fn is_not_found(e: &StorageError) -> bool {
    matches!(e, StorageError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// A staging image open for writing through a client of its own: what the sparse writer
/// writes into, and what a fetch streams a raw image into.
pub struct StagingImage {
    writer: librbd::Writer,
}

impl sparse::Destination for StagingImage {
    fn write_all_at(&mut self, data: &[u8], offset: u64) -> std::io::Result<()> {
        Ok(self.writer.write_at(data, offset)?)
    }

    fn zero_out(&mut self, start: u64, len: u64) -> std::io::Result<()> {
        self.writer.flush()?;
        Ok(self.writer.image().write_zeroes(start, len)?)
    }

    fn writes_done(&mut self) -> std::io::Result<()> {
        Ok(self.writer.flush()?)
    }
}

impl StagingVolume for StagingImage {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        Ok(self.writer.image().read_at(buf, offset)?)
    }

    fn zero(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        sparse::Destination::zero_out(self, offset, len)
    }
}

impl RbdStorage {
    /// Checks the names, connects to the cluster and checks that the pool answers (a node that
    /// cannot reach its storage should not start).
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
            session: Arc::default(),
        };
        storage.image_names()?;
        Ok(storage)
    }

    /// The node's client, connected now if it is not (first use, or cut off).
    fn session(&self) -> StorageResult<Arc<Session>> {
        let mut session = lock(&self.session);
        if let Some(session) = &*session {
            return Ok(session.clone());
        }
        let connected = Arc::new(Session::connect(&self.config).map_err(storage_error)?);
        *session = Some(connected.clone());
        Ok(connected)
    }

    /// Runs `f` with the node's client. A client the cluster has blocklisted is dropped, so the
    /// next call connects anew.
    fn call<T>(&self, f: impl FnOnce(&Session) -> librbd::Result<T>) -> StorageResult<T> {
        let session = self.session()?;
        f(&session).map_err(|e| {
            if e.is_blocklisted() {
                let mut current = lock(&self.session);
                if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &session)) {
                    tracing::warn!("the Ceph cluster cut this node's client off; connecting again");
                    *current = None;
                }
            }
            storage_error(e)
        })
    }

    /// A copy of this storage for a background thread, sharing the node's client.
    fn handle(&self) -> RbdStorage {
        RbdStorage {
            config: self.config.clone(),
            staging: self.staging.clone(),
            removing: self.removing.clone(),
            daemons: Mutex::default(),
            session: self.session.clone(),
        }
    }

    /// Runs a monitor command (as `ceph` sends it); its output.
    fn mon_command(&self, command: serde_json::Value) -> StorageResult<Vec<u8>> {
        self.call(|s| s.pool.cluster().mon_command(&command))
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
        self.call(|s| s.pool.list())
    }

    fn create_image(&self, name: &str, size: u64) -> StorageResult<()> {
        self.call(|s| s.pool.create(name, size))
    }

    fn remove_image_if_present(&self, name: &str) -> StorageResult<()> {
        match self.delete_image(name) {
            Err(e) if is_not_found(&e) => Ok(()),
            other => other,
        }
    }

    /// Blocklists every client but this node's own that has the image open (a watch on it):
    /// each client instance has an address of its own, so only those are cut off, and for good
    /// (an hour on the cluster's list, by which time they have failed). What librbd itself
    /// does when it breaks a dead owner's lock. Returns how many there were; none for a
    /// missing image.
    fn blocklist_watchers(&self, name: &str) -> StorageResult<usize> {
        let session = self.session()?;
        let watchers = match self.call(|s| s.pool.open_read_only(name)?.watchers()) {
            Ok(watchers) => watchers,
            Err(e) if is_not_found(&e) => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut fenced = 0;
        for address in &watchers {
            if same_client(address, &session.address) {
                // Never this node's own client, which every other call goes through.
                tracing::warn!(image = %name, "this node's own client has the image open");
                continue;
            }
            self.mon_command(json!({
                "prefix": "osd blocklist",
                "blocklistop": "add",
                "addr": address,
                "expire": 3600.0,
            }))?;
            fenced += 1;
        }
        if fenced > 0 {
            self.call(|s| s.pool.cluster().wait_for_latest_osdmap())?;
        }
        Ok(fenced)
    }

    /// Removes a staging image whose writer is gone (stopped when its job was cancelled, or
    /// dead with the attempt or the node that ran it): the watch a dead client leaves on an
    /// image holds its removal off for half a minute, so it is blocklisted first, and the
    /// removal waits for the OSDs to drop its watch.
    fn remove_abandoned_staging(&self, name: &str) -> StorageResult<()> {
        debug_assert!(name.starts_with(STAGING_PREFIX));
        let fenced = self.blocklist_watchers(name)?;
        let deadline = Instant::now() + UNWATCH_WAIT;
        loop {
            match self.remove_image_if_present(name) {
                Err(StorageError::Tool(_))
                    if fenced > 0 && Instant::now() < deadline && self.has_watchers(name) =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    fn has_watchers(&self, name: &str) -> bool {
        self.call(|s| s.pool.open_read_only(name)?.watchers())
            .is_ok_and(|w| !w.is_empty())
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

    fn has_backup_snapshot(&self, name: &str) -> bool {
        self.call(|s| s.pool.open_read_only(name)?.snapshots())
            .map(|snapshots| {
                snapshots
                    .iter()
                    .any(|s| s.name.starts_with(BACKUP_SNAPSHOT_PREFIX))
            })
            .unwrap_or(false)
    }

    fn purge_and_remove(&self, name: &str) -> StorageResult<()> {
        let has_snapshots =
            self.call(|s| Ok(!s.pool.open_read_only(name)?.snapshots()?.is_empty()))?;
        if has_snapshots {
            self.call(|s| {
                let image = s.pool.open(name)?;
                for snapshot in image.snapshots()? {
                    if image.snap_is_protected(&snapshot.name)? {
                        image.snap_unprotect(&snapshot.name)?;
                    }
                    image.snap_remove(&snapshot.name)?;
                }
                Ok(())
            })?;
        }
        self.call(|s| s.pool.remove(name))
    }

    /// Takes and protects the snapshot `snapshot` of `image` (a volume of `size` bytes, which
    /// nothing writes) at `target` bytes, if it is not there yet: the head is grown to
    /// `target` for the snapshot (what it adds reads as zeros) and set back to `size` after.
    /// Nodes doing it at once for other sizes may catch each other's head: a snapshot of the
    /// wrong size is never protected, and is taken again.
    fn clone_snapshot(
        &self,
        image: &str,
        snapshot: &str,
        size: u64,
        target: u64,
    ) -> StorageResult<()> {
        for _ in 0..5 {
            let taken = self.call(|s| {
                let image = s.pool.open(image)?;
                let found = image.snapshots()?.into_iter().find(|x| x.name == snapshot);
                let taken = match found {
                    Some(found) if found.size == target => true,
                    Some(_) if image.snap_is_protected(snapshot)? => {
                        return Err(librbd::Error::invalid(snapshot));
                    }
                    Some(_) => {
                        image.snap_remove(snapshot)?;
                        false
                    }
                    None => false,
                };
                let taken = taken || {
                    if image.size()? != target {
                        image.resize(target, true)?;
                    }
                    let created = match image.snap_create(snapshot) {
                        Err(e) if e.errno() != libc::EEXIST => Err(e),
                        _ => Ok(()),
                    };
                    if image.size()? != size {
                        image.resize(size, true)?;
                    }
                    created?;
                    image
                        .snapshots()?
                        .iter()
                        .any(|x| x.name == snapshot && x.size == target)
                };
                if taken {
                    match image.snap_protect(snapshot) {
                        // EBUSY: protected already.
                        Err(e) if e.errno() != libc::EBUSY => return Err(e),
                        _ => {}
                    }
                }
                Ok(taken)
            })?;
            if taken {
                return Ok(());
            }
        }
        Err(StorageError::Tool(format!(
            "could not take the snapshot {snapshot} of {image}: its size kept changing"
        )))
    }

    /// Writes a new staging image `stage` of `size` bytes with `fill`, then renames it to a
    /// new volume. The image is written through a client of its own. Leaves nothing behind
    /// on failure.
    fn write_volume(
        &self,
        stage: &str,
        size: u64,
        fill: impl FnOnce(&mut SparseWriter<StagingImage>, &Pool) -> StorageResult<()>,
    ) -> StorageResult<VolumeFile> {
        let written = self.create_staging(stage, size).and_then(|(image, pool)| {
            let mut out = SparseWriter::new(image).exact_length();
            fill(&mut out, &pool)?;
            let (image, _) = out.finish().map_err(|e| StorageError::io("writing", e))?;
            // Closed (and so durable and unwatched) before it becomes a volume.
            drop(image);
            let volume = VolumeFile {
                file: Self::new_volume_name(),
                format: VolumeFormat::Raw,
                size,
            };
            self.call(|s| s.pool.rename(stage, &volume.file))?;
            Ok(volume)
        });
        match &written {
            // The job is told at once; the partial copy goes right after (removing a large
            // image takes a while). If this node dies first, the staging sweep of its
            // restart removes it.
            Err(StorageError::Cancelled) => {
                let remover = self.handle();
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

    /// A new staging image `stage` of `size` bytes (replacing one an interrupted attempt of
    /// the same staging name left), open for writing through a client of its own, and that
    /// client's pool.
    fn create_staging(&self, stage: &str, size: u64) -> StorageResult<(StagingImage, Pool)> {
        self.remove_abandoned_staging(stage)?;
        self.create_image(stage, size)?;
        let opened = Session::connect(&self.config).and_then(|writer| {
            let image = writer.pool.open(stage)?;
            Ok((image, writer.pool))
        });
        match opened {
            Ok((image, pool)) => Ok((
                StagingImage {
                    writer: librbd::Writer::new(image),
                },
                pool,
            )),
            Err(e) => {
                let _ = self.remove_image_if_present(stage);
                Err(storage_error(e))
            }
        }
    }
}

/// Copies the data of `source` (read through its parents) into `out`, reporting the offset
/// reached and stopping when `progress` says so.
fn copy_image(
    source: &Image,
    size: u64,
    out: &mut SparseWriter<StagingImage>,
    progress: &dyn CopyProgress,
) -> StorageResult<()> {
    let io = |e: std::io::Error| StorageError::io("writing the copy", e);
    let mut buf = vec![0u8; COPY_PIECE];
    for (start, end) in source.allocated_extents(true).map_err(storage_error)? {
        let end = end.min(size);
        if start >= end {
            continue;
        }
        out.skip_to(start).map_err(io)?;
        let mut pos = start;
        while pos < end {
            if progress.cancelled() {
                return Err(StorageError::Cancelled);
            }
            let n = ((end - pos) as usize).min(buf.len());
            let got = source.read_at(&mut buf[..n], pos).map_err(storage_error)?;
            if got < n {
                return Err(StorageError::Tool(format!(
                    "the source image ended at {} of {size} bytes",
                    pos + got as u64
                )));
            }
            out.write(&buf[..n]).map_err(io)?;
            pos += n as u64;
            progress.reached(pos);
        }
    }
    out.skip_to(size).map_err(io)
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
        // A clone is as large as its snapshot: each size has one, so a clone needs no resize.
        let snapshot = clone_snapshot_name(backing.size, volume.size);
        // Most clones are of a volume cloned before at that size: one clone. The first takes
        // the snapshot (the clone fails without it) and tries again.
        let clone = |s: &Session| s.pool.clone_image(&backing.file, &snapshot, &volume.file);
        if self.call(clone).is_err() {
            self.clone_snapshot(&backing.file, &snapshot, backing.size, volume.size)?;
            self.call(clone)?;
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
        let volume =
            self.write_volume(&Self::staging_image(staging), source.size, |out, pool| {
                let image = pool.open_read_only(&source.file).map_err(storage_error)?;
                copy_image(&image, source.size, out, progress)
            })?;
        progress.reached(source.size);
        Ok(volume)
    }

    fn staging_path(&self, name: &str) -> PathBuf {
        self.staging.join(format!("{name}.part"))
    }

    fn adopt_staged(&self, staged: &Path, size: u64) -> StorageResult<VolumeFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(staged)
            .map_err(|e| StorageError::io("opening a staged file", e))?;
        file.set_len(size)
            .map_err(|e| StorageError::io("sizing a staged file", e))?;
        let stem = staged
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = stem.split('.').next().unwrap_or_default().to_string();
        let volume = self.write_volume(&Self::staging_image(&stem), size, |out, _| {
            copy_file(&file, size, out)
        })?;
        let _ = fs::remove_file(staged);
        Ok(volume)
    }

    fn streams_staging(&self) -> bool {
        true
    }

    fn create_staging_volume(
        &self,
        staging: &str,
        size: u64,
    ) -> StorageResult<Box<dyn StagingVolume>> {
        let (image, _) = self.create_staging(&Self::staging_image(staging), size)?;
        Ok(Box::new(image))
    }

    fn adopt_staging_volume(&self, staging: &str, size: u64) -> StorageResult<VolumeFile> {
        let stage = Self::staging_image(staging);
        let volume = VolumeFile {
            file: Self::new_volume_name(),
            format: VolumeFormat::Raw,
            size,
        };
        self.call(|s| s.pool.open(&stage)?.resize(size, true))?;
        self.call(|s| s.pool.rename(&stage, &volume.file))?;
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
        let now = self.call(|s| {
            let image = s.pool.open(&volume.file)?;
            let now = image.size()?;
            if now < size {
                image.resize(size, false)?;
            }
            Ok(now)
        })?;
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
        match self.call(|s| s.pool.open(file)?.snap_create(snapshot)) {
            Ok(()) => Ok(true),
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
        match self.call(|s| s.pool.open(file)?.snap_rollback(snapshot)) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(err) => Err(err),
        }
    }

    fn remove_volume_snapshot(&self, file: &str, snapshot: &str) -> StorageResult<bool> {
        if !is_plain_name(file) || !is_plain_name(snapshot) {
            return Err(StorageError::Tool(format!(
                "{file:?}@{snapshot:?} is not a snapshot's name"
            )));
        }
        match self.call(|s| s.pool.open(file)?.snap_remove(snapshot)) {
            Ok(()) => Ok(true),
            // The image went with its snapshots, or the snapshot is gone already.
            Err(e) if is_not_found(&e) => Ok(false),
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
        let mut cached = lock(&self.daemons);
        if let Some((read, addresses)) = &*cached
            && read.elapsed() < DAEMON_MAPS_TTL
        {
            return Ok(addresses.clone());
        }
        let read = self
            .mon_command(json!({"prefix": "mon dump", "format": "json"}))
            .and_then(|mons| {
                let osds = self.mon_command(json!({"prefix": "osd dump", "format": "json"}))?;
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

    /// The volume's own objects that exist (whole objects, as `rbd du` counts them).
    fn allocated_bytes(&self, volume: &VolumeFile) -> StorageResult<u64> {
        let extents = self.call(|s| {
            s.pool
                .open_read_only(&volume.file)?
                .allocated_extents(false)
        })?;
        Ok(extents.iter().map(|(start, end)| end - start).sum())
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
        let out = self.mon_command(json!({"prefix": "df", "format": "json"}))?;
        let df: Df = serde_json::from_slice(&out)
            .map_err(|e| StorageError::Tool(format!("ceph df printed unexpected JSON: {e}")))?;
        Ok(df
            .pools
            .into_iter()
            .find(|p| p.name == self.config.pool)
            .map(|p| p.stats.max_avail))
    }
}

/// Writes the data extents of the local file `file` (`size` bytes) into `out`.
fn copy_file(file: &File, size: u64, out: &mut SparseWriter<StagingImage>) -> StorageResult<()> {
    let mut buf = vec![0u8; COPY_PIECE];
    sparse::copy_extents(file, size, out, 0, &mut buf, &mut |_| {}).map_err(|e| match e {
        sparse::CopyFailure::Read(e) => StorageError::io("reading the staged file", e),
        sparse::CopyFailure::Write(e) => StorageError::io("writing the staging image", e),
    })?;
    out.skip_to(size)
        .map_err(|e| StorageError::io("writing the staging image", e))
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
    fn a_client_is_known_by_its_address_however_written() {
        let own = "127.0.0.1:0/1724590654";
        for same in [
            own,
            "v1:127.0.0.1:0/1724590654",
            "[any:127.0.0.1:0/1724590654]",
        ] {
            assert!(same_client(same, own), "{same}");
        }
        for other in ["127.0.0.1:0/1724590655", "10.0.0.1:0/1724590654", ""] {
            assert!(!same_client(other, own), "{other}");
        }
    }

    #[test]
    fn clones_larger_than_their_image_have_a_snapshot_of_their_size() {
        assert_eq!(clone_snapshot_name(1 << 30, 1 << 30), "clone-base");
        assert_eq!(
            clone_snapshot_name(1 << 30, 20 << 30),
            "clone-base-21474836480"
        );
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
