//! The event loop: one edge-triggered `mio::Poll` on one thread owning every socket — the listener,
//! client and backend connections and the idle backend pool — each named by a token in a `slab`. Sockets
//! are registered once for both directions; readiness bits are kept per socket and cleared only on
//! `WouldBlock` (see `conn::Readiness`). Deadlines (head, idle, connect, response, close) are timer entries
//! checked after each batch of events, and the poll sleeps exactly until the earliest one.
//!
//! All request logic is in `drive`, which advances one client connection as far as its sockets allow.

use crate::balance::{Balancer, Outcome};
use crate::buffer::{Buffer, BufferPool};
use crate::config::Config;
use crate::conn::{
    Exchange, PumpError, PumpStatus, Readiness, RequestFacts, RequestLine, ResponseStage, State,
    fill, flush, pump, set_state,
};
use crate::http::body::{ChunkedDecoder, Relay};
use crate::http::request::{self, ForwardInfo, RequestHead};
use crate::http::response::{self, ClientBody};
use crate::http::{ErrorResponse, Framing};
use crate::timer::{Deadline, Expiry, TimerKey, Timers};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Socket tokens are slab keys shifted past the fixed tokens above.
const FIRST_SOCKET: usize = 16;

/// Size of every connection buffer; a request or response head must fit in one.
pub const BUFFER_SIZE: usize = 16 * 1024;
/// Idle keep-alive connections kept per backend.
const IDLE_PER_BACKEND: usize = 64;
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
    slot: usize::MAX,
    generation: 0,
};

/// What a socket token belongs to.
#[derive(Debug, Clone, Copy)]
enum Owner {
    Client(usize),
    Backend(usize),
    /// An idle keep-alive connection in the pool of this backend.
    Idle(usize),
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

/// One client connection and, while a request is in flight, its backend connection.
struct Conn {
    key: usize,
    /// Unique for the life of the process: names the connection in logs and timer entries.
    id: u64,
    state: State,
    state_since: Instant,
    last_progress: Instant,
    /// When the first byte of the head being read arrived (`request_head` runs from there).
    head_started: Option<Instant>,
    requests: u64,
    client: TcpStream,
    client_token: Token,
    client_addr: SocketAddr,
    client_ready: Readiness,
    client_write_shut: bool,
    /// Raw bytes from the client: heads, request bodies, pipelined requests.
    client_in: Buffer,
    /// Rewritten request heads and chunk framing for the backend.
    to_backend: Buffer,
    /// Raw bytes from the backend.
    backend_in: Buffer,
    /// Response heads, chunk framing and our own responses for the client.
    to_client: Buffer,
    backend: Option<BackendConn>,
    exchange: Option<Exchange>,
    deadline: Deadline,
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
}

/// Stops a running [`Server`] from another thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            log::error!("cannot wake the event loop: {e}");
        }
    }
}

pub struct Server {
    poll: Poll,
    listener: TcpListener,
    local_addr: SocketAddr,
    conns: Slab<Conn>,
    shared: Shared,
    next_id: u64,
    /// The listener has reported readiness that `accept` has not yet drained.
    listener_ready: bool,
    accept_paused: bool,
    /// Connections that used up their drive budget with work left: (slab key, id).
    yielded: Vec<(usize, u64)>,
    shutdown: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl Server {
    /// Binds the listener and prepares the loop; nothing is served until [`Server::run`].
    pub fn bind(config: Config) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.listen)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let registry = poll.registry().try_clone()?;
        let balancer = Balancer::new(&config.backends, config.algorithm);
        let idle = config.backends.iter().map(|_| Vec::new()).collect();
        Ok(Server {
            poll,
            listener,
            local_addr,
            conns: Slab::new(),
            shared: Shared {
                config,
                registry,
                sockets: Slab::new(),
                balancer,
                idle,
                buffers: BufferPool::new(BUFFER_SIZE, 1024),
                timers: Timers::new(),
            },
            next_id: 1,
            listener_ready: false,
            accept_paused: false,
            yielded: Vec::new(),
            shutdown: Arc::new(AtomicBool::new(false)),
            waker,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            flag: self.shutdown.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Runs the loop until [`ShutdownHandle::shutdown`] is called.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut resume = Vec::new();
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
            if self.shutdown.load(Ordering::SeqCst) {
                log::info!(
                    "event loop stopping with {} open client connections",
                    self.conns.len()
                );
                return Ok(());
            }
        }
    }

    fn dispatch(&mut self, event: &Event) {
        match event.token() {
            LISTENER => {
                self.listener_ready = true;
                self.accept_clients();
            }
            WAKER => {}
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
                }
            }
        }
    }

    fn accept_clients(&mut self) {
        while self.listener_ready && !self.accept_paused {
            if self.conns.len() >= self.shared.config.max_connections {
                log::warn!(
                    "max_connections ({}) reached: not accepting until a connection closes",
                    self.shared.config.max_connections
                );
                self.accept_paused = true;
                return;
            }
            match self.listener.accept() {
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
        if let Err(e) = self.shared.registry.register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
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
            client_ready: Readiness::default(),
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
        let result = conn.drive(&mut self.shared, now);
        match result {
            Ok(work) => {
                conn.refresh_deadline(&mut self.shared, now);
                if work == Work::Yielded {
                    self.yielded.push((key, conn.id));
                }
            }
            Err(how) => self.remove(key, how),
        }
    }

    fn remove(&mut self, key: usize, how: Close) {
        let mut conn = self.conns.remove(key);
        conn.teardown(&mut self.shared, how);
        if self.accept_paused && self.conns.len() < self.shared.config.max_connections {
            self.accept_paused = false;
            self.accept_clients();
        }
    }

    fn run_timers(&mut self) {
        let now = Instant::now();
        while let Some((at, key)) = self.shared.timers.pop_due(now) {
            if key == ACCEPT_TIMER {
                if self.accept_paused && self.conns.len() < self.shared.config.max_connections {
                    self.accept_paused = false;
                    self.accept_clients();
                }
                continue;
            }
            let Some(conn) = self.conns.get_mut(key.slot) else {
                continue;
            };
            if conn.id != key.generation {
                continue;
            }
            if conn.deadline.on_pop(at, now, &mut self.shared.timers, key) != Expiry::Fire {
                continue;
            }
            match conn.on_timeout(&mut self.shared, now) {
                Ok(()) => self.drive(key.slot),
                Err(how) => self.remove(key.slot, how),
            }
        }
    }

    /// Open client connections (for tests and the admin endpoint).
    pub fn open_connections(&self) -> usize {
        self.conns.len()
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

impl Shared {
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
    fn take_idle(&mut self, index: usize) -> Option<IdleConn> {
        while let Some(idle) = self.idle[index].pop() {
            if still_idle(&idle.stream) {
                return Some(idle);
            }
            self.close_stream(idle.stream, idle.token);
        }
        None
    }
}

impl Conn {
    fn set_state(&mut self, next: State, why: &str, now: Instant) {
        set_state(self.id, &mut self.state, next, why);
        self.state_since = now;
    }

    fn timer_key(&self) -> TimerKey {
        TimerKey {
            slot: self.key,
            generation: self.id,
        }
    }

    /// The deadline that applies in the current state.
    fn refresh_deadline(&mut self, sh: &mut Shared, now: Instant) {
        let t = &sh.config.timeouts;
        let at = match self.state {
            State::ReadingHead => match self.head_started {
                Some(started) => started + t.request_head,
                // Between keep-alive requests the idle timeout applies; before the first, the head timeout.
                None if self.requests > 0 => self.state_since + t.idle,
                None => self.state_since + t.request_head,
            },
            State::Connecting => self.state_since + t.connect,
            State::Exchanging => self.last_progress + t.response,
            State::Tunnel => self.last_progress + t.idle,
            State::Closing => self.state_since + LINGER,
        };
        if self.deadline.due() != Some(at) {
            let key = self.timer_key();
            self.deadline.set(at.max(now), &mut sh.timers, key);
        }
    }

    fn drive(&mut self, sh: &mut Shared, now: Instant) -> Result<Work, Close> {
        for _ in 0..DRIVE_BUDGET {
            let progressed = match self.state {
                State::ReadingHead => self.read_head(sh, now)?,
                State::Connecting => self.check_connect(sh, now)?,
                State::Exchanging => self.exchange(sh, now)?,
                State::Tunnel => self.tunnel(sh, now)?,
                State::Closing => self.closing(sh, now)?,
            };
            if !progressed {
                return Ok(Work::Done);
            }
        }
        Ok(Work::Yielded)
    }

    /// Reads from the client into `client_in` when readiness and room allow. Returns bytes read.
    fn read_client(&mut self, sh: &mut Shared) -> Result<usize, Close> {
        let ready = &mut self.client_ready;
        if !ready.readable || self.client_in.is_full() {
            return Ok(0);
        }
        match fill(
            &mut self.client,
            &mut self.client_in,
            &mut sh.buffers,
            ready.hup,
        ) {
            Ok(filled) => {
                if filled.would_block {
                    ready.readable = false;
                }
                if filled.eof {
                    ready.readable = false;
                    ready.read_closed = true;
                }
                Ok(filled.bytes)
            }
            Err(e) => {
                log::debug!("conn {}: client read error: {e}", self.id);
                Err(Close::Abort)
            }
        }
    }

    fn client_eof(&self) -> bool {
        self.client_ready.read_closed && !self.client_ready.readable
    }

    fn read_head(&mut self, sh: &mut Shared, now: Instant) -> Result<bool, Close> {
        if self.read_client(sh)? > 0 {
            self.last_progress = now;
            self.head_started.get_or_insert(now);
        }
        if self.client_in.is_empty() {
            self.client_in.release_if_empty(&mut sh.buffers);
            if self.client_eof() {
                return Err(Close::Graceful);
            }
            return Ok(false);
        }
        match request::parse_request(self.client_in.data(), BUFFER_SIZE) {
            Ok(None) => {
                if self.client_eof() {
                    log::debug!(
                        "conn {}: client closed in the middle of a request head",
                        self.id
                    );
                    return Err(Close::Graceful);
                }
                Ok(false)
            }
            Err(e) => {
                let response = request::error_response(e);
                log::info!(
                    "{} rejected request: {} -> {}",
                    self.client_addr,
                    e,
                    response.status()
                );
                self.respond_error(sh, response, now);
                Ok(true)
            }
            Ok(Some(head)) => {
                self.start_exchange(sh, &head, now);
                Ok(true)
            }
        }
    }

    fn start_exchange(&mut self, sh: &mut Shared, head: &RequestHead, now: Instant) {
        self.requests += 1;
        self.head_started = None;
        let buf = self.client_in.data();
        let line = RequestLine::new(head.method(buf), head.target.get(buf));
        let Some(index) = sh.balancer.pick(self.client_addr.ip(), None) else {
            log::warn!(
                "{} \"{line}\": no backend available -> 503",
                self.client_addr
            );
            self.respond_error(sh, ErrorResponse::ServiceUnavailable, now);
            return;
        };
        if !self.write_request_head(sh, head, index) {
            log::info!(
                "{} \"{line}\": rewritten head too large -> 431",
                self.client_addr
            );
            self.respond_error(sh, ErrorResponse::HeadTooLarge, now);
            return;
        }
        let head_in_client_buffer = if head.has_body() {
            self.client_in.consume(head.head_len);
            0
        } else {
            head.head_len
        };
        self.exchange = Some(Exchange {
            started: now,
            line,
            backend: index,
            request: RequestFacts {
                version: head.version,
                keep_alive: head.keep_alive,
                is_head: head.is_head,
                idempotent: head.idempotent,
                upgrade: head.upgrade,
                has_body: head.has_body(),
            },
            request_relay: match head.framing {
                Framing::Empty | Framing::UntilClose => Relay::Done,
                Framing::Length(n) => Relay::Length { remaining: n },
                Framing::Chunked => Relay::Chunked(ChunkedDecoder::new(true)),
            },
            head_in_client_buffer,
            body_consumed: false,
            reused_connection: false,
            attempts: 1,
            response: ResponseStage::Head,
            response_relay: Relay::Done,
            backend_reusable: false,
            response_started: false,
            client_output_started: false,
            response_bytes: 0,
            status: 0,
        });
        self.connect_backend(sh, index, true, now);
    }

    /// Writes the head the backend receives into `to_backend`. False when it does not fit.
    fn write_request_head(&mut self, sh: &mut Shared, head: &RequestHead, index: usize) -> bool {
        self.to_backend.clear();
        let info = ForwardInfo {
            client_ip: self.client_addr.ip(),
            default_host: sh.balancer.backends[index].config.authority.as_bytes(),
        };
        let out = self.to_backend.space(&mut sh.buffers);
        match request::write_request_head(self.client_in.data(), head, &info, out) {
            Some(n) => {
                self.to_backend.fill(n);
                true
            }
            None => false,
        }
    }

    /// Gets a connection to backend `index` for the current exchange: a live pooled one if allowed and
    /// available, else a new non-blocking connect.
    fn connect_backend(&mut self, sh: &mut Shared, index: usize, allow_pooled: bool, now: Instant) {
        let Some(exchange) = self.exchange.as_mut() else {
            return;
        };
        exchange.backend = index;
        if allow_pooled && let Some(idle) = sh.take_idle(index) {
            sh.sockets[idle.token.0 - FIRST_SOCKET] = Owner::Backend(self.key);
            exchange.reused_connection = true;
            sh.balancer.start(index);
            self.backend = Some(BackendConn {
                stream: idle.stream,
                token: idle.token,
                index,
                // A pooled socket is writable; a response will announce itself with a new edge.
                ready: Readiness {
                    writable: true,
                    ..Readiness::default()
                },
                write_shut: false,
            });
            self.set_state(State::Exchanging, "pooled backend connection", now);
            return;
        }
        exchange.reused_connection = false;
        let addr = sh.balancer.backends[index].config.addr;
        let result = TcpStream::connect(addr).and_then(|mut stream| {
            let token = sh.socket_token(Owner::Backend(self.key));
            match sh
                .registry
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            {
                Ok(()) => Ok((stream, token)),
                Err(e) => {
                    sh.release_token(token);
                    Err(e)
                }
            }
        });
        sh.balancer.start(index);
        match result {
            Ok((stream, token)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    log::debug!("set_nodelay on backend connection: {e}");
                }
                self.backend = Some(BackendConn {
                    stream,
                    token,
                    index,
                    ready: Readiness::default(),
                    write_shut: false,
                });
                self.set_state(State::Connecting, "connecting to backend", now);
            }
            Err(e) => self.connect_failed(sh, &e.to_string(), ErrorResponse::BadGateway, now),
        }
    }

    fn check_connect(&mut self, sh: &mut Shared, now: Instant) -> Result<bool, Close> {
        let Some(backend) = self.backend.as_mut() else {
            return Err(Close::Abort);
        };
        if !backend.ready.writable && !backend.ready.readable {
            return Ok(false);
        }
        let failure = match backend.stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match backend.stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    backend.ready.writable = false;
                    backend.ready.readable = false;
                    return Ok(false);
                }
                Err(e) => Some(e),
            },
        };
        match failure {
            None => {
                self.last_progress = now;
                self.set_state(State::Exchanging, "backend connected", now);
            }
            Some(e) => self.connect_failed(sh, &e.to_string(), ErrorResponse::BadGateway, now),
        }
        Ok(true)
    }

    /// A connection attempt failed: try another backend while `retries` allow, else answer `response`.
    fn connect_failed(
        &mut self,
        sh: &mut Shared,
        reason: &str,
        response: ErrorResponse,
        now: Instant,
    ) {
        let Some(exchange) = self.exchange.as_mut() else {
            return;
        };
        let index = exchange.backend;
        log::warn!(
            "backend {}: connect failed: {reason}",
            sh.balancer.backends[index].config.url
        );
        sh.balancer.finish(index, Outcome::Failure);
        if let Some(backend) = self.backend.take() {
            sh.close_stream(backend.stream, backend.token);
        }
        if exchange.attempts <= sh.config.retries
            && let Some(next) = sh.balancer.pick(self.client_addr.ip(), Some(index))
        {
            exchange.attempts += 1;
            self.connect_backend(sh, next, true, now);
            return;
        }
        log::warn!(
            "{} \"{}\": no backend reachable -> {}",
            self.client_addr,
            exchange.line,
            response.status()
        );
        self.exchange = None;
        self.respond_error(sh, response, now);
    }

    /// The backend connection failed after it was established. Retries a bodiless request that had no
    /// answer on a reused connection (the backend closed it while idle); otherwise 502, or a reset if the
    /// client already has part of the response.
    fn backend_failed(
        &mut self,
        sh: &mut Shared,
        reason: &str,
        now: Instant,
    ) -> Result<bool, Close> {
        let Some(exchange) = self.exchange.as_mut() else {
            return Err(Close::Abort);
        };
        let index = exchange.backend;
        if let Some(backend) = self.backend.take() {
            sh.close_stream(backend.stream, backend.token);
        }
        self.backend_in.clear();
        let url = sh.balancer.backends[index].config.url.clone();
        if exchange.reused_connection
            && !exchange.response_started
            && exchange.head_in_client_buffer > 0
        {
            log::debug!(
                "backend {url}: pooled connection failed ({reason}); retrying on a new connection"
            );
            sh.balancer.abandon(index);
            let reparsed = request::parse_request(self.client_in.data(), BUFFER_SIZE);
            if let Ok(Some(head)) = reparsed
                && self.write_request_head(sh, &head, index)
            {
                self.connect_backend(sh, index, false, now);
                return Ok(true);
            }
            log::error!(
                "conn {}: cannot rebuild the request head for a retry",
                self.id
            );
            return Err(Close::Abort);
        }
        sh.balancer.finish(index, Outcome::Failure);
        if exchange.client_output_started {
            log::warn!(
                "backend {url}: {reason} in the middle of the response to {} \"{}\"; resetting the client",
                self.client_addr,
                exchange.line
            );
            return Err(Close::Abort);
        }
        log::warn!(
            "backend {url}: {reason} -> 502 for {} \"{}\"",
            self.client_addr,
            exchange.line
        );
        self.exchange = None;
        self.respond_error(sh, ErrorResponse::BadGateway, now);
        Ok(true)
    }

    /// Queues one of our own responses, drops any backend connection, and closes after sending it.
    fn respond_error(&mut self, sh: &mut Shared, response: ErrorResponse, now: Instant) {
        if let Some(backend) = self.backend.take() {
            sh.close_stream(backend.stream, backend.token);
        }
        self.exchange = None;
        self.to_client.clear();
        self.to_client.append(&mut sh.buffers, response.bytes());
        if sh.config.access_log {
            log::info!(
                "{} - {} {}",
                self.client_addr,
                response.status(),
                response.bytes().len()
            );
        }
        self.set_state(State::Closing, "error response", now);
    }

    /// One pass over both directions of an exchange.
    fn exchange(&mut self, sh: &mut Shared, now: Instant) -> Result<bool, Close> {
        let mut progressed = false;

        // Client -> backend: the request head and body.
        let request_done = self
            .exchange
            .as_ref()
            .is_some_and(|e| e.request_relay.is_done());
        if !request_done || !self.to_backend.is_empty() {
            if self.read_client(sh)? > 0 {
                progressed = true;
            }
            let Some(exchange) = self.exchange.as_mut() else {
                return Err(Close::Abort);
            };
            let Some(backend) = self.backend.as_mut() else {
                return Err(Close::Abort);
            };
            let early_response = matches!(
                exchange.response,
                ResponseStage::Body(_) | ResponseStage::Done(_)
            );
            if backend.ready.writable && !early_response {
                let before = self.client_in.len();
                match pump(
                    &mut exchange.request_relay,
                    &mut self.client_in,
                    &mut self.to_backend,
                    &mut backend.stream,
                    &mut sh.buffers,
                ) {
                    Ok((written, status)) => {
                        if self.client_in.len() != before {
                            exchange.body_consumed = true;
                        }
                        if written > 0 {
                            progressed = true;
                            self.last_progress = now;
                        }
                        if status == PumpStatus::Blocked {
                            backend.ready.writable = false;
                        }
                    }
                    Err(PumpError::Framing(e)) => {
                        log::info!(
                            "{} \"{}\": bad request body: {e} -> 400",
                            self.client_addr,
                            exchange.line
                        );
                        sh.balancer.abandon(exchange.backend);
                        self.respond_error(sh, ErrorResponse::BadRequest, now);
                        return Ok(true);
                    }
                    Err(PumpError::Io(e)) => {
                        return self.backend_failed(sh, &format!("write failed: {e}"), now);
                    }
                }
            }
            let exchange = self.exchange.as_ref().ok_or(Close::Abort)?;
            if self.client_eof() && !exchange.request_relay.is_done() && !early_response {
                log::info!(
                    "{} \"{}\": client closed before sending the whole request body",
                    self.client_addr,
                    exchange.line
                );
                if let Some(e) = self.exchange.as_ref() {
                    sh.balancer.abandon(e.backend);
                }
                return Err(Close::Abort);
            }
        }

        // Backend -> client: the response.
        let Some(backend) = self.backend.as_mut() else {
            return Err(Close::Abort);
        };
        if backend.ready.readable && !self.backend_in.is_full() {
            match fill(
                &mut backend.stream,
                &mut self.backend_in,
                &mut sh.buffers,
                backend.ready.hup,
            ) {
                Ok(filled) => {
                    if filled.would_block {
                        backend.ready.readable = false;
                    }
                    if filled.eof {
                        backend.ready.readable = false;
                        backend.ready.read_closed = true;
                    }
                    if filled.bytes > 0 {
                        progressed = true;
                        self.last_progress = now;
                        if let Some(e) = self.exchange.as_mut() {
                            e.response_started = true;
                        }
                    }
                }
                Err(e) => return self.backend_failed(sh, &format!("read failed: {e}"), now),
            }
        }
        let backend_eof = backend.ready.read_closed && !backend.ready.readable;

        let stage = self.exchange.as_ref().ok_or(Close::Abort)?.response;
        match stage {
            ResponseStage::Head => {
                if self.backend_in.is_empty() {
                    if backend_eof {
                        return self.backend_failed(sh, "connection closed before a response", now);
                    }
                    return Ok(progressed);
                }
                return self
                    .response_head(sh, backend_eof, now)
                    .map(|p| p || progressed);
            }
            ResponseStage::Body(plan) => {
                // Without writability a pump can only finish a body that has nothing left to send.
                if !(self.client_ready.writable
                    || self.to_client.is_empty() && self.backend_in.is_empty())
                {
                    return Ok(progressed);
                }
                let exchange = self.exchange.as_mut().ok_or(Close::Abort)?;
                match pump(
                    &mut exchange.response_relay,
                    &mut self.backend_in,
                    &mut self.to_client,
                    &mut self.client,
                    &mut sh.buffers,
                ) {
                    Ok((written, status)) => {
                        if written > 0 {
                            progressed = true;
                            self.last_progress = now;
                            exchange.response_bytes += written;
                        }
                        match status {
                            PumpStatus::Blocked => self.client_ready.writable = false,
                            PumpStatus::Done => {
                                exchange.response = ResponseStage::Done(plan);
                                progressed = true;
                            }
                            PumpStatus::NeedInput if backend_eof => {
                                if exchange.response_relay.ends_at_close() {
                                    exchange.response = ResponseStage::Done(plan);
                                    exchange.backend_reusable = false;
                                    progressed = true;
                                } else {
                                    return self.backend_failed(
                                        sh,
                                        "connection closed mid-body",
                                        now,
                                    );
                                }
                            }
                            PumpStatus::NeedInput => {}
                        }
                    }
                    Err(PumpError::Framing(e)) => {
                        return self.backend_failed(
                            sh,
                            &format!("invalid response body: {e}"),
                            now,
                        );
                    }
                    Err(PumpError::Io(e)) => {
                        log::info!(
                            "{} \"{}\": client went away during the response: {e}",
                            self.client_addr,
                            exchange.line
                        );
                        sh.balancer.abandon(exchange.backend);
                        return Err(Close::Abort);
                    }
                }
            }
            ResponseStage::Done(_) => {}
        }

        let exchange = self.exchange.as_ref().ok_or(Close::Abort)?;
        if let ResponseStage::Done(plan) = exchange.response
            && (exchange.request_relay.is_done() && self.to_backend.is_empty() || plan.close_client)
        {
            self.finish_exchange(sh, now);
            return Ok(true);
        }
        Ok(progressed)
    }

    /// Parses the response head in `backend_in` and queues the client's head.
    fn response_head(
        &mut self,
        sh: &mut Shared,
        backend_eof: bool,
        now: Instant,
    ) -> Result<bool, Close> {
        let exchange = self.exchange.as_mut().ok_or(Close::Abort)?;
        let head = match response::parse_response(
            self.backend_in.data(),
            exchange.request.is_head,
            BUFFER_SIZE,
        ) {
            Ok(Some(head)) => head,
            Ok(None) if backend_eof => {
                return self.backend_failed(sh, "connection closed in the response head", now);
            }
            Ok(None) => return Ok(false),
            Err(e) => return self.backend_failed(sh, &format!("invalid response: {e}"), now),
        };
        if exchange.head_in_client_buffer > 0 {
            self.client_in.consume(exchange.head_in_client_buffer);
            exchange.head_in_client_buffer = 0;
        }
        let client_version = exchange.request.version;
        if head.is_informational() && head.status != 101 {
            // 100 Continue, 103 Early Hints: passed on to HTTP/1.1 clients, then the real response follows.
            if client_version == crate::http::Version::Http11 {
                let out = self.to_client.space(&mut sh.buffers);
                match response::write_response_head(
                    self.backend_in.data(),
                    &head,
                    None,
                    client_version,
                    out,
                ) {
                    Some(n) => self.to_client.fill(n),
                    None => return self.backend_failed(sh, "interim response head too large", now),
                }
                exchange.client_output_started = true;
                if self.client_ready.writable {
                    match flush(&mut self.client, &mut self.to_client) {
                        Ok((_, true)) => self.client_ready.writable = false,
                        Ok(_) => {}
                        Err(_) => return Err(Close::Abort),
                    }
                }
            }
            self.backend_in.consume(head.head_len);
            return Ok(true);
        }
        let request_incomplete = !exchange.request_relay.is_done();
        let mut plan = match response::plan_response(
            &head,
            client_version,
            exchange.request.keep_alive,
            exchange.request.upgrade,
        ) {
            Ok(plan) => plan,
            Err(e) => return self.backend_failed(sh, &format!("unusable response: {e}"), now),
        };
        if request_incomplete {
            // The backend answered before the whole body arrived: the rest of the body must never be
            // read as a new request, so this client connection ends with the response.
            plan.close_client = true;
        }
        let out = self.to_client.space(&mut sh.buffers);
        let Some(n) = response::write_response_head(
            self.backend_in.data(),
            &head,
            Some(&plan),
            client_version,
            out,
        ) else {
            return self.backend_failed(sh, "response head too large", now);
        };
        self.to_client.fill(n);
        self.backend_in.consume(head.head_len);
        exchange.client_output_started = true;
        exchange.status = head.status;
        exchange.backend_reusable = head.reusable && !request_incomplete;
        exchange.response_relay = match plan.body {
            ClientBody::Empty => Relay::Done,
            ClientBody::Length(n) => Relay::Length { remaining: n },
            ClientBody::Chunked => Relay::Chunked(ChunkedDecoder::new(true)),
            ClientBody::Dechunked => Relay::Chunked(ChunkedDecoder::new(false)),
            ClientBody::UntilClose | ClientBody::Tunnel => Relay::UntilClose,
        };
        exchange.response = ResponseStage::Body(plan);
        if plan.body == ClientBody::Tunnel {
            exchange.request_relay = Relay::UntilClose;
            let line = exchange.line;
            let index = exchange.backend;
            sh.balancer.finish(
                index,
                Outcome::Success {
                    latency: now - exchange.started,
                },
            );
            if sh.config.access_log {
                log::info!(
                    "{} \"{line}\" 101 - {} tunnel",
                    self.client_addr,
                    sh.balancer.backends[index].config.url
                );
            }
            self.set_state(State::Tunnel, "101 Switching Protocols", now);
        }
        Ok(true)
    }

    /// The response is delivered: account for it, pool or close the backend connection, and either wait
    /// for the next request or close.
    fn finish_exchange(&mut self, sh: &mut Shared, now: Instant) {
        let Some(exchange) = self.exchange.take() else {
            return;
        };
        let ResponseStage::Done(plan) = exchange.response else {
            return;
        };
        let index = exchange.backend;
        let latency = now - exchange.started;
        let outcome = if exchange.status < 500 {
            Outcome::Success { latency }
        } else {
            Outcome::Failure
        };
        sh.balancer.finish(index, outcome);
        if sh.config.access_log {
            log::info!(
                "{} \"{}\" {} {} {} {}ms",
                self.client_addr,
                exchange.line,
                exchange.status,
                exchange.response_bytes,
                sh.balancer.backends[index].config.url,
                latency.as_millis()
            );
        }
        if let Some(backend) = self.backend.take() {
            let reusable = exchange.backend_reusable
                && exchange.request_relay.is_done()
                && self.backend_in.is_empty()
                && !backend.ready.read_closed
                && sh.idle[index].len() < IDLE_PER_BACKEND;
            if reusable {
                sh.sockets[backend.token.0 - FIRST_SOCKET] = Owner::Idle(index);
                sh.idle[backend.index].push(IdleConn {
                    stream: backend.stream,
                    token: backend.token,
                });
            } else {
                sh.close_stream(backend.stream, backend.token);
            }
        }
        self.backend_in.clear();
        self.backend_in.release_if_empty(&mut sh.buffers);
        self.to_backend.release_if_empty(&mut sh.buffers);
        self.to_client.release_if_empty(&mut sh.buffers);
        if plan.close_client {
            self.set_state(State::Closing, "response delivered, closing", now);
        } else {
            self.head_started = (!self.client_in.is_empty()).then_some(now);
            self.set_state(State::ReadingHead, "response delivered, keep-alive", now);
        }
    }

    /// Relays bytes both ways after a protocol switch until both sides have closed.
    fn tunnel(&mut self, sh: &mut Shared, now: Instant) -> Result<bool, Close> {
        let mut progressed = false;
        let exchange = self.exchange.as_mut().ok_or(Close::Abort)?;
        let backend = self.backend.as_mut().ok_or(Close::Abort)?;

        // Client -> backend.
        if self.client_ready.readable && !self.client_in.is_full() {
            match fill(
                &mut self.client,
                &mut self.client_in,
                &mut sh.buffers,
                self.client_ready.hup,
            ) {
                Ok(f) => {
                    progressed |= f.bytes > 0;
                    if f.would_block || f.eof {
                        self.client_ready.readable = false;
                    }
                    self.client_ready.read_closed |= f.eof;
                }
                Err(_) => return Err(Close::Abort),
            }
        }
        if backend.ready.writable && !backend.write_shut {
            match pump(
                &mut exchange.request_relay,
                &mut self.client_in,
                &mut self.to_backend,
                &mut backend.stream,
                &mut sh.buffers,
            ) {
                Ok((n, status)) => {
                    progressed |= n > 0;
                    if status == PumpStatus::Blocked {
                        backend.ready.writable = false;
                    }
                }
                Err(_) => return Err(Close::Abort),
            }
        }
        if self.client_ready.read_closed && self.client_in.is_empty() && !backend.write_shut {
            let _ = backend.stream.shutdown(Shutdown::Write);
            backend.write_shut = true;
            progressed = true;
        }

        // Backend -> client.
        if backend.ready.readable && !self.backend_in.is_full() {
            match fill(
                &mut backend.stream,
                &mut self.backend_in,
                &mut sh.buffers,
                backend.ready.hup,
            ) {
                Ok(f) => {
                    progressed |= f.bytes > 0;
                    if f.would_block || f.eof {
                        backend.ready.readable = false;
                    }
                    backend.ready.read_closed |= f.eof;
                }
                Err(_) => return Err(Close::Abort),
            }
        }
        if self.client_ready.writable && !self.client_write_shut {
            match pump(
                &mut exchange.response_relay,
                &mut self.backend_in,
                &mut self.to_client,
                &mut self.client,
                &mut sh.buffers,
            ) {
                Ok((n, status)) => {
                    progressed |= n > 0;
                    if status == PumpStatus::Blocked {
                        self.client_ready.writable = false;
                    }
                }
                Err(_) => return Err(Close::Abort),
            }
        }
        if backend.ready.read_closed
            && self.backend_in.is_empty()
            && self.to_client.is_empty()
            && !self.client_write_shut
        {
            let _ = self.client.shutdown(Shutdown::Write);
            self.client_write_shut = true;
            progressed = true;
        }
        if progressed {
            self.last_progress = now;
        }
        if self.client_write_shut && backend.write_shut {
            return Err(Close::Graceful);
        }
        Ok(progressed)
    }

    /// Flushes what the client is owed, then half-closes and drains its input until it closes too.
    fn closing(&mut self, sh: &mut Shared, _now: Instant) -> Result<bool, Close> {
        if !self.to_client.is_empty() {
            if !self.client_ready.writable {
                return Ok(false);
            }
            match flush(&mut self.client, &mut self.to_client) {
                Ok((_, true)) => {
                    self.client_ready.writable = false;
                    return Ok(false);
                }
                Ok(_) => {}
                Err(_) => return Err(Close::Abort),
            }
        }
        if !self.client_write_shut {
            if self.client.shutdown(Shutdown::Write).is_err() {
                return Err(Close::Graceful);
            }
            self.client_write_shut = true;
            self.client_in.release(&mut sh.buffers);
        }
        // Discard whatever the client still sends until it closes (or the linger deadline passes).
        let mut sink = [0u8; 4096];
        while self.client_ready.readable {
            match self.client.read(&mut sink) {
                Ok(0) => return Err(Close::Graceful),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.client_ready.readable = false
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Close::Graceful),
            }
        }
        Ok(false)
    }

    /// The connection's deadline passed.
    fn on_timeout(&mut self, sh: &mut Shared, now: Instant) -> Result<(), Close> {
        match self.state {
            State::ReadingHead => {
                if self.client_in.is_empty() {
                    log::debug!("conn {}: idle timeout", self.id);
                    return Err(Close::Graceful);
                }
                log::info!(
                    "{}: request head not received in time -> 408",
                    self.client_addr
                );
                self.respond_error(sh, ErrorResponse::RequestTimeout, now);
            }
            State::Connecting => {
                self.connect_failed(sh, "timed out", ErrorResponse::GatewayTimeout, now);
            }
            State::Exchanging => {
                let Some(exchange) = self.exchange.as_ref() else {
                    return Err(Close::Abort);
                };
                let index = exchange.backend;
                let url = sh.balancer.backends[index].config.url.clone();
                if exchange.client_output_started {
                    log::warn!(
                        "{} \"{}\": no progress for {:?} mid-response (backend {url}); resetting",
                        self.client_addr,
                        exchange.line,
                        sh.config.timeouts.response
                    );
                    sh.balancer.finish(index, Outcome::Failure);
                    return Err(Close::Abort);
                }
                log::warn!(
                    "backend {url}: no response to {} \"{}\" within {:?} -> 504",
                    self.client_addr,
                    exchange.line,
                    sh.config.timeouts.response
                );
                sh.balancer.finish(index, Outcome::Failure);
                self.respond_error(sh, ErrorResponse::GatewayTimeout, now);
            }
            State::Tunnel => {
                log::debug!("conn {}: tunnel idle timeout", self.id);
                return Err(Close::Graceful);
            }
            State::Closing => {
                return Err(if self.to_client.is_empty() {
                    Close::Graceful
                } else {
                    Close::Abort
                });
            }
        }
        Ok(())
    }

    /// Releases every resource of a connection that is being removed.
    fn teardown(&mut self, sh: &mut Shared, how: Close) {
        if let Some(exchange) = self.exchange.take() {
            // Still in flight: the backend never finished this request for a reason of ours or the client's.
            if self.backend.is_some() && !matches!(self.state, State::Tunnel) {
                sh.balancer.abandon(exchange.backend);
            }
        }
        if let Some(backend) = self.backend.take() {
            sh.close_stream(backend.stream, backend.token);
        }
        if how == Close::Abort {
            // SO_LINGER 0: close sends RST, so the client cannot mistake a cut-off body for a whole one.
            if let Err(e) = socket2::SockRef::from(&self.client).set_linger(Some(Duration::ZERO)) {
                log::debug!("set_linger: {e}");
            }
        }
        if let Err(e) = sh.registry.deregister(&mut self.client) {
            log::debug!("deregister client: {e}");
        }
        sh.release_token(self.client_token);
        for buf in [
            &mut self.client_in,
            &mut self.to_backend,
            &mut self.backend_in,
            &mut self.to_client,
        ] {
            buf.release(&mut sh.buffers);
        }
        log::debug!(
            "conn {}: closed ({how:?}) after {} requests",
            self.id,
            self.requests
        );
    }
}
