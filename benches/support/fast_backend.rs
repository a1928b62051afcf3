//! A deliberately minimal, fast HTTP/1.1 backend for benchmarks: one `mio` thread per listener,
//! keep-alive, pipelining-safe, answering every bodiless request with the same small response, so that
//! a benchmark measures the proxy rather than the backend. Shared by `benches/e2e.rs` and
//! `examples/fast_backend.rs`.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::thread::JoinHandle;

pub const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!";
const LISTENER: Token = Token(usize::MAX);

struct Conn {
    stream: TcpStream,
    /// Last bytes of the previous read, so that a request end split across reads is still seen.
    tail: [u8; 3],
    pending: Vec<u8>,
}

/// Binds 127.0.0.1:`port` (0 for any free port) and serves on a new thread.
pub fn spawn(port: u16) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let mut listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let addr = listener.local_addr()?;
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let thread = std::thread::spawn(move || serve(poll, listener));
    Ok((addr, thread))
}

fn serve(mut poll: Poll, listener: TcpListener) {
    let mut conns: HashMap<usize, Conn> = HashMap::new();
    let mut next = 0usize;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if poll.poll(&mut events, None).is_err() {
            continue;
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                while let Ok((mut stream, _)) = listener.accept() {
                    let _ = stream.set_nodelay(true);
                    let token = Token(next);
                    next += 1;
                    if poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                        .is_ok()
                    {
                        conns.insert(
                            token.0,
                            Conn {
                                stream,
                                tail: [0; 3],
                                pending: Vec::new(),
                            },
                        );
                    }
                }
                continue;
            }
            let key = event.token().0;
            let Some(conn) = conns.get_mut(&key) else {
                continue;
            };
            if !handle(conn, &mut buf) {
                let _ = poll.registry().deregister(&mut conn.stream);
                conns.remove(&key);
            }
        }
    }
}

/// Reads what is there, queues one response per request end, writes. False when the connection is done.
fn handle(conn: &mut Conn, buf: &mut [u8]) -> bool {
    loop {
        match conn.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                let mut window = Vec::with_capacity(n + 3);
                window.extend_from_slice(&conn.tail);
                window.extend_from_slice(&buf[..n]);
                let requests = window.windows(4).filter(|w| *w == b"\r\n\r\n").count();
                for _ in 0..requests {
                    conn.pending.extend_from_slice(RESPONSE);
                }
                let len = window.len();
                conn.tail.copy_from_slice(&window[len - 3..]);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    while !conn.pending.is_empty() {
        match conn.stream.write(&conn.pending) {
            Ok(n) => {
                conn.pending.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}
