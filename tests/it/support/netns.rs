//! Services of the test's own network namespace made reachable from a namespace the test
//! made (a node's "host"): [`LoopbackForwarder`] listens on the namespace's loopback at the
//! same ports as PostgreSQL and the test Ceph cluster, and passes each connection to the
//! test's loopback, so a node there uses `127.0.0.1` as every node of a real cluster uses its
//! database and Ceph addresses.
//!
//! A socket belongs to the namespace of the thread that made it: the listeners are made by a
//! thread that first joined the namespace (`setns`), the outgoing connections by threads of
//! the test's own.

use std::fs::File;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

pub struct LoopbackForwarder {
    stop: Arc<AtomicBool>,
}

impl LoopbackForwarder {
    /// Forwards `127.0.0.1:<port>` in the namespace `netns` to `127.0.0.1:<port>` here, for each
    /// port.
    pub fn start(netns: &str, ports: &[u16]) -> LoopbackForwarder {
        let stop = Arc::new(AtomicBool::new(false));
        let (accepted_tx, accepted_rx) = mpsc::channel::<(TcpStream, u16)>();
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
        let path = format!("/var/run/netns/{netns}");
        let ports = ports.to_vec();
        let stopping = stop.clone();
        std::thread::spawn(move || {
            let listeners = (|| -> io::Result<Vec<(TcpListener, u16)>> {
                let ns = File::open(&path)?;
                // SAFETY: setns on this thread only, with a namespace file it holds open.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                ports
                    .iter()
                    .map(|&port| {
                        let listener = TcpListener::bind(("127.0.0.1", port))?;
                        listener.set_nonblocking(true)?;
                        Ok((listener, port))
                    })
                    .collect()
            })();
            let listeners = match listeners {
                Ok(listeners) => {
                    let _ = ready_tx.send(Ok(()));
                    listeners
                }
                Err(err) => {
                    let _ = ready_tx.send(Err(err));
                    return;
                }
            };
            while !stopping.load(Ordering::Relaxed) {
                let mut idle = true;
                for (listener, port) in &listeners {
                    if let Ok((stream, _)) = listener.accept() {
                        idle = false;
                        let _ = stream.set_nonblocking(false);
                        if accepted_tx.send((stream, *port)).is_err() {
                            return;
                        }
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        ready_rx
            .recv()
            .unwrap()
            .unwrap_or_else(|e| panic!("listening in {netns}'s loopback: {e}"));
        // Connects out from the test's namespace (this thread's, inherited by those it starts).
        std::thread::spawn(move || {
            for (inside, port) in accepted_rx {
                std::thread::spawn(move || {
                    if let Ok(outside) = TcpStream::connect(("127.0.0.1", port)) {
                        pipe(inside, outside);
                    }
                });
            }
        });
        LoopbackForwarder { stop }
    }
}

impl Drop for LoopbackForwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies both ways until either side closes.
fn pipe(a: TcpStream, b: TcpStream) {
    let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let one = std::thread::spawn(move || copy(a, b));
    copy(b2, a2);
    let _ = one.join();
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
