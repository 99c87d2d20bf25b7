//! Hypervisor storage: where the bytes of disks, images and snapshots live.
//!
//! [`Storage`] is the backend: by default [`files::FileStorage`] (raw sparse files, with thin
//! clones as qcow2 overlays on them), or [`rbd::RbdStorage`] (Ceph RBD images, with thin
//! clones as RBD clones of a protected snapshot, through librbd in process: [`librbd`] is the
//! one module with `unsafe`), which every node of a cluster shares. Its
//! methods block on I/O, so async code calls them through `spawn_blocking`. [`volumes`] keeps the database's side: which volume backs which,
//! so that a volume lives exactly as long as something depends on it.
//! [`orphans`] deletes files that no volume row names (left when a node died in between).

mod ceph_maps;
pub mod files;
mod librbd;
pub mod orphans;
mod qemu_img;
pub mod rbd;
pub mod volumes;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeFormat {
    Raw,
    Qcow2,
}

impl VolumeFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeFormat::Raw => "raw",
            VolumeFormat::Qcow2 => "qcow2",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "raw" => Some(VolumeFormat::Raw),
            "qcow2" => Some(VolumeFormat::Qcow2),
            _ => None,
        }
    }
}

/// A volume's file, as the storage backend names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFile {
    pub file: String,
    pub format: VolumeFormat,
    /// The size the guest sees, in bytes.
    pub size: u64,
}

/// Where a hypervisor finds a volume's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeLocation {
    /// A file on this node.
    File(PathBuf),
    /// An image of a Ceph pool, reached with the cluster's configuration file and user.
    Rbd {
        pool: String,
        image: String,
        ceph_conf: Option<PathBuf>,
        ceph_user: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Tool(String),
    /// The caller asked the work to stop ([`CopyProgress::cancelled`]).
    #[error("cancelled")]
    Cancelled,
    /// The volume file system has less than the reserve free ([`Storage::ensure_free_space`]).
    #[error("{free} bytes free, below the reserve of {reserve}")]
    LowSpace { free: u64, reserve: u64 },
}

impl StorageError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StorageError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<StorageError> for crate::error::ApiError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::Cancelled => crate::error::ApiError::Cancelled,
            StorageError::LowSpace { free, reserve } => {
                crate::error::ApiError::InsufficientStorage { free, reserve }
            }
            err => crate::error::ApiError::Storage(err.to_string()),
        }
    }
}

pub type StorageResult<T> = Result<T, StorageError>;

/// What a long copy reports to, and asks whether it should go on. Called from the copying
/// thread (and threads it starts), so it must be cheap and `Sync`.
pub trait CopyProgress: Sync {
    /// The copy has gone through the source up to `bytes` (of the source's size).
    fn reached(&self, bytes: u64);
    /// Whether to stop. A stopped copy removes what it wrote and fails with
    /// [`StorageError::Cancelled`].
    fn cancelled(&self) -> bool;
}

/// A copy made by a job reports into the job's progress and stops when the job is cancelled.
impl CopyProgress for crate::progress::Progress {
    fn reached(&self, bytes: u64) {
        self.set_done(bytes);
    }

    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }
}

/// For copies nobody follows or stops.
pub struct Unobserved;

impl CopyProgress for Unobserved {
    fn reached(&self, _: u64) {}
    fn cancelled(&self) -> bool {
        false
    }
}

/// Removes the files of a local staging folder whose staging names `keep` does not accept:
/// a job's staged files are named after its staging name up to the first dot (`<name>.part`,
/// `<name>.fetched.part`). Returns how many went.
fn sweep_staging_folder(folder: &Path, keep: &dyn Fn(&str) -> bool) -> StorageResult<usize> {
    let mut removed = 0;
    let entries =
        std::fs::read_dir(folder).map_err(|e| StorageError::io("listing the staging folder", e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stem = name.split('.').next().unwrap_or(&name);
        if !keep(stem) && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// A staging volume written in place ([`Storage::create_staging_volume`]): a fetch streams a
/// raw image into it with the sparse writer (it reads as zeros when made), reads it back for
/// the inspector, and [`Storage::adopt_staging_volume`] makes it a volume once it is dropped.
pub trait StagingVolume: crate::sparse::Destination + Send {
    /// Reads what was written, after [`crate::sparse::Destination::writes_done`]; short only
    /// at the volume's end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize>;

    /// Makes `len` bytes at `offset` read as zeros.
    fn zero(&mut self, offset: u64, len: u64) -> std::io::Result<()>;
}

/// A file of the volume store, for finding the ones no volume row names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    pub name: String,
    pub modified: SystemTime,
}

/// A storage backend. Every method may block.
pub trait Storage: Send + Sync + 'static {
    /// A new volume of `size` bytes, all zeros, taking no space.
    fn create_blank(&self, size: u64) -> StorageResult<VolumeFile>;

    /// A new volume of `size` bytes (at least the backing volume's size) that reads as
    /// `backing` and shares its blocks: only what is written to it afterwards takes space.
    fn create_thin_clone(&self, backing: &VolumeFile, size: u64) -> StorageResult<VolumeFile>;

    /// A new raw volume that depends on nothing, with the contents of `source` (read through
    /// its backing chain). It is written under the staging name `staging` (unique to the job
    /// attempt, see [`Self::sweep_staging`]) and becomes a volume only once complete. Only
    /// the data is copied: time and space follow the data, not the size. `progress` hears
    /// how far the copy got and can stop it (within a buffer, or by killing the tool doing
    /// it); a copy that fails or is stopped leaves nothing behind.
    fn copy_flat(
        &self,
        source: &VolumeFile,
        staging: &str,
        progress: &dyn CopyProgress,
    ) -> StorageResult<VolumeFile>;

    /// A local file where a job assembles data that is not yet a volume (`name` is unique to
    /// the job attempt): fetches are written, converted and checked there.
    fn staging_path(&self, name: &str) -> PathBuf;

    /// Turns a staged file into a raw volume of `size` bytes, durably written (the staged
    /// file is gone afterwards). The volume counts as new for [`orphans`] until a row names
    /// it.
    fn adopt_staged(&self, staged: &Path, size: u64) -> StorageResult<VolumeFile>;

    /// Whether a job may write a new volume in place ([`Self::create_staging_volume`]) instead
    /// of assembling it in a local staging file: storage whose volumes are not local files
    /// (RBD), so that a fetch takes no room on the node.
    fn streams_staging(&self) -> bool {
        false
    }

    /// A new staging volume of `size` bytes under the staging name `staging` (unique to the
    /// job attempt; one an interrupted attempt left is replaced), reading as zeros and open
    /// for writing. Staged data like any other: [`Self::sweep_staging`] removes it when its
    /// attempt is not kept.
    fn create_staging_volume(
        &self,
        staging: &str,
        size: u64,
    ) -> StorageResult<Box<dyn StagingVolume>> {
        let _ = (staging, size);
        Err(StorageError::Tool(
            "this storage stages new volumes in local files".into(),
        ))
    }

    /// Turns the staging volume `staging` (written, and closed: its handle dropped) into a
    /// raw volume of `size` bytes, durably written; what lies past `size` is cut off.
    fn adopt_staging_volume(&self, staging: &str, size: u64) -> StorageResult<VolumeFile> {
        let _ = (staging, size);
        Err(StorageError::Tool(
            "this storage stages new volumes in local files".into(),
        ))
    }

    /// Removes staged data (local files, and whatever the backend stages itself) whose
    /// staging names `keep` does not accept: left by interrupted jobs.
    fn sweep_staging(&self, keep: &dyn Fn(&str) -> bool) -> StorageResult<usize>;

    /// Grows a volume nothing has open to `size` bytes (its data stays; what is added reads
    /// as zeros and takes no space) and returns it as it now is. Never shrinks: a volume
    /// already at least that large is left as it is. Durably written when it returns.
    fn grow(&self, volume: &VolumeFile, size: u64) -> StorageResult<VolumeFile>;

    fn delete(&self, volume: &VolumeFile) -> StorageResult<()>;

    /// Every file of the volume store (volumes and anything else lying there).
    fn list_files(&self) -> StorageResult<Vec<StoredFile>>;

    /// Deletes a file of the volume store by name (one [`Self::list_files`] gave).
    fn delete_file(&self, name: &str) -> StorageResult<()>;

    /// Takes the snapshot `snapshot` of the volume stored as `file` (a name
    /// [`Self::list_files`] gave), for a backup; `false` when the volume is gone by now. Only
    /// storage that keeps snapshots of its own (RBD) does; file backups hold files instead.
    fn snapshot_volume(&self, file: &str, snapshot: &str) -> StorageResult<bool> {
        let _ = (file, snapshot);
        Err(StorageError::Tool(
            "this storage keeps no snapshots: back up with --storage files".into(),
        ))
    }

    /// Rolls the volume stored as `file` back to its snapshot `snapshot` (nothing may have it
    /// open); `false` when the volume or the snapshot is gone.
    fn rollback_volume(&self, file: &str, snapshot: &str) -> StorageResult<bool> {
        let _ = (file, snapshot);
        Err(StorageError::Tool(
            "this storage keeps no snapshots to roll back to".into(),
        ))
    }

    /// Removes the snapshot `snapshot` of the volume stored as `file` (a backup pruned);
    /// `false` when the volume or the snapshot is gone already.
    fn remove_volume_snapshot(&self, file: &str, snapshot: &str) -> StorageResult<bool> {
        let _ = (file, snapshot);
        Err(StorageError::Tool("this storage keeps no snapshots".into()))
    }

    /// The pool the volumes are images of, for storage that has one (RBD).
    fn pool(&self) -> Option<&str> {
        None
    }

    /// Where a hypervisor opens the volume.
    fn location(&self, volume: &VolumeFile) -> VolumeLocation;

    /// Whether every node reaches the volumes, so that a server may start on any node (and
    /// again on another one when its node is lost).
    fn is_shared(&self) -> bool;

    /// The addresses of the storage's own network services (Ceph's monitors and OSDs), which
    /// guests must never reach; none for storage that is not on the network.
    fn service_addresses(&self) -> StorageResult<Vec<std::net::IpAddr>> {
        Ok(Vec::new())
    }

    /// Makes sure nothing but the VM about to start writes the volume: any other client that
    /// still has it open (a VM of a node that was lost, which may yet run) is cut off from
    /// the storage for good. Returns how many were. Only for volumes of a server being
    /// started, which nothing else may have open.
    fn fence(&self, volume: &VolumeFile) -> StorageResult<usize>;

    /// Bytes the volume's own file takes on disk (not counting what it shares).
    fn allocated_bytes(&self, volume: &VolumeFile) -> StorageResult<u64>;

    /// Bytes that may still be written to the volume store (and the staging files that
    /// become volumes), or `None` when the backend cannot tell (a Ceph cluster without a
    /// manager keeps no pool statistics).
    fn free_bytes(&self) -> StorageResult<Option<u64>>;

    /// Fails with [`StorageError::LowSpace`] when fewer than `reserve` bytes are free: what a
    /// job checks before it starts writing a new volume, so that a nearly full node refuses
    /// new work instead of filling up (and failing the writes of running guests).
    fn ensure_free_space(&self, reserve: u64) -> StorageResult<()> {
        if reserve == 0 {
            return Ok(());
        }
        let Some(free) = self.free_bytes()? else {
            return Ok(());
        };
        if free < reserve {
            return Err(StorageError::LowSpace { free, reserve });
        }
        Ok(())
    }
}
