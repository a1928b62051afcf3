//! The loop's socket bookkeeping: which token belongs to whom, edge-triggered readiness bits, and the
//! pool of idle keep-alive backend connections.

use super::*;
use crate::transport::Transport;

/// What a socket token belongs to.
#[derive(Debug, Clone, Copy)]
pub(super) enum Owner {
    Client(usize),
    /// The backend connection of this client connection.
    Backend(usize),
    /// An idle keep-alive connection in the pool of this backend slot.
    Idle(usize),
    /// The health probe of this backend slot.
    Probe(usize),
    /// An admin API connection.
    Admin(usize),
}

/// Edge-triggered readiness: a bit is set by an event and cleared only when the socket answers
/// `WouldBlock`, so work continues while the socket can still make progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Readiness {
    pub(super) readable: bool,
    pub(super) writable: bool,
    /// The peer closed its sending side: a read returned 0. Only a read sets this; events cannot be
    /// trusted with it, since an event queued for a closed socket may arrive after its token was reused.
    pub(super) read_closed: bool,
    /// An event said the peer hung up: keep reading past a short read to see the EOF (see `io::fill`).
    pub(super) hup: bool,
    /// The socket is registered for writability too. Sockets start out registered for reading only
    /// (writable is assumed) and ask for writability the first time a write would block: with small
    /// messages that never happens, and the kernel is spared a wake-up for every acknowledgement.
    pub(super) write_interest: bool,
}

pub(super) fn mark_ready(ready: &mut Readiness, event: &Event) {
    if event.is_readable() || event.is_read_closed() || event.is_error() {
        ready.readable = true;
    }
    if event.is_read_closed() {
        ready.hup = true;
    }
    if event.is_writable() || event.is_write_closed() || event.is_error() {
        ready.writable = true;
    }
}

/// Records that a write to `stream` would block: clears the bit and, the first time, asks epoll to report
/// writability as well (see `Readiness::write_interest`).
pub(super) fn blocked_writing(
    registry: &Registry,
    stream: &mut TcpStream,
    token: Token,
    ready: &mut Readiness,
) {
    ready.writable = false;
    if !ready.write_interest {
        ready.write_interest = true;
        if let Err(e) = registry.reregister(stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            log::error!("cannot watch a socket for writability: {e}");
        }
    }
}

pub(super) struct IdleConn {
    pub(super) transport: Transport<TcpStream>,
    pub(super) token: Token,
}

impl Shared {
    /// Registers `stream` under a new token owned by `owner`; `None` (and the stream closed) if epoll
    /// refuses it.
    pub(super) fn register(
        &mut self,
        mut stream: TcpStream,
        owner: Owner,
        interest: Interest,
    ) -> Option<(TcpStream, Token)> {
        let token = self.socket_token(owner);
        match self.registry.register(&mut stream, token, interest) {
            Ok(()) => Some((stream, token)),
            Err(e) => {
                log::error!("cannot register a socket: {e}");
                self.release_token(token);
                None
            }
        }
    }

    pub(super) fn socket_token(&mut self, owner: Owner) -> Token {
        Token(self.sockets.insert(owner) + FIRST_SOCKET)
    }

    pub(super) fn release_token(&mut self, token: Token) {
        self.sockets.try_remove(token.0 - FIRST_SOCKET);
    }

    pub(super) fn set_owner(&mut self, token: Token, owner: Owner) {
        if let Some(slot) = self.sockets.get_mut(token.0 - FIRST_SOCKET) {
            *slot = owner;
        }
    }

    /// Forgets a socket about to be closed (closing is the caller's: dropping it).
    pub(super) fn close_stream(&mut self, stream: &mut TcpStream, token: Token) {
        if let Err(e) = self.registry.deregister(stream) {
            log::debug!("deregister: {e}");
        }
        self.release_token(token);
    }

    /// An event on a pooled connection: the backend closed it or sent something unsolicited.
    pub(super) fn check_idle(&mut self, slot: usize, token: Token) {
        let Some(pool) = self.idle.get_mut(slot) else {
            return;
        };
        let Some(pos) = pool.iter().position(|c| c.token == token) else {
            return;
        };
        if pool[pos].transport.still_idle() {
            return;
        }
        let mut idle = pool.swap_remove(pos);
        log::debug!("backend slot {slot}: pooled connection closed");
        self.close_stream(idle.transport.socket_mut(), idle.token);
    }

    /// Takes a live pooled connection to backend `slot`, dropping dead ones found on the way.
    ///
    /// With `verify`, each candidate is first checked with a non-blocking peek. Without, the check is
    /// left to the loop: a close or stray bytes on a pooled connection arrive as an event that removes
    /// it, and the rare close that races with reuse makes the request fail before any response byte,
    /// which is then re-sent on a new connection (see `exchange::policy`).
    pub(super) fn take_idle(&mut self, slot: usize, verify: bool) -> Option<IdleConn> {
        while let Some(mut idle) = self.idle.get_mut(slot)?.pop() {
            if !verify || idle.transport.still_idle() {
                return Some(idle);
            }
            self.close_stream(idle.transport.socket_mut(), idle.token);
        }
        None
    }

    /// Keeps a backend connection for reuse, most recently used first. The pool is bounded by
    /// `max_connections`: it never holds more than the peak of concurrent requests.
    pub(super) fn put_idle(&mut self, slot: usize, mut idle: IdleConn) {
        let max = self.upstream.config.max_connections;
        let removed = self.upstream.balancer.get(slot).is_none_or(|b| b.removed());
        let room = self.idle.get(slot).is_some_and(|pool| pool.len() < max);
        if room && !removed {
            self.set_owner(idle.token, Owner::Idle(slot));
            self.idle[slot].push(idle);
        } else {
            self.close_stream(idle.transport.socket_mut(), idle.token);
        }
    }
}
