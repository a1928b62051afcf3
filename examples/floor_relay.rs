//! The floor under any proxy's user time, for `benches/compare.sh` (`FLOOR=1`): a relay that makes
//! the same system calls per keep-alive request as lb does (a read from the client, a write to the
//! backend, a read from the backend, a write to the client, and its share of `epoll_wait`) and does
//! nothing else. It parses nothing: each client connection gets a backend connection of its own (the
//! backends taken in turn), and bytes go across as they come. What lb spends above this relay's user
//! time is what its HTTP work costs; what this relay spends is the price of the system calls'
//! returns to user space and of the event loop, which no proxy doing these calls avoids.
//!
//! ```text
//! cargo run --release --example floor_relay -- 9180 127.0.0.1:9101 127.0.0.1:9102
//! ```

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;

const LISTENER: Token = Token(usize::MAX);
const BUFFER: usize = 16 * 1024;

/// One client connection and its backend connection; each side's bytes not yet taken by the other.
struct Pair {
    sides: [TcpStream; 2],
    pending: [Vec<u8>; 2],
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(9180);
    let backends: Vec<SocketAddr> = args.filter_map(|a| a.parse().ok()).collect();
    if backends.is_empty() {
        eprintln!("usage: floor_relay PORT BACKEND_ADDR...");
        std::process::exit(2);
    }
    let mut listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("floor relay on http://{}", listener.local_addr()?);
    let mut pairs: slab::Slab<Pair> = slab::Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; BUFFER];
    let mut turn = 0usize;
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                while let Ok((client, _)) = listener.accept() {
                    turn += 1;
                    let backend = backends[turn % backends.len()];
                    if let Err(e) = open_pair(&poll, &mut pairs, client, backend) {
                        eprintln!("floor relay: backend {backend}: {e}");
                    }
                }
                continue;
            }
            let (key, side) = (event.token().0 / 2, event.token().0 % 2);
            let Some(pair) = pairs.get_mut(key) else {
                continue;
            };
            let readable = event.is_readable() || event.is_read_closed() || event.is_error();
            let open = flush(pair, side) && (!readable || relay(pair, side, &mut buf));
            if !open && let Some(mut pair) = pairs.try_remove(key) {
                for stream in &mut pair.sides {
                    let _ = poll.registry().deregister(stream);
                }
            }
        }
    }
}

fn open_pair(
    poll: &Poll,
    pairs: &mut slab::Slab<Pair>,
    client: TcpStream,
    backend: SocketAddr,
) -> io::Result<()> {
    // Connected before it is registered: connection setup is not what this relay measures.
    let backend = std::net::TcpStream::connect(backend)?;
    backend.set_nonblocking(true)?;
    let backend = TcpStream::from_std(backend);
    let entry = pairs.vacant_entry();
    let key = entry.key();
    let pair = entry.insert(Pair {
        sides: [client, backend],
        pending: [Vec::new(), Vec::new()],
    });
    for (side, stream) in pair.sides.iter_mut().enumerate() {
        stream.set_nodelay(true)?;
        let interest = Interest::READABLE | Interest::WRITABLE;
        poll.registry()
            .register(stream, Token(key * 2 + side), interest)?;
    }
    Ok(())
}

/// Reads what side `from` has and writes it to the other side. As lb does, a read that does not fill
/// the buffer is taken to have drained the socket (a later byte brings a new edge). False when the
/// pair is done.
fn relay(pair: &mut Pair, from: usize, buf: &mut [u8]) -> bool {
    loop {
        let n = match pair.sides[from].read(buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        let to = 1 - from;
        if pair.pending[to].is_empty() {
            match pair.sides[to].write(&buf[..n]) {
                Ok(written) => pair.pending[to].extend_from_slice(&buf[written..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    pair.pending[to].extend_from_slice(&buf[..n])
                }
                Err(_) => return false,
            }
        } else {
            pair.pending[to].extend_from_slice(&buf[..n]);
        }
        if n < buf.len() {
            return true;
        }
    }
}

/// Writes what side `to` still owes (after it became writable). False when the pair is done.
fn flush(pair: &mut Pair, to: usize) -> bool {
    while !pair.pending[to].is_empty() {
        match pair.sides[to].write(&pair.pending[to]) {
            Ok(n) => {
                pair.pending[to].drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
    true
}
