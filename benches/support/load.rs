//! A keep-alive HTTP/1.1 load generator on one `mio` thread: `conns` connections, each sending a GET and
//! waiting for the whole response before the next, for a fixed time. Records every response's latency.

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";

pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latency of every completed request, in microseconds.
    pub latencies_us: Vec<u32>,
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q` quantile (0..=1) of latency, in milliseconds.
    pub fn quantile_ms(&mut self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        self.latencies_us.sort_unstable();
        let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }
}

struct Client {
    stream: TcpStream,
    sent: usize,
    started: Instant,
    received: Vec<u8>,
    open: bool,
}

/// Runs the load against `addr` for `duration`.
pub fn run(addr: SocketAddr, conns: usize, duration: Duration) -> LoadResult {
    let mut poll = Poll::new().expect("poll");
    let mut clients = Vec::with_capacity(conns);
    for i in 0..conns {
        let mut stream = TcpStream::connect(addr).expect("connect");
        poll.registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .expect("register");
        clients.push(Client {
            stream,
            sent: 0,
            started: Instant::now(),
            received: Vec::with_capacity(256),
            open: true,
        });
    }
    let mut result = LoadResult {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::with_capacity(1 << 20),
    };
    let mut events = Events::with_capacity(4096);
    let mut buf = vec![0u8; 64 * 1024];
    let start = Instant::now();
    let deadline = start + duration;
    let mut in_flight = conns;
    while in_flight > 0 {
        let now = Instant::now();
        let wait = if now >= deadline {
            Duration::from_millis(100)
        } else {
            deadline - now
        };
        if poll.poll(&mut events, Some(wait)).is_err() {
            continue;
        }
        if events.is_empty() && Instant::now() >= deadline + Duration::from_secs(5) {
            break; // a stuck connection must not hang the benchmark
        }
        for event in events.iter() {
            let client = &mut clients[event.token().0];
            if !client.open {
                continue;
            }
            if !exchange_bytes(client, &mut buf) {
                client.open = false;
                result.errors += 1;
                in_flight -= 1;
                continue;
            }
            if let Some(len) = complete_response(&client.received) {
                client.received.drain(..len);
                let now = Instant::now();
                result.requests += 1;
                result.latencies_us.push(
                    now.duration_since(client.started)
                        .as_micros()
                        .min(u32::MAX as u128) as u32,
                );
                if now >= deadline {
                    client.open = false;
                    in_flight -= 1;
                    continue;
                }
                client.started = now;
                client.sent = 0;
                match client.stream.write(REQUEST) {
                    Ok(n) => client.sent = n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => {
                        client.open = false;
                        result.errors += 1;
                        in_flight -= 1;
                    }
                }
            }
        }
    }
    result.elapsed = start
        .elapsed()
        .min(duration.max(Duration::from_millis(1)) + Duration::from_millis(50));
    result
}

/// Writes the rest of the request and reads whatever has arrived. False when the connection failed or
/// was closed (the balancer never closes a keep-alive benchmark connection on its own).
fn exchange_bytes(client: &mut Client, buf: &mut [u8]) -> bool {
    let pending = |e: &std::io::Error| {
        e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::NotConnected
    };
    while client.sent < REQUEST.len() {
        match client.stream.write(&REQUEST[client.sent..]) {
            Ok(n) => client.sent += n,
            Err(e) if pending(&e) => break,
            Err(_) => return false,
        }
    }
    loop {
        match client.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => client.received.extend_from_slice(&buf[..n]),
            Err(e) if pending(&e) => return true,
            Err(_) => return false,
        }
    }
}

/// The length of the complete response at the start of `bytes`, if it is all there.
fn complete_response(bytes: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let length: usize = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .unwrap_or(0);
    (bytes.len() >= head + length).then_some(head + length)
}
