//! The default storage backend: files in the data directory.
//!
//! Volumes are raw sparse files (`volumes/<uuid>.raw`); a thin clone is a qcow2 overlay whose
//! backing file is the volume it was made from (`volumes/<uuid>.qcow2`), so a disk made from a
//! 4 GB image costs nothing until the guest writes to it. Overlays name their backing file
//! relative to the volumes folder, so the data directory can move.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::qemu_img::{self, convert_to_raw};
use super::{
    CopyProgress, Storage, StorageError, StorageResult, StoredFile, VolumeFile, VolumeFormat,
    VolumeLocation,
};
use crate::sparse::{SparseWriter, copy_extents_while};

/// The folders a running `extility backup` holds volume files in (`backup-hold-<id>` beside
/// `volumes`, hard links): a volume file deleted while one exists is linked into it first, so
/// that the backup keeps the bytes of every volume its database copy can name, however long the
/// copy takes.
pub const BACKUP_HOLD_PREFIX: &str = "backup-hold-";

pub struct FileStorage {
    volumes: PathBuf,
    staging: PathBuf,
}

impl FileStorage {
    pub fn open(data_dir: &Path) -> StorageResult<Self> {
        let volumes = data_dir.join("volumes");
        let staging = data_dir.join("staging");
        for dir in [&volumes, &staging] {
            fs::create_dir_all(dir)
                .map_err(|e| StorageError::io(format!("creating {}", dir.display()), e))?;
        }
        Ok(FileStorage { volumes, staging })
    }

    fn new_name(format: VolumeFormat) -> String {
        format!("{}.{}", uuid::Uuid::new_v4(), format.as_str())
    }

    /// Removes the volume file `name`, after linking it into the holding folder of every
    /// backup running ([`BACKUP_HOLD_PREFIX`]).
    fn remove_volume_file(&self, name: &str) -> std::io::Result<()> {
        let file = self.volumes.join(name);
        if let Some(data_dir) = self.volumes.parent()
            && let Ok(entries) = fs::read_dir(data_dir)
        {
            for hold in entries.flatten() {
                if hold
                    .file_name()
                    .to_string_lossy()
                    .starts_with(BACKUP_HOLD_PREFIX)
                {
                    // Held already, or the backup just ended: either way nothing to keep.
                    let _ = fs::hard_link(&file, hold.path().join(name));
                }
            }
        }
        fs::remove_file(file)
    }
}

/// Copies a raw volume's data extents into `dest`, checking for cancellation after each buffer.
fn copy_raw(src: &Path, dest: &Path, size: u64, progress: &dyn CopyProgress) -> StorageResult<()> {
    let io = |e| StorageError::io("copying a volume", e);
    let input = File::open(src).map_err(io)?;
    // A staging file left by an interrupted attempt is replaced.
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dest)
        .map_err(io)?;
    out.set_len(size).map_err(io)?;
    let mut writer = SparseWriter::new(out);
    let mut buf = vec![0u8; 1 << 20];
    let finished = copy_extents_while(&input, size, &mut writer, 0, &mut buf, &mut |pos| {
        progress.reached(pos);
        !progress.cancelled()
    })
    .map_err(|e| io(e.into()))?;
    if !finished {
        return Err(StorageError::Cancelled);
    }
    let (file, _) = writer.finish().map_err(io)?;
    file.set_len(size).map_err(io)
}

/// The size a guest sees of a qcow2 file: the big-endian 64-bit number at byte 24 of its
/// header.
fn qcow2_size(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; 32];
    File::open(path)?.read_exact_at(&mut header, 0)?;
    if &header[..4] != b"QFI\xfb" {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a qcow2 file",
        ));
    }
    Ok(u64::from_be_bytes(header[24..32].try_into().unwrap()))
}

impl FileStorage {
    /// The volume's file.
    pub fn path(&self, volume: &VolumeFile) -> PathBuf {
        self.volumes.join(&volume.file)
    }

    /// Makes a volume file just created durable before its row is committed: its contents
    /// and size, and its name in the volumes folder.
    fn made_durable(&self, path: &Path) -> StorageResult<()> {
        File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|e| StorageError::io(format!("syncing {}", path.display()), e))?;
        self.sync_volumes_dir()
    }

    /// A name added to (or moved into) the volumes folder survives a power cut once the
    /// folder itself is synced.
    fn sync_volumes_dir(&self) -> StorageResult<()> {
        File::open(&self.volumes)
            .and_then(|d| d.sync_all())
            .map_err(|e| StorageError::io("syncing the volumes folder", e))
    }
}

impl Storage for FileStorage {
    fn create_blank(&self, size: u64) -> StorageResult<VolumeFile> {
        let volume = VolumeFile {
            file: Self::new_name(VolumeFormat::Raw),
            format: VolumeFormat::Raw,
            size,
        };
        let path = self.path(&volume);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StorageError::io(format!("creating {}", path.display()), e))?;
        file.set_len(size)
            .map_err(|e| StorageError::io("sizing a blank volume", e))?;
        self.made_durable(&path)?;
        Ok(volume)
    }

    fn create_thin_clone(&self, backing: &VolumeFile, size: u64) -> StorageResult<VolumeFile> {
        let volume = VolumeFile {
            file: Self::new_name(VolumeFormat::Qcow2),
            format: VolumeFormat::Qcow2,
            size: size.max(backing.size),
        };
        let path = self.path(&volume);
        qemu_img::run(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            &backing.file,
            "-F",
            backing.format.as_str(),
            &path.to_string_lossy(),
            &volume.size.to_string(),
        ])?;
        self.made_durable(&path)?;
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
        let src = self.path(source);
        let dest = self.staging_path(staging);
        let result = match source.format {
            VolumeFormat::Qcow2 => convert_to_raw(&src, &dest, source.size, progress),
            VolumeFormat::Raw => copy_raw(&src, &dest, source.size, progress),
        };
        if let Err(err) = result {
            let _ = fs::remove_file(&dest);
            return Err(err);
        }
        progress.reached(source.size);
        self.adopt_staged(&dest, source.size)
    }

    fn staging_path(&self, name: &str) -> PathBuf {
        self.staging.join(format!("{name}.part"))
    }

    fn adopt_staged(&self, staged: &Path, size: u64) -> StorageResult<VolumeFile> {
        let volume = VolumeFile {
            file: Self::new_name(VolumeFormat::Raw),
            format: VolumeFormat::Raw,
            size,
        };
        let file = OpenOptions::new()
            .write(true)
            .open(staged)
            .map_err(|e| StorageError::io("opening a staged file", e))?;
        file.set_len(size)
            .map_err(|e| StorageError::io("sizing a staged file", e))?;
        // The orphan sweep spares young files: a staged file whose last write was long ago
        // must not look old in the instant before its volume row is committed.
        file.set_modified(SystemTime::now())
            .map_err(|e| StorageError::io("touching a staged file", e))?;
        file.sync_all()
            .map_err(|e| StorageError::io("syncing a staged file", e))?;
        fs::rename(staged, self.path(&volume))
            .map_err(|e| StorageError::io("moving a staged file into place", e))?;
        self.sync_volumes_dir()?;
        Ok(volume)
    }

    fn sweep_staging(&self, keep: &dyn Fn(&str) -> bool) -> StorageResult<usize> {
        super::sweep_staging_folder(&self.staging, keep)
    }

    fn grow(&self, volume: &VolumeFile, size: u64) -> StorageResult<VolumeFile> {
        let path = self.path(volume);
        let io = |e| StorageError::io(format!("growing volume {}", volume.file), e);
        let now = match volume.format {
            // A raw file is as large as the disk: longer, it reads zeros that take no space.
            VolumeFormat::Raw => {
                let file = OpenOptions::new().write(true).open(&path).map_err(io)?;
                let now = file.metadata().map_err(io)?.len();
                if now < size {
                    file.set_len(size).map_err(io)?;
                    file.sync_all().map_err(io)?;
                }
                now.max(size)
            }
            // An overlay's size is in its header; beyond its backing file it reads zeros.
            VolumeFormat::Qcow2 => {
                let now = qcow2_size(&path).map_err(io)?;
                if now < size {
                    qemu_img::run(&[
                        "resize",
                        "-q",
                        "-f",
                        "qcow2",
                        &path.to_string_lossy(),
                        &size.to_string(),
                    ])?;
                    File::open(&path).and_then(|f| f.sync_all()).map_err(io)?;
                }
                now.max(size)
            }
        };
        Ok(VolumeFile {
            size: now,
            ..volume.clone()
        })
    }

    fn delete(&self, volume: &VolumeFile) -> StorageResult<()> {
        match self.remove_volume_file(&volume.file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StorageError::io(
                format!("deleting volume {}", volume.file),
                e,
            )),
            _ => Ok(()),
        }
    }

    fn list_files(&self) -> StorageResult<Vec<StoredFile>> {
        let io = |e| StorageError::io("listing the volumes folder", e);
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.volumes).map_err(io)? {
            let entry = entry.map_err(io)?;
            // A file deleted since the listing began is simply not there any more.
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() {
                files.push(StoredFile {
                    name: entry.file_name().to_string_lossy().into_owned(),
                    modified: meta.modified().map_err(io)?,
                });
            }
        }
        Ok(files)
    }

    fn delete_file(&self, name: &str) -> StorageResult<()> {
        if Path::new(name).file_name() != Some(name.as_ref()) {
            return Err(StorageError::Tool(format!(
                "{name:?} is not a volume file's name"
            )));
        }
        match self.remove_volume_file(name) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StorageError::io(format!("deleting {name}"), e))
            }
            _ => Ok(()),
        }
    }

    fn location(&self, volume: &VolumeFile) -> VolumeLocation {
        VolumeLocation::File(self.path(volume))
    }

    /// A node's data directory is its own; servers stay on the node that holds their disks.
    fn is_shared(&self) -> bool {
        false
    }

    /// A local file is opened only by this node's VMs, which the hypervisor tracks.
    fn fence(&self, _volume: &VolumeFile) -> StorageResult<usize> {
        Ok(0)
    }

    fn allocated_bytes(&self, volume: &VolumeFile) -> StorageResult<u64> {
        fs::metadata(self.path(volume))
            .map(|m| m.blocks() * 512)
            .map_err(|e| StorageError::io(format!("reading volume {}", volume.file), e))
    }

    fn free_bytes(&self) -> StorageResult<Option<u64>> {
        let stats = rustix::fs::statvfs(&self.volumes).map_err(|e| {
            StorageError::io(
                format!("reading the free space of {}", self.volumes.display()),
                e.into(),
            )
        })?;
        Ok(Some(stats.f_bavail.saturating_mul(stats.f_frsize)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn read_all(path: &Path) -> Vec<u8> {
        fs::read(path).unwrap()
    }

    /// Remembers the last progress report; asks to stop after `stop_after` reports.
    #[derive(Default)]
    struct Reports {
        last: AtomicU64,
        count: AtomicU64,
        stop_after: Option<u64>,
    }

    impl Reports {
        fn stopping_after(reports: u64) -> Self {
            Reports {
                stop_after: Some(reports),
                ..Default::default()
            }
        }

        fn last(&self) -> u64 {
            self.last.load(Ordering::Relaxed)
        }

        fn count(&self) -> u64 {
            self.count.load(Ordering::Relaxed)
        }
    }

    impl CopyProgress for Reports {
        fn reached(&self, bytes: u64) {
            self.last.store(bytes, Ordering::Relaxed);
            self.count.fetch_add(1, Ordering::Relaxed);
        }

        fn cancelled(&self) -> bool {
            self.stop_after.is_some_and(|n| self.count() >= n)
        }
    }

    /// A raw volume of `size` bytes holding `pieces` MiB of data spread over it.
    fn volume_with_data(storage: &FileStorage, size: u64, pieces: u64) -> VolumeFile {
        let volume = storage.create_blank(size).unwrap();
        let f = OpenOptions::new()
            .write(true)
            .open(storage.path(&volume))
            .unwrap();
        for i in 0..pieces {
            f.write_all_at(&[i as u8 + 1; 1 << 20], i * (size / pieces))
                .unwrap();
        }
        volume
    }

    #[test]
    fn a_stopped_copy_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::open(dir.path()).unwrap();
        let src = volume_with_data(&storage, 64 << 20, 8);
        let staged = storage.staging_path("stopped");
        let progress = Reports::stopping_after(2);
        let err = storage.copy_flat(&src, "stopped", &progress).unwrap_err();
        assert!(matches!(err, StorageError::Cancelled), "{err}");
        // Stopped after the second 1 MiB piece, not at the end.
        assert_eq!(progress.count(), 2);
        assert!(progress.last() < 64 << 20);
        assert!(!staged.exists());
        assert_eq!(storage.list_files().unwrap().len(), 1, "only the source");
    }

    #[test]
    fn qcow2_volumes_are_copied_through_their_backing_file() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::open(dir.path()).unwrap();
        let base = volume_with_data(&storage, 64 << 20, 4);
        let clone = storage.create_thin_clone(&base, 64 << 20).unwrap();
        let staged = storage.staging_path("from-qcow2");
        // Left by an interrupted attempt: replaced.
        fs::write(&staged, b"stale").unwrap();
        let reached = Reports::default();
        let copy = storage.copy_flat(&clone, "from-qcow2", &reached).unwrap();
        assert_eq!(reached.last(), 64 << 20);
        assert!(!staged.exists());
        assert_eq!(
            read_all(&storage.path(&copy)),
            read_all(&storage.path(&base))
        );
        assert!(storage.allocated_bytes(&copy).unwrap() <= 5 << 20);

        let staged = storage.staging_path("stopped");
        let err = storage
            .copy_flat(&clone, "stopped", &Reports::stopping_after(1))
            .unwrap_err();
        assert!(matches!(err, StorageError::Cancelled), "{err}");
        assert!(!staged.exists());
    }

    #[test]
    fn volume_files_are_listed_and_deleted_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::open(dir.path()).unwrap();
        let v = storage.create_blank(4096).unwrap();
        let listed = storage.list_files().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, v.file);
        assert!(storage.delete_file("../staging").is_err());
        storage.delete_file(&v.file).unwrap();
        assert!(storage.list_files().unwrap().is_empty());
    }

    #[test]
    fn blank_volumes_take_no_space() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::open(dir.path()).unwrap();
        let v = storage.create_blank(20 << 30).unwrap();
        assert_eq!(fs::metadata(storage.path(&v)).unwrap().len(), 20 << 30);
        assert_eq!(storage.allocated_bytes(&v).unwrap(), 0);
    }

    #[test]
    fn flat_copies_follow_the_data_not_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::open(dir.path()).unwrap();
        let src = storage.create_blank(1 << 30).unwrap();
        let f = OpenOptions::new()
            .write(true)
            .open(storage.path(&src))
            .unwrap();
        f.write_all_at(b"boot", 0).unwrap();
        f.write_all_at(&[9u8; 8192], 512 << 20).unwrap();
        drop(f);
        let reached = Reports::default();
        let copy = storage.copy_flat(&src, "copy", &reached).unwrap();
        assert_eq!(reached.last(), 1 << 30);
        assert_eq!(copy.size, 1 << 30);
        assert!(storage.allocated_bytes(&copy).unwrap() <= 3 * 4096);
        let data = read_all(&storage.path(&copy));
        assert_eq!(&data[..4], b"boot");
        assert_eq!(&data[(512 << 20)..(512 << 20) + 8192], &[9u8; 8192][..]);
        assert_eq!(data.len(), 1 << 30);
    }

    #[test]
    fn staged_files_become_volumes_and_orphans_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::open(dir.path()).unwrap();
        let staged = storage.staging_path("job-a");
        File::create(&staged).unwrap().write_all(b"data").unwrap();
        File::create(storage.staging_path("job-b")).unwrap();
        assert_eq!(storage.sweep_staging(&|name| name == "job-a").unwrap(), 1);
        let v = storage.adopt_staged(&staged, 4096).unwrap();
        assert_eq!(&read_all(&storage.path(&v))[..4], b"data");
        assert!(!staged.exists());
    }

    #[test]
    fn raw_volumes_grow_and_keep_their_data() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::open(dir.path()).unwrap();
        let v = volume_with_data(&storage, 8 << 20, 2);
        let before = read_all(&storage.path(&v));
        let grown = storage.grow(&v, 64 << 20).unwrap();
        assert_eq!(grown.size, 64 << 20);
        assert_eq!(grown.file, v.file);
        let after = read_all(&storage.path(&grown));
        assert_eq!(after.len(), 64 << 20);
        assert_eq!(&after[..8 << 20], &before[..]);
        assert!(after[8 << 20..].iter().all(|b| *b == 0));
        assert!(storage.allocated_bytes(&grown).unwrap() <= 3 << 20, "thin");
        // Never shrinks.
        let same = storage.grow(&grown, 8 << 20).unwrap();
        assert_eq!(same.size, 64 << 20);
        assert_eq!(fs::metadata(storage.path(&same)).unwrap().len(), 64 << 20);
    }

    #[test]
    fn qcow2_overlays_grow_past_their_backing_file() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::open(dir.path()).unwrap();
        let base = volume_with_data(&storage, 8 << 20, 2);
        let clone = storage.create_thin_clone(&base, 8 << 20).unwrap();
        assert_eq!(qcow2_size(&storage.path(&clone)).unwrap(), 8 << 20);
        let grown = storage.grow(&clone, 32 << 20).unwrap();
        assert_eq!(grown.size, 32 << 20);
        assert_eq!(qcow2_size(&storage.path(&grown)).unwrap(), 32 << 20);
        // What the guest reads: the backing file's data, then zeros.
        let flat = storage
            .copy_flat(&grown, "grown", &Reports::default())
            .unwrap();
        let flat = read_all(&storage.path(&flat));
        assert_eq!(flat.len(), 32 << 20);
        assert_eq!(&flat[..8 << 20], &read_all(&storage.path(&base))[..]);
        assert!(flat[8 << 20..].iter().all(|b| *b == 0));
        assert_eq!(storage.grow(&grown, 16 << 20).unwrap().size, 32 << 20);
        assert_eq!(qcow2_size(&storage.path(&grown)).unwrap(), 32 << 20);
    }

    #[test]
    fn free_space_is_that_of_the_volume_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::open(dir.path()).unwrap();
        let free = storage.free_bytes().unwrap().unwrap();
        assert!(free > 0);
        storage.ensure_free_space(0).unwrap();
        storage.ensure_free_space(1).unwrap();
        match storage.ensure_free_space(u64::MAX) {
            Err(StorageError::LowSpace { free: f, reserve }) => {
                assert!(f > 0 && f < u64::MAX);
                assert_eq!(reserve, u64::MAX);
            }
            other => panic!("{other:?}"),
        }
    }
}
