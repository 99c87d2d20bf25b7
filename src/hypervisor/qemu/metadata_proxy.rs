//! The one door of a VM's confined user-mode network as VMs started before the sandbox had it
//! (those still running keep using it until they stop; new VMs are served by
//! [`super::metadata_stream`], which shares the request rules below).
//!
//! QEMU's user-mode network runs `extility metadata-proxy SERVICE PATH TOKEN_FILE` for each TCP
//! connection the guest opens to the metadata address (`guestfwd=tcp:ADDR:PORT-cmd:...`), with
//! that connection as its stdin, stdout and stderr. The proxy passes on one request, `GET PATH`
//! or a `GET` of a file of the NoCloud datasource beside it (`<PATH's directory>/nocloud/NAME`),
//! to this node's own API listener (SERVICE, `host:port`) and copies the answer back; any other
//! request gets `403` and no connection to the host at all. The guest therefore reaches the
//! metadata documents and nothing else of the API (no SOAP, no JSON, no logins from a loopback
//! address). The process ends with its connection, and after [`DEADLINE`] in any case.
//!
//! The request goes on with the VM's own secret, read from TOKEN_FILE (a file of the VM's
//! directory), in place of any the guest sent: cloud-init cannot send one, and a guest can
//! only ever read its own documents, as on a tenant network where its address names it. (A
//! VM started before the proxy took TOKEN_FILE passes on the guest's own header.)
//!
//! A guest may open connections faster than they end; each costs the host a process. So a VM
//! has at most [`MAX_PER_VM`] proxies at once (counted as the running proxies whose parent is
//! its QEMU process): one beyond that answers `503` and exits at once.
//!
//! Nothing may be written to stderr here: it is the guest's connection.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

/// The header the service reads a VM's secret from (`crate::api::metadata::TOKEN_HEADER`,
/// which this layer cannot name).
const TOKEN_HEADER: &str = "x-extility-metadata-token";

/// The longest request head passed on.
pub const REQUEST_HEAD_LIMIT: usize = 8 * 1024;
/// A connection lives at most this long (a guest that opens one and sends nothing included).
pub const DEADLINE: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Proxies one VM may have running at once.
pub const MAX_PER_VM: usize = 8;

/// Hop-by-hop and body headers the proxy does not pass on (it sets `Connection: close`).
const DROPPED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// `extility metadata-proxy SERVICE PATH`: serves the connection on stdin/stdout; the exit
/// status.
pub fn run(service: &str, path: &str, token_file: Option<&Path>) -> i32 {
    std::thread::spawn(|| {
        std::thread::sleep(DEADLINE);
        std::process::exit(2);
    });
    let mut guest_in = io::stdin().lock();
    let mut guest_out = io::stdout().lock();
    let parent = rustix::process::getppid().map_or(0, |pid| pid.as_raw_nonzero().get());
    if proxies_of(parent) > MAX_PER_VM {
        let _ = respond(
            &mut guest_out,
            "503 Service Unavailable",
            "too many connections",
        );
        return 1;
    }
    let token = match token_file.map(std::fs::read_to_string) {
        None => None,
        Some(Ok(token)) if token.trim().bytes().all(|b| b.is_ascii_graphic()) => {
            Some(token.trim().to_string())
        }
        Some(_) => {
            let _ = respond(
                &mut guest_out,
                "503 Service Unavailable",
                "the VM's metadata secret is gone",
            );
            return 1;
        }
    };
    let door = Door {
        service,
        path,
        token: token.as_deref(),
    };
    match proxy(&mut guest_in, &mut guest_out, &door) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// What one proxy passes on, and where.
pub struct Door<'a> {
    /// The API listener, `host:port`.
    pub service: &'a str,
    /// The Extility document's path.
    pub path: &'a str,
    /// The VM's metadata secret, sent in place of the guest's.
    pub token: Option<&'a str>,
}

/// Reads one request head from the guest, passes it to the service if it is a `GET` of a
/// metadata document, and copies the answer back.
pub fn proxy(guest_in: &mut impl Read, guest_out: &mut impl Write, door: &Door) -> io::Result<()> {
    let Some(head) = read_head(guest_in)? else {
        return Ok(());
    };
    let request = match forwarded_request(&head, door) {
        Ok(request) => request,
        Err(reason) => return respond(guest_out, "403 Forbidden", reason),
    };
    let mut upstream = match connect(door.service) {
        Ok(stream) => stream,
        Err(_) => return respond(guest_out, "502 Bad Gateway", "the metadata service is down"),
    };
    upstream.set_read_timeout(Some(DEADLINE))?;
    upstream.set_write_timeout(Some(DEADLINE))?;
    upstream.write_all(&request)?;
    io::copy(&mut upstream, guest_out)?;
    guest_out.flush()
}

/// The running metadata proxies (this one included) whose parent process is `parent`.
fn proxies_of(parent: i32) -> usize {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return 0;
    };
    processes
        .flatten()
        .filter(|entry| {
            let dir = entry.path();
            let parent_of = std::fs::read_to_string(dir.join("stat"))
                .ok()
                .and_then(|stat| parent_in_stat(&stat));
            parent_of == Some(parent)
                && std::fs::read(dir.join("cmdline")).is_ok_and(|cmdline| {
                    cmdline
                        .split(|b| *b == 0)
                        .any(|arg| arg == super::args::METADATA_PROXY_COMMAND.as_bytes())
                })
        })
        .count()
}

/// The parent pid in a `/proc/<pid>/stat` line: the second field after the command, which is
/// in parentheses and may itself hold spaces and parentheses.
fn parent_in_stat(stat: &str) -> Option<i32> {
    let (_, after_command) = stat.rsplit_once(')')?;
    after_command.split_whitespace().nth(1)?.parse().ok()
}

pub(super) fn connect(service: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in service.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(err) => last = err,
        }
    }
    Err(last)
}

/// The request head up to its empty line; `None` when the guest closed before sending one.
fn read_head(guest_in: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&head) {
            head.truncate(end);
            return Ok(Some(head));
        }
        if head.len() > REQUEST_HEAD_LIMIT {
            return Ok(Some(head));
        }
        let n = guest_in.read(&mut buf)?;
        if n == 0 {
            return Ok(if head.is_empty() { None } else { Some(head) });
        }
        head.extend_from_slice(&buf[..n]);
    }
}

/// Where the head ends (after `\r\n\r\n` or `\n\n`).
pub(super) fn head_end(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len()).find_map(|i| {
        if bytes[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if bytes[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

/// Whether `target` is one of the documents: the Extility document at `path`, or a file of
/// the NoCloud datasource beside it (one lower-case name; the service knows which exist).
fn is_document(target: &str, path: &str) -> bool {
    if target == path {
        return true;
    }
    let directory = path.rsplit_once('/').map_or("", |(dir, _)| dir);
    target
        .strip_prefix(directory)
        .and_then(|rest| rest.strip_prefix("/nocloud/"))
        .is_some_and(|name| {
            (1..=32).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
        })
}

/// The request passed to the service: a `GET` of a document with the guest's headers (its
/// secret replaced by the VM's, when the proxy has it) but one request only
/// (`Connection: close`) and no body. Anything else is refused with the reason.
pub(super) fn forwarded_request(head: &[u8], door: &Door) -> Result<Vec<u8>, &'static str> {
    if head.len() > REQUEST_HEAD_LIMIT || head_end(head).is_none() {
        return Err("an incomplete or oversized request");
    }
    let text = std::str::from_utf8(head).map_err(|_| "a request that is not text")?;
    let mut lines = text.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("a malformed request line");
    };
    if method != "GET"
        || !is_document(target, door.path)
        || !matches!(version, "HTTP/1.0" | "HTTP/1.1")
    {
        return Err("only the metadata documents are served here");
    }
    let mut out = format!("GET {target} HTTP/1.1\r\n");
    let mut host = false;
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err("a malformed header");
        };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a malformed header");
        }
        if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err("a malformed header");
        }
        let lower = name.to_ascii_lowercase();
        if lower == "content-length" && value.trim() != "0" || lower == "transfer-encoding" {
            return Err("a request with a body");
        }
        if lower == "content-length" || DROPPED_HEADERS.contains(&lower.as_str()) {
            continue;
        }
        if door.token.is_some() && (lower == TOKEN_HEADER || lower == "authorization") {
            continue;
        }
        host |= lower == "host";
        out.push_str(&format!("{name}: {}\r\n", value.trim()));
    }
    if !host {
        out.push_str("Host: metadata\r\n");
    }
    if let Some(token) = door.token {
        out.push_str(&format!("{TOKEN_HEADER}: {token}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    Ok(out.into_bytes())
}

pub(super) fn respond(guest_out: &mut impl Write, status: &str, reason: &str) -> io::Result<()> {
    let body = format!("{reason}\n");
    write!(
        guest_out,
        "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    guest_out.flush()
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    const PATH: &str = "/metadata/v1/server.xml";

    #[test]
    fn the_parent_is_read_from_stat() {
        assert_eq!(parent_in_stat("42 (qemu) S 7 42 42 0"), Some(7));
        assert_eq!(parent_in_stat("43 (a b) c)) R 9 1"), Some(9));
        assert_eq!(parent_in_stat("garbage"), None);
    }

    /// Proxies are counted per parent: three children of this process that carry the proxy's
    /// command word count, for this process and for no other.
    #[test]
    fn proxies_are_counted_per_parent() {
        let me = std::process::id() as i32;
        let before = proxies_of(me);
        let mut children: Vec<_> = (0..3)
            .map(|_| {
                std::process::Command::new("sh")
                    .args([
                        "-c",
                        "sleep 30; :",
                        super::super::args::METADATA_PROXY_COMMAND,
                    ])
                    .spawn()
                    .unwrap()
            })
            .collect();
        // The children exist once spawn has returned; their command lines are read from
        // /proc, which a loaded machine has been seen to show a moment late: wait for them.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while proxies_of(me) < before + 3 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(proxies_of(me), before + 3);
        for child in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert_eq!(proxies_of(me), before);
    }

    const OLD_DOOR: Door = Door {
        service: "127.0.0.1:1",
        path: PATH,
        token: None,
    };

    fn forwarded(head: &str) -> Result<String, &'static str> {
        forwarded_request(head.as_bytes(), &OLD_DOOR).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn the_nocloud_files_pass_with_the_vms_own_secret() {
        let door = Door {
            token: Some("own"),
            ..OLD_DOOR
        };
        let out = forwarded_request(
            b"GET /metadata/v1/nocloud/user-data HTTP/1.1\r\nHost: 10.0.2.100\r\n\
              X-Extility-Metadata-Token: stolen\r\nAuthorization: Bearer stolen\r\n\r\n",
            &door,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /metadata/v1/nocloud/user-data HTTP/1.1\r\nHost: 10.0.2.100\r\n\
             x-extility-metadata-token: own\r\nConnection: close\r\n\r\n"
        );
        for target in [
            "/metadata/v1/nocloud/",
            "/metadata/v1/nocloud/../server.xml",
            "/metadata/v1/nocloud/a/b",
            "/metadata/v1/nocloud/Meta-Data",
            "/metadata/nocloud/meta-data",
            "/metadata/v1/nocloudx/meta-data",
        ] {
            let head = format!("GET {target} HTTP/1.1\r\n\r\n");
            assert!(
                forwarded_request(head.as_bytes(), &door).is_err(),
                "{target}"
            );
        }
    }

    #[test]
    fn passes_on_one_get_of_the_document() {
        let out = forwarded(
            "GET /metadata/v1/server.xml HTTP/1.1\r\nHost: 10.0.2.100\r\n\
             X-Extility-Metadata-Token: abc\r\nConnection: keep-alive\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            out,
            "GET /metadata/v1/server.xml HTTP/1.1\r\nHost: 10.0.2.100\r\n\
             X-Extility-Metadata-Token: abc\r\nConnection: close\r\n\r\n"
        );
        let out = forwarded("GET /metadata/v1/server.xml HTTP/1.0\n\n").unwrap();
        assert!(out.contains("Host: metadata\r\n"), "{out}");
    }

    #[test]
    fn refuses_everything_else() {
        for head in [
            "POST /metadata/v1/server.xml HTTP/1.1\r\n\r\n",
            "GET /api/v1/ListServers HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET /metadata/v1/server.xml?x=1 HTTP/1.1\r\n\r\n",
            "GET /metadata/v1/../../api HTTP/1.1\r\n\r\n",
            "GET /metadata/v1/server.xml HTTP/1.1 x\r\n\r\n",
            "GET /metadata/v1/server.xml HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            "GET /metadata/v1/server.xml HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /metadata/v1/server.xml HTTP/1.1\r\nno colon\r\n\r\n",
            "GET /metadata/v1/server.xml HTTP/1.1\r\nX-A: 1\rX-B: 2\r\n\r\n",
            "GET /metadata/v1/server.xml HTTP/1.1\r\nHost: x\r\n",
            "SSH-2.0-OpenSSH_9.2\r\n",
        ] {
            assert!(forwarded(head).is_err(), "{head:?}");
        }
    }

    #[test]
    fn copies_the_answer_and_sends_nothing_upstream_for_a_refusal() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let service = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let head = read_head(&mut conn).unwrap().unwrap();
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nDOC\n")
                .unwrap();
            String::from_utf8(head).unwrap()
        });
        // A pipelined second request is never read, let alone passed on.
        let mut guest_in: &[u8] =
            b"GET /metadata/v1/server.xml HTTP/1.1\r\nHost: h\r\n\r\nGET /api HTTP/1.1\r\n\r\n";
        let mut guest_out = Vec::new();
        let door = Door {
            service: &service,
            ..OLD_DOOR
        };
        proxy(&mut guest_in, &mut guest_out, &door).unwrap();
        assert_eq!(
            String::from_utf8(guest_out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nDOC\n"
        );
        let seen = server.join().unwrap();
        assert_eq!(
            seen,
            "GET /metadata/v1/server.xml HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        );

        // Refused: answered here, and the (closed) service is never asked.
        let mut guest_in: &[u8] = b"GET /api/v1/ListServers HTTP/1.1\r\n\r\n";
        let mut guest_out = Vec::new();
        proxy(&mut guest_in, &mut guest_out, &OLD_DOOR).unwrap();
        let answer = String::from_utf8(guest_out).unwrap();
        assert!(answer.starts_with("HTTP/1.0 403 Forbidden\r\n"), "{answer}");
        // A guest that says nothing gets nothing.
        let mut guest_out = Vec::new();
        proxy(&mut &b""[..], &mut guest_out, &OLD_DOOR).unwrap();
        assert!(guest_out.is_empty());
    }
}
