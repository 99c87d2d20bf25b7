//! A real FTP server (pyftpdlib, installed by scripts/test.sh) serving a folder.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct FtpServer {
    pub port: u16,
    pub root: PathBuf,
    child: Child,
}

impl FtpServer {
    /// Serves `root` to `user`/`password` on 127.0.0.1.
    pub fn start(root: &Path, user: &str, password: &str) -> FtpServer {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fetch_support/ftp_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(root)
            .args([user, password])
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
                        "the FTP server did not start (is pyftpdlib installed? scripts/test.sh installs it)"
                    );
                }
            }
        };
        std::thread::spawn(move || for _ in lines {});
        FtpServer {
            port,
            root: root.to_path_buf(),
            child,
        }
    }

    pub fn url(&self, file: &str) -> String {
        format!("ftp://127.0.0.1:{}/{file}", self.port)
    }
}

impl Drop for FtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
