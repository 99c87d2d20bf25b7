//! Converting an inspected image (qcow2, VMDK, VHD, VHDX) into the platform's raw thin file
//! with `qemu-img convert`, always told the source format (`-f`: it never probes untrusted
//! data), writing only the data (`-S 4k`: zero blocks stay holes). Its `-p` output becomes
//! the job's progress, and a cancelled job kills it.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::inspect::ImageFormat;
use crate::error::{ApiError, ApiResult};
use crate::progress::Progress;

/// How often the running conversion is checked for having ended or being cancelled.
const POLL: Duration = Duration::from_millis(100);

/// The arguments of the conversion of `src` (of `format`) into the raw file `dest`.
pub fn arguments(format: ImageFormat, src: &Path, dest: &Path) -> Option<Vec<String>> {
    let driver = format.qemu_driver()?;
    let mut args: Vec<String> = [
        "convert", "-p", // progress on stdout
        "-f", driver, "-O", "raw", // never probed
        "-S", "4k", // zero blocks are holes
        "-W", // writes out of order: several requests in flight
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(src.display().to_string());
    args.push(dest.display().to_string());
    Some(args)
}

/// Converts `src`, an image of `format` describing a disk of `virtual_size` bytes, into the
/// raw sparse file `dest` (replaced). Reports the share done as bytes of `virtual_size`;
/// stops (killing `qemu-img`) when the job is cancelled. `dest` is left for the caller to
/// remove when this fails.
pub fn convert(
    format: ImageFormat,
    src: &Path,
    dest: &Path,
    virtual_size: u64,
    progress: &Progress,
) -> ApiResult<()> {
    let Some(args) = arguments(format, src, dest) else {
        return Err(ApiError::internal(anyhow::anyhow!(
            "{} images are not converted",
            format.name()
        )));
    };
    let mut command = Command::new("qemu-img");
    command
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A relative name inside an image (refused anyway) could only resolve in the staging
    // folder.
    if let Some(dir) = src.parent() {
        command.current_dir(dir);
    }
    let mut child = command.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ApiError::Storage(
                "qemu-img is not installed (Debian package qemu-utils); converting images needs it"
                    .into(),
            )
        } else {
            ApiError::Storage(format!("running qemu-img: {e}"))
        }
    })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    std::thread::scope(|scope| {
        let reports = scope.spawn(move || follow_percentages(stdout, virtual_size, progress));
        let errors = scope.spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.read_to_end(&mut text);
            text
        });
        let ended = wait_unless_cancelled(&mut child, progress);
        let _ = reports.join();
        let stderr = errors.join().unwrap_or_default();
        match ended? {
            _ if progress.is_cancelled() => Err(ApiError::Cancelled),
            status if status.success() => Ok(()),
            status => Err(ApiError::FetchFailed(format!(
                "converting the {} image failed ({status}): {}",
                format.name(),
                String::from_utf8_lossy(&stderr).trim()
            ))),
        }
    })
}

/// Waits for `child` to exit, killing it (and then waiting) if the job is cancelled first.
fn wait_unless_cancelled(child: &mut Child, progress: &Progress) -> ApiResult<ExitStatus> {
    loop {
        if progress.is_cancelled() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ApiError::Cancelled);
        }
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ApiError::Storage(format!("waiting for qemu-img: {e}")));
            }
        }
    }
}

/// Reads qemu-img's progress lines (`    (12.34/100%)\r`) and reports them as bytes of `size`.
fn follow_percentages(out: impl Read, size: u64, progress: &Progress) {
    for line in BufReader::new(out).split(b'\r') {
        let Ok(line) = line else { return };
        if let Some(percent) = parse_percentage(&line) {
            progress.set_done((size as f64 * percent / 100.0) as u64);
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

    #[test]
    fn the_format_is_always_given_and_the_output_is_thin() {
        let args = arguments(ImageFormat::Vhd, Path::new("/s/a"), Path::new("/s/b")).unwrap();
        let text = args.join(" ");
        assert!(text.contains("-f vpc -O raw -S 4k"), "{text}");
        assert!(text.ends_with("/s/a /s/b"));
        assert!(arguments(ImageFormat::Raw, Path::new("a"), Path::new("b")).is_none());
        assert!(arguments(ImageFormat::Iso, Path::new("a"), Path::new("b")).is_none());
    }

    #[test]
    fn progress_lines_become_bytes() {
        assert_eq!(parse_percentage(b"    (12.34/100%)"), Some(12.34));
        assert_eq!(parse_percentage(b"junk"), None);
        let progress = Progress::default();
        follow_percentages(
            &b"    (0.00/100%)\r    (50.00/100%)\r"[..],
            1 << 30,
            &progress,
        );
        assert_eq!(progress.snapshot().bytes_done, 1 << 29);
    }

    #[test]
    fn a_cancelled_conversion_stops_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dest) = (dir.path().join("a.qcow2"), dir.path().join("a.raw"));
        let out = Command::new("qemu-img")
            .args(["create", "-f", "qcow2"])
            .arg(&src)
            .arg("64M")
            .output()
            .expect("running qemu-img");
        assert!(out.status.success());
        let progress = Progress::default();
        convert(ImageFormat::Qcow2, &src, &dest, 64 << 20, &progress).unwrap();
        assert_eq!(std::fs::metadata(&dest).unwrap().len(), 64 << 20);
        progress.cancel();
        let err = convert(ImageFormat::Qcow2, &src, &dest, 64 << 20, &progress).unwrap_err();
        assert_eq!(err.code(), "CANCELLED");
        let err = convert(
            ImageFormat::Vmdk,
            &src,
            &dest,
            64 << 20,
            &Progress::default(),
        );
        assert_eq!(
            err.unwrap_err().code(),
            "FETCH_FAILED",
            "the format is never probed"
        );
    }
}
