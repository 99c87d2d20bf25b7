//! Thin writing: the one sparse writer behind FetchDisk, image copies and `sparsecopy`.
//!
//! Data is written in 4,096-byte blocks at increasing offsets; a block that is all zeros is
//! never written, so on a file it stays a hole and takes no space. A final partial block is
//! padded with zeros to a whole block (the defined answer to the seed's "undefined" case).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

pub const BLOCK: usize = 4096;

/// Counts of what a [`SparseWriter`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SparseStats {
    /// Bytes given to `write`.
    pub bytes_in: u64,
    /// Bytes actually written (non-zero blocks, including padding of the last block).
    pub bytes_written: u64,
    /// Bytes of all-zero blocks left as holes.
    pub bytes_skipped: u64,
}

/// Is every byte zero? Compares 16 bytes at a time; this is the hot loop of a fetch.
pub fn is_zero(buf: &[u8]) -> bool {
    let (prefix, words, suffix) = unsafe { buf.align_to::<u128>() };
    prefix.iter().all(|&b| b == 0)
        && words.iter().all(|&w| w == 0)
        && suffix.iter().all(|&b| b == 0)
}

pub struct SparseWriter {
    file: File,
    offset: u64,
    partial: Vec<u8>,
    stats: SparseStats,
    /// Writes larger than one block are gathered here so that runs of data go out in one call.
    run: Vec<u8>,
    run_start: u64,
}

/// How many bytes of consecutive non-zero blocks are gathered before a write.
const RUN_LIMIT: usize = 1 << 20;

impl SparseWriter {
    /// Writes into `file` from offset 0. The file should be empty or all holes.
    pub fn new(file: File) -> Self {
        SparseWriter {
            file,
            offset: 0,
            partial: Vec::with_capacity(BLOCK),
            stats: SparseStats::default(),
            run: Vec::with_capacity(RUN_LIMIT),
            run_start: 0,
        }
    }

    /// Bytes accepted so far (the logical position).
    pub fn position(&self) -> u64 {
        self.offset + self.partial.len() as u64
    }

    /// Moves forward to `offset` as if zeros had been written, without touching the file.
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
            self.flush_run()?;
            let aligned = offset - offset % BLOCK as u64;
            self.stats.bytes_skipped += aligned - self.offset;
            self.offset = aligned;
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
            self.block(&block)?;
            self.partial = block;
            self.partial.clear();
        }
        let whole = data.len() - data.len() % BLOCK;
        for block in data[..whole].chunks_exact(BLOCK) {
            self.block(block)?;
        }
        self.partial.extend_from_slice(&data[whole..]);
        Ok(())
    }

    fn block(&mut self, block: &[u8]) -> io::Result<()> {
        if is_zero(block) {
            self.flush_run()?;
            self.stats.bytes_skipped += BLOCK as u64;
        } else {
            if self.run.is_empty() {
                self.run_start = self.offset;
            }
            self.run.extend_from_slice(block);
            self.stats.bytes_written += BLOCK as u64;
            if self.run.len() >= RUN_LIMIT {
                self.flush_run()?;
            }
        }
        self.offset += BLOCK as u64;
        Ok(())
    }

    fn flush_run(&mut self) -> io::Result<()> {
        if !self.run.is_empty() {
            self.file.write_all_at(&self.run, self.run_start)?;
            self.run.clear();
        }
        Ok(())
    }

    /// Pads and writes the last partial block, and returns the file with what was done.
    /// The logical length written is `position()` rounded up to a whole block.
    pub fn finish(mut self) -> io::Result<(File, SparseStats)> {
        if !self.partial.is_empty() {
            let mut block = std::mem::take(&mut self.partial);
            block.resize(BLOCK, 0);
            self.block(&block)?;
        }
        self.flush_run()?;
        Ok((self.file, self.stats))
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
        for i in [0, 1, 15, 16, 2048, 4098] {
            buf[i] = 1;
            assert!(!is_zero(&buf), "byte {i}");
            buf[i] = 0;
        }
    }
}
