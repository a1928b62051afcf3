//! The thread-per-connection engine (`engine = "threaded"`): blocking sockets, one thread per client
//! connection, the same parsing, rewriting, body relay (`conn::fill` / `conn::pump`), balancing, health
//! hysteresis, statistics and admin API as the event loop, so that the two can be measured against each
//! other. Health checks and the admin listener run on threads of their own.
//!
//! Differences from the event loop, by construction: a request body is relayed to the backend before the
//! response is read (except with `Expect: 100-continue`, where the backend's interim or early final
//! answer is awaited first), so a backend answering early without reading a large body is only noticed
//! when the body is through or the write times out; and memory grows with a thread stack per connection.

use crate::admin::{self, AdminTarget, Overview, Served};
use crate::balance::{Balancer, Outcome, Tried};
use crate::buffer::{Buffer, BufferPool};
use crate::config::{BackendConfig, Config};
use crate::conn::{PumpError, PumpStatus, RequestLine, fill, flush, pump};
use crate::control::{Command, Control, Snapshot};
use crate::health::{ProbeResult, next_probe_delay, probe_request, probe_verdict};
use crate::http::body::{ChunkedDecoder, Relay};
use crate::http::request::{self, ForwardInfo, RequestHead};
use crate::http::response::{self, ClientBody, ResponseHead};
use crate::http::{ErrorResponse, Framing, Version};
use crate::server::{BUFFER_SIZE, SMALL_BUFFER_SIZE};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread;
use std::time::{Duration, Instant};

/// Stack of a connection thread: buffers live on the heap, so a small stack is plenty.
const CONNECTION_STACK: usize = 256 * 1024;
/// How long a closing connection's unread input is drained (see the event loop's LINGER).
const LINGER: Duration = Duration::from_secs(2);

/// State shared by every thread of the engine.
struct State {
    config: RwLock<Config>,
    balancer: Mutex<Balancer>,
    idle: Mutex<Vec<Vec<TcpStream>>>,
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
}

/// Locks a mutex. The engine never holds two of its locks at once (so no lock order can deadlock): take
/// what you need from one guard, drop it, then take the next.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking connection thread must not take the whole engine down with a poisoned lock.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl State {
    fn config(&self) -> Config {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn finish(&self, index: usize, outcome: Outcome, why: &str) {
        let mut balancer = lock(&self.balancer);
        if let Some(transition) = balancer.finish(index, outcome) {
            balancer.log_transition(index, transition, why);
        }
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
        }
    }

    /// A live pooled connection to `index`, or a new one.
    fn connect(
        &self,
        index: usize,
        allow_pooled: bool,
        timeout: Duration,
    ) -> io::Result<(TcpStream, bool)> {
        if allow_pooled {
            loop {
                let Some(stream) = lock(&self.idle).get_mut(index).and_then(Vec::pop) else {
                    break;
                };
                if still_idle(&stream) {
                    return Ok((stream, true));
                }
            }
        }
        let addr = lock(&self.balancer).backends[index].config.addr;
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        Ok((stream, false))
    }

    /// Keeps a backend connection for reuse. The pool is bounded by `max_connections`: it never holds
    /// more than the peak of concurrent requests, and a smaller bound would make a busy balancer close and
    /// reopen backend connections on every request.
    fn pool(&self, index: usize, stream: TcpStream, max_connections: usize) {
        let removed = lock(&self.balancer).backends[index].removed;
        let mut idle = lock(&self.idle);
        if let Some(pool) = idle.get_mut(index)
            && pool.len() < max_connections
            && !removed
        {
            pool.push(stream);
        }
    }

    fn reload(&self, config: Config) {
        config.log_warnings();
        let changes = lock(&self.balancer).reconfigure(
            &config.backends,
            config.algorithm,
            config.health_check.rise,
            config.health_check.fall,
        );
        {
            let slots = lock(&self.balancer).backends.len();
            let mut idle = lock(&self.idle);
            idle.resize_with(slots, Vec::new);
            for &slot in changes.removed.iter().chain(&changes.moved) {
                idle[slot].clear();
            }
        }
        if std::env::var_os("RUST_LOG").is_none() {
            log::set_max_level(config.log_level.to_filter());
        }
        log::info!(
            "configuration reloaded: algorithm {}, {} backends ({} added, {} removed)",
            config.algorithm.name(),
            config.backends.len(),
            changes.added.len(),
            changes.removed.len()
        );
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
    }
}

/// True when a pooled connection is still open with nothing unexpected to read.
fn still_idle(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut probe = [0u8; 1];
    let alive = matches!(stream.peek(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    alive && stream.set_nonblocking(false).is_ok()
}

pub struct Threaded {
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    admin: Option<TcpListener>,
    state: Arc<State>,
    commands: Receiver<Command>,
    control: Control,
}

impl Threaded {
    pub fn bind(config: Config) -> io::Result<Threaded> {
        let listener = crate::listen::bind(config.listen, "listen")?;
        let local_addr = listener.local_addr()?;
        let admin = match &config.admin {
            Some(a) => {
                let admin = crate::listen::bind(a.listen, "[admin] listen")?;
                admin::warn_if_exposed(admin.local_addr()?, a.token.as_deref());
                Some(admin)
            }
            None => None,
        };
        let balancer = Balancer::from_config(&config);
        let idle = config.backends.iter().map(|_| Vec::new()).collect();
        let (commands_in, commands) = mpsc::channel();
        Ok(Threaded {
            listener: Some(listener),
            local_addr,
            admin,
            state: Arc::new(State {
                config: RwLock::new(config),
                balancer: Mutex::new(balancer),
                idle: Mutex::new(idle),
                clients: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                total_requests: AtomicU64::new(0),
                per_second: AtomicU64::new(0),
                started: Instant::now(),
                draining: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
                open: AtomicUsize::new(0),
                internal_errors: AtomicU64::new(0),
            }),
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

    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// SIGTERM/SIGINT drain, SIGHUP reloads `config_path`; signals arrive on a thread of their own.
    pub fn handle_signals(&mut self, config_path: PathBuf) -> io::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        let control = self.control.clone();
        thread::Builder::new()
            .name("lb-signals".into())
            .spawn(move || {
                let mut stopping = false;
                for signal in signals.forever() {
                    match signal {
                        SIGHUP => {
                            log::info!("SIGHUP: reloading {}", config_path.display());
                            match Config::load(&config_path) {
                                Ok(config) => control.reload(config),
                                Err(e) => log::error!(
                                    "reload failed, keeping the running configuration: {e}"
                                ),
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
            move || health_loop(&state)
        })?;
        spawn_named("lb-meter", {
            let state = state.clone();
            move || meter_loop(&state)
        })?;
        if let Some(admin) = self.admin.take() {
            let state = state.clone();
            spawn_named("lb-admin", move || admin_loop(&state, admin))?;
        }
        let listener = match &self.listener {
            Some(listener) => listener.try_clone()?,
            None => return Ok(()),
        };
        let mut acceptor = Some({
            let state = state.clone();
            spawn_named("lb-accept", move || accept_loop(&state, listener))?
        });
        let mut drain_deadline: Option<Instant> = None;
        loop {
            match self.commands.recv_timeout(Duration::from_millis(20)) {
                Ok(Command::Shutdown) => {
                    self.stop_accepting(&state, acceptor.take());
                    return Ok(());
                }
                Ok(Command::Drain) if drain_deadline.is_none() => {
                    let drain = state.config().timeouts.drain;
                    state.draining.store(true, Ordering::SeqCst);
                    // The listening socket is closed before the log says so.
                    self.stop_accepting(&state, acceptor.take());
                    log::info!(
                        "draining: stopped accepting; {} open connections get up to {drain:?} to finish",
                        state.open.load(Ordering::SeqCst)
                    );
                    for (stream, idle) in lock(&state.clients).values() {
                        if idle.load(Ordering::SeqCst) {
                            let _ = stream.shutdown(Shutdown::Both);
                        }
                    }
                    drain_deadline = Some(Instant::now() + drain);
                }
                Ok(Command::Drain) => {}
                Ok(Command::Reload(config)) => state.reload(*config),
                Ok(Command::Snapshot(reply)) => {
                    let _ = reply.send(state.snapshot());
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

    /// Stops accepting and closes the listening socket, so that new connections are refused. The
    /// acceptor is blocked in accept: one connection of our own wakes it, and it returns.
    fn stop_accepting(&mut self, state: &State, acceptor: Option<thread::JoinHandle<()>>) {
        state.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.local_addr, Duration::from_secs(1));
        if let Some(acceptor) = acceptor {
            let _ = acceptor.join();
        }
        // The acceptor's clone is gone; closing ours closes the socket.
        self.listener = None;
    }
}

fn spawn_named(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new().name(name.into()).spawn(f)
}

fn accept_loop(state: &Arc<State>, listener: TcpListener) {
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
                let mut conn = ClientConn::new(stream, addr);
                if let Err(cause) = crate::fault::contain(|| conn.serve(&worker, &idle)) {
                    conn.contain_panic(&worker, &cause);
                }
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
        last = (now, total);
    }
}

/// Why a connection ends.
enum End {
    /// Orderly close (after draining unread input).
    Close,
    /// Reset: something broke mid-message.
    Abort,
}

/// One client connection and its buffers.
struct ClientConn {
    stream: TcpStream,
    addr: SocketAddr,
    pool: BufferPool,
    client_in: Buffer,
    to_backend: Buffer,
    backend_in: Buffer,
    to_client: Buffer,
    requests: u64,
    /// The backend this connection's request is counted in flight on, from `start` until the
    /// attempt's outcome is recorded: what a contained panic must take back out of the counts.
    in_flight: Option<usize>,
}

/// How one attempt at a backend went.
enum Attempt {
    /// The response was delivered; keep the client connection? pool the backend connection?
    Delivered { keep_alive: bool, reusable: bool },
    /// The backend failed before any response byte: the request may be sent again.
    FailedEarly { reason: String, timed_out: bool },
    /// It is over for this connection.
    End(End),
}

impl ClientConn {
    fn new(stream: TcpStream, addr: SocketAddr) -> ClientConn {
        let _ = stream.set_nodelay(true);
        ClientConn {
            stream,
            addr,
            pool: BufferPool::tiered(SMALL_BUFFER_SIZE, BUFFER_SIZE, 4),
            client_in: Buffer::new(),
            to_backend: Buffer::new(),
            backend_in: Buffer::new(),
            to_client: Buffer::new(),
            requests: 0,
            in_flight: None,
        }
    }

    /// A panic on this connection's thread was caught: take its request out of the counts, reset the
    /// client and let the thread end. The backend connection, a local of the unwound frames, is
    /// already closed; locks are never held across code that can panic on input, and a poisoned one
    /// is recovered by `lock`.
    fn contain_panic(&mut self, state: &State, cause: &str) {
        state.internal_errors.fetch_add(1, Ordering::SeqCst);
        log::error!(
            "internal error on a connection from {}: {cause}; closing that connection alone",
            self.addr
        );
        if let Some(index) = self.in_flight.take() {
            lock(&state.balancer).abandon(index);
        }
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
    }

    /// Counts a request in flight on backend `index`.
    fn start_attempt(&mut self, state: &State, index: usize) {
        lock(&state.balancer).start(index);
        self.in_flight = Some(index);
    }

    /// Records how the request counted on `index` ended.
    fn finish(&mut self, state: &State, index: usize, outcome: Outcome, why: &str) {
        self.in_flight = None;
        state.finish(index, outcome, why);
    }

    /// Takes the request counted on `index` back out of the counts (see `Balancer::abandon`).
    fn abandon(&mut self, state: &State, index: usize) {
        self.in_flight = None;
        lock(&state.balancer).abandon(index);
    }

    fn serve(&mut self, state: &State, idle: &AtomicBool) {
        let end = loop {
            idle.store(self.client_in.is_empty(), Ordering::SeqCst);
            let config = state.config();
            let head = match self.read_head(state, &config) {
                Ok(head) => head,
                Err(end) => break end,
            };
            idle.store(false, Ordering::SeqCst);
            self.requests += 1;
            match self.exchange(state, &config, &head) {
                Ok(true) if !state.draining.load(Ordering::SeqCst) => {}
                Ok(_) => break End::Close,
                Err(end) => break end,
            }
        };
        match end {
            End::Close => {
                let _ = self.stream.shutdown(Shutdown::Write);
                let _ = self.stream.set_read_timeout(Some(LINGER));
                let mut sink = [0u8; 4096];
                while matches!(self.stream.read(&mut sink), Ok(n) if n > 0) {}
            }
            End::Abort => {
                let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
            }
        }
    }

    /// Sends one of our own responses; the connection closes afterwards.
    fn respond(&mut self, state: &State, response: ErrorResponse) -> End {
        state.total_requests.fetch_add(1, Ordering::SeqCst);
        let _ = self.stream.write_all(response.bytes());
        End::Close
    }

    /// Reads until a whole request head is buffered, within `request_head` from its first byte (and
    /// `idle` between keep-alive requests).
    fn read_head(&mut self, state: &State, config: &Config) -> Result<RequestHead, End> {
        let t = &config.timeouts;
        let mut head_started =
            (!self.client_in.is_empty() || self.requests == 0).then(Instant::now);
        loop {
            if !self.client_in.is_empty() {
                match request::parse_request(self.client_in.data(), BUFFER_SIZE) {
                    Ok(Some(head)) => return Ok(head),
                    Ok(None) => {}
                    Err(e) => {
                        let response = request::error_response(e);
                        log::info!(
                            "{} rejected request: {e} -> {}",
                            self.addr,
                            response.status()
                        );
                        return Err(self.respond(state, response));
                    }
                }
            }
            let wait = match head_started {
                Some(started) => t.request_head.saturating_sub(started.elapsed()),
                None => t.idle,
            };
            if wait.is_zero() || self.stream.set_read_timeout(Some(wait)).is_err() {
                return Err(self.head_timeout(state));
            }
            match fill(&mut self.stream, &mut self.client_in, &mut self.pool, false) {
                Ok(f) if f.bytes > 0 => {
                    head_started.get_or_insert_with(Instant::now);
                }
                Ok(f) if f.eof => return Err(End::Close),
                Ok(_) => return Err(self.head_timeout(state)),
                Err(_) => return Err(End::Close),
            }
        }
    }

    fn head_timeout(&mut self, state: &State) -> End {
        if self.client_in.is_empty() {
            End::Close
        } else {
            log::info!("{}: request head not received in time -> 408", self.addr);
            self.respond(state, ErrorResponse::RequestTimeout)
        }
    }

    /// Proxies one request. `Ok(keep_alive)`, or how the connection ends.
    fn exchange(
        &mut self,
        state: &State,
        config: &Config,
        head: &RequestHead,
    ) -> Result<bool, End> {
        let started = Instant::now();
        let line = RequestLine::new(
            head.method(self.client_in.data()),
            head.target.get(self.client_in.data()),
        );
        let mut tried = Tried::default();
        let mut attempts = 0;
        let mut allow_pooled = true;
        let mut previous: Option<usize> = None;
        loop {
            // A fresh connection to the same backend after a stale pooled one; else the next pick.
            let index = match previous.filter(|_| !allow_pooled) {
                Some(index) => index,
                None => match lock(&state.balancer).pick(self.addr.ip(), tried) {
                    Some(index) => index,
                    None if attempts == 0 => {
                        log::warn!("{} \"{line}\": no backend available -> 503", self.addr);
                        return Err(self.respond(state, ErrorResponse::ServiceUnavailable));
                    }
                    None => {
                        log::warn!("{} \"{line}\": no backend reachable -> 502", self.addr);
                        return Err(self.respond(state, ErrorResponse::BadGateway));
                    }
                },
            };
            // A bodiless request's head stays in client_in until its response starts, so it can be
            // written again; a request with a body is written once (retries then only follow connect
            // failures, which sent nothing, so to_backend still holds it).
            if attempts == 0 || !head.has_body() {
                if !self.write_request_head(state, head, index) {
                    return Err(self.respond(state, ErrorResponse::HeadTooLarge));
                }
                if head.has_body() {
                    self.client_in.consume(head.head_len);
                }
            }
            attempts += 1;
            self.start_attempt(state, index);
            crate::fault::inject(line.target(), crate::fault::Stage::Request);
            let (mut backend, reused) =
                match state.connect(index, allow_pooled, config.timeouts.connect) {
                    Ok(connection) => connection,
                    Err(e) => {
                        let url = lock(&state.balancer).backends[index].config.url.clone();
                        log::warn!("backend {url}: connect failed: {e}");
                        self.finish(
                            state,
                            index,
                            Outcome::Failure,
                            &format!("connect failed: {e}"),
                        );
                        tried = tried.with(index);
                        allow_pooled = true;
                        previous = None;
                        if attempts > config.retries as usize {
                            let timed_out = e.kind() == io::ErrorKind::TimedOut
                                || e.kind() == io::ErrorKind::WouldBlock;
                            let response = if timed_out {
                                ErrorResponse::GatewayTimeout
                            } else {
                                ErrorResponse::BadGateway
                            };
                            log::warn!(
                                "{} \"{line}\": no backend reachable -> {}",
                                self.addr,
                                response.status()
                            );
                            return Err(self.respond(state, response));
                        }
                        continue;
                    }
                };
            match self.attempt(state, config, head, index, &mut backend, started, &line) {
                Attempt::Delivered {
                    keep_alive,
                    reusable,
                } => {
                    if reusable {
                        state.pool(index, backend, config.max_connections);
                    }
                    return Ok(keep_alive);
                }
                Attempt::End(end) => return Err(end),
                Attempt::FailedEarly { reason, timed_out } => {
                    let url = lock(&state.balancer).backends[index].config.url.clone();
                    let resendable = !head.has_body();
                    if resendable && reused {
                        log::debug!(
                            "backend {url}: pooled connection failed ({reason}); retrying on a new connection"
                        );
                        self.abandon(state, index);
                        attempts -= 1;
                        allow_pooled = false;
                        previous = Some(index);
                        continue;
                    }
                    self.finish(state, index, Outcome::Failure, &reason);
                    tried = tried.with(index);
                    allow_pooled = true;
                    previous = None;
                    // A timeout is not retried: the backend may still be working on it, and a second
                    // backend would only double the load (the event loop answers 504 likewise).
                    if resendable
                        && head.idempotent
                        && !timed_out
                        && attempts <= config.retries as usize
                    {
                        log::warn!("backend {url}: {reason}; request retried on another backend");
                        continue;
                    }
                    let response = if timed_out {
                        ErrorResponse::GatewayTimeout
                    } else {
                        ErrorResponse::BadGateway
                    };
                    log::warn!(
                        "backend {url}: {reason} -> {} for {} \"{line}\"",
                        response.status(),
                        self.addr
                    );
                    return Err(self.respond(state, response));
                }
            }
        }
    }

    fn write_request_head(&mut self, state: &State, head: &RequestHead, index: usize) -> bool {
        self.to_backend.clear();
        let balancer = lock(&state.balancer);
        let info = ForwardInfo {
            client_ip: self.addr.ip(),
            default_host: balancer.backends[index].config.authority.as_bytes(),
        };
        let client_in = &self.client_in;
        self.to_backend.write_with(&mut self.pool, |out| {
            request::write_request_head(client_in.data(), head, &info, out)
        })
    }

    /// Sends the request on `backend` and relays the response.
    #[allow(clippy::too_many_arguments)]
    fn attempt(
        &mut self,
        state: &State,
        config: &Config,
        head: &RequestHead,
        index: usize,
        backend: &mut TcpStream,
        started: Instant,
        line: &RequestLine,
    ) -> Attempt {
        let response_timeout = config.timeouts.response;
        let _ = backend.set_write_timeout(Some(response_timeout));
        let _ = backend.set_read_timeout(Some(response_timeout));
        let _ = self.stream.set_read_timeout(Some(response_timeout));
        let _ = self.stream.set_write_timeout(Some(config.timeouts.idle));
        self.backend_in.clear();
        let mut request_relay = match head.framing {
            Framing::Empty | Framing::UntilClose => Relay::Done,
            Framing::Length(n) => Relay::Length { remaining: n },
            Framing::Chunked => Relay::Chunked(ChunkedDecoder::new(true)),
        };
        let mut response_started = false;
        let mut early: Option<ResponseHead> = None;

        // The request: head, then body as it arrives.
        loop {
            match pump(
                &mut request_relay,
                &mut self.client_in,
                &mut self.to_backend,
                backend,
                &mut self.pool,
            ) {
                Ok((_, PumpStatus::Done)) => break,
                Ok((_, PumpStatus::NeedInput)) => {
                    if head.expect_continue && !response_started {
                        // The client waits for 100 Continue before sending the body: look at the backend.
                        match self.read_response_head(backend, head) {
                            Ok(Some(h)) if h.status == 100 => {
                                response_started = true;
                                if self.relay_interim(&h, head.version).is_err() {
                                    self.abandon(state, index);
                                    return Attempt::End(End::Abort);
                                }
                                continue;
                            }
                            Ok(Some(h)) => {
                                early = Some(h);
                                break;
                            }
                            Ok(None) => {
                                return Attempt::FailedEarly {
                                    reason: "closed before a response".into(),
                                    timed_out: false,
                                };
                            }
                            Err(timed_out) => {
                                return Attempt::FailedEarly {
                                    reason: "no response".into(),
                                    timed_out,
                                };
                            }
                        }
                    }
                    match fill(&mut self.stream, &mut self.client_in, &mut self.pool, false) {
                        Ok(f) if f.bytes > 0 => {}
                        _ => {
                            log::info!(
                                "{} \"{line}\": client stopped before sending the whole request body",
                                self.addr
                            );
                            self.abandon(state, index);
                            return Attempt::End(End::Abort);
                        }
                    }
                }
                Ok((_, PumpStatus::Blocked)) => {
                    return Attempt::FailedEarly {
                        reason: "timed out writing the request".into(),
                        timed_out: true,
                    };
                }
                Err(PumpError::Framing(e)) => {
                    log::info!("{} \"{line}\": bad request body: {e} -> 400", self.addr);
                    self.abandon(state, index);
                    return Attempt::End(self.respond(state, ErrorResponse::BadRequest));
                }
                Err(PumpError::Io(e)) => {
                    return Attempt::FailedEarly {
                        reason: format!("write failed: {e}"),
                        timed_out: false,
                    };
                }
            }
        }
        let request_complete = request_relay.is_done();

        // The response head, after any interim responses.
        let response_head = loop {
            let h = match early.take() {
                Some(h) => h,
                None => match self.read_response_head(backend, head) {
                    Ok(Some(h)) => h,
                    Ok(None) if response_started => {
                        self.finish(
                            state,
                            index,
                            Outcome::Failure,
                            "closed in the response head",
                        );
                        return Attempt::End(self.respond(state, ErrorResponse::BadGateway));
                    }
                    Ok(None) => {
                        return Attempt::FailedEarly {
                            reason: "connection closed before a response".into(),
                            timed_out: false,
                        };
                    }
                    Err(timed_out) => {
                        return Attempt::FailedEarly {
                            reason: if timed_out {
                                format!("no response within {response_timeout:?}")
                            } else {
                                "invalid response".into()
                            },
                            timed_out,
                        };
                    }
                },
            };
            response_started = true;
            crate::fault::inject(line.target(), crate::fault::Stage::Response);
            if h.is_informational() && h.status != 101 {
                if self.relay_interim(&h, head.version).is_err() {
                    self.abandon(state, index);
                    return Attempt::End(End::Abort);
                }
                continue;
            }
            break h;
        };
        let mut plan = match response::plan_response(
            &response_head,
            head.version,
            head.keep_alive,
            head.upgrade,
        ) {
            Ok(plan) => plan,
            Err(e) => {
                self.finish(state, index, Outcome::Failure, "unusable response");
                log::warn!("backend {index}: unusable response: {e} -> 502");
                return Attempt::End(self.respond(state, ErrorResponse::BadGateway));
            }
        };
        if !request_complete || state.draining.load(Ordering::SeqCst) {
            plan.close_client = true;
        }
        let backend_in = &self.backend_in;
        let written = self.to_client.write_with(&mut self.pool, |out| {
            response::write_response_head(
                backend_in.data(),
                &response_head,
                Some(&plan),
                head.version,
                out,
            )
        });
        if !written {
            self.finish(state, index, Outcome::Failure, "response head too large");
            return Attempt::End(self.respond(state, ErrorResponse::BadGateway));
        }
        self.backend_in.consume(response_head.head_len);
        if !head.has_body() {
            self.client_in.consume(head.head_len);
        }
        let mut relay = match plan.body {
            ClientBody::Empty => Relay::Done,
            ClientBody::Length(n) => Relay::Length { remaining: n },
            ClientBody::Chunked => Relay::Chunked(ChunkedDecoder::new(true)),
            ClientBody::Dechunked => Relay::Chunked(ChunkedDecoder::new(false)),
            ClientBody::UntilClose | ClientBody::Tunnel => Relay::UntilClose,
        };
        if plan.body == ClientBody::Tunnel {
            state.finish(
                index,
                Outcome::Success {
                    latency: started.elapsed(),
                },
                "101",
            );
            return Attempt::End(self.tunnel(backend));
        }

        // The response body.
        let mut bytes: u64 = 0;
        let mut backend_eof = false;
        loop {
            match pump(
                &mut relay,
                &mut self.backend_in,
                &mut self.to_client,
                &mut self.stream,
                &mut self.pool,
            ) {
                Ok((n, PumpStatus::Done)) => {
                    bytes += n;
                    break;
                }
                Ok((n, PumpStatus::NeedInput)) => {
                    bytes += n;
                    if backend_eof {
                        if relay.ends_at_close() {
                            break;
                        }
                        self.finish(state, index, Outcome::Failure, "closed mid-body");
                        log::warn!(
                            "backend {index}: closed mid-body for {} \"{line}\"; resetting the client",
                            self.addr
                        );
                        return Attempt::End(End::Abort);
                    }
                    match fill(backend, &mut self.backend_in, &mut self.pool, false) {
                        Ok(f) if f.eof => backend_eof = true,
                        Ok(f) if f.bytes > 0 => {}
                        _ => {
                            self.finish(state, index, Outcome::Failure, "stalled mid-response");
                            return Attempt::End(End::Abort);
                        }
                    }
                }
                Ok((_, PumpStatus::Blocked)) | Err(PumpError::Io(_)) => {
                    log::info!(
                        "{} \"{line}\": client went away during the response",
                        self.addr
                    );
                    self.abandon(state, index);
                    return Attempt::End(End::Abort);
                }
                Err(PumpError::Framing(e)) => {
                    self.finish(state, index, Outcome::Failure, "invalid response body");
                    log::warn!("backend {index}: invalid response body: {e}; resetting the client");
                    return Attempt::End(End::Abort);
                }
            }
        }
        let latency = started.elapsed();
        let outcome = if response_head.status < 500 {
            Outcome::Success { latency }
        } else {
            Outcome::ErrorResponse { latency }
        };
        self.finish(state, index, outcome, "response");
        state.total_requests.fetch_add(1, Ordering::SeqCst);
        if config.access_log {
            let url = lock(&state.balancer).backends[index].config.url.clone();
            log::info!(
                "{} \"{line}\" {} {} {url} {}ms",
                self.addr,
                response_head.status,
                bytes,
                latency.as_millis()
            );
        }
        Attempt::Delivered {
            keep_alive: !plan.close_client,
            reusable: response_head.reusable
                && request_complete
                && self.backend_in.is_empty()
                && !backend_eof,
        }
    }

    /// Reads a response head into `backend_in`. `Ok(None)` when the backend closed before a complete
    /// head; `Err(true)` on timeout, `Err(false)` on garbage or a reset.
    fn read_response_head(
        &mut self,
        backend: &mut TcpStream,
        head: &RequestHead,
    ) -> Result<Option<ResponseHead>, bool> {
        loop {
            if !self.backend_in.is_empty() {
                match response::parse_response(self.backend_in.data(), head.is_head, BUFFER_SIZE) {
                    Ok(Some(h)) => return Ok(Some(h)),
                    Ok(None) => {}
                    Err(_) => return Err(false),
                }
            }
            match fill(backend, &mut self.backend_in, &mut self.pool, false) {
                Ok(f) if f.bytes > 0 => {}
                Ok(f) if f.eof => return Ok(None),
                Ok(_) => return Err(true),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
                Err(_) => return Err(false),
            }
        }
    }

    /// Passes an interim (1xx) response to an HTTP/1.1 client.
    fn relay_interim(&mut self, h: &ResponseHead, version: Version) -> io::Result<()> {
        if version == Version::Http11 {
            let backend_in = &self.backend_in;
            self.to_client.write_with(&mut self.pool, |out| {
                response::write_response_head(backend_in.data(), h, None, version, out)
            });
            flush(&mut self.stream, &mut self.to_client)?;
        }
        self.backend_in.consume(h.head_len);
        Ok(())
    }

    /// After `101 Switching Protocols`: bytes both ways until both sides close.
    fn tunnel(&mut self, backend: &mut TcpStream) -> End {
        if flush(&mut self.stream, &mut self.to_client).is_err() {
            return End::Abort;
        }
        let _ = self.stream.set_read_timeout(None);
        let _ = backend.set_read_timeout(None);
        let (Ok(mut client_read), Ok(mut backend_write)) =
            (self.stream.try_clone(), backend.try_clone())
        else {
            return End::Abort;
        };
        let early: Vec<u8> = self.client_in.data().to_vec();
        self.client_in.clear();
        let upstream = thread::spawn(move || {
            let _ = backend_write.write_all(&early);
            let _ = io::copy(&mut client_read, &mut backend_write);
            let _ = backend_write.shutdown(Shutdown::Write);
        });
        let _ = self.stream.write_all(self.backend_in.data());
        self.backend_in.clear();
        let _ = io::copy(backend, &mut self.stream);
        let _ = self.stream.shutdown(Shutdown::Write);
        let _ = upstream.join();
        End::Close
    }
}

fn health_loop(state: &State) {
    let mut next_due: Vec<Instant> = Vec::new();
    let mut random = 0x9E37_79B9_7F4A_7C15u64;
    while !state.stopping.load(Ordering::SeqCst) {
        let now = Instant::now();
        let slots: Vec<(usize, BackendConfig)> = {
            let balancer = lock(&state.balancer);
            balancer
                .configured()
                .iter()
                .map(|&slot| (slot, balancer.backends[slot].config.clone()))
                .collect()
        };
        for (slot, backend) in slots {
            let interval = backend.health_check_interval;
            if next_due.len() <= slot {
                next_due.resize(slot + 1, now + interval);
            }
            if now < next_due[slot] {
                continue;
            }
            let result = probe(
                backend.addr,
                &probe_request(&backend.health_check_path, &backend.authority),
                backend.health_check_timeout,
            );
            let mut balancer = lock(&state.balancer);
            log::debug!(
                "backend {}: health probe: {result}",
                balancer.backends[slot].config.url
            );
            if let Some(transition) = balancer.observe(slot, result.is_success()) {
                balancer.log_transition(slot, transition, &format!("health probe: {result}"));
            }
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            next_due[slot] = Instant::now() + next_probe_delay(interval, random);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// One blocking probe.
fn probe(addr: SocketAddr, request: &[u8], timeout: Duration) -> ProbeResult {
    let deadline = Instant::now() + timeout;
    let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return ProbeResult::Refused,
        Err(e) if e.kind() == io::ErrorKind::TimedOut => return ProbeResult::TimedOut,
        Err(_) => return ProbeResult::ConnectionError,
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let _ = stream.set_write_timeout(Some(left));
    if stream.write_all(request).is_err() {
        return ProbeResult::ConnectionError;
    }
    let mut received = [0u8; 256];
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return ProbeResult::TimedOut;
        }
        match stream.read(&mut received[len..]) {
            Ok(0) => {
                return probe_verdict(&received[..len]).unwrap_or(ProbeResult::ConnectionError);
            }
            Ok(n) => {
                len += n;
                if let Some(result) = probe_verdict(&received[..len]) {
                    return result;
                }
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                return ProbeResult::TimedOut;
            }
            Err(_) => return ProbeResult::ConnectionError,
        }
    }
}

struct AdminView<'a>(&'a State);

impl AdminTarget for AdminView<'_> {
    fn overview(&self) -> Overview {
        let config = self.0.config();
        Overview::collect(
            &lock(&self.0.balancer),
            &config,
            self.0.open.load(Ordering::SeqCst),
            f64::from_bits(self.0.per_second.load(Ordering::SeqCst)),
            self.0.total_requests.load(Ordering::SeqCst),
            self.0.internal_errors.load(Ordering::SeqCst),
            self.0.started,
        )
    }

    fn set_capacity(&mut self, index: usize, capacity: u32) -> bool {
        lock(&self.0.balancer).set_capacity(index, capacity)
    }

    fn set_enabled(&mut self, index: usize, enabled: bool) -> bool {
        lock(&self.0.balancer).set_enabled(index, enabled)
    }
}

fn admin_loop(state: &Arc<State>, listener: TcpListener) {
    for stream in listener.incoming().flatten() {
        if state.stopping.load(Ordering::SeqCst) && !state.draining.load(Ordering::SeqCst) {
            return;
        }
        let state = state.clone();
        let _ = spawn_named("lb-admin-conn", move || serve_admin(&state, stream));
    }
}

/// A small blocking HTTP/1.1 loop around `admin::serve`.
fn serve_admin(state: &State, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut input: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let token = state.config().admin.and_then(|a| a.token);
        match admin::serve(&input, token.as_deref(), &mut AdminView(state)) {
            Served::Answer {
                used,
                bytes,
                keep_alive,
            } => {
                if stream.write_all(&bytes).is_err() || !keep_alive {
                    return;
                }
                input.drain(..used.min(input.len()));
                continue;
            }
            Served::Partial if input.len() > admin::MAX_REQUEST => {
                let _ = stream.write_all(&admin::refusal(413, "request too large"));
                return;
            }
            Served::Partial => {}
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => input.extend_from_slice(&chunk[..n]),
        }
    }
}
