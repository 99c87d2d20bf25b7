//! What one operating system tree (a root file system with what mounts under it) would give
//! away, as paths resolved inside the image: read by a check, acted on by a clean.

use std::collections::BTreeSet;

use super::accounts::{self, Password};
use super::session::Session;
use super::sshd;
use super::tree::{Stat, join, show};
use super::{Finding, FindingCode, HygieneError};

/// Shell and REPL histories, in each home directory.
const HISTORIES: &[&str] = &[
    ".bash_history",
    ".ash_history",
    ".sh_history",
    ".zsh_history",
    ".history",
    ".python_history",
    ".mysql_history",
    ".psql_history",
    ".sqlite_history",
    ".node_repl_history",
    ".lesshst",
];
const AUTHORIZED_KEYS: &[&str] = &["authorized_keys", "authorized_keys2"];
const LEASE_DIRS: &[&str] = &[
    "/var/lib/dhcp",
    "/var/lib/dhclient",
    "/var/lib/NetworkManager",
    "/var/lib/dhcpcd",
    "/var/lib/dhcpcd5",
    "/var/db/dhcpcd",
];
const CLOUD_INIT_STATE: &[&str] = &["instance", "instances", "data", "sem"];
const FIRSTBOOT: &str = "/usr/sbin/extility-firstboot";
const FIRSTBOOT_DONE: &str = "/var/lib/extility-firstboot/done";
const CLOUD_INIT: &[&str] = &["/usr/bin/cloud-init", "/usr/local/bin/cloud-init"];
/// More home directories than this is no image a person made.
const MAX_HOMES: usize = 2_000;
/// sshd's configuration, and how many files it may include (the most read in all).
const SSHD_CONFIG: &str = "/etc/ssh/sshd_config";
const MAX_SSHD_FILES: usize = 16;

/// A file the tree holds, resolved: its path and its bytes.
pub(crate) struct Config {
    pub(crate) path: Vec<u8>,
    pub(crate) bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Agent {
    Present,
    /// extility-firstboot is installed but has already run: it will not run again.
    Spent,
    Missing,
}

pub(crate) struct Inventory {
    pub(crate) passwd: Option<Config>,
    pub(crate) shadow: Option<Config>,
    /// (account, what its password allows, the file that says so).
    pub(crate) open_accounts: Vec<(String, Password, Vec<u8>)>,
    pub(crate) authorized_keys: Vec<Vec<u8>>,
    pub(crate) host_keys: Vec<Vec<u8>>,
    pub(crate) logs: Vec<Vec<u8>>,
    pub(crate) histories: Vec<Vec<u8>>,
    /// `/etc/machine-id` when it is set.
    pub(crate) machine_id: Option<Vec<u8>>,
    /// D-Bus's own copy (`/var/lib/dbus/machine-id`) when it is a file with bytes.
    pub(crate) dbus_machine_id: Option<Vec<u8>>,
    pub(crate) cloud_init: Vec<Vec<u8>>,
    pub(crate) leases: Vec<Vec<u8>>,
    pub(crate) net_rules: Vec<Vec<u8>>,
    pub(crate) tmp: Vec<Vec<u8>>,
    pub(crate) agent: Agent,
}

impl Session<'_> {
    /// Reads the tree mounted at `/`.
    pub(crate) fn inventory(&mut self) -> Result<Inventory, HygieneError> {
        let passwd = self.config(b"/etc/passwd")?;
        let shadow = self.config(b"/etc/shadow")?;
        let mut open_accounts = Vec::new();
        for file in [&shadow, &passwd].into_iter().flatten() {
            for (name, pw) in accounts::accounts(&file.bytes) {
                if pw != Password::None {
                    open_accounts.push((name, pw, file.path.clone()));
                }
            }
        }

        let mut homes: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut home_paths: Vec<Vec<u8>> = vec![b"/root".to_vec()];
        if let Some(p) = &passwd {
            home_paths.extend(
                accounts::homes(&p.bytes)
                    .into_iter()
                    .map(String::into_bytes),
            );
        }
        if let Some(home) = self.resolve_dir(b"/home")? {
            for name in self.list_dir(&home)? {
                home_paths.push(join(&home, &name));
            }
        }
        home_paths.sort();
        home_paths.dedup();
        if home_paths.len() > MAX_HOMES {
            return Err(HygieneError::Unreadable(format!(
                "more than {MAX_HOMES} home directories"
            )));
        }
        for h in home_paths {
            if let Some(dir) = self.resolve_dir(&h)? {
                homes.insert(dir);
            }
        }
        let mut histories = Vec::new();
        let mut authorized_keys = Vec::new();
        for home in &homes {
            histories.extend(self.reportable(home, HISTORIES)?);
            if let Some(ssh) = self.resolve_dir(&join(home, b".ssh"))? {
                authorized_keys.extend(self.reportable(&ssh, AUTHORIZED_KEYS)?);
            }
        }
        authorized_keys.extend(self.custom_authorized_keys(passwd.as_ref())?);
        authorized_keys.sort();
        authorized_keys.dedup();

        let mut host_keys = Vec::new();
        if let Some(ssh) = self.resolve_dir(b"/etc/ssh")? {
            for name in self.list_dir(&ssh)? {
                if name.starts_with(b"ssh_host_") {
                    host_keys.push(join(&ssh, &name));
                }
            }
        }
        host_keys.sort();

        let logs = match self.resolve_dir(b"/var/log")? {
            Some(dir) => self.files_with_bytes(&dir)?,
            None => Vec::new(),
        };

        let mut machine_id = None;
        if let Some(id) = self.config(b"/etc/machine-id")? {
            let text = String::from_utf8_lossy(&id.bytes);
            if !matches!(text.trim(), "" | "uninitialized") {
                machine_id = Some(id.path);
            }
        }
        let mut dbus_machine_id = None;
        if let Some(dir) = self.resolve_dir(b"/var/lib/dbus")?
            && let Some(st) = self.lstat(&dir, b"machine-id")?
            && st.is_file()
            && st.size > 0
        {
            dbus_machine_id = Some(join(&dir, b"machine-id"));
        }

        let mut cloud_init = Vec::new();
        if let Some(dir) = self.resolve_dir(b"/var/lib/cloud")? {
            let names: Vec<&[u8]> = CLOUD_INIT_STATE.iter().map(|n| n.as_bytes()).collect();
            for (name, st) in names.iter().zip(self.lstat_names(&dir, &names)?) {
                let Some(st) = st else { continue };
                let path = join(&dir, name);
                if !st.is_dir() || !self.list_dir(&path)?.is_empty() {
                    cloud_init.push(path);
                }
            }
        }

        let mut leases = Vec::new();
        for d in LEASE_DIRS {
            let Some(dir) = self.resolve_dir(d.as_bytes())? else {
                continue;
            };
            let names: Vec<Vec<u8>> = self
                .list_dir(&dir)?
                .into_iter()
                .filter(|n| n.windows(5).any(|w| w == b"lease"))
                .collect();
            let refs: Vec<&[u8]> = names.iter().map(|n| n.as_slice()).collect();
            for (name, st) in refs.iter().zip(self.lstat_names(&dir, &refs)?) {
                if st.is_some_and(|s| s.is_file() && s.size > 0) {
                    leases.push(join(&dir, name));
                }
            }
        }

        let mut net_rules = Vec::new();
        if let Some(dir) = self.resolve_dir(b"/etc/udev/rules.d")?
            && self.lstat(&dir, b"70-persistent-net.rules")?.is_some()
        {
            net_rules.push(join(&dir, b"70-persistent-net.rules"));
        }

        leases.sort();
        let mut tmp = Vec::new();
        let mut tmp_dirs = BTreeSet::new();
        for d in [&b"/tmp"[..], b"/var/tmp"] {
            if let Some(dir) = self.resolve_dir(d)?
                && tmp_dirs.insert(dir.clone())
            {
                for name in self.list_dir(&dir)? {
                    tmp.push(join(&dir, &name));
                }
            }
        }

        tmp.sort();
        let mut agent = Agent::Missing;
        for p in CLOUD_INIT {
            if self
                .resolve(p.as_bytes())?
                .is_some_and(|(_, s)| s.is_file())
            {
                agent = Agent::Present;
            }
        }
        if agent == Agent::Missing
            && self
                .resolve(FIRSTBOOT.as_bytes())?
                .is_some_and(|(_, s)| s.is_file())
        {
            agent = match self.resolve(FIRSTBOOT_DONE.as_bytes())? {
                Some(_) => Agent::Spent,
                None => Agent::Present,
            };
        }

        Ok(Inventory {
            passwd,
            shadow,
            open_accounts,
            authorized_keys,
            host_keys,
            logs,
            histories,
            machine_id,
            dbus_machine_id,
            cloud_init,
            leases,
            net_rules,
            tmp,
            agent,
        })
    }

    /// The authorized keys files sshd's own `AuthorizedKeysFile` names (in `sshd_config` and
    /// the files it includes) that hold something, for each account of `passwd`; resolved.
    fn custom_authorized_keys(
        &mut self,
        passwd: Option<&Config>,
    ) -> Result<Vec<Vec<u8>>, HygieneError> {
        let mut patterns: Vec<String> = Vec::new();
        let mut todo: Vec<Vec<u8>> = vec![SSHD_CONFIG.as_bytes().to_vec()];
        let mut read: Vec<Vec<u8>> = Vec::new();
        while let Some(path) = todo.pop() {
            if read.len() >= MAX_SSHD_FILES {
                break;
            }
            // A file that is missing or not a regular one is no configuration sshd reads.
            let Some((resolved, st)) = self.resolve(&path)? else {
                continue;
            };
            if !st.is_file() || read.contains(&resolved) {
                continue;
            }
            let bytes = self.read_file(&resolved, st.size)?;
            read.push(resolved);
            let config = sshd::parse(&bytes);
            for p in config.authorized_keys_files {
                if patterns.len() < sshd::MAX_PATTERNS && !patterns.contains(&p) {
                    patterns.push(p);
                }
            }
            for include in config.includes {
                todo.extend(self.included(&include)?);
            }
        }
        let users = passwd
            .map(|p| accounts::users(&p.bytes))
            .unwrap_or_default();
        if users.len() > MAX_HOMES {
            return Err(HygieneError::Unreadable(format!(
                "more than {MAX_HOMES} accounts"
            )));
        }
        let mut paths: BTreeSet<Vec<u8>> = BTreeSet::new();
        for pattern in &patterns {
            if sshd::per_user(pattern) {
                for (user, uid, home) in &users {
                    paths.extend(sshd::expand(pattern, user, uid, home));
                }
            } else {
                paths.extend(sshd::expand(pattern, "root", "0", "/"));
            }
        }
        let mut found = Vec::new();
        for path in paths {
            let Some((resolved, st)) = self.resolve(&path)? else {
                continue;
            };
            if st.is_file() && st.size > 0 {
                found.push(resolved);
            }
        }
        Ok(found)
    }

    /// The files an `Include` argument names: relative to `/etc/ssh`, with `*` and `?` in its
    /// last part matched against that directory's names.
    fn included(&mut self, include: &str) -> Result<Vec<Vec<u8>>, HygieneError> {
        let path = if include.starts_with('/') {
            include.to_string()
        } else {
            format!("/etc/ssh/{include}")
        };
        let Some((dir, last)) = path.rsplit_once('/') else {
            return Ok(Vec::new());
        };
        if dir.contains(['*', '?', '[']) || last.contains('[') {
            return Ok(Vec::new());
        }
        if !last.contains(['*', '?']) {
            return Ok(vec![path.into_bytes()]);
        }
        let Some(dir) = self.resolve_dir(if dir.is_empty() { b"/" } else { dir.as_bytes() })?
        else {
            return Ok(Vec::new());
        };
        let mut names: Vec<Vec<u8>> = self
            .list_dir(&dir)?
            .into_iter()
            .filter(|n| sshd::glob_matches(last.as_bytes(), n))
            .collect();
        names.sort();
        names.truncate(MAX_SSHD_FILES);
        // Popped from the end: the first in order is read first.
        names.reverse();
        Ok(names.into_iter().map(|n| join(&dir, &n)).collect())
    }

    /// A configuration file, resolved and read; `None` if the image has none. One that is
    /// not a regular file (a device, a directory) is the image's fault: a system reading it
    /// would not see what a check sees.
    pub(crate) fn config(&mut self, path: &[u8]) -> Result<Option<Config>, HygieneError> {
        match self.resolve(path)? {
            None => Ok(None),
            Some((p, st)) if st.is_file() => {
                let bytes = self.read_file(&p, st.size)?;
                Ok(Some(Config { path: p, bytes }))
            }
            Some((p, _)) => Err(HygieneError::Unreadable(format!(
                "{} is not a regular file",
                show(&p)
            ))),
        }
    }

    /// The names of `dir` that hold something: a regular file with bytes, or anything but a
    /// directory and a link to `/dev/null` (the usual way to keep a history empty).
    fn reportable(&mut self, dir: &[u8], names: &[&str]) -> Result<Vec<Vec<u8>>, HygieneError> {
        let refs: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
        let stats = self.lstat_names(dir, &refs)?;
        let mut found = Vec::new();
        for (name, st) in refs.iter().zip(stats) {
            let Some(st) = st else { continue };
            let path = join(dir, name);
            if st.is_link() && self.readlink(&path)? == b"/dev/null" {
                continue;
            }
            if st.has_content() {
                found.push(path);
            }
        }
        Ok(found)
    }

    /// The regular files with bytes anywhere under `dir`.
    pub(crate) fn files_with_bytes(&mut self, dir: &[u8]) -> Result<Vec<Vec<u8>>, HygieneError> {
        let mut by_parent: std::collections::BTreeMap<Vec<u8>, Vec<Vec<u8>>> = Default::default();
        for rel in self.find(dir)? {
            let (parent, name) = match rel.iter().rposition(|b| *b == b'/') {
                Some(i) => (join(dir, &rel[..i]), rel[i + 1..].to_vec()),
                None => (dir.to_vec(), rel),
            };
            by_parent.entry(parent).or_default().push(name);
        }
        let mut found = Vec::new();
        for (parent, names) in by_parent {
            let refs: Vec<&[u8]> = names.iter().map(|n| n.as_slice()).collect();
            let stats: Vec<Option<Stat>> = self.lstat_names(&parent, &refs)?;
            for (name, st) in refs.iter().zip(stats) {
                if st.is_some_and(|s| s.is_file() && s.size > 0) {
                    found.push(join(&parent, name));
                }
            }
        }
        found.sort();
        Ok(found)
    }
}

impl Inventory {
    /// The findings, with each path as `prefix` + its path.
    pub(crate) fn findings(&self, prefix: &str) -> Vec<Finding> {
        let shown = |paths: &[Vec<u8>]| -> Vec<String> {
            paths
                .iter()
                .map(|p| format!("{prefix}{}", show(p)))
                .collect()
        };
        let mut out = Vec::new();
        let mut add = |code: FindingCode, paths: Vec<String>, detail: String| {
            if !paths.is_empty() {
                out.push(Finding {
                    code,
                    severity: code.severity(),
                    paths,
                    detail,
                });
            }
        };
        for (code, kind, what) in [
            (
                FindingCode::PasswordHash,
                Password::Usable,
                "a usable password hash: every server made from the image would accept its \
                 password. Lock them (lock_passwords) and let the first-boot agent set a fresh one",
            ),
            (
                FindingCode::EmptyPassword,
                Password::Empty,
                "an empty password: anyone can log in as them. Lock them (lock_passwords)",
            ),
        ] {
            let open: Vec<&(String, Password, Vec<u8>)> =
                self.open_accounts.iter().filter(|a| a.1 == kind).collect();
            let mut files: Vec<Vec<u8>> = open.iter().map(|a| a.2.clone()).collect();
            files.dedup();
            let names: Vec<String> = open.iter().map(|a| show(a.0.as_bytes())).collect();
            add(
                code,
                shown(&files),
                format!(
                    "{} {} {what}.",
                    names.join(", "),
                    if names.len() == 1 { "has" } else { "have" }
                ),
            );
        }
        add(
            FindingCode::AuthorizedKeys,
            shown(&self.authorized_keys),
            "SSH keys that could log in to every server made from the image: remove them \
             (remove_authorized_keys); the first-boot agent installs each customer's own."
                .into(),
        );
        add(
            FindingCode::SshHostKeys,
            shown(&self.host_keys),
            "SSH host keys every server made from the image would share, so one could \
             impersonate another: remove them (remove_ssh_host_keys); each server makes its own \
             at first boot."
                .into(),
        );
        add(
            FindingCode::Logs,
            shown(&self.logs),
            "logs with the image maker's activity: truncate them (truncate_logs).".into(),
        );
        add(
            FindingCode::ShellHistory,
            shown(&self.histories),
            "shell histories of the image maker's commands, passwords typed among them: \
             remove them (remove_shell_histories)."
                .into(),
        );
        let mut ids: Vec<Vec<u8>> = self.machine_id.iter().cloned().collect();
        ids.extend(self.dbus_machine_id.iter().cloned());
        add(
            FindingCode::MachineId,
            shown(&ids),
            "a machine-id every server made from the image would share: empty it \
             (empty_machine_id); each server makes its own at first boot."
                .into(),
        );
        add(
            FindingCode::CloudInitState,
            shown(&self.cloud_init),
            "cloud-init's state from the image maker's server: cloud-init would take a new \
             server for that one. Remove it (remove_cloud_init_state)."
                .into(),
        );
        add(
            FindingCode::DhcpLeases,
            shown(&self.leases),
            "DHCP leases of the image maker's network: remove them (remove_dhcp_leases).".into(),
        );
        add(
            FindingCode::PersistentNetRules,
            shown(&self.net_rules),
            "udev rules that bind interface names to the image maker's MAC addresses: a new \
             server's NIC would get another name. Remove them (remove_persistent_net_rules)."
                .into(),
        );
        let tmp_detail = format!(
            "{} file{} left in temporary directories: remove them (empty_tmp).",
            self.tmp.len(),
            if self.tmp.len() == 1 { "" } else { "s" }
        );
        let mut tmp = shown(&self.tmp);
        tmp.truncate(50);
        add(FindingCode::TmpFiles, tmp, tmp_detail);
        // Only a tree with accounts is a system that could lack an agent.
        if let Some(passwd) = &self.passwd {
            match self.agent {
                Agent::Present => {}
                Agent::Missing => add(
                    FindingCode::NoFirstBootAgent,
                    shown(std::slice::from_ref(&passwd.path)),
                    "neither cloud-init nor extility-firstboot is installed: nothing gives a \
                     server made from the image a password of its own. Install one \
                     (packaging/firstboot)."
                        .into(),
                ),
                Agent::Spent => add(
                    FindingCode::NoFirstBootAgent,
                    vec![format!("{prefix}{FIRSTBOOT_DONE}")],
                    "extility-firstboot has already run in this image and will not run again: \
                     run `extility-firstboot --rearm` before making the image."
                        .into(),
                ),
            }
        }
        out
    }
}
