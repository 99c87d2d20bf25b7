//! The [`Storage`] trait on RBD.

use std::fs::{self, OpenOptions};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;
use serde_json::json;

use super::staging::{copy_file, copy_image};
use super::{
    DAEMON_MAPS_TTL, RbdStorage, STAGING_PREFIX, Session, clone_snapshot_name, created_of,
    is_not_found, is_plain_name, lock, storage_error,
};
use crate::storage::{
    CopyProgress, StagingVolume, Storage, StorageError, StorageResult, StoredFile, VolumeFile,
    VolumeFormat, VolumeLocation,
};

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
        let mut removed = crate::storage::sweep_staging_folder(&self.staging, keep)?;
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
                crate::storage::ceph_maps::daemon_addresses(&mons, &osds)
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
