//! What a path names (file, block device, ...) and the block-device calls the tools need.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::io::AsRawFd;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regular,
    Block,
    /// Character devices, pipes and sockets: read or written in order, no holes.
    Stream,
    Directory,
}

impl Kind {
    pub fn of(meta: &Metadata) -> Kind {
        let t = meta.file_type();
        if t.is_file() {
            Kind::Regular
        } else if t.is_block_device() {
            Kind::Block
        } else if t.is_dir() {
            Kind::Directory
        } else {
            Kind::Stream
        }
    }
}

/// `BLKGETSIZE64`: `_IOR(0x12, 114, size_t)`; `BLKRRPART`: `_IO(0x12, 95)` (`linux/fs.h`).
const BLKGETSIZE64: libc::Ioctl = 0x8008_1272;
const BLKRRPART: libc::Ioctl = 0x125f;

/// The size of a block device in bytes.
pub fn block_device_size(file: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) };
    if r == 0 {
        Ok(size)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks the kernel to re-read the partition table of a whole-disk block device (what
/// `sfdisk -R` / `blockdev --rereadpt` do).
pub fn reread_partition_table(file: &File) -> io::Result<()> {
    // SAFETY: BLKRRPART takes no argument.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKRRPART) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An I/O error as people read it: "No such file or directory", without "(os error 2)".
pub fn describe(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_string(),
        _ => text,
    }
}
