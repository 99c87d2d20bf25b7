//! A VM's directories. `<data-dir>/vms/<server-uuid>/` holds what the server keeps: the serial
//! console log, QEMU's own messages, and how to serve the VM's metadata. The runtime directory
//! holds what QEMU itself makes or reads: its pid file and QMP sockets (what lets a restarted
//! `extility serve` find and supervise the VM again), its metadata forward's socket, its
//! consoles' sockets (VNC and serial: a restarted server finds them where they were), and the
//! metadata URL and secret handed to the guest. A confined VM's runtime directory is
//! `/run/extility/vms/<server>/<server-uuid>/`, owned by the VM's user (mode 0700), which has no access
//! to the data directory; an unconfined VM's is its data directory.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::hypervisor::HypervisorError;

/// `sun_path` holds 108 bytes, the terminating NUL included.
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, Clone)]
pub struct VmFiles {
    /// In the data directory, the server's own.
    pub dir: PathBuf,
    /// The runtime directory (see the module's comment).
    pub run: PathBuf,
}

impl VmFiles {
    /// The files of one server's VM. The uuid comes from the database, but it becomes a path,
    /// so it is checked to be one.
    /// `run_root` is where confined VMs' runtime directories are; `None` keeps the runtime
    /// files in the data directory.
    pub fn new(
        vms_dir: &Path,
        run_root: Option<&Path>,
        server_uuid: &str,
    ) -> Result<VmFiles, HypervisorError> {
        if server_uuid.is_empty()
            || !server_uuid
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'-')
        {
            return Err(HypervisorError(format!(
                "'{server_uuid}' is not a server uuid"
            )));
        }
        let dir = vms_dir.join(server_uuid);
        let files = VmFiles {
            run: run_root.map_or_else(|| dir.clone(), |root| root.join(server_uuid)),
            dir,
        };
        let longest = files.control_socket();
        if longest.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(HypervisorError(format!(
                "the VMs' directory's path is too long for QEMU's control sockets: {} is longer \
                 than {MAX_SOCKET_PATH} bytes",
                longest.display()
            )));
        }
        Ok(files)
    }

    /// The same VM's files as an earlier version kept them: all in the data directory.
    pub fn legacy(&self) -> VmFiles {
        VmFiles {
            dir: self.dir.clone(),
            run: self.dir.clone(),
        }
    }

    /// Whether the runtime directory is a directory of its own (a confined VM's).
    fn run_is_separate(&self) -> bool {
        self.run != self.dir
    }

    pub fn pid_file(&self) -> PathBuf {
        self.run.join("qemu.pid")
    }

    /// The QMP socket the supervisor listens to events on.
    pub fn events_socket(&self) -> PathBuf {
        self.run.join("qmp.sock")
    }

    /// The QMP socket commands (power down, quit) are sent on.
    pub fn control_socket(&self) -> PathBuf {
        self.run.join("qmp-control.sock")
    }

    /// The socket QEMU forwards the guest's metadata connections to (user-mode network).
    pub fn metadata_socket(&self) -> PathBuf {
        self.run.join("metadata.sock")
    }

    /// QEMU's VNC server: the screen, keyboard and mouse (RFB), for the server alone.
    pub fn vnc_socket(&self) -> PathBuf {
        self.run.join("vnc.sock")
    }

    /// The first serial port's socket (QEMU listens; one client at a time), which also feeds
    /// the console log.
    pub fn serial_socket(&self) -> PathBuf {
        self.run.join("serial.sock")
    }

    /// Where the server reads how to serve the VM's metadata stream (its own file).
    pub fn metadata_door(&self) -> PathBuf {
        self.dir.join("metadata-door.json")
    }

    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// QEMU's standard error while it starts (why it did not, when it did not).
    pub fn startup_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }

    pub fn metadata_url(&self) -> PathBuf {
        self.run.join("metadata-url")
    }

    pub fn metadata_token(&self) -> PathBuf {
        self.run.join("metadata-token")
    }

    /// Readies the directories for a new boot: private, without leftovers of an earlier run,
    /// with an empty console log. A separate runtime directory has just been made afresh and
    /// given to the VM's user (see [`super::confine::Uids::take`]); it is made here only if
    /// missing.
    pub fn prepare(&self) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        if self.run_is_separate() {
            let _ = fs::remove_file(self.metadata_door());
            if !self.run.is_dir() {
                fs::DirBuilder::new().mode(0o700).create(&self.run)?;
            }
        } else {
            self.remove_runtime_files();
        }
        for log in [self.console_log(), self.startup_log()] {
            write_private(&log, b"")?;
        }
        Ok(())
    }

    /// Writes a file of the runtime directory for QEMU to read: private to `owner`.
    pub fn write_for_qemu(
        &self,
        path: &Path,
        contents: &[u8],
        owner: Option<u32>,
    ) -> io::Result<()> {
        write_private(path, contents)?;
        if let Some(uid) = owner {
            std::os::unix::fs::chown(path, Some(uid), Some(uid))?;
        }
        Ok(())
    }

    /// Removes what only a running VM needs; the logs stay for GetConsoleLog.
    pub fn remove_runtime_files(&self) {
        if self.run_is_separate() {
            // Removed without following links: QEMU's user could have put any in it.
            match fs::remove_dir_all(&self.run) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => {
                    tracing::warn!(dir = %self.run.display(), error = %err,
                        "could not remove a VM's runtime directory");
                }
                _ => {}
            }
        }
        for path in [
            self.pid_file(),
            self.events_socket(),
            self.control_socket(),
            self.metadata_socket(),
            self.vnc_socket(),
            self.serial_socket(),
            self.metadata_url(),
            self.metadata_token(),
            self.metadata_door(),
        ] {
            let _ = fs::remove_file(path);
        }
    }

    /// Removes the directory and everything in it.
    pub fn remove_all(&self) -> io::Result<()> {
        self.remove_runtime_files();
        match fs::remove_dir_all(&self.dir) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// The last `max_bytes` of the console log (nothing if the VM never ran).
    pub fn console_tail(&self, max_bytes: usize) -> io::Result<Vec<u8>> {
        tail(&self.console_log(), max_bytes)
    }

    /// Keeps the console log from growing without bound: past `limit` bytes only its last
    /// `keep` bytes stay. QEMU appends (O_APPEND), so it writes on at the new end; what it
    /// writes between our read and the truncation is lost, which a console log can afford.
    pub fn trim_console_log(&self, limit: u64, keep: usize) -> io::Result<()> {
        let path = self.console_log();
        let len = match fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err),
        };
        if len <= limit {
            return Ok(());
        }
        let kept = tail(&path, keep)?;
        let mut file = OpenOptions::new().write(true).open(&path)?;
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&kept)
    }
}

/// Writes a file only the owner can read.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)
}

fn tail(path: &Path, max_bytes: usize) -> io::Result<Vec<u8>> {
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max_bytes as u64)))?;
    let mut bytes = Vec::with_capacity(max_bytes.min(len as usize));
    file.take(max_bytes as u64).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A path as a value of a QEMU option (`file=...`), where a comma must be doubled.
pub fn option_path(path: &Path) -> OsString {
    let mut escaped = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        escaped.push(b);
        if b == b',' {
            escaped.push(b',');
        }
    }
    OsString::from_vec(escaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_uuids_that_are_not_plain_names() {
        let vms = Path::new("/var/lib/extility/vms");
        assert!(VmFiles::new(vms, None, "0f5c6a1e-8f0e-4b8e-9a53-0d6f4c3a7b21").is_ok());
        for bad in ["", "..", "../etc", "a/b", "x y"] {
            assert!(VmFiles::new(vms, None, bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn refuses_socket_paths_longer_than_unix_sockets_allow() {
        let long = PathBuf::from(format!("/{}", "d".repeat(80)));
        let err = VmFiles::new(&long, None, "0f5c6a1e-8f0e-4b8e-9a53-0d6f4c3a7b21").unwrap_err();
        assert!(err.0.contains("too long"), "{err}");
    }

    #[test]
    fn console_tail_and_trim_keep_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let files = VmFiles::new(dir.path(), None, "abc").unwrap();
        assert!(files.console_tail(10).unwrap().is_empty(), "no log yet");
        files.prepare().unwrap();
        let text: Vec<u8> = (0..5000u32)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        fs::write(files.console_log(), &text).unwrap();
        assert_eq!(files.console_tail(5).unwrap(), b"4999\n");
        assert_eq!(files.console_tail(1 << 20).unwrap(), text);
        files.trim_console_log(1000, 10).unwrap();
        assert_eq!(fs::read(files.console_log()).unwrap(), b"4998\n4999\n");
        files.trim_console_log(1000, 5).unwrap();
        assert_eq!(
            fs::read(files.console_log()).unwrap(),
            b"4998\n4999\n",
            "under the limit"
        );
    }

    #[test]
    fn option_paths_double_commas() {
        assert_eq!(option_path(Path::new("/a,b/c")), OsString::from("/a,,b/c"));
    }
}
