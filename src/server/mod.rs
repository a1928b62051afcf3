//! The event loop: one edge-triggered `mio::Poll` on one thread owning every socket — the listener,
//! client and backend connections and the idle backend pool — each named by a token in a `slab`. Sockets
//! are registered once for both directions; readiness bits are kept per socket and cleared only on
//! `WouldBlock` (see `conn::Readiness`). Deadlines (head, idle, connect, response, close) are timer entries
//! checked after each batch of events, and the poll sleeps exactly until the earliest one.
//!
//! Request logic is in `client.rs` (one client connection's state machine), active health checks in
//! `probe.rs`. Other threads talk to the loop only through [`Control`]: a channel plus a waker.

mod admin;
mod client;
mod probe;

use admin::AdminConn;
use client::Conn;
use probe::Prober;

use crate::balance::{Balancer, Outcome, Tried};
use crate::buffer::{Buffer, BufferPool};
use crate::config::Config;
use crate::conn::{
    Exchange, PumpError, PumpStatus, Readiness, RequestFacts, RequestLine, ResponseStage, State,
    fill, flush, pump, set_state,
};
pub use crate::control::{Command, Control, Snapshot};
use crate::fault;
use crate::http::body::{ChunkedDecoder, Relay};
use crate::http::request::{self, ForwardInfo, RequestHead};
use crate::http::response::{self, ClientBody};
use crate::http::{ErrorResponse, Framing};
use crate::timer::{Deadline, Expiry, TimerKey, TimerOwner, Timers};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const ADMIN_LISTENER: Token = Token(2);
const SIGNALS: Token = Token(3);
/// Socket tokens are slab keys shifted past the fixed tokens above.
const FIRST_SOCKET: usize = 16;

/// Size of a large buffer block: the most a connection buffer holds, and so the largest head accepted.
pub const BUFFER_SIZE: usize = 16 * 1024;
/// Size of the small blocks buffers start with: nearly every head fits, and a connection waiting on its
/// backend holds only this much.
pub const SMALL_BUFFER_SIZE: usize = 4 * 1024;
/// How long a closing client connection is drained after our last byte, so that a reset caused by its
/// unread pipelined data cannot destroy the response it has not read yet.
const LINGER: Duration = Duration::from_secs(2);
/// Pause before accepting again after accept failed for lack of resources (EMFILE and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Passes through the state machine one `drive` call may make. A connection streaming a large body can
/// progress indefinitely; past this budget it yields and is driven again after the next poll, so that one
/// busy connection cannot starve the others.
const DRIVE_BUDGET: usize = 64;
/// Timer slot for the listener's accept backoff.
const ACCEPT_TIMER: TimerKey = TimerKey {
    owner: TimerOwner::Accept,
    generation: 0,
};

/// What a socket token belongs to.
#[derive(Debug, Clone, Copy)]
enum Owner {
    Client(usize),
    Backend(usize),
    /// An idle keep-alive connection in the pool of this backend.
    Idle(usize),
    /// The health probe of this backend.
    Probe(usize),
    /// An admin API connection.
    Admin(usize),
}

struct BackendConn {
    stream: TcpStream,
    token: Token,
    index: usize,
    ready: Readiness,
    /// Our writing side was shut down (tunnel half-close).
    write_shut: bool,
}

struct IdleConn {
    stream: TcpStream,
    token: Token,
}

/// Why a connection is being removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// Orderly: everything owed was delivered.
    Graceful,
    /// Something broke mid-message: reset the client so a truncated response can never look complete.
    Abort,
}

/// Whether a `drive` call left work behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    /// Every socket of the connection is waiting for an event.
    Done,
    /// The budget ran out while progress was still possible.
    Yielded,
}

/// Everything `drive` needs besides the connection itself.
struct Shared {
    config: Config,
    registry: Registry,
    sockets: Slab<Owner>,
    balancer: Balancer,
    idle: Vec<Vec<IdleConn>>,
    buffers: BufferPool,
    timers: Timers,
    probers: Vec<Prober>,
    meter: RequestMeter,
    /// Exchange records of finished requests, reused by the next ones. The boxes themselves are what
    /// is recycled (they move in and out of connections), hence a Vec of boxes.
    #[allow(clippy::vec_box)]
    spare_exchanges: Vec<Box<Exchange>>,
    /// SIGTERM received: every response closes its connection, nothing new is accepted.
    draining: bool,
    /// Panics caught at a connection's boundary (`lb_internal_errors_total`): bugs, each of which cost
    /// one connection instead of the process.
    internal_errors: u64,
}

/// Counts completed requests and derives requests per second once a second.
struct RequestMeter {
    started: Instant,
    total: u64,
    at_last_tick: u64,
    per_second: f64,
    last_tick: Instant,
}

const TICK_TIMER: TimerKey = TimerKey {
    owner: TimerOwner::Tick,
    generation: 0,
};
const DRAIN_TIMER: TimerKey = TimerKey {
    owner: TimerOwner::Drain,
    generation: 0,
};

pub struct Server {
    poll: Poll,
    /// Closed when draining starts.
    listener: Option<TcpListener>,
    admin_listener: Option<TcpListener>,
    admins: Slab<AdminConn>,
    signals: Option<(signal_hook_mio::v1_0::Signals, PathBuf)>,
    /// Set by SIGTERM: when the drain period ends.
    drain_deadline: Option<Instant>,
    local_addr: SocketAddr,
    conns: Slab<Conn>,
    shared: Shared,
    next_id: u64,
    /// The listener has reported readiness that `accept` has not yet drained.
    listener_ready: bool,
    accept_paused: bool,
    /// Connections that used up their drive budget with work left: (slab key, id).
    yielded: Vec<(usize, u64)>,
    commands: Receiver<Command>,
    control: Control,
}

impl Server {
    /// Binds the listener and prepares the loop; nothing is served until [`Server::run`].
    pub fn bind(config: Config) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listener = crate::listen::bind_nonblocking(config.listen, "listen")?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let admin_listener = match &config.admin {
            Some(admin) => {
                let mut admin_listener =
                    crate::listen::bind_nonblocking(admin.listen, "[admin] listen")?;
                poll.registry().register(
                    &mut admin_listener,
                    ADMIN_LISTENER,
                    Interest::READABLE,
                )?;
                crate::admin::warn_if_exposed(admin_listener.local_addr()?, admin.token.as_deref());
                Some(admin_listener)
            }
            None => None,
        };
        let registry = poll.registry().try_clone()?;
        let balancer = Balancer::from_config(&config);
        let idle = config.backends.iter().map(|_| Vec::new()).collect();
        let probers = config.backends.iter().map(|b| Prober::new(b, 0)).collect();
        let (commands_in, commands) = mpsc::channel();
        let now = Instant::now();
        // A bound on the reservation, whatever max_connections says.
        let max_connections = config.max_connections.min(1 << 16);
        Ok(Server {
            poll,
            listener: Some(listener),
            admin_listener,
            admins: Slab::new(),
            signals: None,
            drain_deadline: None,
            local_addr,
            // Reserved (not touched) up front, so that growing never copies the table or doubles it.
            conns: Slab::with_capacity(max_connections),
            shared: Shared {
                config,
                registry,
                sockets: Slab::with_capacity(max_connections * 2),
                balancer,
                idle,
                buffers: BufferPool::tiered(SMALL_BUFFER_SIZE, BUFFER_SIZE, 1024),
                timers: Timers::new(),
                probers,
                meter: RequestMeter {
                    started: now,
                    total: 0,
                    at_last_tick: 0,
                    per_second: 0.0,
                    last_tick: now,
                },
                spare_exchanges: Vec::new(),
                draining: false,
                internal_errors: 0,
            },
            next_id: 1,
            listener_ready: false,
            accept_paused: false,
            yielded: Vec::new(),
            commands,
            control: Control::new(commands_in, Some(waker)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// The admin listener's address, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Handles SIGTERM/SIGINT (drain, then return from `run`) and SIGHUP (reload `config_path`) inside
    /// the loop. Only for the process's one server: signal dispositions are process-wide.
    pub fn handle_signals(&mut self, config_path: PathBuf) -> io::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook_mio::v1_0::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some((signals, config_path));
        Ok(())
    }

    fn on_signals(&mut self) {
        let Some((signals, path)) = self.signals.as_mut() else {
            return;
        };
        let received: Vec<i32> = signals.pending().collect();
        let path = path.clone();
        for signal in received {
            match signal {
                signal_hook::consts::SIGHUP => {
                    log::info!("SIGHUP: reloading {}", path.display());
                    match Config::load(&path) {
                        Ok(config) => self.reload(config),
                        Err(e) => {
                            log::error!("reload failed, keeping the running configuration: {e}")
                        }
                    }
                }
                _ if self.drain_deadline.is_some() => {
                    log::warn!(
                        "second stop signal: exiting now with {} open connections",
                        self.conns.len()
                    );
                    self.drain_deadline = Some(Instant::now());
                }
                _ => self.begin_drain(),
            }
        }
    }

    /// Stops accepting, closes idle keep-alive connections, and lets in-flight requests finish (their
    /// responses close the connection) until the drain deadline.
    fn begin_drain(&mut self) {
        if self.drain_deadline.is_some() {
            return;
        }
        let now = Instant::now();
        let deadline = now + self.shared.config.timeouts.drain;
        self.drain_deadline = Some(deadline);
        self.shared.draining = true;
        // The listening socket is closed before the log says so.
        if let Some(mut listener) = self.listener.take() {
            let _ = self.shared.registry.deregister(&mut listener);
        }
        log::info!(
            "draining: stopped accepting; {} open connections get up to {:?} to finish",
            self.conns.len(),
            self.shared.config.timeouts.drain
        );
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.is_idle())
            .map(|(key, _)| key)
            .collect();
        for key in idle {
            self.remove(key, Close::Graceful);
        }
        let mut deadline_timer = Deadline::default();
        deadline_timer.set(deadline, &mut self.shared.timers, DRAIN_TIMER);
    }

    /// Applies a new configuration without dropping a connection. Backends are matched by URL; kept
    /// ones keep their statistics, health and pooled connections.
    fn reload(&mut self, config: Config) {
        config.log_warnings();
        let old = &self.shared.config;
        if config.listen != old.listen {
            log::warn!(
                "reload: listen changed to {}; that takes a restart (still on {})",
                config.listen,
                self.local_addr
            );
        }
        if config.admin.as_ref().map(|a| a.listen) != old.admin.as_ref().map(|a| a.listen) {
            log::warn!("reload: [admin] listen changed; that takes a restart");
        }
        if config.engine != old.engine {
            log::warn!("reload: engine changed; that takes a restart");
        }
        let changes = self.shared.balancer.reconfigure(
            &config.backends,
            config.algorithm,
            config.health_check.rise,
            config.health_check.fall,
        );
        let now = Instant::now();
        let slots = self.shared.balancer.backends.len();
        while self.shared.idle.len() < slots {
            self.shared.idle.push(Vec::new());
        }
        for &slot in changes.removed.iter().chain(&changes.moved) {
            for idle in std::mem::take(&mut self.shared.idle[slot]) {
                self.shared.close_stream(idle.stream, idle.token);
            }
        }
        for &slot in &changes.removed {
            self.shared.stop_prober(slot);
        }
        self.shared.config = config;
        for &slot in changes.added.iter().chain(&changes.changed) {
            self.shared.restart_prober(slot, now);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            log::set_max_level(self.shared.config.log_level.to_filter());
        }
        let urls: Vec<&str> = self
            .shared
            .balancer
            .configured()
            .iter()
            .map(|&slot| self.shared.balancer.backends[slot].config.url.as_str())
            .collect();
        log::info!(
            "configuration reloaded: algorithm {}, {} backends ({} added, {} removed): {}",
            self.shared.config.algorithm.name(),
            urls.len(),
            changes.added.len(),
            changes.removed.len(),
            urls.join(", ")
        );
    }

    /// Runs the loop until [`Control::shutdown`] is called.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut resume = Vec::new();
        let now = Instant::now();
        self.shared.start_probers(now);
        let mut tick = Deadline::default();
        tick.set(
            now + Duration::from_secs(1),
            &mut self.shared.timers,
            TICK_TIMER,
        );
        loop {
            let timeout = if self.yielded.is_empty() {
                self.shared.timers.next_timeout(Instant::now())
            } else {
                Some(Duration::ZERO)
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                self.dispatch(event);
            }
            std::mem::swap(&mut resume, &mut self.yielded);
            for (key, id) in resume.drain(..) {
                if self.conns.get(key).is_some_and(|c| c.id == id) {
                    self.drive(key);
                }
            }
            self.run_timers();
            if self.handle_commands() {
                log::info!(
                    "event loop stopping with {} open client connections",
                    self.conns.len()
                );
                return Ok(());
            }
            if let Some(deadline) = self.drain_deadline {
                if self.conns.is_empty() {
                    log::info!("drained: every in-flight request finished");
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    log::warn!(
                        "drain deadline passed: closing {} connections still open",
                        self.conns.len()
                    );
                    return Ok(());
                }
            }
        }
    }

    /// Serves commands from other threads; true when asked to stop.
    fn handle_commands(&mut self) -> bool {
        let mut stop = false;
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Shutdown => stop = true,
                Command::Drain => self.begin_drain(),
                Command::Reload(config) => self.reload(*config),
                Command::Snapshot(reply) => {
                    let _ = reply.send(self.snapshot());
                }
            }
        }
        stop
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            backends: self.shared.balancer.snapshot(),
            open_connections: self.conns.len(),
            pooled_connections: self.shared.idle.iter().map(Vec::len).sum(),
            registered_sockets: self.shared.sockets.len(),
            timers: self.shared.timers.len(),
            internal_errors: self.shared.internal_errors,
        }
    }

    fn dispatch(&mut self, event: &Event) {
        match event.token() {
            LISTENER => {
                self.listener_ready = true;
                self.accept_clients();
            }
            WAKER => {}
            ADMIN_LISTENER => self.accept_admin(),
            SIGNALS => self.on_signals(),
            Token(t) => {
                let Some(owner) = t
                    .checked_sub(FIRST_SOCKET)
                    .and_then(|k| self.shared.sockets.get(k))
                    .copied()
                else {
                    return;
                };
                match owner {
                    Owner::Client(key) => {
                        if let Some(conn) = self.conns.get_mut(key) {
                            mark_ready(&mut conn.client_ready, event);
                            self.drive(key);
                        }
                    }
                    Owner::Backend(key) => {
                        if let Some(conn) = self.conns.get_mut(key) {
                            if let Some(backend) = conn.backend.as_mut() {
                                mark_ready(&mut backend.ready, event);
                            }
                            self.drive(key);
                        }
                    }
                    Owner::Idle(index) => self.shared.check_idle(index, Token(t)),
                    Owner::Probe(index) => {
                        let now = Instant::now();
                        let shared = &mut self.shared;
                        if let Err(cause) =
                            fault::contain(|| shared.on_probe_event(index, event, now))
                        {
                            self.shared.contain_probe_panic(index, &cause, now);
                        }
                    }
                    Owner::Admin(key) => self.on_admin_event(key, event),
                }
            }
        }
    }

    fn accept_clients(&mut self) {
        while self.listener_ready && !self.accept_paused {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            if self.conns.len() >= self.shared.config.max_connections {
                log::warn!(
                    "max_connections ({}) reached: not accepting until a connection closes",
                    self.shared.config.max_connections
                );
                self.accept_paused = true;
                return;
            }
            match listener.accept() {
                Ok((stream, addr)) => self.add_client(stream, addr),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.listener_ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS...: the pending connection stays queued; retrying at once
                    // would spin, so back off and let closing connections free resources.
                    log::error!("accept failed: {e}; pausing accept for {ACCEPT_BACKOFF:?}");
                    self.accept_paused = true;
                    let mut deadline = Deadline::default();
                    deadline.set(
                        Instant::now() + ACCEPT_BACKOFF,
                        &mut self.shared.timers,
                        ACCEPT_TIMER,
                    );
                    return;
                }
            }
        }
    }

    fn add_client(&mut self, mut stream: TcpStream, addr: SocketAddr) {
        let now = Instant::now();
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("set_nodelay on client {addr}: {e}");
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let socket_key = self.shared.sockets.insert(Owner::Client(key));
        let token = Token(socket_key + FIRST_SOCKET);
        if let Err(e) = self
            .shared
            .registry
            .register(&mut stream, token, Interest::READABLE)
        {
            log::error!("cannot register client {addr}: {e}");
            self.shared.sockets.remove(socket_key);
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        log::debug!("conn {id}: accepted {addr}");
        let conn = entry.insert(Conn {
            key,
            id,
            state: State::ReadingHead,
            state_since: now,
            last_progress: now,
            head_started: None,
            requests: 0,
            client: stream,
            client_token: token,
            client_addr: addr,
            client_ready: Readiness {
                writable: true,
                ..Readiness::default()
            },
            client_write_shut: false,
            client_in: Buffer::new(),
            to_backend: Buffer::new(),
            backend_in: Buffer::new(),
            to_client: Buffer::new(),
            backend: None,
            exchange: None,
            deadline: Deadline::default(),
        });
        conn.refresh_deadline(&mut self.shared, now);
    }

    /// Advances one connection as far as its sockets allow, then re-arms its deadline or removes it.
    fn drive(&mut self, key: usize) {
        let now = Instant::now();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let id = conn.id;
        let shared = &mut self.shared;
        let result = fault::contain(|| {
            let work = conn.drive(shared, now)?;
            conn.refresh_deadline(shared, now);
            Ok(work)
        });
        match result {
            Ok(Ok(Work::Yielded)) => self.yielded.push((key, id)),
            Ok(Ok(Work::Done)) => {}
            Ok(Err(how)) => self.remove(key, how),
            Err(cause) => self.contain_panic(key, &cause),
        }
    }

    /// The deadline of connection `key` passed: let its state decide, then drive it.
    fn expire(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let shared = &mut self.shared;
        match fault::contain(|| conn.on_timeout(shared, now)) {
            Ok(Ok(())) => self.drive(key),
            Ok(Err(how)) => self.remove(key, how),
            Err(cause) => self.contain_panic(key, &cause),
        }
    }

    fn remove(&mut self, key: usize, how: Close) {
        let mut conn = self.conns.remove(key);
        let shared = &mut self.shared;
        if let Err(cause) = fault::contain(|| conn.teardown(shared, how)) {
            self.shared.internal_errors += 1;
            log::error!(
                "internal error closing conn {} ({}): {cause}; its sockets are closed but may stay counted",
                conn.id,
                conn.client_addr
            );
        }
        self.resume_accepting();
    }

    /// A panic while working on connection `key` was caught. The bug may have left that connection
    /// half-way through a step, so it is not trusted to go on: it is torn down from its own fields —
    /// the exchange record and the backend connection say whether a request is counted in flight, its
    /// tokens and buffers are its own, and its timer entries die with its id. Other connections and the
    /// shared figures were not in the middle of anything: the loop runs one connection at a time.
    fn contain_panic(&mut self, key: usize, cause: &str) {
        self.shared.internal_errors += 1;
        if let Some(conn) = self.conns.get(key) {
            log::error!(
                "internal error on conn {} from {} in state {:?}: {cause}; closing that connection alone",
                conn.id,
                conn.client_addr,
                conn.state
            );
            self.remove(key, Close::Abort);
        }
    }

    fn resume_accepting(&mut self) {
        if self.accept_paused && self.conns.len() < self.shared.config.max_connections {
            self.accept_paused = false;
            self.accept_clients();
        }
    }

    fn run_timers(&mut self) {
        let now = Instant::now();
        while let Some((at, key)) = self.shared.timers.pop_due(now) {
            match key.owner {
                TimerOwner::Accept => {
                    if self.accept_paused && self.conns.len() < self.shared.config.max_connections {
                        self.accept_paused = false;
                        self.accept_clients();
                    }
                }
                TimerOwner::Prober(index) => {
                    let shared = &mut self.shared;
                    if let Err(cause) =
                        fault::contain(|| shared.on_prober_timer(index, key.generation, at, now))
                    {
                        self.shared.contain_probe_panic(index, &cause, now);
                    }
                }
                TimerOwner::Admin(slot) => self.on_admin_timer(slot, key.generation, at, now),
                TimerOwner::Tick => {
                    self.shared.meter.tick(now);
                    let mut tick = Deadline::default();
                    tick.set(
                        now + Duration::from_secs(1),
                        &mut self.shared.timers,
                        TICK_TIMER,
                    );
                }
                TimerOwner::Drain => {}
                TimerOwner::Conn(slot) => {
                    let Some(conn) = self.conns.get_mut(slot) else {
                        continue;
                    };
                    if conn.id == key.generation
                        && conn.deadline.on_pop(at, now, &mut self.shared.timers, key)
                            == Expiry::Fire
                    {
                        self.expire(slot, now);
                    }
                }
            }
        }
    }
}

/// Records that a write to `stream` would block: clears the bit and, the first time, asks epoll to report
/// writability as well (see `Readiness::write_interest`).
fn blocked_writing(
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

fn mark_ready(ready: &mut Readiness, event: &Event) {
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

/// True when an idle pooled connection is still open with nothing unexpected to read.
fn still_idle(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.peek(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

impl RequestMeter {
    fn tick(&mut self, now: Instant) {
        let elapsed = now.duration_since(self.last_tick).as_secs_f64();
        if elapsed > 0.0 {
            self.per_second = (self.total - self.at_last_tick) as f64 / elapsed;
        }
        self.at_last_tick = self.total;
        self.last_tick = now;
    }
}

/// Spare exchange records kept for reuse; beyond this, finished ones are freed.
const SPARE_EXCHANGES: usize = 1024;

impl Shared {
    /// A boxed exchange record, reusing a spare one: no allocation per request in steady state.
    fn new_exchange(&mut self, exchange: Exchange) -> Box<Exchange> {
        match self.spare_exchanges.pop() {
            Some(mut spare) => {
                *spare = exchange;
                spare
            }
            None => Box::new(exchange),
        }
    }

    fn recycle(&mut self, exchange: Box<Exchange>) {
        if self.spare_exchanges.len() < SPARE_EXCHANGES {
            self.spare_exchanges.push(exchange);
        }
    }

    /// Records the end of a request on backend `index` and logs a health transition it caused.
    fn finish(&mut self, index: usize, outcome: Outcome, why: &str) {
        if let Some(transition) = self.balancer.finish(index, outcome) {
            self.balancer.log_transition(index, transition, why);
        }
    }

    fn socket_token(&mut self, owner: Owner) -> Token {
        Token(self.sockets.insert(owner) + FIRST_SOCKET)
    }

    fn release_token(&mut self, token: Token) {
        self.sockets.try_remove(token.0 - FIRST_SOCKET);
    }

    fn close_stream(&mut self, mut stream: TcpStream, token: Token) {
        if let Err(e) = self.registry.deregister(&mut stream) {
            log::debug!("deregister: {e}");
        }
        self.release_token(token);
    }

    /// An event on a pooled connection: the backend closed it or sent something unsolicited.
    fn check_idle(&mut self, index: usize, token: Token) {
        let pool = &mut self.idle[index];
        let Some(pos) = pool.iter().position(|c| c.token == token) else {
            return;
        };
        if still_idle(&pool[pos].stream) {
            return;
        }
        let idle = pool.swap_remove(pos);
        log::debug!(
            "backend {}: pooled connection closed",
            self.balancer.backends[index].config.url
        );
        self.close_stream(idle.stream, idle.token);
    }

    /// Takes a live pooled connection to backend `index`, dropping dead ones found on the way.
    ///
    /// With `verify`, each candidate is first checked with a non-blocking peek. Without, the check is
    /// left to the loop: a close or stray bytes on a pooled connection arrive as an event that removes
    /// it, and the rare close that races with reuse makes the request fail before any response byte,
    /// which is then re-sent on a new connection (see `backend_failed`). That saves a system call per
    /// request, and is only chosen for requests that are safe to re-send (idempotent, no body).
    fn take_idle(&mut self, index: usize, verify: bool) -> Option<IdleConn> {
        while let Some(idle) = self.idle[index].pop() {
            if !verify || still_idle(&idle.stream) {
                return Some(idle);
            }
            self.close_stream(idle.stream, idle.token);
        }
        None
    }
}
