//! Thin writing and sparse reading: the one sparse writer behind FetchDisk, image copies,
//! `sparsecopy` and `fsmaker`.
//!
//! Data is written in 4,096-byte blocks at increasing offsets; a block that is all zeros is
//! never written. What happens to such a zero range depends on the destination ([`Holes`]): on
//! a new file it simply stays a hole and takes no space; on a block device it is cleared
//! (unmapped or zeroed by the device, see [`Holes::Clear`]); on a pipe the zeros are written.
//! By default a final partial block is padded with zeros to a whole block (the defined answer
//! to the seed's "undefined" case); [`SparseWriter::exact_length`] turns that off for copies
//! that must keep their length.
//!
//! Reading the other way, [`copy_extents`] visits only the parts of a sparse file that hold
//! data (`SEEK_DATA` / `SEEK_HOLE`), so a copy takes time in proportion to the data.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

pub const BLOCK: usize = 4096;

/// Counts of what a [`SparseWriter`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SparseStats {
    /// Bytes given to `write`.
    pub bytes_in: u64,
    /// Bytes actually written (non-zero blocks, including padding of the last block).
    pub bytes_written: u64,
    /// Bytes of all-zero blocks not written as data (left as holes, cleared, or written as
    /// zeros on a destination that cannot have holes).
    pub bytes_skipped: u64,
}

/// What the writer does with a range of zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holes {
    /// Nothing: the destination already reads as zeros there (a new or truncated file, or a
    /// device known to be blank, as `sparsecopy --assume-zeroed` says).
    Leave,
    /// Make the range read as zeros as cheaply as the destination allows: punch a hole in a
    /// file; on a block device unmap it (`fallocate` punch, which the kernel turns into a
    /// discard that guarantees zeros) or have the device zero it (`BLKZEROOUT`); write zeros
    /// only when none of these works.
    Clear,
    /// Write the zeros, in order: for destinations that cannot seek (pipes, character devices).
    Write,
}

/// Is every byte zero? This is the hot loop of every copy: it ORs 64 bytes at a time and
/// branches once per 64 bytes, which the compiler turns into wide vector instructions.
pub fn is_zero(buf: &[u8]) -> bool {
    const LANES: usize = 64;
    let mut chunks = buf.chunks_exact(LANES);
    for chunk in &mut chunks {
        let mut acc = 0u64;
        for word in chunk.chunks_exact(8) {
            acc |= u64::from_ne_bytes(word.try_into().expect("8-byte word"));
        }
        if acc != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b == 0)
}

/// Which call clears a range on this destination; learned from the first that fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClearBy {
    Punch,
    ZeroOut,
    WriteZeros,
}

/// Where a [`SparseWriter`] writes: a file (or a device, or a pipe), or a volume written in
/// place (an RBD image, which `storage` makes one of these).
pub trait Destination {
    /// Writes all of `data` at `offset`.
    fn write_all_at(&mut self, data: &[u8], offset: u64) -> io::Result<()>;

    /// Writes `data` after what was written before ([`Holes::Write`], for destinations that
    /// cannot seek).
    fn write_in_order(&mut self, data: &[u8]) -> io::Result<()> {
        let _ = data;
        Err(io::Error::from_raw_os_error(libc::ESPIPE))
    }

    /// Frees a range, which then reads as zeros ([`Holes::Clear`]'s first choice).
    fn punch_hole(&mut self, start: u64, len: u64) -> io::Result<()> {
        let _ = (start, len);
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }

    /// Has the device zero a range ([`Holes::Clear`]'s second choice).
    fn zero_out(&mut self, start: u64, len: u64) -> io::Result<()> {
        let _ = (start, len);
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }

    /// Called once, by [`SparseWriter::finish`]: every write has been handed over (a
    /// destination that keeps writes in flight waits for them).
    fn writes_done(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Destination for File {
    fn write_all_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, data, offset)
    }

    fn write_in_order(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_all(data)
    }

    fn punch_hole(&mut self, start: u64, len: u64) -> io::Result<()> {
        punch_hole(self, start, len)
    }

    fn zero_out(&mut self, start: u64, len: u64) -> io::Result<()> {
        block_zero_out(self, start, len)
    }
}

impl<D: Destination + ?Sized> Destination for Box<D> {
    fn write_all_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        (**self).write_all_at(data, offset)
    }

    fn write_in_order(&mut self, data: &[u8]) -> io::Result<()> {
        (**self).write_in_order(data)
    }

    fn punch_hole(&mut self, start: u64, len: u64) -> io::Result<()> {
        (**self).punch_hole(start, len)
    }

    fn zero_out(&mut self, start: u64, len: u64) -> io::Result<()> {
        (**self).zero_out(start, len)
    }

    fn writes_done(&mut self) -> io::Result<()> {
        (**self).writes_done()
    }
}

pub struct SparseWriter<D: Destination = File> {
    file: D,
    holes: Holes,
    clear_by: ClearBy,
    pad_last_block: bool,
    /// Logical offset of `partial[0]`: always a multiple of `BLOCK`.
    offset: u64,
    partial: Vec<u8>,
    stats: SparseStats,
    /// Small writes of data are gathered here so that runs of data go out in one call.
    run: Vec<u8>,
    run_start: u64,
    /// Start of a range of zeros not yet handed to the destination (`Clear` and `Write`).
    hole_start: Option<u64>,
    zeros: Vec<u8>,
}

/// How many bytes of consecutive non-zero blocks are gathered before a write.
const RUN_LIMIT: usize = 1 << 20;
/// Data runs at least this long are written straight from the caller's buffer.
const DIRECT_MIN: usize = 64 << 10;

impl<D: Destination> SparseWriter<D> {
    /// Writes into `file` from offset 0. The file should be empty or all holes.
    pub fn new(file: D) -> Self {
        Self::with_holes(file, Holes::Leave)
    }

    /// Writes into `file` from offset 0, treating ranges of zeros as `holes` says.
    pub fn with_holes(file: D, holes: Holes) -> Self {
        SparseWriter {
            file,
            holes,
            clear_by: ClearBy::Punch,
            pad_last_block: true,
            offset: 0,
            partial: Vec::with_capacity(BLOCK),
            stats: SparseStats::default(),
            run: Vec::new(),
            run_start: 0,
            hole_start: None,
            zeros: Vec::new(),
        }
    }

    /// Ends the output exactly at `position()` instead of padding the last block: for copies
    /// whose length matters, and for devices whose size is not a multiple of the block.
    pub fn exact_length(mut self) -> Self {
        self.pad_last_block = false;
        self
    }

    /// Bytes accepted so far (the logical position).
    pub fn position(&self) -> u64 {
        self.offset + self.partial.len() as u64
    }

    /// Moves forward to `offset` as if zeros had been written. With [`Holes::Leave`] the file
    /// is not touched; otherwise the range is cleared or written like any other zeros.
    pub fn skip_to(&mut self, offset: u64) -> io::Result<()> {
        const ZEROS: [u8; BLOCK] = [0; BLOCK];
        if offset <= self.position() {
            return Ok(());
        }
        if !self.partial.is_empty() {
            let fill = (BLOCK - self.partial.len()) as u64;
            let n = fill.min(offset - self.position()) as usize;
            self.write(&ZEROS[..n])?;
            self.stats.bytes_in -= n as u64;
        }
        if offset > self.position() {
            let aligned = offset - offset % BLOCK as u64;
            self.zero_run(aligned - self.offset)?;
            let rest = (offset - aligned) as usize;
            self.partial.extend_from_slice(&ZEROS[..rest]);
        }
        Ok(())
    }

    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.stats.bytes_in += data.len() as u64;
        if !self.partial.is_empty() {
            let take = (BLOCK - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < BLOCK {
                return Ok(());
            }
            let block = std::mem::take(&mut self.partial);
            self.blocks(&block)?;
            self.partial = block;
            self.partial.clear();
        }
        let whole = data.len() - data.len() % BLOCK;
        self.blocks(&data[..whole])?;
        self.partial.extend_from_slice(&data[whole..]);
        Ok(())
    }

    /// Splits whole blocks into maximal runs of zero and non-zero blocks.
    fn blocks(&mut self, blocks: &[u8]) -> io::Result<()> {
        let mut start = 0;
        while start < blocks.len() {
            let zero = is_zero(&blocks[start..start + BLOCK]);
            let mut end = start + BLOCK;
            while end < blocks.len() && is_zero(&blocks[end..end + BLOCK]) == zero {
                end += BLOCK;
            }
            if zero {
                self.zero_run((end - start) as u64)?;
            } else {
                self.data_run(&blocks[start..end])?;
            }
            start = end;
        }
        Ok(())
    }

    fn data_run(&mut self, data: &[u8]) -> io::Result<()> {
        self.flush_hole()?;
        self.stats.bytes_written += data.len() as u64;
        if data.len() >= DIRECT_MIN {
            self.flush_run()?;
            self.put(data, self.offset)?;
        } else {
            if self.run.len() + data.len() > RUN_LIMIT {
                self.flush_run()?;
            }
            if self.run.is_empty() {
                self.run_start = self.offset;
            }
            self.run.extend_from_slice(data);
        }
        self.offset += data.len() as u64;
        Ok(())
    }

    fn zero_run(&mut self, len: u64) -> io::Result<()> {
        self.flush_run()?;
        self.stats.bytes_skipped += len;
        if self.holes != Holes::Leave && self.hole_start.is_none() {
            self.hole_start = Some(self.offset);
        }
        self.offset += len;
        Ok(())
    }

    fn put(&mut self, data: &[u8], at: u64) -> io::Result<()> {
        match self.holes {
            // Writes arrive in order, so a destination that cannot seek just takes them.
            Holes::Write => self.file.write_in_order(data),
            Holes::Leave | Holes::Clear => self.file.write_all_at(data, at),
        }
    }

    fn flush_run(&mut self) -> io::Result<()> {
        if !self.run.is_empty() {
            let run = std::mem::take(&mut self.run);
            let put = self.put(&run, self.run_start);
            self.run = run;
            self.run.clear();
            put?;
        }
        Ok(())
    }

    fn flush_hole(&mut self) -> io::Result<()> {
        let Some(start) = self.hole_start.take() else {
            return Ok(());
        };
        let len = self.offset - start;
        match self.holes {
            Holes::Leave => Ok(()),
            Holes::Write => self.write_zeros(start, len),
            Holes::Clear => self.clear(start, len),
        }
    }

    fn clear(&mut self, start: u64, len: u64) -> io::Result<()> {
        loop {
            let result = match self.clear_by {
                ClearBy::Punch => self.file.punch_hole(start, len),
                ClearBy::ZeroOut => self.file.zero_out(start, len),
                ClearBy::WriteZeros => return self.write_zeros(start, len),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if unsupported(&e) => {
                    self.clear_by = match self.clear_by {
                        ClearBy::Punch => ClearBy::ZeroOut,
                        _ => ClearBy::WriteZeros,
                    };
                }
                // A range the call will not take (not aligned to the device's sectors): write
                // this one, keep trying the cheap call for the next.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    return self.write_zeros(start, len);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn write_zeros(&mut self, start: u64, len: u64) -> io::Result<()> {
        if self.zeros.is_empty() {
            self.zeros = vec![0; RUN_LIMIT];
        }
        let zeros = std::mem::take(&mut self.zeros);
        let mut done = 0;
        let mut result = Ok(());
        while done < len && result.is_ok() {
            let n = (len - done).min(zeros.len() as u64) as usize;
            result = self.put(&zeros[..n], start + done);
            done += n as u64;
        }
        self.zeros = zeros;
        result
    }

    /// Writes the last partial block (padded to a whole block unless [`Self::exact_length`])
    /// and any pending zeros, and returns the file with what was done. The logical length
    /// written is `position()`, rounded up to a whole block when padding.
    pub fn finish(mut self) -> io::Result<(D, SparseStats)> {
        if !self.partial.is_empty() {
            let mut last = std::mem::take(&mut self.partial);
            if self.pad_last_block {
                last.resize(BLOCK, 0);
            }
            if is_zero(&last) {
                self.zero_run(last.len() as u64)?;
            } else {
                self.data_run(&last)?;
            }
        }
        self.flush_run()?;
        self.flush_hole()?;
        self.file.writes_done()?;
        Ok((self.file, self.stats))
    }
}

/// Errors that mean "this call does not exist for this file", not "the copy failed".
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::ENOTTY | libc::ENODEV)
    )
}

/// Frees `len` bytes of `file` at `start` (they read as zeros; the file keeps its size).
pub fn punch_hole(file: &File, start: u64, len: u64) -> io::Result<()> {
    // SAFETY: fallocate on a descriptor we own; failure comes back as -1 with errno.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            start as libc::off_t,
            len as libc::off_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `BLKZEROOUT`: `_IO(0x12, 127)` in `linux/fs.h`.
const BLKZEROOUT: libc::Ioctl = 0x127f;

fn block_zero_out(file: &File, start: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [start, len];
    // SAFETY: BLKZEROOUT reads a u64[2] (start, length) from the pointer we pass.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKZEROOUT, range.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The ranges of `file` (up to `len`) that hold data, as `SEEK_DATA` / `SEEK_HOLE` report them.
/// Where the file system cannot tell, the whole file is one range.
pub struct DataExtents<'a> {
    file: &'a File,
    pos: u64,
    len: u64,
}

pub fn data_extents(file: &File, len: u64) -> DataExtents<'_> {
    DataExtents { file, pos: 0, len }
}

impl Iterator for DataExtents<'_> {
    type Item = io::Result<(u64, u64)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.len {
            return None;
        }
        let fd = self.file.as_raw_fd();
        // SAFETY: lseek on a descriptor we borrow; errors come back as -1.
        let data = unsafe { libc::lseek(fd, self.pos as libc::off_t, libc::SEEK_DATA) };
        let (start, end) = if data < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ENXIO) => {
                    self.pos = self.len; // only holes remain
                    return None;
                }
                Some(libc::EINVAL | libc::EOPNOTSUPP) => (self.pos, self.len),
                _ => {
                    self.pos = self.len;
                    return Some(Err(err));
                }
            }
        } else {
            let start = (data as u64).min(self.len);
            let hole = unsafe { libc::lseek(fd, start as libc::off_t, libc::SEEK_HOLE) };
            let end = if hole < 0 {
                self.len
            } else {
                (hole as u64).min(self.len)
            };
            (start, end)
        };
        self.pos = end;
        (start < end).then_some(Ok((start, end)))
    }
}

/// Copies the first `len` bytes of `src` into `out` at `out_offset + offset`, reading only the
/// extents that hold data, in pieces of `buf.len()`. `progress` hears the source offset
/// reached after each piece. Holes of `src` become [`SparseWriter::skip_to`]; the caller
/// decides what lies beyond the last extent.
pub fn copy_extents<D: Destination>(
    src: &File,
    len: u64,
    out: &mut SparseWriter<D>,
    out_offset: u64,
    buf: &mut [u8],
    progress: &mut dyn FnMut(u64),
) -> Result<(), CopyFailure> {
    copy_extents_while(src, len, out, out_offset, buf, &mut |pos| {
        progress(pos);
        true
    })
    .map(|_| ())
}

/// [`copy_extents`] that can be stopped: `go_on` hears the source offset reached after each
/// piece and stops the copy by answering false. Returns whether the copy went to the end.
pub fn copy_extents_while<D: Destination>(
    src: &File,
    len: u64,
    out: &mut SparseWriter<D>,
    out_offset: u64,
    buf: &mut [u8],
    go_on: &mut dyn FnMut(u64) -> bool,
) -> Result<bool, CopyFailure> {
    advise_sequential(src);
    for extent in data_extents(src, len) {
        let (start, end) = extent.map_err(CopyFailure::Read)?;
        out.skip_to(out_offset + start)
            .map_err(CopyFailure::Write)?;
        let mut pos = start;
        while pos < end {
            let n = ((end - pos) as usize).min(buf.len());
            src.read_exact_at(&mut buf[..n], pos)
                .map_err(CopyFailure::Read)?;
            out.write(&buf[..n]).map_err(CopyFailure::Write)?;
            pos += n as u64;
            if !go_on(pos) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Which side of a copy failed: tools tell "cannot read SRC" from "cannot write DST".
#[derive(Debug)]
pub enum CopyFailure {
    Read(io::Error),
    Write(io::Error),
}

impl From<CopyFailure> for io::Error {
    fn from(failure: CopyFailure) -> io::Error {
        match failure {
            CopyFailure::Read(e) | CopyFailure::Write(e) => e,
        }
    }
}

/// Tells the kernel the file is read front to back, so it reads ahead further.
fn advise_sequential(file: &File) {
    // SAFETY: advice only; the result does not matter for correctness.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;

    fn written(chunks: &[&[u8]], len: u64) -> (Vec<u8>, u64, SparseStats) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let file = File::create(&path).unwrap();
        file.set_len(len).unwrap();
        let mut w = SparseWriter::new(file);
        for c in chunks {
            w.write(c).unwrap();
        }
        let (file, stats) = w.finish().unwrap();
        file.sync_all().unwrap();
        let mut data = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut data).unwrap();
        let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
        (data, allocated, stats)
    }

    #[test]
    fn zero_blocks_become_holes_and_data_lands_in_place() {
        let mut image = vec![0u8; 64 * BLOCK];
        image[10 * BLOCK] = 7;
        image[40 * BLOCK + 5] = 9;
        // write in odd-sized pieces to cross block boundaries
        let pieces: Vec<&[u8]> = image.chunks(1000).collect();
        let (data, allocated, stats) = written(&pieces, image.len() as u64);
        assert_eq!(data, image);
        assert_eq!(stats.bytes_written, 2 * BLOCK as u64);
        assert!(allocated <= 2 * BLOCK as u64, "allocated {allocated}");
    }

    #[test]
    fn final_partial_block_is_padded_with_zeros() {
        let image = vec![1u8; BLOCK + 10];
        let (data, _, stats) = written(&[&image], 0);
        assert_eq!(data.len(), 2 * BLOCK);
        assert_eq!(&data[..BLOCK + 10], &image[..]);
        assert!(data[BLOCK + 10..].iter().all(|&b| b == 0));
        assert_eq!(stats.bytes_in, (BLOCK + 10) as u64);
        assert_eq!(stats.bytes_written, 2 * BLOCK as u64);
    }

    #[test]
    fn is_zero_checks_every_byte() {
        let mut buf = vec![0u8; 4099];
        assert!(is_zero(&buf));
        for i in [0, 1, 15, 16, 63, 64, 2048, 4095, 4096, 4098] {
            buf[i] = 1;
            assert!(!is_zero(&buf), "byte {i}");
            buf[i] = 0;
        }
    }

    /// An image with data, long zero runs and large data runs (written straight from the
    /// caller's buffer), in one big write.
    fn mixed_image() -> Vec<u8> {
        let mut image = vec![0u8; 200 * BLOCK];
        image[..3 * BLOCK].fill(5);
        image[50 * BLOCK..(50 + 40) * BLOCK].fill(6); // 160 KiB: a direct write
        image[150 * BLOCK + 7] = 1;
        image
    }

    fn read_back(path: &std::path::Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    #[test]
    fn clearing_punches_old_data_out_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old");
        let image = mixed_image();
        std::fs::write(&path, vec![0xAAu8; image.len()]).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mut w = SparseWriter::with_holes(file, Holes::Clear);
        w.write(&image).unwrap();
        let (file, stats) = w.finish().unwrap();
        file.sync_all().unwrap();
        assert_eq!(read_back(&path), image);
        assert_eq!(stats.bytes_written, 44 * BLOCK as u64);
        let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(allocated <= 48 * BLOCK as u64, "allocated {allocated}");
    }

    #[test]
    fn writing_mode_streams_zeros_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stream");
        let image = mixed_image();
        let file = File::create(&path).unwrap();
        let mut w = SparseWriter::with_holes(file, Holes::Write);
        for piece in image.chunks(3000) {
            w.write(piece).unwrap();
        }
        w.finish().unwrap();
        assert_eq!(read_back(&path), image);
    }

    #[test]
    fn exact_length_keeps_an_unaligned_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exact");
        let file = File::create(&path).unwrap();
        let mut w = SparseWriter::with_holes(file, Holes::Write).exact_length();
        w.write(&[0u8; BLOCK + 3]).unwrap();
        w.write(&[9u8; 5]).unwrap();
        let (_, stats) = w.finish().unwrap();
        let data = read_back(&path);
        assert_eq!(data.len(), BLOCK + 8);
        assert_eq!(&data[BLOCK + 3..], &[9u8; 5]);
        assert_eq!(stats.bytes_written, 8);
    }

    #[test]
    fn extents_of_a_sparse_file_are_copied_to_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        let src = File::create(&src_path).unwrap();
        src.set_len(64 << 20).unwrap();
        src.write_all_at(&[3u8; 10_000], 20 << 20).unwrap();
        src.write_all_at(&[4u8; 100], (64 << 20) - 100).unwrap();
        drop(src);
        let src = File::open(&src_path).unwrap();

        let dst_path = dir.path().join("dst");
        let dst = File::create(&dst_path).unwrap();
        dst.set_len((64 << 20) + BLOCK as u64).unwrap();
        let mut w = SparseWriter::new(dst).exact_length();
        let mut buf = vec![0u8; 1 << 20];
        let mut reached = 0;
        copy_extents(&src, 64 << 20, &mut w, BLOCK as u64, &mut buf, &mut |p| {
            reached = p
        })
        .unwrap();
        let (_, stats) = w.finish().unwrap();
        assert_eq!(reached, 64 << 20);
        // Only the data extents were read: far less than the 64 MiB of the file.
        assert!(stats.bytes_in < 4 << 20, "read {}", stats.bytes_in);
        let copied = read_back(&dst_path);
        assert_eq!(&copied[BLOCK..], &read_back(&src_path)[..]);
        assert!(is_zero(&copied[..BLOCK]));
    }
}
