//! One client connection in the loop: its sockets, their readiness, and its exchange. `drive` turns
//! readiness into the exchange's events (bytes read, bytes written, EOF, errors, connected) and
//! carries out the actions it answers with (connect, release the backend connection, half-close,
//! close), as far as the sockets allow. Either side may be a TLS session: its records that the socket
//! did not take are flushed before anything new is written, and a backend session's handshake is part
//! of connecting (the exchange hears "connected" once it is done, or a failed connect with its reason).

mod end;
mod proxy_header;

use super::*;
use crate::exchange::{Action, Actions, Exchange, Pooled};
use crate::tls::TlsStream;
use crate::transport::Transport;
use end::{BackendEnd, End, Wrote};

pub(super) struct Conn {
    /// The slab key (a process cannot hold 2^32 sockets, so it fits).
    key: u32,
    /// The batch of events this connection was last queued in for its write pass.
    pub(super) batch: u32,
    client: End,
    backend: Option<BackendEnd>,
    exchange: Exchange,
    pub(super) deadline: Deadline,
    /// Counted against the client's `connections_per_client`: given back by `Server::remove`.
    pub(super) limit: Option<crate::limit::Held>,
    /// A PROXY protocol header is expected before anything else.
    pub(super) proxy_pending: bool,
}

impl Conn {
    pub(super) fn new(
        key: usize,
        id: u64,
        transport: Transport<TcpStream>,
        token: Token,
        addr: SocketAddr,
        now: Instant,
        limit: Option<crate::limit::Held>,
    ) -> Conn {
        let ready = Readiness {
            writable: true,
            ..Readiness::default()
        };
        let secure = transport.is_tls();
        Conn {
            key: key as u32,
            batch: 0,
            client: End::new(transport, token, ready),
            backend: None,
            exchange: Exchange::new(id, addr, secure, now),
            deadline: Deadline::default(),
            limit,
            proxy_pending: false,
        }
    }

    pub(super) fn id(&self) -> u64 {
        self.exchange.id
    }

    pub(super) fn is_queued(&self) -> bool {
        self.exchange.is_queued()
    }

    /// Offers the queued request a backend again.
    pub(super) fn retry_queued(&mut self, sh: &mut Shared, now: Instant) -> Result<(), Close> {
        let actions = self.exchange.retry_queued(&mut sh.upstream, now);
        self.apply(actions, sh, now)?;
        self.refresh_deadline(sh);
        Ok(())
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
        // Also after the read pass: a batch reads from hundreds of connections before it writes to
        // any, and the blocks their consumed input held are what the next ones fill (keeping them to
        // the write pass added 3.5 MiB of peak RSS at 1000 connections).
        match pass {
            Pass::Reads => self.exchange.release_idle_inputs(),
            Pass::Full => self.exchange.release_idle_buffers(),
        }
        Ok(work)
    }

    pub(super) fn on_timeout(&mut self, sh: &mut Shared, now: Instant) -> Result<(), Close> {
        let actions = self.exchange.on_timeout(&mut sh.upstream, now);
        self.apply(actions, sh, now)
    }

    // The drive loop asks each side several times per request, and most asks find nothing to do:
    // that answer is inlined, the reading itself is not.
    #[inline]
    fn read_client(&mut self, sh: &mut Shared, now: Instant) -> Result<bool, Close> {
        if !self.client.ready.readable || !self.exchange.wants_client_input() {
            return Ok(false);
        }
        self.read_client_now(sh, now)
    }

    #[inline(never)]
    fn read_client_now(&mut self, sh: &mut Shared, now: Instant) -> Result<bool, Close> {
        if self.proxy_pending && !self.read_proxy_header(sh, now)? {
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

    #[inline]
    fn read_backend(&mut self, sh: &mut Shared, now: Instant) -> Result<bool, Close> {
        match &self.backend {
            None => Ok(false),
            Some(b) if !(b.connecting || b.handshaking || b.end.ready.readable) => Ok(false),
            Some(_) => self.read_backend_now(sh, now),
        }
    }

    #[inline(never)]
    fn read_backend_now(&mut self, sh: &mut Shared, now: Instant) -> Result<bool, Close> {
        let Some(backend) = self.backend.as_mut() else {
            return Ok(false);
        };
        if backend.connecting {
            return self.check_connect(sh, now);
        }
        if backend.handshaking {
            return self.advance_handshake(sh, now);
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

    // One write per call: the drive loop comes back while a pass makes progress, so writing again
    // here would only ask the exchange for output a second time to find, most often, none.
    fn write_backend(&mut self, sh: &mut Shared, now: Instant) -> Result<bool, Close> {
        let Some(backend) = self.backend.as_mut() else {
            return Ok(false);
        };
        if !backend.ready_for_requests() {
            return Ok(false);
        }
        let actions = match backend
            .end
            .write(&sh.registry, || self.exchange.backend_output())
        {
            Wrote::Nothing => return Ok(false),
            Wrote::Bytes(n) => self.exchange.on_backend_sent(n, &mut sh.upstream, now),
            Wrote::Failed(e) => self
                .exchange
                .on_backend_error("write", &e, &mut sh.upstream, now),
        };
        self.apply(actions, sh, now)?;
        Ok(true)
    }

    fn write_client(&mut self, sh: &mut Shared, now: Instant) -> Result<bool, Close> {
        let actions = match self
            .client
            .write(&sh.registry, || self.exchange.client_output())
        {
            Wrote::Nothing => return Ok(false),
            Wrote::Bytes(n) => self.exchange.on_client_sent(n, &mut sh.upstream, now),
            Wrote::Failed(e) => self.exchange.on_client_error("write", &e),
        };
        self.apply(actions, sh, now)?;
        Ok(true)
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
                backend.connecting = false;
                if backend.end.transport.is_tls() {
                    backend.handshaking = true;
                    return self.advance_handshake(sh, now).map(|_| true);
                }
                self.connected(sh, now)
            }
            Some(e) => {
                self.exchange
                    .on_connect_failed(&e.to_string(), false, &mut sh.upstream, now)
            }
        };
        self.apply(actions, sh, now)?;
        Ok(true)
    }

    /// A backend session's handshake, as far as its socket allows; the exchange hears of the
    /// connection when it is done (a failed handshake is a failed connect, with the reason).
    fn advance_handshake(&mut self, sh: &mut Shared, now: Instant) -> Result<bool, Close> {
        let Some(backend) = self.backend.as_mut() else {
            return Ok(false);
        };
        let ready = &mut backend.end.ready;
        if !ready.writable && !ready.readable {
            return Ok(false);
        }
        let actions = match backend.end.transport.handshake() {
            Ok(false) => {
                // Both directions are watched until the handshake is over; the next event resumes it.
                ready.readable = false;
                ready.writable = false;
                return Ok(false);
            }
            Ok(true) => {
                backend.handshaking = false;
                // Records after the handshake may already wait in the socket.
                backend.end.ready.readable = true;
                self.connected(sh, now)
            }
            Err(e) => self.exchange.on_connect_failed(
                &format!("TLS handshake: {e}"),
                false,
                &mut sh.upstream,
                now,
            ),
        };
        self.apply(actions, sh, now)?;
        Ok(true)
    }

    /// The backend connection is ready for a request: from now on only reads are watched until a
    /// write would block.
    fn connected(&mut self, sh: &mut Shared, now: Instant) -> Actions {
        if let Some(backend) = self.backend.as_mut() {
            let end = &mut backend.end;
            if let Err(e) =
                sh.registry
                    .reregister(end.transport.socket_mut(), end.token, Interest::READABLE)
            {
                log::debug!("reregister backend connection: {e}");
            }
            end.ready.write_interest = false;
            end.ready.writable = true;
        }
        self.exchange.on_connected(false, &mut sh.upstream, now)
    }

    /// Carries out what the exchange asked for. `Err` when the connection is to be closed.
    fn apply(&mut self, actions: Actions, sh: &mut Shared, now: Instant) -> Result<(), Close> {
        if actions.is_empty() {
            // Many events (bytes sent, most bytes read) answer with nothing: no iterator to run.
            return Ok(());
        }
        for action in actions {
            match action {
                Action::Connect { pooled } => {
                    let Some(backend) = self.exchange.attempt_backend() else {
                        // The attempt ended within the same event (a malformed body was
                        // refused): there is nothing to connect for.
                        continue;
                    };
                    let (slot, addr) = (backend.slot, backend.config.addr);
                    self.connect(slot, addr, pooled, sh, now)?
                }
                Action::ReleaseBackend { reuse } => self.release_backend(reuse, sh),
                Action::ShutdownBackend => self.shutdown_backend(sh, now)?,
                Action::ShutdownClient => {
                    if self.client.transport.shutdown_write().is_err() {
                        return Err(Close::Graceful);
                    }
                }
                Action::Close(how) => return Err(how),
                Action::Enqueue { pool } => sh.enqueue(pool, self.key as usize, self.id()),
            }
        }
        Ok(())
    }

    /// A tunnel's client finished sending: so does lb, towards the backend.
    #[cold]
    fn shutdown_backend(&mut self, sh: &mut Shared, now: Instant) -> Result<(), Close> {
        if let Some(backend) = self.backend.as_mut()
            && let Err(e) = backend.end.transport.shutdown_write()
        {
            let actions = self
                .exchange
                .on_backend_error("shutdown", &e, &mut sh.upstream, now);
            self.apply(actions, sh, now)?;
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
                end: End::new(idle.transport, idle.token, ready),
                slot,
                connecting: false,
                handshaking: false,
            });
            let actions = self.exchange.on_connected(true, &mut sh.upstream, now);
            return self.apply(actions, sh, now);
        }
        self.open_connection(slot, addr, sh, now)
    }

    /// A new non-blocking connect to `addr` (no pooled connection would do): kept out of `apply`,
    /// where a busy backend's requests find a pooled one.
    #[cold]
    fn open_connection(
        &mut self,
        slot: usize,
        addr: SocketAddr,
        sh: &mut Shared,
        now: Instant,
    ) -> Result<(), Close> {
        // A TLS backend's session is made before the socket, so that nothing can fail once it is
        // registered.
        let session = match self.exchange.backend_tls() {
            Some(tls) => {
                crate::tls::client_session(tls.client.clone(), tls.server_name.clone()).map(Some)
            }
            None => Ok(None),
        };
        let registered = session.and_then(|session| {
            let stream = TcpStream::connect(addr)?;
            let interest = Interest::READABLE | Interest::WRITABLE;
            let (stream, token) = sh
                .register(stream, Owner::Backend(self.key as usize), interest)
                .ok_or_else(|| io::Error::other("cannot register the socket"))?;
            Ok((stream, token, session))
        });
        match registered {
            Ok((stream, token, session)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    log::debug!("set_nodelay on backend connection: {e}");
                }
                let ready = Readiness {
                    write_interest: true,
                    ..Readiness::default()
                };
                let transport = match session {
                    Some(session) => Transport::tls(TlsStream::new(session, stream, false)),
                    None => Transport::plain(stream),
                };
                self.backend = Some(BackendEnd {
                    end: End::new(transport, token, ready),
                    slot,
                    connecting: true,
                    handshaking: false,
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

    /// Pools the backend connection (if `reuse` and it is still open, with nothing owed) or closes it.
    fn release_backend(&mut self, reuse: bool, sh: &mut Shared) {
        let Some(backend) = self.backend.take() else {
            return;
        };
        let ready_for_requests = backend.ready_for_requests();
        let BackendEnd { mut end, slot, .. } = backend;
        let token = end.token;
        if reuse && ready_for_requests && !end.ready.read_closed && !end.transport.wants_flush() {
            if end.ready.write_interest
                && let Err(e) =
                    sh.registry
                        .reregister(end.transport.socket_mut(), token, Interest::READABLE)
            {
                log::debug!("reregister pooled connection: {e}");
            }
            let idle = IdleConn {
                transport: end.transport,
                token,
            };
            sh.put_idle(slot, idle);
        } else {
            sh.close_stream(end.transport.socket_mut(), token);
        }
    }

    /// Releases the connection's sockets; buffers and the in-flight count go with the exchange.
    pub(super) fn teardown(&mut self, sh: &mut Shared, how: Close) {
        self.release_backend(false, sh);
        let (id, addr) = (self.id(), self.exchange.client_addr());
        let client = &mut self.client.transport;
        if let Some(reason) = client.unfinished_handshake() {
            // Scanners and clients that give up make these: counted, logged only at debug.
            sh.upstream
                .process
                .count_tls_handshake_failure(sh.upstream.worker);
            log::debug!("conn {id}: TLS handshake with {addr} failed: {reason}");
        } else if how == Close::Graceful && client.is_tls_established() {
            // close_notify, if the socket takes it now: the client knows the stream ended whole.
            let _ = client.shutdown_write();
        }
        if how == Close::Abort {
            client.set_reset_on_close();
        }
        if let Err(e) = sh.registry.deregister(client.socket_mut()) {
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
        assert!(size <= 320, "Conn grew to {size} bytes");
        assert!(std::mem::size_of::<crate::buffer::Buffer>() <= 24);
    }
}
