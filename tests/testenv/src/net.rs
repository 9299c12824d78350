//! Test data and network faults: incompressible bytes of a known size, and a TCP proxy that cuts
//! downloads short.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `n` deterministic bytes that zstd cannot shrink (xorshift), so sizes on the wire are exact.
pub fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x9E3779B97F4A7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A TCP proxy on 127.0.0.1 to `upstream` that forwards everything but closes each connection
/// after `limit` bytes went from the server to the client: a download cut part-way. Returns its
/// `host:port`.
pub async fn cutting_proxy(upstream: String, limit: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy address").to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let mut sent = 0;
                let mut buf = vec![0u8; 64 << 10];
                while sent < limit {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n.min(limit - sent),
                    };
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n;
                }
                let _ = cw.shutdown().await;
            });
        }
    });
    addr
}

/// A TCP proxy on 127.0.0.1 to `upstream` that can be switched off and on: off, it cuts every
/// open connection and refuses new ones, as if the server behind it were unreachable.
pub struct Gate {
    pub addr: String,
    open: tokio::sync::watch::Sender<bool>,
}

impl Gate {
    pub async fn start(upstream: String) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gate");
        let addr = listener.local_addr().expect("gate address").to_string();
        let (open, _) = tokio::sync::watch::channel(true);
        let state = open.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut open = state.subscribe();
                if !*open.borrow_and_update() {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = open.wait_for(|o| !*o) => {}
                    }
                });
            }
        });
        Gate { addr, open }
    }

    /// Cuts every connection and refuses new ones.
    pub fn close(&self) {
        self.open.send_replace(false);
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

/// `n` deterministic floats in [-1, 1) from `seed` (xorshift): model inputs for tests and
/// benchmarks that must be the same on every run.
pub fn floats(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2654435761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 1000) as f32 / 500.0 - 1.0
        })
        .collect()
}
