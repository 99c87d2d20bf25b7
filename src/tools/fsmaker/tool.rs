//! Running the Debian tools fsmaker leaves the work to, and naming the package of a missing one.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::FsmakerError;

/// The Debian package that installs `program`.
pub fn package_of(program: &str) -> &'static str {
    match program {
        "grub-mkimage" => "grub-common",
        "debugfs" | "e2fsck" | "resize2fs" => "e2fsprogs",
        _ => "unknown",
    }
}

/// Where `program` is: on `PATH`, or in the sbin folders where Debian puts e2fsprogs, which an
/// ordinary user's `PATH` lacks.
pub fn locate(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Fails, naming the Debian package, unless every program is installed.
pub fn require(programs: &[&str]) -> Result<(), FsmakerError> {
    match programs.iter().find(|p| locate(p).is_none()) {
        Some(missing) => Err(FsmakerError::MissingTool {
            tool: missing.to_string(),
            package: package_of(missing),
        }),
        None => Ok(()),
    }
}

/// Runs `program args` in `dir`; a program that is not installed is a [`FsmakerError::MissingTool`]
/// naming its package. The caller judges the exit status (e2fsck's has several meanings).
pub fn run(program: &str, args: &[&str], dir: &Path) -> Result<Output, FsmakerError> {
    let Some(path) = locate(program) else {
        return Err(FsmakerError::MissingTool {
            tool: program.to_string(),
            package: package_of(program),
        });
    };
    Command::new(path)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                FsmakerError::MissingTool {
                    tool: program.to_string(),
                    package: package_of(program),
                }
            } else {
                FsmakerError::ToolFailed {
                    tool: program.to_string(),
                    detail: e.to_string(),
                }
            }
        })
}

/// Runs a program that must succeed.
pub fn run_ok(program: &str, args: &[&str], dir: &Path) -> Result<Output, FsmakerError> {
    let output = run(program, args, dir)?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(failed(program, &output))
    }
}

pub fn failed(program: &str, output: &Output) -> FsmakerError {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let detail = if stderr.trim().is_empty() {
        stdout.trim().to_string()
    } else {
        stderr.trim().to_string()
    };
    FsmakerError::ToolFailed {
        tool: program.to_string(),
        detail: format!("{} ({})", detail, output.status),
    }
}
