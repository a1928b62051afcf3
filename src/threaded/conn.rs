//! One client connection on its own thread: blocking sockets driven by the exchange core. The thread
//! writes whatever the exchange has for either peer, then blocks reading the side the exchange needs
//! next (with the exchange's deadline as the socket timeout), reports what happened, and carries out
//! the actions that come back. After a `101` the two directions are copied by two threads.

use super::{State, lock};
use crate::balance::{Backend, Tried};
use crate::config::Config;
use crate::exchange::{Action, Actions, Close, Context, Exchange, Outgoing, Pooled, Side};
use crate::io::{fill, send};
use crate::transport::Transport;
use std::io::{self, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Free buffer blocks a connection's thread keeps for its next requests.
const FREE_BLOCKS: usize = 4;

/// What the exchange asks of the engine, from a connection's thread.
struct Engine<'a> {
    state: &'a State,
    /// The configuration as of the current request (re-read between requests).
    config: Arc<Config>,
}

impl Context for Engine<'_> {
    fn config(&self) -> &Config {
        &self.config
    }

    fn pick(&mut self, client: IpAddr, tried: Tried) -> Option<Arc<Backend>> {
        lock(&self.state.balancer).pick(client, tried)
    }

    fn draining(&self) -> bool {
        self.state.draining.load(Ordering::Relaxed)
    }

    fn count_request(&mut self) {
        self.state.total_requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// A blocking socket and the timeout last set on it (a system call saved while it stays).
struct End {
    transport: Transport<TcpStream>,
    timeout: Option<Duration>,
}

impl End {
    fn new(stream: TcpStream) -> End {
        End {
            transport: Transport::plain(stream),
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

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

struct Conn<'a> {
    engine: Engine<'a>,
    client: End,
    /// The backend connection of the current attempt, and the slot of its backend.
    backend: Option<(End, usize)>,
    exchange: Exchange,
}

/// Serves one client connection until it closes.
pub(super) fn serve(
    state: &State,
    id: u64,
    stream: TcpStream,
    addr: SocketAddr,
    idle: &AtomicBool,
) {
    crate::buffer::keep_free_blocks(FREE_BLOCKS);
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        engine: Engine {
            state,
            config: state.config(),
        },
        client: End::new(stream),
        backend: None,
        exchange: Exchange::new(id, addr, Instant::now()),
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
    if how == Close::Abort {
        conn.client.transport.set_reset_on_close();
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
            return Err(self.tunnel());
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
            fill(
                &mut side.transport,
                self.exchange.client_buffer(),
                false,
                true,
            )
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
            fill(
                &mut side.transport,
                self.exchange.backend_buffer(),
                false,
                true,
            )
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
    fn apply(&mut self, actions: Actions) -> Result<(), Close> {
        for action in actions {
            match action {
                Action::Connect { slot, addr, pooled } => self.connect(slot, addr, pooled)?,
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
            }
        }
        Ok(())
    }

    /// Gets a connection to `backend`: a pooled one if allowed and available, else a new one.
    fn connect(&mut self, slot: usize, addr: SocketAddr, pooled: Pooled) -> Result<(), Close> {
        self.release_backend(false);
        let state = self.engine.state;
        // Always checked first: unlike the event loop, this engine hears nothing from an idle pooled
        // connection, so stray bytes or a close since it was pooled are only seen by looking.
        if pooled != Pooled::Never
            && let Some(stream) = state.take_idle(slot, true)
        {
            self.backend = Some((End::new(stream), slot));
            let actions = self
                .exchange
                .on_connected(true, &mut self.engine, Instant::now());
            return self.apply(actions);
        }
        let timeout = self.engine.config.timeouts.connect;
        let actions = match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                self.backend = Some((End::new(stream), slot));
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

    /// Pools the backend connection (if `reuse`) or closes it.
    fn release_backend(&mut self, reuse: bool) {
        let Some((side, slot)) = self.backend.take() else {
            return;
        };
        if reuse {
            let stream = side.transport.into_socket();
            // Pooled sockets wait without a timeout; the next user sets its own.
            let _ = stream.set_read_timeout(None);
            let _ = stream.set_write_timeout(None);
            let max = self.engine.config.max_connections;
            self.engine.state.put_idle(slot, stream, max);
        }
    }

    /// After `101 Switching Protocols`, with everything buffered delivered: bytes both ways, one thread
    /// a direction, until both sides have closed.
    fn tunnel(&mut self) -> Close {
        let Some((backend, _)) = self.backend.take() else {
            return Close::Abort;
        };
        let mut backend = backend.transport.into_socket();
        let client = self.client.transport.socket();
        let _ = client.set_read_timeout(None);
        let _ = backend.set_read_timeout(None);
        let (Ok(mut client_read), Ok(mut backend_write)) =
            (client.try_clone(), backend.try_clone())
        else {
            return Close::Abort;
        };
        let upstream = thread::spawn(move || {
            let _ = io::copy(&mut client_read, &mut backend_write);
            let _ = backend_write.shutdown(Shutdown::Write);
        });
        let mut client_write = client;
        let _ = io::copy(&mut backend, &mut client_write);
        let _ = client_write.flush();
        let _ = client_write.shutdown(Shutdown::Write);
        let _ = upstream.join();
        Close::Graceful
    }
}
