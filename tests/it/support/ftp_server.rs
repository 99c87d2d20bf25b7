//! A real FTP or FTPS server (pyftpdlib, and pyOpenSSL for TLS, installed by scripts/test.sh)
//! serving a folder.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct FtpServer {
    pub port: u16,
    scheme: &'static str,
    child: Child,
}

impl FtpServer {
    /// Serves `root` to `user`/`password` on 127.0.0.1.
    pub fn start(root: &Path, user: &str, password: &str) -> FtpServer {
        Self::spawn(root, user, password, None, None)
    }

    /// The same, sending downloads at about `bytes_per_second` (a slow source).
    pub fn start_throttled(
        root: &Path,
        user: &str,
        password: &str,
        bytes_per_second: u64,
    ) -> FtpServer {
        Self::spawn(root, user, password, None, Some(bytes_per_second))
    }

    /// Serves `root` over explicit FTPS (AUTH TLS required, data protected) with the
    /// certificate and key in these PEM files.
    pub fn start_tls(
        root: &Path,
        user: &str,
        password: &str,
        cert: &Path,
        key: &Path,
    ) -> FtpServer {
        Self::spawn(root, user, password, Some((cert, key)), None)
    }

    fn spawn(
        root: &Path,
        user: &str,
        password: &str,
        tls: Option<(&Path, &Path)>,
        write_limit: Option<u64>,
    ) -> FtpServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/ftp_server.py");
        let mut command = Command::new("python3");
        command.arg(script).arg(root).args([user, password]);
        if let Some((cert, key)) = tls {
            command.arg(cert).arg(key);
        }
        if let Some(limit) = write_limit {
            command.env("FTP_WRITE_LIMIT", limit.to_string());
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting python3 (scripts/test.sh installs pyftpdlib)");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let port = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(port) = line.strip_prefix("ftp listening on ") {
                        break port.trim().parse().unwrap();
                    }
                }
                _ => {
                    let _ = child.kill();
                    panic!(
                        "the FTP server did not start (are pyftpdlib and pyOpenSSL installed? \
                         scripts/test.sh installs them)"
                    );
                }
            }
        };
        std::thread::spawn(move || for _ in lines {});
        FtpServer {
            port,
            scheme: if tls.is_some() { "ftps" } else { "ftp" },
            child,
        }
    }

    /// `ftp://127.0.0.1:PORT/file` (or `ftps://`)
    pub fn url(&self, file: &str) -> String {
        format!("{}://127.0.0.1:{}/{file}", self.scheme, self.port)
    }
}

impl Drop for FtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
