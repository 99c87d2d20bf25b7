//! A running QEMU, found through its pid file and held by a pidfd: once the pidfd is open the
//! pid cannot be recycled under us, so signals and waits always reach that very process, even
//! though it is not our child (QEMU daemonizes, so that it outlives `extility serve`).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

#[derive(Debug)]
pub struct QemuProcess {
    pid: i32,
    pidfd: OwnedFd,
}

impl QemuProcess {
    /// The QEMU a pid file names, if that process still runs and really is the QEMU started
    /// with this pid file (its command line says so): a stale pid file whose pid now belongs
    /// to something else yields `None`.
    pub fn from_pid_file(pid_file: &Path) -> Option<QemuProcess> {
        let text = std::fs::read_to_string(pid_file).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        let pidfd = pidfd_open(Pid::from_raw(pid)?, PidfdFlags::empty()).ok()?;
        let process = QemuProcess { pid, pidfd };
        // Checked after opening the pidfd, so the answer stays true for the pidfd's process.
        (process.is_alive() && started_with_pid_file(pid, pid_file)).then_some(process)
    }

    /// The process `pid` (a QEMU this server just started), held by a pidfd.
    pub fn open(pid: i32) -> Option<QemuProcess> {
        let pidfd = pidfd_open(Pid::from_raw(pid)?, PidfdFlags::empty()).ok()?;
        Some(QemuProcess { pid, pidfd })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn is_alive(&self) -> bool {
        !self.wait_exit(Duration::ZERO)
    }

    /// Waits until the process has ended, at most `timeout`; says whether it has.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let timespec = Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: left.subsec_nanos() as i64,
            };
            let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
            match poll(&mut fds, Some(&timespec)) {
                // A pidfd becomes readable when its process ends.
                Ok(n) if n > 0 => return true,
                Ok(_) => return false,
                Err(rustix::io::Errno::INTR) if !left.is_zero() => continue,
                Err(_) => return false,
            }
        }
    }

    /// SIGKILL. A process that has already ended is not an error.
    pub fn kill(&self) -> io::Result<()> {
        match pidfd_send_signal(self.pidfd.as_fd(), Signal::KILL) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

/// Whether `/proc/<pid>/cmdline` has `-pidfile <pid_file>`.
fn started_with_pid_file(pid: i32, pid_file: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut args = cmdline.split(|b| *b == 0);
    let wanted = pid_file.as_os_str().as_bytes();
    while let Some(arg) = args.next() {
        if arg == b"-pidfile" && args.next() == Some(wanted) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_naming_another_program_is_not_a_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("qemu.pid");
        // This test process is alive, but it was not started with that pid file.
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
        assert!(QemuProcess::from_pid_file(&pid_file).is_none());
        std::fs::write(&pid_file, "garbage").unwrap();
        assert!(QemuProcess::from_pid_file(&pid_file).is_none());
        assert!(QemuProcess::from_pid_file(&dir.path().join("missing.pid")).is_none());
    }

    #[test]
    fn waits_for_and_kills_a_process_named_by_its_pid_file() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("qemu.pid");
        // A stand-in whose command line has `-pidfile <path>` like QEMU's; it says it runs,
        // then waits on its stdin with a shell builtin, so killing it leaves nothing behind.
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("echo running; read line")
            .arg("-pidfile")
            .arg(&pid_file)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut said = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut said,
        )
        .unwrap();
        assert_eq!(said, "running\n");
        std::fs::write(&pid_file, child.id().to_string()).unwrap();
        let process = QemuProcess::from_pid_file(&pid_file).expect("the process is found");
        assert!(process.is_alive());
        assert!(!process.wait_exit(Duration::from_millis(50)));
        process.kill().unwrap();
        assert!(process.wait_exit(Duration::from_secs(10)));
        child.wait().unwrap();
        assert!(QemuProcess::from_pid_file(&pid_file).is_none());
    }
}
