//! A TCP proxy in front of a real server that can be switched, mid-test, into the ways a server fails on a bad
//! day: gone (nothing listens on the port), hanging (accepts, never answers), answering 500, or trickling its
//! answer at one byte per second.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forwards both ways.
    None,
    /// Nothing listens: connections are refused.
    Down,
    /// Accepts and reads, never writes.
    Hang,
    /// Answers every request with `500 Internal Server Error`.
    Error500,
    /// Forwards the request, then the answer at one byte per second.
    Slow,
}

pub struct FaultyProxy {
    pub addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    wake: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultyProxy {
    pub async fn start(upstream: SocketAddr) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let fault = Arc::new(Mutex::new(Fault::None));
        let wake = Arc::new(tokio::sync::Notify::new());
        let (f, w) = (fault.clone(), wake.clone());
        let task = tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                let current = *f.lock().unwrap();
                match (&listener, current) {
                    (Some(_), Fault::Down) => listener = None, // closes the port
                    (None, Fault::Down) => w.notified().await,
                    (None, _) => listener = Some(TcpListener::bind(addr).await.expect("rebind")),
                    (Some(l), _) => {
                        tokio::select! {
                            accepted = l.accept() => {
                                if let Ok((conn, _)) = accepted {
                                    tokio::spawn(serve(conn, upstream, current, f.clone()));
                                }
                            }
                            _ = w.notified() => {}
                        }
                    }
                }
            }
        });
        FaultyProxy {
            addr,
            fault,
            wake,
            task,
        }
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
        self.wake.notify_one();
    }
}

/// Serves one connection as `fault` says. A hanging or trickling connection ends when the fault does (the
/// server came back), as a restarted server's connections would.
async fn serve(mut conn: TcpStream, upstream: SocketAddr, fault: Fault, now: Arc<Mutex<Fault>>) {
    let lasts = move || *now.lock().unwrap() == fault;
    match fault {
        Fault::None => {
            if let Ok(mut up) = TcpStream::connect(upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
            }
        }
        Fault::Down => {}
        Fault::Hang => {
            let mut buf = [0u8; 4096];
            // Reads what comes, never answers.
            while lasts() {
                let _ = tokio::time::timeout(Duration::from_millis(200), conn.read(&mut buf)).await;
            }
        }
        Fault::Error500 => {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let body = "upstream exploded";
            let _ = conn
                .write_all(
                    format!(
                        "HTTP/1.1 500 Internal Server Error\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        }
        Fault::Slow => {
            let Ok(up) = TcpStream::connect(upstream).await else {
                return;
            };
            let (mut conn_r, mut conn_w) = conn.into_split();
            let (mut up_r, mut up_w) = up.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut conn_r, &mut up_w).await;
            });
            let mut byte = [0u8; 1];
            while lasts() && matches!(up_r.read(&mut byte).await, Ok(1)) {
                if conn_w.write_all(&byte).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
