//! One client connection in the loop: its sockets, their readiness, and its exchange. `drive` turns
//! readiness into the exchange's events (bytes read, bytes written, EOF, errors, connected) and
//! carries out the actions it answers with (connect, release the backend connection, half-close,
//! close), as far as the sockets allow.

use super::pool::blocked_writing;
use super::*;
use crate::exchange::{Action, Actions, Exchange, Pooled};
use crate::io::{Filled, fill, send};
use crate::transport::Transport;

/// One side's socket in the loop.
struct End {
    transport: Transport<TcpStream>,
    token: Token,
    ready: Readiness,
}

impl End {
    fn new(stream: TcpStream, token: Token, ready: Readiness) -> End {
        End {
            transport: Transport::plain(stream),
            token,
            ready,
        }
    }

    /// Reads into `buf` as far as readiness allows, updating the readiness bits.
    fn fill(&mut self, buf: &mut crate::buffer::Buffer) -> io::Result<Filled> {
        let filled = fill(&mut self.transport, buf, self.ready.hup, false)?;
        if filled.would_block || filled.eof {
            self.ready.readable = false;
        }
        self.ready.read_closed |= filled.eof;
        Ok(filled)
    }
}

/// The connection to the backend of the current attempt.
struct BackendEnd {
    end: End,
    slot: usize,
    /// A non-blocking connect is in progress.
    connecting: bool,
}

pub(super) struct Conn {
    /// The slab key (a process cannot hold 2^32 sockets, so it fits).
    key: u32,
    /// The batch of events this connection was last queued in for its write pass.
    pub(super) batch: u32,
    client: End,
    backend: Option<BackendEnd>,
    exchange: Exchange,
    pub(super) deadline: Deadline,
}

impl Conn {
    pub(super) fn new(
        key: usize,
        id: u64,
        stream: TcpStream,
        token: Token,
        addr: SocketAddr,
        now: Instant,
    ) -> Conn {
        let ready = Readiness {
            writable: true,
            ..Readiness::default()
        };
        Conn {
            key: key as u32,
            batch: 0,
            client: End::new(stream, token, ready),
            backend: None,
            exchange: Exchange::new(id, addr, now),
            deadline: Deadline::default(),
        }
    }

    pub(super) fn id(&self) -> u64 {
        self.exchange.id
    }

    pub(super) fn client_addr(&self) -> SocketAddr {
        self.exchange.client_addr()
    }

    pub(super) fn phase_name(&self) -> &'static str {
        self.exchange.phase_name()
    }

    pub(super) fn is_idle(&self) -> bool {
        self.exchange.is_idle()
    }

    pub(super) fn client_event(&mut self, event: &Event) {
        mark_ready(&mut self.client.ready, event);
    }

    pub(super) fn backend_event(&mut self, event: &Event) {
        if let Some(backend) = self.backend.as_mut() {
            mark_ready(&mut backend.end.ready, event);
        }
    }

    /// Arms the timer for the exchange's current deadline.
    pub(super) fn refresh_deadline(&mut self, sh: &mut Shared) {
        let at = self.exchange.deadline(&sh.upstream.config);
        if self.deadline.due() != Some(at) {
            let key = TimerKey {
                owner: TimerOwner::Conn(self.key as usize),
                generation: self.id(),
            };
            self.deadline.set(at, &mut sh.timers, key);
        }
    }

    /// Moves bytes as far as the sockets allow, within the drive budget; in the read pass of a batch
    /// (see the module's notes) it only reads and lets the exchange act on what arrived.
    pub(super) fn drive(
        &mut self,
        sh: &mut Shared,
        pass: Pass,
        now: Instant,
    ) -> Result<Work, Close> {
        let mut work = Work::Yielded;
        for _ in 0..DRIVE_BUDGET {
            let progressed = match pass {
                Pass::Reads => self.read_client(sh, now)? | self.read_backend(sh, now)?,
                Pass::Full => {
                    self.read_client(sh, now)?
                        | self.read_backend(sh, now)?
                        | self.write_backend(sh, now)?
                        | self.write_client(sh, now)?
                }
            };
            if !progressed {
                work = Work::Done;
                break;
            }
        }
        self.exchange.release_idle_buffers();
        Ok(work)
    }

    pub(super) fn on_timeout(&mut self, sh: &mut Shared, now: Instant) -> Result<(), Close> {
        let actions = self.exchange.on_timeout(&mut sh.upstream, now);
        self.apply(actions, sh, now)
    }

    fn read_client(&mut self, sh: &mut Shared, now: Instant) -> Result<bool, Close> {
        if !self.client.ready.readable || !self.exchange.wants_client_input() {
            return Ok(false);
        }
        let filled = match self.client.fill(self.exchange.client_buffer()) {
            Ok(filled) => filled,
            Err(e) => {
                let actions = self.exchange.on_client_error("read", &e);
                return self.apply(actions, sh, now).map(|()| true);
            }
        };
        if filled.bytes > 0 {
            let actions = self.exchange.on_client_input(&mut sh.upstream, now);
            self.apply(actions, sh, now)?;
        }
        if filled.eof {
            let actions = self.exchange.on_client_eof(&mut sh.upstream, now);
            self.apply(actions, sh, now)?;
        }
        Ok(filled.bytes > 0 || filled.eof)
    }

    fn read_backend(&mut self, sh: &mut Shared, now: Instant) -> Result<bool, Close> {
        let Some(backend) = self.backend.as_mut() else {
            return Ok(false);
        };
        if backend.connecting {
            return self.check_connect(sh, now);
        }
        if !backend.end.ready.readable || !self.exchange.wants_backend_input() {
            return Ok(false);
        }
        let filled = match backend.end.fill(self.exchange.backend_buffer()) {
            Ok(filled) => filled,
            Err(e) => {
                let actions = self
                    .exchange
                    .on_backend_error("read", &e, &mut sh.upstream, now);
                return self.apply(actions, sh, now).map(|()| true);
            }
        };
        if filled.bytes > 0 {
            let actions = self.exchange.on_backend_input(&mut sh.upstream, now);
            self.apply(actions, sh, now)?;
        }
        if filled.eof {
            let actions = self.exchange.on_backend_eof(&mut sh.upstream, now);
            self.apply(actions, sh, now)?;
        }
        Ok(filled.bytes > 0 || filled.eof)
    }

    fn write_backend(&mut self, sh: &mut Shared, now: Instant) -> Result<bool, Close> {
        let mut progressed = false;
        loop {
            let Some(backend) = self.backend.as_mut() else {
                return Ok(progressed);
            };
            if backend.connecting || !backend.end.ready.writable {
                return Ok(progressed);
            }
            let out = self.exchange.backend_output();
            if out.is_empty() {
                return Ok(progressed);
            }
            let actions = match send(&mut backend.end.transport, out) {
                Ok(n) => self.exchange.on_backend_sent(n, &mut sh.upstream, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let end = &mut backend.end;
                    let stream = end.transport.socket_mut();
                    blocked_writing(&sh.registry, stream, end.token, &mut end.ready);
                    return Ok(progressed);
                }
                Err(e) => self
                    .exchange
                    .on_backend_error("write", &e, &mut sh.upstream, now),
            };
            progressed = true;
            self.apply(actions, sh, now)?;
        }
    }

    fn write_client(&mut self, sh: &mut Shared, now: Instant) -> Result<bool, Close> {
        let mut progressed = false;
        while self.client.ready.writable {
            let out = self.exchange.client_output();
            if out.is_empty() {
                break;
            }
            let actions = match send(&mut self.client.transport, out) {
                Ok(n) => self.exchange.on_client_sent(n, &mut sh.upstream, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let end = &mut self.client;
                    let stream = end.transport.socket_mut();
                    blocked_writing(&sh.registry, stream, end.token, &mut end.ready);
                    break;
                }
                Err(e) => self.exchange.on_client_error("write", &e),
            };
            progressed = true;
            self.apply(actions, sh, now)?;
        }
        Ok(progressed)
    }

    /// A non-blocking connect reported readiness: established, or failed.
    fn check_connect(&mut self, sh: &mut Shared, now: Instant) -> Result<bool, Close> {
        let Some(backend) = self.backend.as_mut() else {
            return Ok(false);
        };
        let ready = &mut backend.end.ready;
        if !ready.writable && !ready.readable {
            return Ok(false);
        }
        let stream = backend.end.transport.socket_mut();
        let failure = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    ready.writable = false;
                    ready.readable = false;
                    return Ok(false);
                }
                Err(e) => Some(e),
            },
        };
        let actions = match failure {
            None => {
                // Connected: from now on only reads are watched until a write would block.
                if let Err(e) =
                    sh.registry
                        .reregister(stream, backend.end.token, Interest::READABLE)
                {
                    log::debug!("reregister backend connection: {e}");
                }
                ready.write_interest = false;
                ready.writable = true;
                backend.connecting = false;
                self.exchange.on_connected(false, &mut sh.upstream, now)
            }
            Some(e) => {
                self.exchange
                    .on_connect_failed(&e.to_string(), false, &mut sh.upstream, now)
            }
        };
        self.apply(actions, sh, now)?;
        Ok(true)
    }

    /// Carries out what the exchange asked for. `Err` when the connection is to be closed.
    fn apply(&mut self, actions: Actions, sh: &mut Shared, now: Instant) -> Result<(), Close> {
        for action in actions {
            match action {
                Action::Connect { slot, addr, pooled } => {
                    self.connect(slot, addr, pooled, sh, now)?
                }
                Action::ReleaseBackend { reuse } => self.release_backend(reuse, sh),
                Action::ShutdownBackend => {
                    if let Some(backend) = self.backend.as_mut()
                        && let Err(e) = backend.end.transport.shutdown_write()
                    {
                        let actions =
                            self.exchange
                                .on_backend_error("shutdown", &e, &mut sh.upstream, now);
                        self.apply(actions, sh, now)?;
                    }
                }
                Action::ShutdownClient => {
                    if self.client.transport.shutdown_write().is_err() {
                        return Err(Close::Graceful);
                    }
                }
                Action::Close(how) => return Err(how),
            }
        }
        Ok(())
    }

    /// Gets a connection to `backend`: a pooled one if allowed and available, else a new non-blocking
    /// connect whose outcome arrives as an event.
    fn connect(
        &mut self,
        slot: usize,
        addr: SocketAddr,
        pooled: Pooled,
        sh: &mut Shared,
        now: Instant,
    ) -> Result<(), Close> {
        self.release_backend(false, sh);
        if pooled != Pooled::Never
            && let Some(idle) = sh.take_idle(slot, pooled == Pooled::Verified)
        {
            sh.set_owner(idle.token, Owner::Backend(self.key as usize));
            // A pooled socket is writable; a response will announce itself with a new edge.
            let ready = Readiness {
                writable: true,
                ..Readiness::default()
            };
            self.backend = Some(BackendEnd {
                end: End::new(idle.stream, idle.token, ready),
                slot,
                connecting: false,
            });
            let actions = self.exchange.on_connected(true, &mut sh.upstream, now);
            return self.apply(actions, sh, now);
        }
        let registered = TcpStream::connect(addr).and_then(|stream| {
            let interest = Interest::READABLE | Interest::WRITABLE;
            sh.register(stream, Owner::Backend(self.key as usize), interest)
                .ok_or_else(|| io::Error::other("cannot register the socket"))
        });
        match registered {
            Ok((stream, token)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    log::debug!("set_nodelay on backend connection: {e}");
                }
                let ready = Readiness {
                    write_interest: true,
                    ..Readiness::default()
                };
                self.backend = Some(BackendEnd {
                    end: End::new(stream, token, ready),
                    slot,
                    connecting: true,
                });
                Ok(())
            }
            Err(e) => {
                let actions =
                    self.exchange
                        .on_connect_failed(&e.to_string(), false, &mut sh.upstream, now);
                self.apply(actions, sh, now)
            }
        }
    }

    /// Pools the backend connection (if `reuse` and it is still open) or closes it.
    fn release_backend(&mut self, reuse: bool, sh: &mut Shared) {
        let Some(backend) = self.backend.take() else {
            return;
        };
        let BackendEnd { mut end, slot, .. } = backend;
        let token = end.token;
        if reuse && !end.ready.read_closed {
            let mut stream = end.transport.into_socket();
            if end.ready.write_interest
                && let Err(e) = sh
                    .registry
                    .reregister(&mut stream, token, Interest::READABLE)
            {
                log::debug!("reregister pooled connection: {e}");
            }
            sh.put_idle(slot, IdleConn { stream, token });
        } else {
            end.ready = Readiness::default();
            sh.close_stream(end.transport.into_socket(), token);
        }
    }

    /// Releases the connection's sockets; buffers and the in-flight count go with the exchange.
    pub(super) fn teardown(&mut self, sh: &mut Shared, how: Close) {
        self.release_backend(false, sh);
        if how == Close::Abort {
            self.client.transport.set_reset_on_close();
        }
        if let Err(e) = sh.registry.deregister(self.client.transport.socket_mut()) {
            log::debug!("deregister client: {e}");
        }
        sh.release_token(self.client.token);
        log::debug!(
            "conn {}: closed ({how:?}) after {} requests",
            self.id(),
            self.exchange.requests()
        );
    }
}

#[cfg(test)]
mod tests {
    /// What an idle keep-alive connection costs is mostly this struct (buffers and the request record
    /// are only held while a request is in flight): keep it small.
    #[test]
    fn an_idle_connection_stays_small() {
        let size = std::mem::size_of::<super::Conn>();
        assert!(size <= 312, "Conn grew to {size} bytes");
        assert!(std::mem::size_of::<crate::buffer::Buffer>() <= 24);
    }
}
