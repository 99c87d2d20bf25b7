//! Running `qemu-img` for the file storage: one-shot commands, and the long `convert` of a
//! qcow2 volume into a raw file, which reports progress and is killed when cancelled.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{CopyProgress, StorageError, StorageResult};

/// How often a running `qemu-img convert` is checked for having ended or being cancelled.
const POLL: Duration = Duration::from_millis(100);

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
    let mut child = Command::new("qemu-img")
        .args(["convert", "-p", "-f", "qcow2", "-O", "raw", "-S", "4k"])
        .arg(src)
        .arg(dest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_failure)?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    std::thread::scope(|scope| {
        let reports = scope.spawn(move || follow_percentages(stdout, size, progress));
        let errors = scope.spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.read_to_end(&mut text);
            text
        });
        let ended = wait_unless_cancelled(&mut child, progress);
        let _ = reports.join();
        let stderr = errors.join().unwrap_or_default();
        match ended? {
            // Cancelled as it ended: the caller asked for nothing to be left.
            _ if progress.cancelled() => Err(StorageError::Cancelled),
            status if status.success() => Ok(()),
            _ => Err(tool_failure("convert", &stderr)),
        }
    })
}

/// Waits for `child` to exit, killing it (and then waiting) if the copy is cancelled first.
fn wait_unless_cancelled(
    child: &mut Child,
    progress: &dyn CopyProgress,
) -> StorageResult<ExitStatus> {
    loop {
        if progress.cancelled() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(StorageError::Cancelled);
        }
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StorageError::io("waiting for qemu-img", e));
            }
        }
    }
}

/// Reads qemu-img's progress lines (`    (12.34/100%)\r`) and reports them as bytes of `size`.
fn follow_percentages(out: impl Read, size: u64, progress: &dyn CopyProgress) {
    for line in BufReader::new(out).split(b'\r') {
        let Ok(line) = line else { return };
        if let Some(percent) = parse_percentage(&line) {
            progress.reached((size as f64 * percent / 100.0) as u64);
        }
    }
}

fn parse_percentage(line: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(line).ok()?.trim();
    let percent: f64 = text
        .strip_prefix('(')?
        .strip_suffix("/100%)")?
        .parse()
        .ok()?;
    Some(percent.clamp(0.0, 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Reached(Mutex<Vec<u64>>);

    impl CopyProgress for Reached {
        fn reached(&self, bytes: u64) {
            self.0.lock().unwrap().push(bytes);
        }

        fn cancelled(&self) -> bool {
            false
        }
    }

    #[test]
    fn progress_lines_become_bytes() {
        assert_eq!(parse_percentage(b"    (12.34/100%)"), Some(12.34));
        assert_eq!(parse_percentage(b"    (100.00/100%)\n"), Some(100.0));
        assert_eq!(parse_percentage(b"warning: something"), None);
        let reached = Reached::default();
        follow_percentages(
            &b"    (0.00/100%)\r    (50.00/100%)\r"[..],
            1 << 30,
            &reached,
        );
        assert_eq!(*reached.0.lock().unwrap(), vec![0, 1 << 29]);
    }
}
