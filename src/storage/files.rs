//! The default storage backend: files in the data directory.
//!
//! Volumes are raw sparse files (`volumes/<uuid>.raw`); a thin clone is a qcow2 overlay whose
//! backing file is the volume it was made from (`volumes/<uuid>.qcow2`), so a disk made from a
//! 4 GB image costs nothing until the guest writes to it. Overlays name their backing file
//! relative to the volumes folder, so the data directory can move.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Storage, StorageError, StorageResult, VolumeFile, VolumeFormat};
use crate::sparse::{SparseWriter, copy_extents};

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
}

/// Runs `qemu-img` and turns its failure into a readable error.
fn qemu_img(args: &[&str]) -> StorageResult<()> {
    let output = Command::new("qemu-img").args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            StorageError::Tool(
                "qemu-img is not installed (Debian package qemu-utils); thin clones need it".into(),
            )
        } else {
            StorageError::io("running qemu-img", e)
        }
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(StorageError::Tool(format!(
            "qemu-img {} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
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
        Ok(volume)
    }

    fn create_thin_clone(&self, backing: &VolumeFile, size: u64) -> StorageResult<VolumeFile> {
        let volume = VolumeFile {
            file: Self::new_name(VolumeFormat::Qcow2),
            format: VolumeFormat::Qcow2,
            size: size.max(backing.size),
        };
        let path = self.path(&volume);
        qemu_img(&[
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
        Ok(volume)
    }

    fn copy_flat(&self, source: &VolumeFile) -> StorageResult<VolumeFile> {
        let volume = VolumeFile {
            file: Self::new_name(VolumeFormat::Raw),
            format: VolumeFormat::Raw,
            size: source.size,
        };
        let dst = self.path(&volume);
        let src = self.path(source);
        match source.format {
            VolumeFormat::Qcow2 => {
                let result = qemu_img(&[
                    "convert",
                    "-q",
                    "-f",
                    "qcow2",
                    "-O",
                    "raw",
                    "-S",
                    "4k",
                    &src.to_string_lossy(),
                    &dst.to_string_lossy(),
                ]);
                if result.is_err() {
                    let _ = fs::remove_file(&dst);
                }
                result?;
            }
            VolumeFormat::Raw => {
                let copy = || -> std::io::Result<()> {
                    let input = File::open(&src)?;
                    let out = OpenOptions::new().write(true).create_new(true).open(&dst)?;
                    out.set_len(source.size)?;
                    let mut writer = SparseWriter::new(out);
                    let mut buf = vec![0u8; 1 << 20];
                    copy_extents(&input, source.size, &mut writer, 0, &mut buf, &mut |_| {})?;
                    let (file, _) = writer.finish()?;
                    file.set_len(source.size)?;
                    file.sync_all()
                };
                if let Err(e) = copy() {
                    let _ = fs::remove_file(&dst);
                    return Err(StorageError::io("copying a volume", e));
                }
            }
        }
        Ok(volume)
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
        file.sync_all()
            .map_err(|e| StorageError::io("syncing a staged file", e))?;
        fs::rename(staged, self.path(&volume))
            .map_err(|e| StorageError::io("moving a staged file into place", e))?;
        Ok(volume)
    }

    fn sweep_staging(&self, keep: &dyn Fn(&str) -> bool) -> StorageResult<usize> {
        let mut removed = 0;
        let entries = fs::read_dir(&self.staging)
            .map_err(|e| StorageError::io("listing the staging folder", e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".part").unwrap_or(&name);
            if !keep(stem) && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn delete(&self, volume: &VolumeFile) -> StorageResult<()> {
        match fs::remove_file(self.path(volume)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StorageError::io(
                format!("deleting volume {}", volume.file),
                e,
            )),
            _ => Ok(()),
        }
    }

    fn path(&self, volume: &VolumeFile) -> PathBuf {
        self.volumes.join(&volume.file)
    }

    fn allocated_bytes(&self, volume: &VolumeFile) -> StorageResult<u64> {
        fs::metadata(self.path(volume))
            .map(|m| m.blocks() * 512)
            .map_err(|e| StorageError::io(format!("reading volume {}", volume.file), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    fn read_all(path: &Path) -> Vec<u8> {
        fs::read(path).unwrap()
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
        let copy = storage.copy_flat(&src).unwrap();
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
}
