//! Opens many keep-alive client connections through a proxy, makes one request on each, then holds them
//! idle — to measure what an idle connection costs the proxy. Prints `ready` once all are open.
//!
//! ```text
//! cargo run --release --example idle_conns -- 127.0.0.1:8080 10000 20
//! cargo run --release --example idle_conns -- 127.0.0.1:8443 10000 20 tls
//! ```
//! (address, connections, seconds to hold, and `tls` for HTTPS: any certificate is accepted, as this
//! only measures the proxy). Needs `ulimit -n` above the connection count.

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

/// A connection held open: plain, or a TLS session.
enum Held {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Held {
    fn stream(&mut self) -> &mut dyn ReadWrite {
        match self {
            Held::Plain(s) => s,
            Held::Tls(s) => s.as_mut(),
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let hold: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let tls = args.next().is_some_and(|a| a == "tls").then(client_config);
    let mut conns = Vec::with_capacity(count);
    let mut failed = 0;
    for _ in 0..count {
        match open(&addr, tls.as_ref()) {
            Some(held) => conns.push(held),
            None => failed += 1,
        }
    }
    println!("ready {} open, {failed} failed", conns.len());
    std::thread::sleep(Duration::from_secs(hold));
}

/// Connects, sends one request and reads one whole response (Content-Length framed).
fn open(addr: &str, tls: Option<&Arc<ClientConfig>>) -> Option<Held> {
    let stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut held = match tls {
        None => Held::Plain(stream),
        Some(config) => {
            let name = ServerName::try_from("localhost").ok()?;
            let session = ClientConnection::new(config.clone(), name).ok()?;
            Held::Tls(Box::new(StreamOwned::new(session, stream)))
        }
    };
    let io = held.stream();
    io.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        .ok()?;
    io.flush().ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = io.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return Some(held);
            }
        }
    }
}

/// A client that accepts any certificate (the benchmark's are self-signed): lb's own `tls_verify =
/// false` configuration.
fn client_config() -> Arc<ClientConfig> {
    lb::tls::client_config(None).expect("a TLS client configuration")
}
