//! The event-loop engine: one edge-triggered `mio::Poll` on one thread owning every socket — the
//! listener, client and backend connections, the idle backend pool, health probes and admin
//! connections — each named by a token in a `slab`. Deadlines are timer entries checked after each batch
//! of events, and the poll sleeps exactly until the earliest one.
//!
//! This is a driver: what to do with a connection's bytes is the exchange core's decision
//! (`crate::exchange`); `client.rs` turns readiness into its events and carries out its actions.
//!
//! A batch of events is served in two passes: first every connection with an event reads what arrived
//! and its exchange acts on it (heads parsed, backends picked, responses planned); then each writes
//! what it now has, in the order of their first event. Writing at once after each read woke the peers
//! (clients, backends) in the middle of the batch, and their answers trickled back in small batches,
//! each request costing more wake-ups; writing after the batch served 11% more requests per second,
//! with a lower tail, at the same CPU per request (README, "Where the tail comes from").
//! `pool.rs` keeps the socket bookkeeping and the idle backend connections, `probe.rs` the health
//! checks, `admin.rs` the admin API's connections, `control.rs` signals, reloads and draining. Other
//! threads talk to the loop only through [`Control`]: a channel plus a waker.

mod accept;
mod admin;
mod client;
mod control;
mod dns;
mod pool;
mod probe;
mod queue;
mod workers;

use admin::AdminConn;
use client::Conn;
use pool::{IdleConn, Owner, Readiness, mark_ready};
use probe::Prober;
use workers::Peer;

use crate::balance::{Balancer, Tried};
use crate::config::Config;
pub use crate::control::{Command, Control, Snapshot};
use crate::exchange::{Close, Context};
use crate::fault;
use crate::timer::{Deadline, Expiry, TimerKey, TimerOwner, Timers};
use crate::tls::TlsStream;
use crate::transport::Transport;
use crate::workers::Process;
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const ADMIN_LISTENER: Token = Token(2);
const SIGNALS: Token = Token(3);
const TLS_LISTENER: Token = Token(4);
// Tokens 5 to 12: DNS discovery's sockets (`crate::discovery`).
/// Socket tokens are slab keys shifted past the fixed tokens above.
const FIRST_SOCKET: usize = 16;

/// Pause before accepting again after accept failed for lack of resources (EMFILE and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Passes through a connection one `drive` call may make. A connection streaming a large body can
/// progress indefinitely; past this budget it yields and is driven again after the next poll, so that
/// one busy connection cannot starve the others.
const DRIVE_BUDGET: usize = 64;
/// Free buffer blocks the loop's thread keeps for reuse.
const FREE_BLOCKS: usize = 1024;
const ACCEPT_TIMER: TimerKey = TimerKey {
    owner: TimerOwner::Accept,
    generation: 0,
};
const TICK_TIMER: TimerKey = TimerKey {
    owner: TimerOwner::Tick,
    generation: 0,
};
const DRAIN_TIMER: TimerKey = TimerKey {
    owner: TimerOwner::Drain,
    generation: 0,
};

/// Which steps a `drive` call takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The first pass over a batch: reads, and what the exchange does with them.
    Reads,
    /// Reads and writes.
    Full,
}

/// Whether a `drive` call left work behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    /// Every socket of the connection is waiting for an event.
    Done,
    /// The budget ran out while progress was still possible.
    Yielded,
}

/// What the exchange core asks of the engine, for the loop: the configuration, the balancer, the
/// draining flag and the request meter.
struct Upstream {
    config: Config,
    balancer: Balancer,
    /// SIGTERM received: every response closes its connection, nothing new is accepted.
    draining: bool,
    meter: RequestMeter,
    /// The HTTPS listener's port as bound.
    https_port: Option<u16>,
    /// Figures shared with the other workers, and this worker's index in them.
    process: Arc<Process>,
    worker: usize,
    /// Per-client limits, shared by every worker.
    limits: Arc<crate::limit::Limits>,
    /// The dashboard's last ten minutes (the first worker's, which serves the admin API).
    history: crate::history::History,
}

impl Context for Upstream {
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
        self.balancer.pick(pool, client, tried, prefer)
    }

    fn enqueue(&mut self, pool: usize) -> Option<crate::balance::QueueSpot> {
        self.balancer.enqueue(pool, self.config.queue.size)
    }

    fn admit_request(&mut self, client: IpAddr, now: Instant) -> bool {
        self.limits.request(client, now).is_ok()
    }

    fn draining(&self) -> bool {
        self.draining
    }

    fn count_request(&mut self) {
        self.process.count_request(self.worker);
    }

    fn https_redirect_port(&self) -> Option<u16> {
        self.config
            .tls
            .as_ref()
            .filter(|t| t.redirect_http)
            .and(self.https_port)
    }
}

/// Everything a connection's driver needs besides the connection itself.
struct Shared {
    upstream: Upstream,
    registry: Registry,
    sockets: Slab<Owner>,
    /// Idle keep-alive backend connections, by backend slot.
    idle: Vec<Vec<IdleConn>>,
    timers: Timers,
    /// Health probers, by slot: the first worker's only (one probe per backend and interval for the
    /// whole process); the other workers read the health it records in the backends' shared state.
    probers: Vec<Prober>,
    /// Connections whose requests wait in a pool's queue.
    queues: queue::Queues,
}

impl Shared {
    /// A panic caught at a connection's boundary (`lb_internal_errors_total`): a bug, which cost one
    /// connection instead of the process.
    fn count_internal_error(&self) {
        self.upstream
            .process
            .count_internal_error(self.upstream.worker);
    }
}

/// Which listener a client came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Plain,
    Tls,
}

/// Derives requests per second, over every worker, once a second.
struct RequestMeter {
    started: Instant,
    at_last_tick: u64,
    per_second: f64,
    last_tick: Instant,
}

impl RequestMeter {
    fn new(now: Instant) -> RequestMeter {
        RequestMeter {
            started: now,
            at_last_tick: 0,
            per_second: 0.0,
            last_tick: now,
        }
    }

    fn tick(&mut self, total: u64, now: Instant) {
        let elapsed = now.duration_since(self.last_tick).as_secs_f64();
        if elapsed > 0.0 {
            self.per_second = total.saturating_sub(self.at_last_tick) as f64 / elapsed;
        }
        self.at_last_tick = total;
        self.last_tick = now;
    }
}

pub struct Server {
    poll: Poll,
    /// Closed when draining starts.
    listener: Option<TcpListener>,
    /// The HTTPS listener (`[tls]`), closed when draining starts.
    tls_listener: Option<TcpListener>,
    /// What new HTTPS connections get: certificates and settings as of the last (re)load.
    tls_server: Option<Arc<rustls::ServerConfig>>,
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
    tls_listener_ready: bool,
    accept_paused: bool,
    /// Connections that used up their drive budget with work left: (slab key, id).
    yielded: Vec<(usize, u64)>,
    /// The time, read once after each poll: everything handled in one batch of events shares it (the
    /// clock is read once per batch, not per connection; deadlines are milliseconds apart at least).
    now: Instant,
    /// The waker fired: another thread sent a command.
    woken: bool,
    /// The current batch of events, counted.
    batch: u32,
    /// Connections with an event in the current batch, in the order of their first one, for the
    /// write pass: (slab key, id).
    batch_ready: Vec<(usize, u64)>,
    commands: Receiver<Command>,
    control: Control,
    /// This worker's index; the first (0) also serves the admin API, handles signals, probes the
    /// backends and works reloads out for the others.
    index: usize,
    /// The first worker's handles on the others: their controls, and their threads once running.
    peers: Vec<Peer>,
    /// DNS discovery (the first worker's), and its timer.
    dns: Option<crate::discovery::Discovery>,
    dns_deadline: Deadline,
}

impl Server {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// The HTTPS listener's address, when `[tls]` is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The admin listener's address, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Runs the loop, and the other workers' on threads of their own, until [`Control::shutdown`] is
    /// called or a drain completes.
    pub fn run(&mut self) -> io::Result<()> {
        self.start_peers()?;
        let result = self.serve();
        // A loop that failed or was told to stop takes the others with it; a drain lets them finish.
        let stop = result.is_err() || !self.shared.upstream.draining;
        self.join_peers(stop);
        result
    }

    fn serve(&mut self) -> io::Result<()> {
        crate::buffer::keep_free_blocks(FREE_BLOCKS);
        let mut events = Events::with_capacity(1024);
        let mut resume = Vec::new();
        self.now = Instant::now();
        self.shared.start_probers(self.now);
        self.start_dns();
        Deadline::default().set(
            self.now + Duration::from_secs(1),
            &mut self.shared.timers,
            TICK_TIMER,
        );
        // Commands sent before the loop started (the waker has fired for them already).
        self.woken = true;
        loop {
            let timeout = if self.yielded.is_empty() {
                // Measured from the batch's time: a wake-up is late by at most the batch's work.
                self.shared.timers.next_timeout(self.now)
            } else {
                Some(Duration::ZERO)
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.now = Instant::now();
            // Never 0: that is what a connection's mark is reset to after its write pass, so that a mark
            // left from 2^32 batches ago cannot pass for this batch's.
            self.batch = self.batch.wrapping_add(1).max(1);
            for event in events.iter() {
                self.dispatch(event);
            }
            let mut ready = std::mem::take(&mut self.batch_ready);
            for (key, id) in ready.drain(..) {
                if self.conns.get(key).is_some_and(|c| c.id() == id) {
                    self.drive(key, Pass::Full);
                    if let Some(conn) = self.conns.get_mut(key) {
                        conn.batch = 0;
                    }
                }
            }
            self.batch_ready = ready;
            std::mem::swap(&mut resume, &mut self.yielded);
            for (key, id) in resume.drain(..) {
                if self.conns.get(key).is_some_and(|c| c.id() == id) {
                    self.drive(key, Pass::Full);
                }
            }
            self.run_timers();
            // Requests that ended in this batch may have freed room for waiting ones.
            self.serve_queues();
            self.publish();
            if std::mem::take(&mut self.woken) && self.handle_commands() {
                log::info!(
                    "event loop stopping with {} open client connections",
                    self.conns.len()
                );
                return Ok(());
            }
            if self.drained() {
                return Ok(());
            }
        }
    }

    fn dispatch(&mut self, event: &Event) {
        match event.token() {
            LISTENER => {
                self.listener_ready = true;
                self.accept_from(Entry::Plain);
            }
            TLS_LISTENER => {
                self.tls_listener_ready = true;
                self.accept_from(Entry::Tls);
            }
            WAKER => self.woken = true,
            ADMIN_LISTENER => self.accept_admin(),
            SIGNALS => self.on_signals(),
            token if crate::discovery::owns(token) => self.on_dns(Some(token)),
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
                            conn.client_event(event);
                            self.read_pass(key);
                        }
                    }
                    Owner::Backend(key) => {
                        if let Some(conn) = self.conns.get_mut(key) {
                            conn.backend_event(event);
                            self.read_pass(key);
                        }
                    }
                    Owner::Idle(slot) => self.shared.check_idle(slot, Token(t)),
                    Owner::Probe(slot) => {
                        let now = self.now;
                        let shared = &mut self.shared;
                        if let Err(cause) =
                            fault::contain(|| shared.on_probe_event(slot, event, now))
                        {
                            self.shared.contain_probe_panic(slot, &cause, now);
                        }
                    }
                    Owner::Admin(key) => self.on_admin_event(key, event),
                }
            }
        }
    }

    /// An event for connection `key` in the current batch: its read pass now, its write pass queued.
    fn read_pass(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.batch != self.batch {
            conn.batch = self.batch;
            self.batch_ready.push((key, conn.id()));
        }
        self.drive(key, Pass::Reads);
    }

    /// Advances one connection as far as its sockets allow, then re-arms its deadline or removes it.
    fn drive(&mut self, key: usize, pass: Pass) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let id = conn.id();
        let shared = &mut self.shared;
        let result = fault::contain(|| {
            let work = conn.drive(shared, pass, now)?;
            // A read pass is always followed by the connection's write pass in the same batch, before
            // any timer runs: the deadline is set once, after that.
            if pass == Pass::Full {
                conn.refresh_deadline(shared);
            }
            Ok(work)
        });
        match result {
            Ok(Ok(Work::Yielded)) => self.yielded.push((key, id)),
            Ok(Ok(Work::Done)) => {}
            Ok(Err(how)) => self.remove(key, how),
            Err(cause) => self.contain_panic(key, &cause),
        }
    }

    /// The deadline of connection `key` passed: let its exchange decide, then drive it.
    fn expire(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let shared = &mut self.shared;
        match fault::contain(|| conn.on_timeout(shared, now)) {
            Ok(Ok(())) => self.drive(key, Pass::Full),
            Ok(Err(how)) => self.remove(key, how),
            Err(cause) => self.contain_panic(key, &cause),
        }
    }

    fn remove(&mut self, key: usize, how: Close) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        let upstream = &self.shared.upstream;
        upstream.process.release(upstream.worker);
        if let Some(held) = conn.limit.take() {
            upstream.limits.disconnect(held);
        }
        let id = conn.id();
        let shared = &mut self.shared;
        if let Err(cause) = fault::contain(|| conn.teardown(shared, how)) {
            self.shared.count_internal_error();
            log::error!(
                "internal error closing conn {id}: {cause}; its sockets are closed but may stay counted"
            );
        }
        // Whatever the teardown did not reach goes with the connection: buffers back to the pool, the
        // request out of the in-flight counts (both by ownership), the sockets closed.
        drop(conn);
        self.resume_accepting();
    }

    /// A panic while working on connection `key` was caught. The bug may have left that connection
    /// half-way through a step, so it is not trusted to go on: it is torn down. Its request leaves the
    /// in-flight counts when its guard is dropped, its buffers go back to the pool when they are
    /// dropped, its tokens and sockets are its own, and its timer entries die with its id. Other
    /// connections and the shared figures were not in the middle of anything: the loop serves one
    /// connection at a time, and the backends' figures are single atomic updates.
    fn contain_panic(&mut self, key: usize, cause: &str) {
        self.shared.count_internal_error();
        if let Some(conn) = self.conns.get(key) {
            log::error!(
                "internal error on conn {} from {} ({}): {cause}; closing that connection alone",
                conn.id(),
                conn.client_addr(),
                conn.phase_name()
            );
            self.remove(key, Close::Abort);
        }
    }

    fn run_timers(&mut self) {
        let now = self.now;
        while let Some((at, key)) = self.shared.timers.pop_due(now) {
            match key.owner {
                TimerOwner::Accept => self.resume_accepting(),
                TimerOwner::Prober(slot) => {
                    let shared = &mut self.shared;
                    if let Err(cause) =
                        fault::contain(|| shared.on_prober_timer(slot, key.generation, at, now))
                    {
                        self.shared.contain_probe_panic(slot, &cause, now);
                    }
                }
                TimerOwner::Admin(slot) => self.on_admin_timer(slot, key.generation, at, now),
                TimerOwner::Tick => {
                    let total = self.shared.upstream.process.total().requests;
                    self.shared.upstream.meter.tick(total, now);
                    if self.index == 0 {
                        let u = &mut self.shared.upstream;
                        let (errors, latency) = u.balancer.totals();
                        let totals = crate::history::Totals {
                            requests: total,
                            errors,
                            latency,
                        };
                        u.history.record(crate::history::unix_now(), totals);
                    }
                    // A backstop for max_connections: a place freed by another worker.
                    self.resume_accepting();
                    Deadline::default().set(
                        now + Duration::from_secs(1),
                        &mut self.shared.timers,
                        TICK_TIMER,
                    );
                }
                TimerOwner::Drain => {}
                TimerOwner::Queue => self.on_queue_timer(),
                TimerOwner::Dns => self.on_dns_timer(at),
                TimerOwner::Conn(slot) => {
                    let Some(conn) = self.conns.get_mut(slot) else {
                        continue;
                    };
                    if conn.id() == key.generation
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
