//! Running a long `qemu-img convert -p`: its progress lines become bytes done, and it is
//! killed when the work is cancelled. Shared by the file storage (qcow2 volumes into raw
//! files) and the fetch pipeline (fetched qcow2/VMDK/VHD/VHDX images into raw volumes); each
//! builds its own command line and reads the outcome into its own errors.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// How often a running `qemu-img convert` is checked for having ended or being cancelled.
const POLL: Duration = Duration::from_millis(100);

/// How a conversion ended.
#[derive(Debug)]
pub enum Ended {
    Done,
    /// Cancelled (the child was killed, or ended as it was cancelled).
    Cancelled,
    Failed {
        status: ExitStatus,
        stderr: String,
    },
}

/// Runs `command` (a `qemu-img convert -p ...`) to its end: reports its progress as bytes of
/// `size` through `reached`, kills it once `cancelled` says so. `Err` when it could not be
/// started or waited for (`ErrorKind::NotFound`: qemu-img is not installed).
pub fn run_convert(
    mut command: Command,
    size: u64,
    reached: &(dyn Fn(u64) + Sync),
    cancelled: &(dyn Fn() -> bool + Sync),
) -> std::io::Result<Ended> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    std::thread::scope(|scope| {
        let reports = scope.spawn(move || follow_percentages(stdout, size, reached));
        let errors = scope.spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.read_to_end(&mut text);
            text
        });
        let ended = wait_unless_cancelled(&mut child, cancelled);
        let _ = reports.join();
        let stderr = errors.join().unwrap_or_default();
        Ok(match ended? {
            // Cancelled as it ended: the caller asked for nothing to be left.
            _ if cancelled() => Ended::Cancelled,
            status if status.success() => Ended::Done,
            status => Ended::Failed {
                status,
                stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
            },
        })
    })
}

/// Waits for `child` to exit, killing it (and then waiting) if the work is cancelled first.
fn wait_unless_cancelled(
    child: &mut Child,
    cancelled: &dyn Fn() -> bool,
) -> std::io::Result<ExitStatus> {
    loop {
        if cancelled() {
            let _ = child.kill();
            return child.wait();
        }
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
    }
}

/// Reads qemu-img's progress lines (`    (12.34/100%)\r`) and reports them as bytes of `size`.
fn follow_percentages(out: impl Read, size: u64, reached: &dyn Fn(u64)) {
    for line in BufReader::new(out).split(b'\r') {
        let Ok(line) = line else { return };
        if let Some(percent) = parse_percentage(&line) {
            reached((size as f64 * percent / 100.0) as u64);
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
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn progress_lines_become_bytes() {
        assert_eq!(parse_percentage(b"    (12.34/100%)"), Some(12.34));
        assert_eq!(parse_percentage(b"    (100.00/100%)\n"), Some(100.0));
        assert_eq!(parse_percentage(b"warning: something"), None);
        let reached = Mutex::new(Vec::new());
        follow_percentages(
            &b"    (0.00/100%)\r    (50.00/100%)\r"[..],
            1 << 30,
            &|bytes| reached.lock().unwrap().push(bytes),
        );
        assert_eq!(*reached.lock().unwrap(), vec![0, 1 << 29]);
    }
}
