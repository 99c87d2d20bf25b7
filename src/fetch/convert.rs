//! Converting an inspected image (qcow2, VMDK, VHD, VHDX) into the platform's raw thin file
//! with `qemu-img convert`, always told the source format (`-f`: it never probes untrusted
//! data), writing only the data (`-S 4k`: zero blocks stay holes). Its `-p` output becomes
//! the job's progress, and a cancelled job kills it.

use std::path::Path;
use std::process::Command;

use super::inspect::ImageFormat;
use crate::fetch::error::{FetchError, FetchResult};
use crate::progress::Progress;
use crate::qemu_img::{self, Ended};

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
) -> FetchResult<()> {
    let Some(args) = arguments(format, src, dest) else {
        return Err(FetchError::internal(anyhow::anyhow!(
            "{} images are not converted",
            format.name()
        )));
    };
    let mut command = Command::new("qemu-img");
    command.args(&args);
    // A relative name inside an image (refused anyway) could only resolve in the staging
    // folder.
    if let Some(dir) = src.parent() {
        command.current_dir(dir);
    }
    let reached = |bytes| progress.set_done(bytes);
    let cancelled = || progress.is_cancelled();
    let ended =
        qemu_img::run_convert(command, virtual_size, &reached, &cancelled).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                FetchError::Storage(
                "qemu-img is not installed (Debian package qemu-utils); converting images needs it"
                    .into(),
            )
            } else {
                FetchError::Storage(format!("running qemu-img: {e}"))
            }
        })?;
    match ended {
        Ended::Done => Ok(()),
        Ended::Cancelled => Err(FetchError::Cancelled),
        Ended::Failed { status, stderr } => Err(FetchError::FetchFailed(format!(
            "converting the {} image failed ({status}): {stderr}",
            format.name()
        ))),
    }
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
