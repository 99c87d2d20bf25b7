//! A small blocking client for QEMU's machine protocol (QMP): newline-separated JSON over a
//! Unix socket. A connection reads the greeting, negotiates capabilities, then either runs
//! commands (`execute`) or listens for events (`next_event`).

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP connection: {0}")]
    Io(#[from] io::Error),
    #[error("QMP sent something that is not JSON: {0}")]
    Protocol(String),
    /// QEMU refused the command.
    #[error("QEMU refused {command}: {message}")]
    Refused { command: String, message: String },
}

/// An asynchronous notification from QEMU (`SHUTDOWN`, `GUEST_PANICKED`, ...).
#[derive(Debug, Clone)]
pub struct QmpEvent {
    pub name: String,
    pub data: Value,
}

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// A message read only partly when a read timed out; the rest follows.
    partial: Vec<u8>,
}

/// How long a command may take to answer. QEMU answers the commands used here at once.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

impl Qmp {
    /// Connects to the QMP socket of the QEMU process `pid` and enters command mode. A socket that another process
    /// serves is refused: the VM's user owns its runtime directory, and could have put a link
    /// to another VM's socket there.
    pub fn connect_to(socket: &Path, pid: i32) -> Result<Qmp, QmpError> {
        let stream = UnixStream::connect(socket)?;
        check_peer(&stream, pid)?;
        Self::start(stream)
    }

    fn start(stream: UnixStream) -> Result<Qmp, QmpError> {
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            partial: Vec::new(),
        };
        let greeting = qmp.read_message()?.ok_or_else(|| {
            QmpError::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                "no QMP greeting from QEMU",
            ))
        })?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!(
                "unexpected greeting {greeting}"
            )));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs a command and returns its `return` value. Events arriving meanwhile are dropped:
    /// command connections do not watch events (the supervisor's connection does).
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = serde_json::to_vec(&request).expect("a JSON value serializes");
        line.push(b'\n');
        self.writer.write_all(&line)?;
        self.reader
            .get_ref()
            .set_read_timeout(Some(REPLY_TIMEOUT))?;
        loop {
            let Some(message) = self.read_message()? else {
                return Err(QmpError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("QEMU did not answer {command}"),
                )));
            };
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                return Err(QmpError::Refused {
                    command: command.to_string(),
                    message: error
                        .get("desc")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given")
                        .to_string(),
                });
            }
        }
    }

    /// The next event, waiting at most `wait`: `Ok(None)` when none came in time. An error
    /// (end of file included) means the connection is over, usually because QEMU exited.
    pub fn next_event(&mut self, wait: Duration) -> Result<Option<QmpEvent>, QmpError> {
        self.reader.get_ref().set_read_timeout(Some(wait))?;
        loop {
            let Some(message) = self.read_message()? else {
                return Ok(None);
            };
            if let Some(name) = message.get("event").and_then(Value::as_str) {
                return Ok(Some(QmpEvent {
                    name: name.to_string(),
                    data: message.get("data").cloned().unwrap_or(Value::Null),
                }));
            }
        }
    }

    /// Another handle on the connection's socket (to shut it down from another thread).
    pub fn socket(&self) -> io::Result<UnixStream> {
        self.writer.try_clone()
    }

    /// One message; `None` when the read timed out (a partial message is kept for later).
    fn read_message(&mut self) -> Result<Option<Value>, QmpError> {
        loop {
            match self.reader.read_until(b'\n', &mut self.partial) {
                Ok(0) => {
                    return Err(QmpError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "QEMU closed the QMP connection",
                    )));
                }
                Ok(_) if self.partial.ends_with(b"\n") => {
                    let line = std::mem::take(&mut self.partial);
                    let text = String::from_utf8_lossy(&line);
                    if text.trim().is_empty() {
                        continue;
                    }
                    return serde_json::from_str(text.trim())
                        .map(Some)
                        .map_err(|_| QmpError::Protocol(text.trim().to_string()));
                }
                // End of file after a partial line: the next read reports it.
                Ok(_) => continue,
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err.into()),
            }
        }
    }
}

/// Fails unless the process at the other end of `stream` is `pid`.
pub fn check_peer(stream: &UnixStream, pid: i32) -> io::Result<()> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes one `struct ucred` into `cred`, whose size `len` gives.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(stream),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if cred.pid != pid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the socket is served by process {}, not QEMU {pid}",
                cred.pid
            ),
        ));
    }
    Ok(())
}
