//! Image hygiene: what an image would give away if it were shared, found by reading its file
//! systems without booting it, and the cleaning that takes it out.
//!
//! The file systems are read and written inside libguestfs's appliance, a small VM of its own
//! (`guestfish`, `virt-sysprep`), so a hostile file system is parsed by a guest kernel and
//! never by the host's. The appliance's memory and time are bounded ([`Limits`]). Calls block
//! for seconds to minutes: run them on a blocking thread.
//!
//! This module is an engine below `ops`: it knows volumes by their [`VolumeLocation`] and
//! reports into a [`Progress`]; which images are checked, who may clean them and where the
//! reports are kept is `ops::storage::hygiene`'s business.

mod accounts;
mod clean;
mod fstab;
mod inventory;
mod session;
mod sshd;
mod tree;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::progress::Progress;
use crate::storage::VolumeLocation;

/// How bad a finding is. `High` is what `--publish-requires-clean` refuses: something that
/// lets one server made from the image log in to, or impersonate, another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
}

/// What was found. The wire name (`code()`) is stable: clients match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FindingCode {
    /// An account with a usable password hash (`/etc/shadow`, or a hash in `/etc/passwd`).
    PasswordHash,
    /// An account whose password is empty: anyone logs in.
    EmptyPassword,
    /// Any user's `authorized_keys`.
    AuthorizedKeys,
    /// SSH host keys (`/etc/ssh/ssh_host_*_key`): every server would share them.
    SshHostKeys,
    /// Logs that are not empty: `/var/log`, wtmp, btmp, lastlog.
    Logs,
    /// Shell histories (`.bash_history`, `.ash_history`, ...).
    ShellHistory,
    /// An `/etc/machine-id` that is set.
    MachineId,
    /// cloud-init's instance state (`/var/lib/cloud/instance*`).
    CloudInitState,
    /// DHCP client leases.
    DhcpLeases,
    /// udev persistent network rules (`70-persistent-net.rules`).
    PersistentNetRules,
    /// Files in `/tmp` or `/var/tmp`.
    TmpFiles,
    /// Neither cloud-init nor `extility-firstboot`: nothing gives a server a unique password.
    NoFirstBootAgent,
}

/// One finding: a code, how bad it is, and where (paths inside the image, with the file
/// system's device when the image has several, e.g. `/dev/sda1:/etc/shadow`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub code: FindingCode,
    pub severity: Severity,
    pub paths: Vec<String>,
    /// A sentence a person can act on (e.g. "root has a password hash; lock it or let the
    /// first-boot agent set one").
    pub detail: String,
}

/// What a check read: the file systems it found and what they would give away.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Each file system read, e.g. `/dev/sda1 ext4 /`.
    pub filesystems: Vec<String>,
    /// Sorted by severity, highest first. Empty means clean.
    pub findings: Vec<Finding>,
}

/// One cleaning step. [`CleanOp::defaults`] is the how-to's list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanOp {
    RemoveSshHostKeys,
    LockPasswords,
    RemoveAuthorizedKeys,
    TruncateLogs,
    RemoveShellHistories,
    EmptyMachineId,
    RemoveCloudInitState,
    RemoveDhcpLeases,
    RemovePersistentNetRules,
    EmptyTmp,
    /// Paths to remove (the image maker's test scripts). Absolute, no `..`.
    RemovePaths(Vec<String>),
}

/// The appliance's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The appliance VM's memory.
    pub memory_mib: u32,
    /// The whole check or clean, appliance start included.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum HygieneError {
    /// The image holds nothing the appliance can read as a file system (corrupt, hostile,
    /// or not a disk), or reading it went past the limits. The message says which.
    #[error("the image cannot be read: {0}")]
    Unreadable(String),
    #[error("cancelled")]
    Cancelled,
    /// A path given to [`CleanOp::RemovePaths`] is not absolute, has `..`, or leads through a
    /// symbolic link in the image (which could take the removal elsewhere): nothing was
    /// changed by it. Bad input, the caller's to show.
    #[error("invalid path to remove: {0}")]
    InvalidPath(String),
    /// libguestfs itself is missing or broken on this node: the operator's problem, not the
    /// image's.
    #[error("the image checker is not available on this node: {0}")]
    Unavailable(String),
}

impl FindingCode {
    /// High: lets one server made from the image log in to, or impersonate, another.
    /// Medium: gives away what the image maker did (histories, logs) or makes servers look
    /// alike (machine-id). Low: the rest, and the missing first-boot agent, a warning.
    pub fn severity(self) -> Severity {
        use FindingCode::*;
        match self {
            PasswordHash | EmptyPassword | AuthorizedKeys | SshHostKeys => Severity::High,
            Logs | ShellHistory | MachineId => Severity::Medium,
            CloudInitState | DhcpLeases | PersistentNetRules | TmpFiles | NoFirstBootAgent => {
                Severity::Low
            }
        }
    }

    /// The stable wire name, e.g. `PASSWORD_HASH`.
    pub fn code(self) -> &'static str {
        use FindingCode::*;
        match self {
            PasswordHash => "PASSWORD_HASH",
            EmptyPassword => "EMPTY_PASSWORD",
            AuthorizedKeys => "AUTHORIZED_KEYS",
            SshHostKeys => "SSH_HOST_KEYS",
            Logs => "LOGS",
            ShellHistory => "SHELL_HISTORY",
            MachineId => "MACHINE_ID",
            CloudInitState => "CLOUD_INIT_STATE",
            DhcpLeases => "DHCP_LEASES",
            PersistentNetRules => "PERSISTENT_NET_RULES",
            TmpFiles => "TMP_FILES",
            NoFirstBootAgent => "NO_FIRST_BOOT_AGENT",
        }
    }
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// The highest severity found, `None` when clean.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: 768,
            timeout: Duration::from_secs(600),
        }
    }
}

impl CleanOp {
    /// The how-to's list: what every image should have done before it is shared.
    pub fn defaults() -> Vec<CleanOp> {
        vec![
            CleanOp::RemoveSshHostKeys,
            CleanOp::LockPasswords,
            CleanOp::TruncateLogs,
            CleanOp::RemoveShellHistories,
            CleanOp::EmptyMachineId,
            CleanOp::RemoveCloudInitState,
            CleanOp::RemoveDhcpLeases,
            CleanOp::RemovePersistentNetRules,
            CleanOp::EmptyTmp,
        ]
    }
}

/// Reads the raw image at `volume` (never writing it) and reports what it would give away.
pub fn check(
    volume: &VolumeLocation,
    limits: Limits,
    progress: &Progress,
) -> Result<Report, HygieneError> {
    clean::run(volume, None, limits, progress)
}

/// Cleans the raw image at `volume` in place (a copy the caller made; the original is never
/// given here), then reads it again: the report returned is the cleaned image's.
pub fn clean(
    volume: &VolumeLocation,
    ops: &[CleanOp],
    limits: Limits,
    progress: &Progress,
) -> Result<Report, HygieneError> {
    for op in ops {
        if let CleanOp::RemovePaths(paths) = op {
            for p in paths {
                validate_path(p)?;
            }
        }
    }
    clean::run(volume, Some(ops), limits, progress)
}

/// A path [`CleanOp::RemovePaths`] accepts: absolute, not `/`, no `.` or `..` part, no NUL,
/// at most 4096 bytes. What the ops layer checks before queuing a clean.
pub fn validate_path(path: &str) -> Result<(), HygieneError> {
    let bad = |why: &str| Err(HygieneError::InvalidPath(format!("{path:?}: {why}")));
    if !path.starts_with('/') {
        return bad("not absolute");
    }
    if path.len() > 4096 || path.contains('\0') {
        return bad("too long, or with a NUL byte");
    }
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if parts.is_empty() {
        return bad("the whole file system");
    }
    if parts.iter().any(|c| *c == "." || *c == "..") {
        return bad("has a . or .. part");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_to_remove_are_absolute_and_plain() {
        assert!(validate_path("/root/test.sh").is_ok());
        assert!(validate_path("/opt/my tests/").is_ok());
        for bad in ["root/x", "/", "//", "/a/../etc", "/a/./b", "/a\0b"] {
            assert!(
                matches!(validate_path(bad), Err(HygieneError::InvalidPath(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn wire_names_are_serde_names() {
        for code in [
            FindingCode::PasswordHash,
            FindingCode::NoFirstBootAgent,
            FindingCode::TmpFiles,
        ] {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::String(code.code().into())
            );
        }
    }
}
