//! The metadata service of a VM on QEMU's user-mode network, without a process per
//! connection (QEMU's sandbox forbids them).
//!
//! QEMU forwards every TCP connection the guest opens to the metadata address to one Unix
//! socket of the VM's runtime directory (`guestfwd=tcp:ADDR:80-unix:PATH,server=on`), which
//! QEMU listens on. libslirp (4.7, QEMU 7.2) hands such a forward no connection boundaries:
//! what the guest sends on any of its connections arrives on that one stream, what is written
//! back goes to its newest connection, and libslirp never closes a forwarded connection itself
//! (the guest does, once it has read the answer's `Content-Length` bytes, or its timeout
//! passes). So the server reads requests off the stream one after the other and answers each
//! in turn, with the same rules as the older per-connection proxy
//! ([`super::metadata_proxy::forwarded_request`]): a `GET` of a metadata document goes to this
//! node's API with the VM's own secret, anything else gets `403`.
//!
//! The bound is per VM by construction: each VM has its own stream and one thread serving it,
//! one request at a time. A guest that opens many connections, or sends half a request and
//! waits, ties up only its own stream; every other VM's is served as before.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::metadata_proxy::{
    DEADLINE, Door, REQUEST_HEAD_LIMIT, connect, forwarded_request, head_end, respond,
};

/// The largest answer passed back to the guest (the documents are a few kilobytes).
const ANSWER_LIMIT: u64 = 1 << 20;
/// How often a quiet stream is looked at (for a stale partial request).
const POLL: Duration = Duration::from_secs(5);

/// How a VM's metadata is served: written by the server when it starts the VM (in the data
/// directory, where only the server reads it), read again when a restarted server takes the
/// VM back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DoorSpec {
    /// The API listener, `host:port`.
    pub service: String,
    /// The Extility document's path.
    pub path: String,
    /// The VM's metadata secret.
    pub token: String,
}

impl DoorSpec {
    pub fn load(path: &Path) -> io::Result<DoorSpec> {
        serde_json::from_slice(&std::fs::read(path)?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    fn door(&self) -> Door<'_> {
        Door {
            service: &self.service,
            path: &self.path,
            token: Some(&self.token),
        }
    }
}

/// Serves the stream until QEMU closes it (the VM ended) or the server shuts it down.
pub fn serve(mut stream: UnixStream, door: &DoorSpec) {
    let door = door.door();
    if stream.set_read_timeout(Some(POLL)).is_err()
        || stream.set_write_timeout(Some(DEADLINE)).is_err()
    {
        return;
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut pending_since = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(end) = head_end(&pending) {
            let head: Vec<u8> = pending.drain(..end).collect();
            if answer(&mut stream, &head, &door).is_err() {
                // The guest does not read its answer: drop it, and whatever it sent with it.
                pending.clear();
            }
            pending_since = Instant::now();
        }
        if pending.len() > REQUEST_HEAD_LIMIT {
            let _ = respond(&mut stream, "400 Bad Request", "an oversized request");
            pending.clear();
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if pending.is_empty() {
                    pending_since = Instant::now();
                }
                pending.extend_from_slice(&buf[..n]);
            }
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                // Half a request that never ends must not hold the next one back.
                if !pending.is_empty() && pending_since.elapsed() >= DEADLINE {
                    pending.clear();
                }
            }
            Err(_) => return,
        }
    }
}

/// Answers one request head: its document from the service, or a refusal.
fn answer(stream: &mut UnixStream, head: &[u8], door: &Door) -> io::Result<()> {
    let request = match forwarded_request(head, door) {
        Ok(request) => request,
        Err(reason) => return respond(stream, "403 Forbidden", reason),
    };
    let mut upstream = match connect(door.service) {
        Ok(upstream) => upstream,
        Err(_) => return respond(stream, "502 Bad Gateway", "the metadata service is down"),
    };
    upstream.set_read_timeout(Some(DEADLINE))?;
    upstream.set_write_timeout(Some(DEADLINE))?;
    upstream.write_all(&request)?;
    let mut answer = Vec::new();
    if (&mut upstream)
        .take(ANSWER_LIMIT)
        .read_to_end(&mut answer)
        .is_err()
        && answer.is_empty()
    {
        return respond(
            stream,
            "504 Gateway Timeout",
            "the metadata service did not answer",
        );
    }
    stream.write_all(&answer)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// Several requests on one stream, one of them refused and one cut in two, are answered
    /// in order; the service sees only the documents' requests, each with the VM's secret.
    #[test]
    fn answers_each_request_of_the_stream_in_turn() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let door = DoorSpec {
            service: listener.local_addr().unwrap().to_string(),
            path: "/metadata/v1/server.xml".into(),
            token: "own".into(),
        };
        let service = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for n in 0..2 {
                let (mut conn, _) = listener.accept().unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while head_end(&head).is_none() {
                    conn.read_exact(&mut byte).unwrap();
                    head.push(byte[0]);
                }
                seen.push(String::from_utf8(head).unwrap());
                let body = format!("DOC{n}\n");
                write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
            seen
        });
        let (mut guest, server_side) = UnixStream::pair().unwrap();
        let serving = std::thread::spawn(move || serve(server_side, &door));
        guest
            .write_all(
                b"GET /metadata/v1/server.xml HTTP/1.0\r\nX-Extility-Metadata-Token: stolen\r\n\r\n\
                  POST /api/v1/ListServers HTTP/1.0\r\n\r\nGET /metadata/v1/nocloud/user-data",
            )
            .unwrap();
        guest
            .write_all(b" HTTP/1.1\r\nHost: 10.0.2.100\r\n\r\n")
            .unwrap();
        let mut answers = String::new();
        guest
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        while answers.matches("HTTP/").count() < 3 || !answers.ends_with("DOC1\n") {
            let mut buf = [0u8; 1024];
            let n = guest.read(&mut buf).unwrap();
            assert!(n > 0, "the stream ended early: {answers}");
            answers.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        let first = answers.find("DOC0").unwrap();
        let refused = answers.find("403 Forbidden").unwrap();
        let second = answers.find("DOC1").unwrap();
        assert!(first < refused && refused < second, "{answers}");
        drop(guest);
        serving.join().unwrap();
        let seen = service.join().unwrap();
        assert!(seen[0].starts_with("GET /metadata/v1/server.xml HTTP/1.1\r\n"));
        assert!(
            seen[0].contains("x-extility-metadata-token: own\r\n"),
            "{}",
            seen[0]
        );
        assert!(!seen[0].contains("stolen"));
        assert!(seen[1].starts_with("GET /metadata/v1/nocloud/user-data HTTP/1.1\r\n"));
    }
}
