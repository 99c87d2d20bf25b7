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
    /// libguestfs itself is missing or broken on this node: the operator's problem, not the
    /// image's.
    #[error("the image checker is not available on this node: {0}")]
    Unavailable(String),
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
    let _ = (volume, limits, progress);
    Err(HygieneError::Unavailable("the engine is being built".into()))
}

/// Cleans the raw image at `volume` in place (a copy the caller made; the original is never
/// given here), then reads it again: the report returned is the cleaned image's.
pub fn clean(
    volume: &VolumeLocation,
    ops: &[CleanOp],
    limits: Limits,
    progress: &Progress,
) -> Result<Report, HygieneError> {
    let _ = (volume, ops, limits, progress);
    Err(HygieneError::Unavailable("the engine is being built".into()))
}
