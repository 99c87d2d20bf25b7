//! Running `qemu-img` for the file storage: one-shot commands, and the long `convert` of a
//! qcow2 volume into a raw file, which reports progress and is killed when cancelled.

use std::path::Path;
use std::process::Command;

use super::{CopyProgress, StorageError, StorageResult};
use crate::qemu_img::{self, Ended};

fn spawn_failure(e: std::io::Error) -> StorageError {
    if e.kind() == std::io::ErrorKind::NotFound {
        StorageError::Tool(
            "qemu-img is not installed (Debian package qemu-utils); qcow2 volumes need it".into(),
        )
    } else {
        StorageError::io("running qemu-img", e)
    }
}

fn tool_failure(command: &str, stderr: &[u8]) -> StorageError {
    StorageError::Tool(format!(
        "qemu-img {command} failed: {}",
        String::from_utf8_lossy(stderr).trim()
    ))
}

/// Runs `qemu-img` and turns its failure into a readable error.
pub(super) fn run(args: &[&str]) -> StorageResult<()> {
    let output = Command::new("qemu-img")
        .args(args)
        .output()
        .map_err(spawn_failure)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(tool_failure(args.first().unwrap_or(&""), &output.stderr))
    }
}

/// `qemu-img convert` of a qcow2 volume (through its backing chain) into a raw file: its `-p`
/// output becomes progress, and it is killed when the copy is cancelled.
pub(super) fn convert_to_raw(
    src: &Path,
    dest: &Path,
    size: u64,
    progress: &dyn CopyProgress,
) -> StorageResult<()> {
    let mut command = Command::new("qemu-img");
    command
        .args(["convert", "-p", "-f", "qcow2", "-O", "raw", "-S", "4k"])
        .arg(src)
        .arg(dest);
    convert(command, size, progress)
}

/// Runs a `qemu-img convert -p ...` built by the caller: its output becomes progress of
/// `size` bytes, and it is killed when the copy is cancelled.
pub(super) fn convert(
    command: Command,
    size: u64,
    progress: &dyn CopyProgress,
) -> StorageResult<()> {
    let reached = |bytes| progress.reached(bytes);
    let cancelled = || progress.cancelled();
    match qemu_img::run_convert(command, size, &reached, &cancelled).map_err(spawn_failure)? {
        Ended::Done => Ok(()),
        Ended::Cancelled => Err(StorageError::Cancelled),
        Ended::Failed { stderr, .. } => Err(tool_failure("convert", stderr.as_bytes())),
    }
}
