//! Opens many keep-alive client connections through a proxy, makes one request on each, then holds them
//! idle — to measure what an idle connection costs the proxy. Prints `ready` once all are open.
//!
//! ```text
//! cargo run --release --example idle_conns -- 127.0.0.1:8080 10000 20
//! ```
//! (address, connections, seconds to hold). Needs `ulimit -n` above the connection count.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let hold: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let mut conns = Vec::with_capacity(count);
    let mut failed = 0;
    for _ in 0..count {
        match open(&addr) {
            Some(stream) => conns.push(stream),
            None => failed += 1,
        }
    }
    println!("ready {} open, {failed} failed", conns.len());
    std::thread::sleep(Duration::from_secs(hold));
}

/// Connects, sends one request and reads one whole response (Content-Length framed).
fn open(addr: &str) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        .ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).ok()?;
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
                return Some(stream);
            }
        }
    }
}
