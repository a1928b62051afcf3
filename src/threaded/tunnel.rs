//! After `101 Switching Protocols` on the threaded engine: bytes both ways on the connection's own
//! thread. A thread that blocks on one socket cannot relay two directions, and a TLS session cannot be
//! split between two threads, so both sockets turn non-blocking and the thread waits on them together
//! with a `mio::Poll` of its own. What moves, when a side is shut and when the tunnel ends is the
//! exchange's tunnel stage, as on the event loop; its idle deadline bounds every wait.

use super::conn::{Conn, timed_out};
use crate::exchange::{Actions, Close};
use crate::io::{Filled, send};
use crate::transport::Transport;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Instant;

const CLIENT: Token = Token(0);
const BACKEND: Token = Token(1);

/// Edge-triggered readiness of one side: set by an event, cleared when the socket says WouldBlock.
#[derive(Debug, Clone, Copy)]
struct Ready {
    readable: bool,
    writable: bool,
    hup: bool,
}

/// Relays until the exchange closes the connection; returns how.
pub(super) fn run(conn: &mut Conn<'_>) -> Close {
    let Some((backend, _)) = conn.backend.as_mut() else {
        return Close::Abort;
    };
    let mut poll = match prepare(&mut conn.client.transport, &mut backend.transport) {
        Ok(poll) => poll,
        Err(e) => {
            log::debug!("conn {}: tunnel: {e}", conn.exchange.id);
            return Close::Abort;
        }
    };
    let mut events = Events::with_capacity(8);
    let fresh = Ready {
        readable: true,
        writable: true,
        hup: false,
    };
    let mut ready = [fresh, fresh];
    loop {
        if let Err(how) = pump(conn, &mut ready) {
            return how;
        }
        let now = Instant::now();
        let deadline = conn.exchange.deadline(&conn.engine.config);
        if now >= deadline {
            let actions = conn.exchange.on_timeout(&mut conn.engine, now);
            if let Err(how) = conn.apply(actions) {
                return how;
            }
            continue;
        }
        match poll.poll(&mut events, Some(deadline - now)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Close::Abort,
        }
        for event in events.iter() {
            let side = &mut ready[usize::from(event.token() == BACKEND)];
            side.readable |= event.is_readable() || event.is_read_closed() || event.is_error();
            side.hup |= event.is_read_closed();
            side.writable |= event.is_writable() || event.is_write_closed() || event.is_error();
        }
    }
}

/// Makes both sockets non-blocking and watched by a new poll.
fn prepare(
    client: &mut Transport<TcpStream>,
    backend: &mut Transport<TcpStream>,
) -> io::Result<Poll> {
    let poll = Poll::new()?;
    for (transport, token) in [(client, CLIENT), (backend, BACKEND)] {
        transport.socket().set_nonblocking(true)?;
        transport.set_blocking_mode(false);
        let fd = transport.socket().as_raw_fd();
        poll.registry().register(
            &mut SourceFd(&fd),
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
    }
    Ok(poll)
}

/// Moves bytes while either side makes progress. `Err` when the exchange closes the connection.
fn pump(conn: &mut Conn<'_>, ready: &mut [Ready; 2]) -> Result<(), Close> {
    loop {
        let progressed = read_client(conn, &mut ready[0])?
            | read_backend(conn, &mut ready[1])?
            | write_backend(conn, &mut ready[1])?
            | write_client(conn, &mut ready[0])?;
        if !progressed {
            return Ok(());
        }
    }
}

/// Reads what one side has, clearing its readiness when the socket is drained.
fn fill(
    transport: &mut Transport<TcpStream>,
    buf: &mut crate::buffer::Buffer,
    ready: &mut Ready,
) -> io::Result<Filled> {
    let filled = transport.fill(buf, ready.hup, false)?;
    if filled.would_block || filled.eof {
        ready.readable = false;
    }
    Ok(filled)
}

fn read_client(conn: &mut Conn<'_>, ready: &mut Ready) -> Result<bool, Close> {
    if !ready.readable || !conn.exchange.wants_client_input() {
        return Ok(false);
    }
    let filled = fill(
        &mut conn.client.transport,
        conn.exchange.client_buffer(),
        ready,
    );
    let now = Instant::now();
    match filled {
        Ok(f) => {
            if f.bytes > 0 {
                let actions = conn.exchange.on_client_input(&mut conn.engine, now);
                conn.apply(actions)?;
            }
            if f.eof {
                let actions = conn.exchange.on_client_eof(&mut conn.engine, now);
                conn.apply(actions)?;
            }
            Ok(f.bytes > 0 || f.eof)
        }
        Err(e) => {
            let actions = conn.exchange.on_client_error("read", &e);
            conn.apply(actions).map(|()| true)
        }
    }
}

fn read_backend(conn: &mut Conn<'_>, ready: &mut Ready) -> Result<bool, Close> {
    if !ready.readable || !conn.exchange.wants_backend_input() {
        return Ok(false);
    }
    let Some((backend, _)) = conn.backend.as_mut() else {
        return Ok(false);
    };
    let filled = fill(
        &mut backend.transport,
        conn.exchange.backend_buffer(),
        ready,
    );
    let now = Instant::now();
    match filled {
        Ok(f) => {
            if f.bytes > 0 {
                let actions = conn.exchange.on_backend_input(&mut conn.engine, now);
                conn.apply(actions)?;
            }
            if f.eof {
                let actions = conn.exchange.on_backend_eof(&mut conn.engine, now);
                conn.apply(actions)?;
            }
            Ok(f.bytes > 0 || f.eof)
        }
        Err(e) => {
            let actions = conn
                .exchange
                .on_backend_error("read", &e, &mut conn.engine, now);
            conn.apply(actions).map(|()| true)
        }
    }
}

/// Flushes what a session owes, then writes what the exchange has; `Ok(None)` when the socket blocks.
fn write_side(
    transport: &mut Transport<TcpStream>,
    out: crate::exchange::Outgoing<'_>,
    ready: &mut Ready,
) -> io::Result<Option<usize>> {
    if !transport.flush_pending()? {
        ready.writable = false;
        return Ok(None);
    }
    if out.is_empty() {
        return Ok(None);
    }
    match send(transport, out) {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock || timed_out(&e) => {
            ready.writable = false;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn write_backend(conn: &mut Conn<'_>, ready: &mut Ready) -> Result<bool, Close> {
    if !ready.writable {
        return Ok(false);
    }
    let Some((backend, _)) = conn.backend.as_mut() else {
        return Ok(false);
    };
    let now = Instant::now();
    let out = conn.exchange.backend_output();
    let actions: Actions = match write_side(&mut backend.transport, out, ready) {
        Ok(Some(n)) => conn.exchange.on_backend_sent(n, &mut conn.engine, now),
        Ok(None) => return Ok(false),
        Err(e) => conn
            .exchange
            .on_backend_error("write", &e, &mut conn.engine, now),
    };
    conn.apply(actions).map(|()| true)
}

fn write_client(conn: &mut Conn<'_>, ready: &mut Ready) -> Result<bool, Close> {
    if !ready.writable {
        return Ok(false);
    }
    let now = Instant::now();
    let out = conn.exchange.client_output();
    let actions = match write_side(&mut conn.client.transport, out, ready) {
        Ok(Some(n)) => conn.exchange.on_client_sent(n, &mut conn.engine, now),
        Ok(None) => return Ok(false),
        Err(e) => conn.exchange.on_client_error("write", &e),
    };
    conn.apply(actions).map(|()| true)
}
