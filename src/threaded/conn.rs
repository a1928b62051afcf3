//! One client connection on its own thread: blocking sockets driven by the exchange core. The thread
//! writes whatever the exchange has for either peer, then blocks reading the side the exchange needs
//! next (with the exchange's deadline as the socket timeout), reports what happened, and carries out
//! the actions that come back. Either side may be a TLS session (its handshake runs inside the first
//! read from a client, and is part of connecting to a backend). After a `101` the thread waits on both
//! sockets at once (`tunnel.rs`).

use super::{State, lock};
use crate::balance::Tried;
use crate::config::Config;
use crate::exchange::{Action, Actions, Close, Context, Exchange, Outgoing, Pooled, Side};
use crate::io::send;
use crate::tls::TlsStream;
use crate::transport::Transport;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Free buffer blocks a connection's thread keeps for its next requests.
const FREE_BLOCKS: usize = 4;

/// What the exchange asks of the engine, from a connection's thread.
pub(super) struct Engine<'a> {
    pub(super) state: &'a State,
    /// The configuration as of the current request (re-read between requests).
    pub(super) config: Arc<Config>,
}

impl Context for Engine<'_> {
    fn config(&self) -> &Config {
        &self.config
    }

    fn pick(
        &mut self,
        pool: usize,
        client: IpAddr,
        tried: Tried,
        prefer: Option<u64>,
    ) -> crate::balance::Pick {
        lock(&self.state.balancer).pick(pool, client, tried, prefer)
    }

    fn enqueue(&mut self, pool: usize) -> Option<crate::balance::QueueSpot> {
        let size = self.config.queue.size;
        lock(&self.state.balancer).enqueue(pool, size)
    }

    fn draining(&self) -> bool {
        self.state.draining.load(Ordering::Relaxed)
    }

    fn count_request(&mut self) {
        self.state.total_requests.fetch_add(1, Ordering::Relaxed);
    }

    fn admit_request(&mut self, client: IpAddr, now: Instant) -> bool {
        self.state.limits.request(client, now).is_ok()
    }

    fn https_redirect_port(&self) -> Option<u16> {
        self.config
            .tls
            .as_ref()
            .filter(|t| t.redirect_http)
            .and(self.state.https_port)
    }
}

/// A blocking socket and the timeout last set on it (a system call saved while it stays).
pub(super) struct End {
    pub(super) transport: Transport<TcpStream>,
    timeout: Option<Duration>,
}

impl End {
    fn new(transport: Transport<TcpStream>) -> End {
        End {
            transport,
            timeout: None,
        }
    }

    /// Makes blocking calls on the socket return by `wait` at the latest. A longer timeout already set
    /// is lowered; a shorter one is kept (the caller then sees an early timeout, finds its deadline has
    /// not passed, and waits again with the timeout raised).
    fn wait_at_most(&mut self, wait: Duration) -> io::Result<()> {
        let wait = wait.max(Duration::from_millis(1));
        if self.timeout.is_none_or(|t| wait < t || t < wait / 2) {
            let socket = self.transport.socket();
            socket.set_read_timeout(Some(wait))?;
            socket.set_write_timeout(Some(wait))?;
            self.timeout = Some(wait);
        }
        Ok(())
    }
}

pub(super) fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

pub(super) struct Conn<'a> {
    pub(super) engine: Engine<'a>,
    pub(super) client: End,
    /// The backend connection of the current attempt, and the slot of its backend.
    pub(super) backend: Option<(End, usize)>,
    pub(super) exchange: Exchange,
}

/// Serves one client connection until it closes; `secure` when it came through the HTTPS listener.
pub(super) fn serve(
    state: &State,
    id: u64,
    stream: TcpStream,
    addr: SocketAddr,
    secure: bool,
    idle: &AtomicBool,
) {
    crate::buffer::keep_free_blocks(FREE_BLOCKS);
    let _ = stream.set_nodelay(true);
    let config = state.config();
    let (addr, _limit) = if config.proxy_protocol {
        let deadline = Instant::now() + config.timeouts.request_head;
        let client = match read_proxy_header(&stream, deadline) {
            // The connection's own timeouts are set by its ends from here on, from none.
            Ok(source) if stream.set_read_timeout(None).is_ok() => source.unwrap_or(addr),
            Ok(_) => return,
            Err(e) => {
                log::info!("{addr}: {e}; connection closed");
                return;
            }
        };
        match crate::limit::hold(&state.limits, client.ip(), Instant::now()) {
            Ok(limit) => (client, limit),
            Err(_) => {
                log::debug!("{client}: over [limits] connections_per_client, connection closed");
                return;
            }
        }
    } else {
        (addr, None)
    };
    let transport = if secure {
        let session = state
            .tls_server()
            .ok_or_else(|| io::Error::other("no TLS configuration"))
            .and_then(crate::tls::server_session);
        match session {
            Ok(session) => Transport::tls(TlsStream::new(session, stream, true)),
            Err(e) => {
                log::error!("cannot start a TLS session for {addr}: {e}");
                return;
            }
        }
    } else {
        Transport::plain(stream)
    };
    let mut conn = Conn {
        engine: Engine {
            state,
            config: state.config(),
        },
        client: End::new(transport),
        backend: None,
        exchange: Exchange::new(id, addr, secure, Instant::now()),
    };
    let how = match crate::fault::contain(|| conn.run(idle)) {
        Ok(how) => how,
        Err(cause) => {
            // The exchange (and with it the request's in-flight count and buffers) is dropped below;
            // locks are never held across code that can panic on input, and a poisoned one is
            // recovered by `lock`.
            state.internal_errors.fetch_add(1, Ordering::SeqCst);
            log::error!(
                "internal error on conn {id} from {addr} ({}): {cause}; closing that connection alone",
                conn.exchange.phase_name()
            );
            Close::Abort
        }
    };
    let client = &mut conn.client.transport;
    if let Some(reason) = client.unfinished_handshake() {
        state.tls_handshake_failures.fetch_add(1, Ordering::SeqCst);
        log::debug!("conn {id}: TLS handshake with {addr} failed: {reason}");
    } else if how == Close::Graceful && client.is_tls_established() {
        // close_notify: the client knows the stream ended whole.
        let _ = client.shutdown_write();
    }
    if how == Close::Abort {
        client.set_reset_on_close();
    }
    log::debug!(
        "conn {id}: closed ({how:?}) after {} requests",
        conn.exchange.requests()
    );
}

impl Conn<'_> {
    fn run(&mut self, idle: &AtomicBool) -> Close {
        loop {
            let was_idle = self.exchange.is_idle();
            idle.store(was_idle, Ordering::SeqCst);
            if was_idle && self.exchange.requests() > 0 {
                // Between requests: a reload may have changed the configuration.
                self.engine.config = self.engine.state.config();
            }
            if let Err(how) = self.step() {
                return how;
            }
        }
    }

    /// Writes what either peer is owed, or else waits for the bytes the exchange needs next.
    fn step(&mut self) -> Result<(), Close> {
        let now = Instant::now();
        let deadline = self.exchange.deadline(&self.engine.config);
        if now >= deadline {
            let actions = self.exchange.on_timeout(&mut self.engine, now);
            return self.apply(actions);
        }
        let wait = deadline - now;
        if !self.exchange.backend_output().is_empty() && self.backend.is_some() {
            return self.write_backend(wait, now);
        }
        if !self.exchange.client_output().is_empty() {
            return self.write_client(wait, now);
        }
        if self.exchange.is_tunnel() {
            return Err(super::tunnel::run(self));
        }
        let (side, look_again) = match self.exchange.blocking_read_side(now) {
            Some(choice) => choice,
            None => {
                log::debug!(
                    "conn {}: nothing to wait for ({})",
                    self.exchange.id,
                    self.exchange.phase_name()
                );
                return Err(Close::Graceful);
            }
        };
        let wait = look_again.map_or(wait, |at| wait.min(at.saturating_duration_since(now)));
        match side {
            Side::Client => self.read_client(wait),
            Side::Backend => self.read_backend(wait),
        }
    }

    fn write_backend(&mut self, wait: Duration, now: Instant) -> Result<(), Close> {
        let Some((side, _)) = self.backend.as_mut() else {
            return Ok(());
        };
        let result = side.wait_at_most(wait).and_then(|()| {
            let out: Outgoing<'_> = self.exchange.backend_output();
            send(&mut side.transport, out)
        });
        let actions = match result {
            Ok(n) => self.exchange.on_backend_sent(n, &mut self.engine, now),
            Err(e) if timed_out(&e) => return Ok(()),
            Err(e) => self
                .exchange
                .on_backend_error("write", &e, &mut self.engine, now),
        };
        self.apply(actions)
    }

    fn write_client(&mut self, wait: Duration, now: Instant) -> Result<(), Close> {
        let side = &mut self.client;
        let result = side.wait_at_most(wait).and_then(|()| {
            let out = self.exchange.client_output();
            send(&mut side.transport, out)
        });
        let actions = match result {
            Ok(n) => self.exchange.on_client_sent(n, &mut self.engine, now),
            Err(e) if timed_out(&e) => return Ok(()),
            Err(e) => self.exchange.on_client_error("write", &e),
        };
        self.apply(actions)
    }

    fn read_client(&mut self, wait: Duration) -> Result<(), Close> {
        let side = &mut self.client;
        let result = side.wait_at_most(wait).and_then(|()| {
            side.transport
                .fill(self.exchange.client_buffer(), false, true)
        });
        let now = Instant::now();
        let actions = match result {
            Ok(f) if f.bytes > 0 => self.exchange.on_client_input(&mut self.engine, now),
            Ok(f) if f.eof => self.exchange.on_client_eof(&mut self.engine, now),
            Ok(_) => return Ok(()),
            // An early wake-up (see `wait_at_most`) or the real deadline: `step` tells which.
            Err(e) if timed_out(&e) => return Ok(()),
            Err(e) => self.exchange.on_client_error("read", &e),
        };
        self.apply(actions)
    }

    fn read_backend(&mut self, wait: Duration) -> Result<(), Close> {
        let Some((side, _)) = self.backend.as_mut() else {
            return Err(Close::Abort);
        };
        let result = side.wait_at_most(wait).and_then(|()| {
            side.transport
                .fill(self.exchange.backend_buffer(), false, true)
        });
        let now = Instant::now();
        let actions = match result {
            Ok(f) if f.bytes > 0 => self.exchange.on_backend_input(&mut self.engine, now),
            Ok(f) if f.eof => self.exchange.on_backend_eof(&mut self.engine, now),
            Ok(_) => return Ok(()),
            Err(e) if timed_out(&e) => return Ok(()),
            Err(e) => self
                .exchange
                .on_backend_error("read", &e, &mut self.engine, now),
        };
        self.apply(actions)
    }

    /// Carries out what the exchange asked for. `Err` when the connection is to be closed.
    pub(super) fn apply(&mut self, actions: Actions) -> Result<(), Close> {
        for action in actions {
            match action {
                Action::Connect { pooled } => {
                    let Some(backend) = self.exchange.attempt_backend() else {
                        // The attempt ended within the same event (a malformed body was
                        // refused): there is nothing to connect for.
                        continue;
                    };
                    let (slot, addr) = (backend.slot, backend.config.addr);
                    self.connect(slot, addr, pooled)?
                }
                Action::ReleaseBackend { reuse } => self.release_backend(reuse),
                Action::ShutdownBackend => {
                    if let Some((side, _)) = self.backend.as_mut() {
                        let _ = side.transport.shutdown_write();
                    }
                }
                Action::ShutdownClient => {
                    if self.client.transport.shutdown_write().is_err() {
                        return Err(Close::Graceful);
                    }
                }
                Action::Close(how) => return Err(how),
                Action::Enqueue { pool } => self.wait_in_queue(pool)?,
            }
        }
        Ok(())
    }

    /// Waits in pool `pool`'s line, oldest first, until a backend has room for the request (it then
    /// starts) or the queue timeout ends it (503). A backend's slot frees without a signal here, so
    /// the first in line looks again every few milliseconds.
    fn wait_in_queue(&mut self, pool: usize) -> Result<(), Close> {
        const LOOK_AGAIN: Duration = Duration::from_millis(5);
        let Some(line) = lock(&self.engine.state.balancer).pool_state(pool).cloned() else {
            return Ok(());
        };
        let ticket = line.ticket();
        let result = loop {
            let now = Instant::now();
            if now >= self.exchange.deadline(&self.engine.config) {
                break self.exchange.on_timeout(&mut self.engine, now);
            }
            if ticket.wait_turn(LOOK_AGAIN) {
                let actions = self.exchange.retry_queued(&mut self.engine, Instant::now());
                if !self.exchange.is_queued() {
                    break actions;
                }
                std::thread::sleep(LOOK_AGAIN);
            }
        };
        drop(ticket);
        self.apply(result)
    }

    /// Gets a connection to `backend`: a pooled one if allowed and available, else a new one.
    fn connect(&mut self, slot: usize, addr: SocketAddr, pooled: Pooled) -> Result<(), Close> {
        self.release_backend(false);
        let state = self.engine.state;
        // Always checked first: unlike the event loop, this engine hears nothing from an idle pooled
        // connection, so stray bytes or a close since it was pooled are only seen by looking.
        if pooled != Pooled::Never
            && let Some(transport) = state.take_idle(slot, true)
        {
            self.backend = Some((End::new(transport), slot));
            let actions = self
                .exchange
                .on_connected(true, &mut self.engine, Instant::now());
            return self.apply(actions);
        }
        let timeout = self.engine.config.timeouts.connect;
        let tls = self
            .exchange
            .backend_tls()
            .map(|t| (t.client.clone(), t.server_name.clone()));
        let actions = match connect_backend(addr, timeout, tls) {
            Ok(transport) => {
                self.backend = Some((End::new(transport), slot));
                self.exchange
                    .on_connected(false, &mut self.engine, Instant::now())
            }
            Err(e) => {
                let reason = if timed_out(&e) {
                    "timed out".to_string()
                } else {
                    e.to_string()
                };
                self.exchange.on_connect_failed(
                    &reason,
                    timed_out(&e),
                    &mut self.engine,
                    Instant::now(),
                )
            }
        };
        self.apply(actions)
    }

    /// Pools the backend connection (if `reuse`, with nothing owed) or closes it.
    fn release_backend(&mut self, reuse: bool) {
        let Some((side, slot)) = self.backend.take() else {
            return;
        };
        if reuse && !side.transport.wants_flush() {
            let transport = side.transport;
            // Pooled sockets wait without a timeout; the next user sets its own.
            let _ = transport.socket().set_read_timeout(None);
            let _ = transport.socket().set_write_timeout(None);
            let max = self.engine.config.max_connections;
            self.engine.state.put_idle(slot, transport, max);
        }
    }
}

/// A new connection to a backend, within `timeout` — its TLS handshake too, for a TLS backend.
fn connect_backend(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
) -> io::Result<Transport<TcpStream>> {
    let deadline = Instant::now() + timeout;
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    let _ = stream.set_nodelay(true);
    let Some((config, name)) = tls else {
        return Ok(Transport::plain(stream));
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    stream.set_read_timeout(Some(left))?;
    stream.set_write_timeout(Some(left))?;
    let session = crate::tls::client_session(config, name)?;
    let mut transport = Transport::tls(TlsStream::new(session, stream, true));
    match transport.handshake() {
        Ok(true) => Ok(transport),
        Ok(false) => Err(io::ErrorKind::TimedOut.into()),
        Err(e) if timed_out(&e) => Err(io::ErrorKind::TimedOut.into()),
        Err(e) => Err(io::Error::other(format!("TLS handshake: {e}"))),
    }
}

/// Reads a PROXY protocol header off a blocking socket, a byte at a time so that not one byte of what
/// follows (TLS or HTTP) is taken, within `deadline`. The client it names, if any.
fn read_proxy_header(stream: &TcpStream, deadline: Instant) -> io::Result<Option<SocketAddr>> {
    use crate::proxy_protocol::{MAX_HEADER, parse};
    use std::io::Read;
    let mut seen = Vec::with_capacity(64);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no PROXY header in time",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let mut byte = [0u8];
        let read = match (&*stream).read(&mut byte) {
            // A signal landing on this thread: a read with a timeout is never restarted.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        };
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before its PROXY header",
            ));
        }
        seen.push(byte[0]);
        match parse(&seen) {
            Ok(Some(header)) => return Ok(header.source),
            Ok(None) if seen.len() < MAX_HEADER => {}
            Ok(None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "PROXY header too long",
                ));
            }
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
    }
}
