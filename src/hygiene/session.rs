//! One `guestfish` process driving one libguestfs appliance, bounded: commands go to its
//! standard input, each followed by `echo <nonce> <n>`, and its output (standard output and
//! error on one pipe, so an error stays in order) is read up to that line. The nonce is random,
//! so nothing an image holds (a file name, a link's target) can forge the end of an answer.
//!
//! guestfish reads its standard input non-interactively, so the first command that fails ends
//! it: a failure is never mistaken for an empty answer. Every argument that comes from the
//! image is double-quoted with every byte outside `[A-Za-z0-9/._-]` written `\xhh`, so no
//! image can add a command (or a `!` shell escape) to the script.
//!
//! Bounds: the whole session has a deadline; an answer longer than [`MAX_ANSWER`], a file the
//! appliance writes on the host past its cap, the deadline or a cancellation kill guestfish's
//! process group and every process descended from it (the appliance's QEMU among them).

use std::io::{Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::time::{Duration, Instant};

use crate::progress::Progress;

use super::{HygieneError, Limits};

/// The most one answer may print (a stat list, a link's target): lists go through files.
const MAX_ANSWER: usize = 4 << 20;
/// How often a wait looks at the deadline, the cancellation and the watched file.
const TICK: Duration = Duration::from_millis(100);

/// How long the RBD exporter may take to open its image and listen.
const EXPORTER_START: Duration = Duration::from_secs(60);
/// How long a stopped exporter may take to close its image (and drop its watch on it).
const EXPORTER_STOP: Duration = Duration::from_secs(20);

/// Where the bytes to read are: a raw file, or a raw image of a Ceph pool.
pub(crate) enum Drive<'a> {
    File(&'a Path),
    /// Exported to the appliance by a `qemu-nbd` of the session's own, which opens the image
    /// through librbd with the cluster's configuration file and user and serves its blocks,
    /// raw, on a socket in the session's private directory. It moves blocks and parses
    /// nothing: the file systems are still read in the appliance alone.
    Rbd {
        pool: &'a str,
        image: &'a str,
        conf: Option<&'a Path>,
        user: Option<&'a str>,
    },
}

pub(crate) struct Session<'a> {
    child: Child,
    stdin: Option<ChildStdin>,
    output: Receiver<Vec<u8>>,
    buffer: Vec<u8>,
    closed: bool,
    nonce: String,
    seq: u64,
    deadline: Instant,
    timeout: Duration,
    progress: &'a Progress,
    /// Files the appliance writes for us (listings, downloads).
    dir: tempfile::TempDir,
    files: u64,
    ended: bool,
    /// The `qemu-nbd` serving an RBD drive, stopped with the session.
    exporter: Option<Child>,
}

/// `s` as one double-quoted guestfish argument that means exactly these bytes.
pub(crate) fn quote(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for &b in s {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

/// The environment libguestfs needs here, unless the operator's environment says otherwise:
/// the direct backend (no libvirt daemon), and TCG, since KVM aborts in nested hosts. An
/// operator on a host where KVM works sets `LIBGUESTFS_BACKEND_SETTINGS=` (empty).
fn environment(cmd: &mut Command) {
    if std::env::var_os("LIBGUESTFS_BACKEND").is_none() {
        cmd.env("LIBGUESTFS_BACKEND", "direct");
    }
    if std::env::var_os("LIBGUESTFS_BACKEND_SETTINGS").is_none() {
        cmd.env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg");
    }
    // Tracing would print the image's contents into our answers, and without bounds.
    cmd.env_remove("LIBGUESTFS_DEBUG")
        .env_remove("LIBGUESTFS_TRACE");
}

impl<'a> Session<'a> {
    /// Starts guestfish with `drive` (read-only unless `writable`) and launches the appliance.
    pub(crate) fn launch(
        drive: &Drive,
        writable: bool,
        limits: Limits,
        progress: &'a Progress,
    ) -> Result<Session<'a>, HygieneError> {
        let guestfish = which::which("guestfish").map_err(|_| {
            HygieneError::Unavailable(
                "guestfish is not installed (Debian package libguestfs-tools)".into(),
            )
        })?;
        let dir = tempfile::Builder::new()
            .prefix("extility-hygiene-")
            .tempdir()
            .map_err(|e| HygieneError::Unavailable(format!("a temporary directory: {e}")))?;
        let (reader, writer) =
            std::io::pipe().map_err(|e| HygieneError::Unavailable(format!("a pipe: {e}")))?;
        let writer2 = writer
            .try_clone()
            .map_err(|e| HygieneError::Unavailable(format!("a pipe: {e}")))?;
        let mut cmd = Command::new(guestfish);
        // No `-a` on the command line: the drive is added by the script below, with its format
        // given (never probed: a raw image with a qcow2 header must not name a host file).
        cmd.arg("--no-progress-bars")
            .stdin(Stdio::piped())
            .stdout(writer)
            .stderr(writer2)
            .current_dir(dir.path());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        environment(&mut cmd);
        // libguestfs's own temporaries (the overlay of a read-only drive) go with the session's
        // directory, also when guestfish is killed. (Its socket directory is in /tmp for root
        // whatever the environment says: `kill` removes it.)
        cmd.env("LIBGUESTFS_TMPDIR", dir.path())
            .env("XDG_RUNTIME_DIR", dir.path());
        let mut child = cmd
            .spawn()
            .map_err(|e| HygieneError::Unavailable(format!("cannot run guestfish: {e}")))?;
        // The write ends now belong to guestfish alone: its exit ends our reading.
        drop(cmd);
        let stdin = child.stdin.take();
        let (tx, rx) = sync_channel::<Vec<u8>>(16);
        std::thread::spawn(move || {
            let mut reader = reader;
            let mut chunk = vec![0u8; 64 << 10];
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(chunk[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let mut session = Session {
            child,
            stdin,
            output: rx,
            buffer: Vec::new(),
            closed: false,
            nonce,
            seq: 0,
            deadline: Instant::now() + limits.timeout,
            timeout: limits.timeout,
            progress,
            dir,
            files: 0,
            ended: false,
            exporter: None,
        };
        let add = match drive {
            Drive::File(path) => format!(
                "add-drive {} format:raw readonly:{}",
                quote(path.as_os_str().as_encoded_bytes()),
                !writable
            ),
            Drive::Rbd {
                pool,
                image,
                conf,
                user,
            } => {
                let socket = session.export_rbd(pool, image, *conf, *user, writable)?;
                format!(
                    // The whole `key:value` word quoted: guestfish unquotes a word, then
                    // splits it at its first colon.
                    "add-drive \"\" protocol:nbd {} format:raw readonly:{}",
                    quote(format!("server:unix:{}", socket.display()).as_bytes()),
                    !writable
                )
            }
        };
        session.run(&add).map_err(as_unavailable)?;
        session
            .run(&format!("set-memsize {}", limits.memory_mib.max(256)))
            .map_err(as_unavailable)?;
        progress.set_phase("starting the appliance");
        // A failure here is libguestfs's (no appliance, no QEMU, no KVM or TCG), or a drive
        // that cannot be opened: the node's problem, not the image's.
        session.run("run").map_err(as_unavailable)?;
        Ok(session)
    }

    /// Runs one command and returns what it printed. A failure ends guestfish, and is the
    /// image's: [`HygieneError::Unreadable`] with libguestfs's message.
    pub(crate) fn run(&mut self, command: &str) -> Result<Vec<u8>, HygieneError> {
        self.run_watching(command, None)
    }

    /// [`Session::run`] for a command that writes `file` on the host, killed when the file
    /// grows past `cap` bytes.
    pub(crate) fn run_watching(
        &mut self,
        command: &str,
        watch: Option<(&Path, u64, &str)>,
    ) -> Result<Vec<u8>, HygieneError> {
        if self.ended {
            return Err(HygieneError::Unreadable("the appliance has stopped".into()));
        }
        self.seq += 1;
        let marker = format!("{} {}\n", self.nonce, self.seq);
        let script = format!("{command}\necho {marker}");
        let sent = match self.stdin.as_mut() {
            Some(stdin) => stdin
                .write_all(script.as_bytes())
                .and_then(|_| stdin.flush())
                .is_ok(),
            None => false,
        };
        if !sent {
            return Err(self.ended_early());
        }
        loop {
            if let Some(at) = find_marker(&self.buffer, marker.as_bytes()) {
                let answer = self.buffer[..at].to_vec();
                self.buffer.drain(..at + marker.len());
                return Ok(answer);
            }
            if self.buffer.len() > MAX_ANSWER {
                self.kill();
                return Err(HygieneError::Unreadable(format!(
                    "an answer of the appliance went past {MAX_ANSWER} bytes"
                )));
            }
            if self.closed {
                return Err(self.ended_early());
            }
            self.check_bounds()?;
            if let Some((file, cap, what)) = watch {
                let len = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
                if len > cap {
                    self.kill();
                    return Err(HygieneError::Unreadable(format!(
                        "{what}: more than {cap} bytes"
                    )));
                }
            }
            match self.output.recv_timeout(TICK) {
                Ok(bytes) => self.buffer.extend_from_slice(&bytes),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.closed = true,
            }
        }
    }

    /// A fresh path in the session's own directory, for a file the appliance writes.
    pub(crate) fn host_file(&mut self) -> PathBuf {
        self.files += 1;
        self.dir.path().join(format!("f{}", self.files))
    }

    /// Ends guestfish: unmounts and syncs (what a clean wrote is on the disk when this
    /// returns Ok), and waits for the appliance to stop.
    pub(crate) fn finish(mut self) -> Result<(), HygieneError> {
        self.run("umount-all")?;
        self.run("sync")?;
        self.run("shutdown")?;
        self.stdin = None;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => {
                    self.ended = true;
                    self.stop_exporter();
                    return Ok(());
                }
                Ok(Some(_)) => return Err(self.ended_early()),
                Ok(None) => {}
                Err(e) => {
                    self.kill();
                    return Err(HygieneError::Unavailable(format!(
                        "waiting for guestfish: {e}"
                    )));
                }
            }
            self.check_bounds()?;
            // Keep the pipe drained so guestfish never blocks writing to it.
            match self.output.recv_timeout(TICK) {
                Ok(bytes) if self.buffer.len() < MAX_ANSWER => {
                    self.buffer.extend_from_slice(&bytes)
                }
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(TICK),
            }
        }
    }

    fn check_bounds(&mut self) -> Result<(), HygieneError> {
        if self.progress.is_cancelled() {
            self.kill();
            return Err(HygieneError::Cancelled);
        }
        if Instant::now() > self.deadline {
            self.kill();
            return Err(HygieneError::Unreadable(format!(
                "the check took longer than its limit of {} s",
                self.timeout.as_secs()
            )));
        }
        Ok(())
    }

    /// guestfish ended before answering: its last error, as the image's fault.
    fn ended_early(&mut self) -> HygieneError {
        // Read what is left (guestfish has exited or is exiting), within the bounds.
        let until = Instant::now() + Duration::from_secs(5);
        while !self.closed && Instant::now() < until && self.buffer.len() < MAX_ANSWER {
            match self.output.recv_timeout(TICK) {
                Ok(bytes) => self.buffer.extend_from_slice(&bytes),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.closed = true,
            }
        }
        self.kill();
        HygieneError::Unreadable(last_error(&self.buffer))
    }

    /// Starts the `qemu-nbd` that serves RBD image `pool/image` (read-only unless `writable`)
    /// on a socket in the session's directory, and waits until it listens; returns the socket.
    /// One that cannot open the image is the node's problem (the cluster, its configuration),
    /// not the image's.
    fn export_rbd(
        &mut self,
        pool: &str,
        image: &str,
        conf: Option<&Path>,
        user: Option<&str>,
        writable: bool,
    ) -> Result<PathBuf, HygieneError> {
        let qemu_nbd = which::which("qemu-nbd").map_err(|_| {
            HygieneError::Unavailable(
                "qemu-nbd is not installed (Debian package qemu-utils)".into(),
            )
        })?;
        let socket = self.dir.path().join("rbd.sock");
        let log = self.dir.path().join("qemu-nbd.log");
        let errors = std::fs::File::create(&log)
            .map_err(|e| HygieneError::Unavailable(format!("a log file: {e}")))?;
        let mut cmd = Command::new(qemu_nbd);
        // Persistent and shared: libguestfs connects more than once (to size a read-only
        // drive's overlay, then the appliance).
        cmd.args(["--persistent", "--shared=4", "--cache=writeback"])
            .arg(os_concat("--socket=", socket.as_os_str()))
            .arg("--image-opts")
            .arg(rbd_image_opts(pool, image, conf, user))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(errors);
        if !writable {
            cmd.arg("--read-only");
        }
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .map_err(|e| HygieneError::Unavailable(format!("cannot run qemu-nbd: {e}")))?;
        self.exporter = Some(child);
        let until = Instant::now() + EXPORTER_START.min(self.timeout);
        loop {
            if std::fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_socket()) {
                return Ok(socket);
            }
            let exited = self
                .exporter
                .as_mut()
                .is_none_or(|c| !matches!(c.try_wait(), Ok(None)));
            if exited || Instant::now() > until {
                self.stop_exporter();
                let said = std::fs::read(&log).unwrap_or_default();
                let said = String::from_utf8_lossy(&said[..said.len().min(2000)])
                    .lines()
                    .map(str::trim)
                    .rfind(|l| !l.is_empty())
                    .unwrap_or("it stopped without saying why")
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .take(300)
                    .collect::<String>();
                return Err(HygieneError::Unavailable(format!(
                    "qemu-nbd could not serve RBD image {pool}/{image}: {said}"
                )));
            }
            if self.progress.is_cancelled() {
                self.stop_exporter();
                return Err(HygieneError::Cancelled);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the RBD exporter: SIGTERM, so that it flushes and closes the image (a killed
    /// librbd client keeps its watch on the image for half a minute, and an image with a
    /// watcher cannot be deleted), then SIGKILL if it does not end in time.
    fn stop_exporter(&mut self) {
        let Some(mut child) = self.exporter.take() else {
            return;
        };
        let pid = child.id() as i32;
        // SAFETY: a signal to the process this session started (not yet reaped).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let until = Instant::now() + EXPORTER_STOP;
        while Instant::now() < until {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills guestfish, its process group and every process descended from it, and reaps it;
    /// then stops the RBD exporter.
    pub(crate) fn kill(&mut self) {
        if self.ended {
            self.stop_exporter();
            return;
        }
        self.ended = true;
        self.stdin = None;
        let pid = self.child.id() as i32;
        let descendants = descendants(pid);
        let sockdirs: Vec<PathBuf> = descendants.iter().flat_map(|d| socket_dirs(*d)).collect();
        // SAFETY: plain signals to processes this session started (its group, its children).
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
            for d in &descendants {
                libc::kill(*d, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
        // A killed QEMU closes its files only after freeing its memory: wait until each is
        // gone, so that nothing holds the image when the call returns.
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until && descendants.iter().any(|d| alive(*d)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // What libguestfs would have removed on a normal exit: the appliance's sockets.
        for d in sockdirs {
            let _ = std::fs::remove_dir_all(d);
        }
        self.stop_exporter();
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `a` then `b`, as one argument.
fn os_concat(a: &str, b: &std::ffi::OsStr) -> std::ffi::OsString {
    let mut s = std::ffi::OsString::from(a);
    s.push(b);
    s
}

/// QEMU's options that open RBD image `pool/image` as a raw drive: each value with its commas
/// doubled, so that no name adds an option.
fn rbd_image_opts(
    pool: &str,
    image: &str,
    conf: Option<&Path>,
    user: Option<&str>,
) -> std::ffi::OsString {
    let esc = |s: &str| s.replace(',', ",,");
    let mut opts = std::ffi::OsString::from(format!(
        "driver=raw,file.driver=rbd,file.pool={},file.image={}",
        esc(pool),
        esc(image)
    ));
    if let Some(conf) = conf {
        opts.push(",file.conf=");
        let bytes = conf.as_os_str().as_encoded_bytes();
        let mut doubled = Vec::with_capacity(bytes.len());
        for &b in bytes {
            doubled.push(b);
            if b == b',' {
                doubled.push(b',');
            }
        }
        opts.push(std::ffi::OsString::from_vec(doubled));
    }
    if let Some(user) = user {
        opts.push(format!(",file.user={}", esc(user)));
    }
    opts
}

fn as_unavailable(e: HygieneError) -> HygieneError {
    match e {
        HygieneError::Unreadable(m) => HygieneError::Unavailable(m),
        e => e,
    }
}

fn find_marker(buffer: &[u8], marker: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buffer[from..]
        .windows(marker.len())
        .position(|w| w == marker)
    {
        let at = from + i;
        if at == 0 || buffer[at - 1] == b'\n' {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The last line that says `error`, made printable and short, or a general sentence.
fn last_error(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let line = text.lines().rev().find(|l| l.contains("error")).map(|l| {
        // `*stdin*:12: libguestfs: error: mount: ...`: the script's line says nothing.
        let l = l.find("libguestfs: ").map(|i| &l[i + 12..]).unwrap_or(l);
        l.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(300)
            .collect::<String>()
    });
    line.unwrap_or_else(|| "the appliance stopped without saying why".into())
}

/// Whether process `pid` still runs (a zombie has closed its files).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The socket directories (`/tmp/libguestfsXXXXXX`) QEMU process `pid` was given.
fn socket_dirs(pid: i32) -> Vec<PathBuf> {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&cmdline);
    let mut dirs: Vec<PathBuf> = text
        .match_indices("/tmp/libguestfs")
        .filter_map(|(i, _)| {
            let rest = &text[i + 5..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            (name.len() == "libguestfs".len() + 6).then(|| Path::new("/tmp").join(name))
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Every process whose chain of parents leads to `root`, read from `/proc` (libguestfs's
/// QEMU and recovery process, wherever their process group is).
fn descendants(root: i32) -> Vec<i32> {
    let mut parent_of: Vec<(i32, i32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|(_, ppid)| *ppid == p)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_leaves_nothing_guestfish_would_act_on() {
        assert_eq!(quote(b"/etc/shadow"), "\"/etc/shadow\"");
        assert_eq!(
            quote(b"/tmp/a\"b c\n!rm|x"),
            "\"/tmp/a\\x22b\\x20c\\x0a\\x21rm\\x7cx\""
        );
    }

    #[test]
    fn markers_count_only_at_the_start_of_a_line() {
        let m = b"abc 1\n";
        assert_eq!(find_marker(b"xabc 1\nabc 1\n", m), Some(7));
        assert_eq!(find_marker(b"abc 1\n", m), Some(0));
        assert_eq!(find_marker(b"abc 12\n", m), None);
    }

    #[test]
    fn the_last_error_is_shown_without_the_script_line() {
        let out = b"x\n*stdin*:5: libguestfs: error: mount: /dev/sda1: bad\x1b[1m\n";
        assert_eq!(last_error(out), "error: mount: /dev/sda1: bad [1m");
    }
}
