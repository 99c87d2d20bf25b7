//! A TCP forwarder a test can cut and mend: the server reaches PostgreSQL through it, and
//! cutting it is the database gone (its listening port closed, every connection through it
//! dropped) as a crashed database host or a killed proxy would be.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinSet};

pub struct TcpCut {
    /// Where it listens: the address the server is given.
    pub listen: SocketAddr,
    target: SocketAddr,
    /// The accept loop and every connection's copy, aborted together when cut.
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl TcpCut {
    /// Forwards a free port of 127.0.0.1 to `target`.
    pub async fn start(target: SocketAddr) -> TcpCut {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let forwarder = TcpCut {
            listen: listener.local_addr().unwrap(),
            target,
            tasks: Arc::default(),
        };
        forwarder.serve(listener);
        forwarder
    }

    fn serve(&self, listener: TcpListener) {
        let target = self.target;
        let tasks = self.tasks.clone();
        let accepting = tokio::spawn(async move {
            let mut copies = JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let handle = copies.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tasks.lock().unwrap().push(handle);
            }
        });
        self.tasks.lock().unwrap().push(accepting.abort_handle());
    }

    /// Closes the port and drops every connection through it.
    pub fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn mend(&self) {
        let listener = TcpListener::bind(self.listen).await.unwrap();
        self.serve(listener);
    }
}

impl Drop for TcpCut {
    fn drop(&mut self) {
        self.cut();
    }
}
