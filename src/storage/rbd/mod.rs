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
//!   only once complete, so a crash leaves a staging image for
//!   [`Storage::sweep_staging`](super::Storage::sweep_staging), never a half-written volume. A
//!   fetched raw image (or ISO) streams straight into its staging image
//!   ([`Storage::create_staging_volume`](super::Storage::create_staging_volume)), zero blocks
//!   skipped, with no local file; an image that needs converting (qcow2, VMDK, VHD, VHDX) is
//!   fetched and converted in a local staging file first (conversion needs random access),
//!   whose data extents are then written into the image
//!   ([`Storage::adopt_staged`](super::Storage::adopt_staged)).
//!
//! Everything is done in process with librbd and librados ([`super::librbd`]), as the QEMU
//! that runs the guests opens the images: the node's client of the cluster is made when the
//! storage opens and kept (made again if the cluster ever cuts it off), so a clone or a
//! snapshot is a few round trips to the cluster, not a process. Each copy into a staging image
//! writes through a client of its own: when a stale writer (an attempt whose job another node
//! took over) is cut off by a blocklisting, only that writer is.
//!
//! This module holds the node's client and the names; `backend` is the `Storage` trait on
//! top, `snapshots` the clone snapshots and deletion with them, `staging` the staging
//! images and copies, `fencing` the blocklisting of other clients.

mod backend;
mod fencing;
mod snapshots;
mod staging;

use std::collections::BTreeSet;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::librbd::{self, Cluster, Connect, Pool};
use super::{StorageError, StorageResult};

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
