//! The thread-per-connection engine (`engine = "threaded"`): blocking sockets, one thread per client
//! connection, driving the same exchange core, balancer, health hysteresis and admin API as the event
//! loop, so that the two can be measured against each other. Health checks and the admin listener run
//! on threads of their own (`health.rs`, `admin.rs`); `conn.rs` drives one connection.
//!
//! Nothing on the request path holds a lock but for the pick itself (the algorithms' shared state) and
//! the idle pool: the backends' figures are atomics, and a connection reads the configuration once per
//! request as an `Arc`.
//!
//! Differences from the event loop, by construction: a connection's thread waits on one socket at a
//! time, so a request body is relayed before the response is read (except with `Expect: 100-continue`,
//! where the backend's interim or early final answer is awaited first); and memory grows with a thread
//! stack per connection.

mod admin;
mod conn;
mod dns;
mod health;
mod tunnel;

use crate::balance::Balancer;
use crate::config::Config;
use crate::control::{Command, Control, Snapshot};
use crate::transport::Transport;
use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread;
use std::time::{Duration, Instant};

/// Stack of a connection thread: buffers live on the heap, so a small stack is plenty.
const CONNECTION_STACK: usize = 256 * 1024;

/// State shared by every thread of the engine.
struct State {
    config: RwLock<Arc<Config>>,
    /// The backend table and the algorithms' state: locked for a pick (and by reloads, probes and the
    /// admin API, off the request path).
    balancer: Mutex<Balancer>,
    /// Idle keep-alive backend connections, by backend slot.
    idle: Mutex<Vec<Vec<Transport<TcpStream>>>>,
    /// What new HTTPS connections get: certificates and settings as of the last (re)load.
    tls_server: RwLock<Option<Arc<rustls::ServerConfig>>>,
    /// The HTTPS listener's port as bound.
    https_port: Option<u16>,
    /// Open client connections: a clone of each socket (to close idle ones on drain) and whether it is
    /// idle between requests.
    clients: Mutex<HashMap<u64, (TcpStream, Arc<AtomicBool>)>>,
    next_id: AtomicU64,
    total_requests: AtomicU64,
    /// Requests per second, as f64 bits, refreshed once a second.
    per_second: AtomicU64,
    started: Instant,
    draining: AtomicBool,
    stopping: AtomicBool,
    open: AtomicUsize,
    /// Panics contained at a connection thread's boundary (`lb_internal_errors_total`).
    internal_errors: AtomicU64,
    /// TLS connections closed before their handshake finished (`lb_tls_handshake_failures_total`).
    tls_handshake_failures: AtomicU64,
    /// Per-client limits (`[limits]`).
    limits: Arc<crate::limit::Limits>,
    /// The dashboard's last ten minutes.
    history: Mutex<crate::history::History>,
    /// DNS discovery: the resolver and its sockets. A reload and a changed answer hold it while they
    /// take the balancer's lock, replace the table and publish the configuration, so that the two
    /// never interleave — the one place two locks are held, always in that order.
    discovery: Mutex<crate::discovery::Discovery>,
}

/// Locks a mutex. The engine holds two of its locks at once only for DNS discovery (the discovery lock,
/// then the balancer's): elsewhere, take what you need from one guard, drop it, then take the next.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking connection thread must not take the whole engine down with a poisoned lock.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl State {
    fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn snapshot(&self) -> Snapshot {
        let backends = lock(&self.balancer).snapshot();
        let pooled_connections = lock(&self.idle).iter().map(Vec::len).sum();
        Snapshot {
            backends,
            open_connections: self.open.load(Ordering::SeqCst),
            pooled_connections,
            registered_sockets: 0,
            timers: 0,
            internal_errors: self.internal_errors.load(Ordering::SeqCst),
            tls_handshake_failures: self.tls_handshake_failures.load(Ordering::SeqCst),
            workers: vec![crate::workers::Figures {
                requests: self.total_requests.load(Ordering::SeqCst),
                open: self.open.load(Ordering::SeqCst),
                ..Default::default()
            }],
        }
    }

    /// A pooled connection to backend `slot`, checked first when `verify`.
    fn take_idle(&self, slot: usize, verify: bool) -> Option<Transport<TcpStream>> {
        loop {
            let mut transport = lock(&self.idle).get_mut(slot).and_then(Vec::pop)?;
            if !verify || still_idle(&mut transport) {
                return Some(transport);
            }
        }
    }

    /// Keeps a backend connection for reuse. The pool is bounded by `max_connections`: it never holds
    /// more than the peak of concurrent requests.
    fn put_idle(&self, slot: usize, transport: Transport<TcpStream>, max_connections: usize) {
        let mut idle = lock(&self.idle);
        if let Some(pool) = idle.get_mut(slot)
            && pool.len() < max_connections
        {
            pool.push(transport);
        }
    }

    fn tls_server(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls_server
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn reload(&self, config: Config, listening: SocketAddr) {
        crate::reload::check(&self.config(), &config, listening);
        if let Some(tls) = &config.tls {
            // New connections get the new certificates; open ones keep the session they have.
            *self.tls_server.write().unwrap_or_else(|p| p.into_inner()) = Some(tls.server.clone());
        }
        // The discovery lock is held until the new configuration is published: a DNS answer applied
        // in between would expand the old configuration's backends over the new table.
        let mut discovery = lock(&self.discovery);
        discovery.configure(&config, Instant::now());
        let (changes, slots) = {
            let mut balancer = lock(&self.balancer);
            let resolver = Some(discovery.resolver());
            (
                crate::reload::apply(&mut balancer, &config, resolver, |_, _| {}),
                balancer.slots(),
            )
        };
        self.install_backends(&changes, slots);
        self.limits.configure(config.limits);
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        drop(discovery);
    }

    /// Closes the pooled connections of backends a reload or DNS answer removed or moved, and makes
    /// room for new slots.
    fn install_backends(&self, changes: &crate::balance::Reconfigured, slots: usize) {
        let mut idle = lock(&self.idle);
        idle.resize_with(slots, Vec::new);
        for &slot in changes.removed.iter().chain(&changes.moved) {
            idle[slot].clear();
        }
    }
}

/// True when a pooled connection is still open with nothing unexpected to read.
fn still_idle(transport: &mut Transport<TcpStream>) -> bool {
    if transport.socket().set_nonblocking(true).is_err() {
        return false;
    }
    transport.set_blocking_mode(false);
    let alive = transport.still_idle();
    transport.set_blocking_mode(true);
    alive && transport.socket().set_nonblocking(false).is_ok()
}

pub struct Threaded {
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    /// The HTTPS listener (`[tls]`).
    tls_listener: Option<TcpListener>,
    tls_addr: Option<SocketAddr>,
    admin: Option<TcpListener>,
    state: Arc<State>,
    commands: Receiver<Command>,
    control: Control,
    /// What DNS discovery's thread waits on, until `run` starts it.
    dns_poll: Option<mio::Poll>,
}

impl Threaded {
    pub fn bind(config: Config) -> io::Result<Threaded> {
        let listener = crate::listen::bind(config.listen, "listen")?;
        let local_addr = listener.local_addr()?;
        let admin = match &config.admin {
            Some(a) => {
                let admin = crate::listen::bind(a.listen, "[admin] listen")?;
                crate::admin::warn_if_exposed(admin.local_addr()?, a.token.as_deref());
                Some(admin)
            }
            None => None,
        };
        let tls_listener = match &config.tls {
            Some(tls) => Some(crate::listen::bind(tls.listen, "tls.listen")?),
            None => None,
        };
        let tls_addr = match &tls_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let tls_server = config.tls.as_ref().map(|t| t.server.clone());
        let balancer = Balancer::from_config(&config);
        let limits = Arc::new(crate::limit::Limits::new(config.limits, Instant::now()));
        let idle = (0..balancer.slots()).map(|_| Vec::new()).collect();
        let (commands_in, commands) = mpsc::channel();
        let dns_poll = mio::Poll::new()?;
        let mut discovery =
            crate::discovery::Discovery::new(&config, dns_poll.registry().try_clone()?);
        discovery.configure(&config, Instant::now());
        Ok(Threaded {
            listener: Some(listener),
            local_addr,
            tls_listener,
            tls_addr,
            admin,
            state: Arc::new(State {
                config: RwLock::new(Arc::new(config)),
                balancer: Mutex::new(balancer),
                idle: Mutex::new(idle),
                tls_server: RwLock::new(tls_server),
                https_port: tls_addr.map(|a| a.port()),
                clients: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                total_requests: AtomicU64::new(0),
                per_second: AtomicU64::new(0),
                started: Instant::now(),
                draining: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
                open: AtomicUsize::new(0),
                internal_errors: AtomicU64::new(0),
                tls_handshake_failures: AtomicU64::new(0),
                limits,
                history: Mutex::default(),
                discovery: Mutex::new(discovery),
            }),
            dns_poll: Some(dns_poll),
            commands,
            control: Control::new(commands_in, None),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The HTTPS listener's address, when `[tls]` is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// SIGTERM/SIGINT drain, SIGHUP reloads `config_path`; signals arrive on a thread of their own.
    pub fn handle_signals(&mut self, config_path: PathBuf) -> io::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        let control = self.control.clone();
        spawn_named("lb-signals", move || {
            let mut stopping = false;
            for signal in signals.forever() {
                match signal {
                    SIGHUP => {
                        log::info!("SIGHUP: reloading {}", config_path.display());
                        match Config::load(&config_path) {
                            Ok(config) => control.reload(config),
                            Err(e) => {
                                log::error!("reload failed, keeping the running configuration: {e}")
                            }
                        }
                    }
                    _ if stopping => {
                        log::warn!("second stop signal: exiting now");
                        control.shutdown();
                    }
                    _ => {
                        stopping = true;
                        control.drain();
                    }
                }
            }
        })?;
        Ok(())
    }

    /// Serves until shut down, or until a drain completes.
    pub fn run(mut self) -> io::Result<()> {
        let state = self.state.clone();
        spawn_named("lb-health", {
            let state = state.clone();
            move || health::run(&state)
        })?;
        if let Some(poll) = self.dns_poll.take() {
            let state = state.clone();
            spawn_named("lb-dns", move || dns::run(&state, poll))?;
        }
        spawn_named("lb-meter", {
            let state = state.clone();
            move || meter_loop(&state)
        })?;
        if let Some(admin) = self.admin.take() {
            let state = state.clone();
            spawn_named("lb-admin", move || admin::run(&state, admin))?;
        }
        let listener = match &self.listener {
            Some(listener) => listener.try_clone()?,
            None => return Ok(()),
        };
        let mut acceptors = vec![{
            let state = state.clone();
            spawn_named("lb-accept", move || accept_loop(&state, listener, false))?
        }];
        if let Some(tls_listener) = self.tls_listener.take() {
            let state = state.clone();
            acceptors.push(spawn_named("lb-accept-tls", move || {
                accept_loop(&state, tls_listener, true)
            })?);
        }
        let mut drain_deadline: Option<Instant> = None;
        loop {
            match self.commands.recv_timeout(Duration::from_millis(20)) {
                Ok(Command::Shutdown) => {
                    self.stop_accepting(&state, std::mem::take(&mut acceptors));
                    return Ok(());
                }
                Ok(Command::Drain) if drain_deadline.is_none() => {
                    let acceptors = std::mem::take(&mut acceptors);
                    drain_deadline = Some(self.begin_drain(&state, acceptors));
                }
                Ok(Command::Drain) => {}
                Ok(Command::Reload(config)) => state.reload(*config, self.local_addr),
                // Only event-loop workers are handed reloads.
                Ok(Command::Adopt(_)) => {}
                Ok(Command::Snapshot(reply)) => {
                    let _ = reply.send(state.snapshot());
                }
                Ok(Command::Sync(reply)) => {
                    let _ = reply.send(());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            }
            if let Some(deadline) = drain_deadline {
                let open = state.open.load(Ordering::SeqCst);
                if open == 0 {
                    log::info!("drained: every in-flight request finished");
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    log::warn!("drain deadline passed: {open} connections still open");
                    return Ok(());
                }
            }
        }
    }

    /// Stops accepting, closes idle connections, and returns when the drain period ends.
    fn begin_drain(&mut self, state: &State, acceptors: Vec<thread::JoinHandle<()>>) -> Instant {
        let drain = state.config().timeouts.drain;
        state.draining.store(true, Ordering::SeqCst);
        // The listening socket is closed before the log says so.
        self.stop_accepting(state, acceptors);
        log::info!(
            "draining: stopped accepting; {} open connections get up to {drain:?} to finish",
            state.open.load(Ordering::SeqCst)
        );
        for (stream, idle) in lock(&state.clients).values() {
            if idle.load(Ordering::SeqCst) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        Instant::now() + drain
    }

    /// Stops accepting and closes the listening sockets, so that new connections are refused. Each
    /// acceptor is blocked in accept: one connection of our own wakes it, and it returns.
    fn stop_accepting(&mut self, state: &State, acceptors: Vec<thread::JoinHandle<()>>) {
        state.stopping.store(true, Ordering::SeqCst);
        if acceptors.is_empty() {
            return;
        }
        for addr in std::iter::once(self.local_addr).chain(self.tls_addr) {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        }
        for acceptor in acceptors {
            let _ = acceptor.join();
        }
        // The acceptors' sockets are gone; closing ours closes the plain one.
        self.listener = None;
    }
}

fn spawn_named(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new().name(name.into()).spawn(f)
}

/// Accepts clients on one listener (`secure`: the HTTPS one), a thread each.
fn accept_loop(state: &Arc<State>, listener: TcpListener, secure: bool) {
    for stream in listener.incoming() {
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                log::error!("accept failed: {e}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let max = state.config().max_connections;
        if state.open.load(Ordering::SeqCst) >= max {
            log::warn!("max_connections ({max}) reached: refusing a connection");
            continue;
        }
        let Ok(addr) = stream.peer_addr() else {
            continue;
        };
        // Behind a PROXY header the client is counted once the header names it (`conn::serve`).
        let limit = match state.config().proxy_protocol {
            true => Ok(None),
            false => crate::limit::hold(&state.limits, addr.ip(), Instant::now()),
        };
        let Ok(limit) = limit else {
            log::debug!("{addr}: over [limits] connections_per_client, connection closed");
            continue;
        };
        let id = state.next_id.fetch_add(1, Ordering::SeqCst);
        let idle = Arc::new(AtomicBool::new(true));
        if let Ok(clone) = stream.try_clone() {
            lock(&state.clients).insert(id, (clone, idle.clone()));
        }
        state.open.fetch_add(1, Ordering::SeqCst);
        let worker = state.clone();
        let spawned = thread::Builder::new()
            .name("lb-conn".into())
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                let _limit = limit;
                conn::serve(&worker, id, stream, addr, secure, &idle);
                lock(&worker.clients).remove(&id);
                worker.open.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            log::error!("cannot start a connection thread: {e}");
            lock(&state.clients).remove(&id);
            state.open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn meter_loop(state: &State) {
    let mut last = (Instant::now(), 0u64);
    while !state.stopping.load(Ordering::SeqCst) || state.draining.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_secs(1));
        let now = Instant::now();
        let total = state.total_requests.load(Ordering::SeqCst);
        let rate = (total - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        state.per_second.store(rate.to_bits(), Ordering::SeqCst);
        let (errors, latency) = lock(&state.balancer).totals();
        let totals = crate::history::Totals {
            requests: total,
            errors,
            latency,
        };
        lock(&state.history).record(crate::history::unix_now(), totals);
        last = (now, total);
    }
}
