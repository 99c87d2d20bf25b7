//! Staging images: new data written through a client of its own, then renamed to a volume.

use std::fs::File;

use super::{COPY_PIECE, RbdStorage, Session, lock, storage_error};
use crate::sparse::{self, SparseWriter};
use crate::storage::librbd::{self, Image, Pool};
use crate::storage::{
    CopyProgress, StagingVolume, StorageError, StorageResult, VolumeFile, VolumeFormat,
};

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
    /// Writes a new staging image `stage` of `size` bytes with `fill`, then renames it to a
    /// new volume. The image is written through a client of its own. Leaves nothing behind
    /// on failure.
    pub(super) fn write_volume(
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

    /// Creates staging image `stage`; one an interrupted attempt left under the name (rare,
    /// and perhaps still open by a writer that lives on) is removed first. Tried before
    /// looking, so that the usual case is one call.
    fn make_staging_image(&self, stage: &str, size: u64) -> StorageResult<()> {
        let created = self.call(|s| match s.pool.create(stage, size) {
            Err(e) if e.errno() == libc::EEXIST => Ok(false),
            other => other.map(|()| true),
        })?;
        if !created {
            self.remove_abandoned_staging(stage)?;
            self.create_image(stage, size)?;
        }
        Ok(())
    }

    /// A new staging image `stage` of `size` bytes (replacing one an interrupted attempt of
    /// the same staging name left), open for writing through a client of its own, and that
    /// client's pool.
    pub(super) fn create_staging(
        &self,
        stage: &str,
        size: u64,
    ) -> StorageResult<(StagingImage, Pool)> {
        // The writer's client connects while the image is made: both are waits on the
        // cluster, before the first byte of a fetch can be written.
        let (made, writer) = std::thread::scope(|scope| {
            let writer = scope.spawn(|| Session::connect(&self.config));
            (self.make_staging_image(stage, size), writer.join())
        });
        made?;
        let opened = writer
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            .and_then(|writer| {
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
pub(super) fn copy_image(
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

/// Writes the data extents of the local file `file` (`size` bytes) into `out`.
pub(super) fn copy_file(
    file: &File,
    size: u64,
    out: &mut SparseWriter<StagingImage>,
) -> StorageResult<()> {
    let mut buf = vec![0u8; COPY_PIECE];
    sparse::copy_extents(file, size, out, 0, &mut buf, &mut |_| {}).map_err(|e| match e {
        sparse::CopyFailure::Read(e) => StorageError::io("reading the staged file", e),
        sparse::CopyFailure::Write(e) => StorageError::io("writing the staging image", e),
    })?;
    out.skip_to(size)
        .map_err(|e| StorageError::io("writing the staging image", e))
}
