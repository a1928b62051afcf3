//! One backend as every thread sees it: its configuration (fixed for the life of the handle) and its
//! live state — capacity, operator switch, health hysteresis, requests in flight, statistics, latency
//! average — in atomics, so that any thread updates it without a lock. A request counts in flight
//! through an [`InFlight`] guard: finishing it records the outcome, and dropping it unfinished (the
//! client went away, a panic unwound) takes the request back out of the counts.

use crate::balance::{BackendSnapshot, Outcome, Stats};
use crate::config::BackendConfig;
use crate::counter::Writer;
use crate::health::{Hysteresis, Transition};
use crate::histogram::{Counts, Histogram};
use crate::history::{EventLog, HealthEvent};
use crate::random::{fnv1a, mix64};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Weight of the newest sample in the latency moving average.
const LATENCY_EWMA_ALPHA: f64 = 0.3;
/// `latency_ewma_us` before the first sample (no f64 has these bits from a real average).
const NO_SAMPLE: u64 = u64::MAX;

/// The live state of a backend. It outlives reloads that keep the backend: a reload that changes the
/// backend's settings builds a new [`Backend`] around the same state.
#[derive(Debug)]
pub(super) struct BackendState {
    capacity: AtomicU32,
    enabled: AtomicBool,
    /// Dropped from the configuration by a reload: no new requests, not listed.
    removed: AtomicBool,
    /// A packed [`Hysteresis`].
    health: AtomicU64,
    /// Requests in flight, over all workers: what `max_connections` and the least-loaded algorithms
    /// read, so it is one count.
    active: AtomicU32,
    /// Moving average of response times in microseconds (f64 bits), or `NO_SAMPLE`.
    latency_ewma_us: AtomicU64,
    /// The request figures, by writer: the first any thread may write (the threaded engine's, and
    /// tests'), then one per event-loop worker, written by that worker's thread alone. Readers add
    /// them up.
    pub(super) tallies: Box<[Tally]>,
}

/// One writer's request figures of a backend, on cache lines of its own so that workers counting
/// their requests never contend.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(super) struct Tally {
    pub(super) requests: AtomicU64,
    successes: AtomicU64,
    errors: AtomicU64,
    latency_total_ns: AtomicU64,
    /// Response times of answered requests (successes and 5xx).
    responses: Histogram,
}

impl BackendState {
    /// The state of a new backend whose figures `workers` event-loop workers count.
    pub(super) fn new(capacity: u32, workers: usize) -> BackendState {
        BackendState {
            capacity: AtomicU32::new(capacity),
            enabled: AtomicBool::new(true),
            removed: AtomicBool::new(false),
            health: AtomicU64::new(Hysteresis::new().pack()),
            active: AtomicU32::new(0),
            latency_ewma_us: AtomicU64::new(NO_SAMPLE),
            tallies: (0..=workers).map(|_| Tally::default()).collect(),
        }
    }

    /// The tally a request counted with `tally` goes to, and how it is written: tally 0 (and one
    /// beyond the workers this state was made for) is the shared one.
    fn tally(&self, tally: u16) -> (&Tally, Writer) {
        match self.tallies.get(usize::from(tally)) {
            Some(t) if tally > 0 => (t, Writer::Sole),
            _ => (&self.tallies[0], Writer::Any),
        }
    }
}

/// A backend: what it is (configuration, slot, health thresholds) and a handle on its live state.
#[derive(Debug)]
pub struct Backend {
    /// Its position in the balancer's table: stable for the life of the process, so it names the
    /// backend in tries, pools and probes.
    pub slot: usize,
    pub config: BackendConfig,
    /// What logs call it: its URL, with the address for one address of a `resolve` backend.
    pub name: String,
    rise: u32,
    fall: u32,
    /// Identity for `ip_hash`, derived from the URL (and a `resolve` backend's address) so it
    /// survives restarts and reloads.
    pub(super) hash_key: u64,
    /// Its name in a sticky cookie (`crate::sticky`): from its pool and URL.
    pub sticky_id: u64,
    pub(super) state: Arc<BackendState>,
    /// Where its health transitions are kept for the dashboard (the balancer's, shared).
    events: Arc<EventLog>,
}

impl Backend {
    pub(super) fn new(
        slot: usize,
        config: BackendConfig,
        rise: u32,
        fall: u32,
        state: Arc<BackendState>,
        events: Arc<EventLog>,
    ) -> Backend {
        // Both hash what names the backend across restarts: its URL (and a `resolve` address).
        let (hash_key, sticky_id) = {
            let identity = config.sticky_name();
            (
                mix64(fnv1a(identity.as_bytes())),
                crate::sticky::backend_id(&config.pool, &identity),
            )
        };
        Backend {
            slot,
            hash_key,
            sticky_id,
            name: config.to_string(),
            config,
            rise,
            fall,
            state,
            events,
        }
    }

    pub fn capacity(&self) -> u32 {
        self.state.capacity.load(Ordering::Relaxed)
    }

    pub fn set_capacity(&self, capacity: u32) {
        self.state.capacity.store(capacity, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.state.enabled.load(Ordering::Relaxed)
    }

    /// An operator's switch: a disabled backend gets no new requests; those in flight finish.
    pub fn set_enabled(&self, enabled: bool) {
        self.state.enabled.store(enabled, Ordering::Relaxed);
    }

    pub fn removed(&self) -> bool {
        self.state.removed.load(Ordering::Relaxed)
    }

    pub(super) fn mark_removed(&self) {
        self.state.removed.store(true, Ordering::Relaxed);
    }

    pub fn healthy(&self) -> bool {
        Hysteresis::unpack(self.state.health.load(Ordering::Relaxed)).healthy
    }

    /// Below its `max_connections` (or without one): it may take one more request.
    pub fn has_room(&self) -> bool {
        let max = self.config.max_connections;
        max == 0 || self.state.active.load(Ordering::Relaxed) < max
    }

    /// Counts a request sent to this backend, in tally `tally` (0: the shared one; a worker's own
    /// otherwise, which only that worker's thread may write), if it has room
    /// under its `max_connections` (checked and taken in one step, so that workers together never
    /// pass it).
    pub fn try_start(self: Arc<Self>, tally: u16) -> Option<InFlight> {
        let max = self.config.max_connections;
        if max > 0 {
            self.state
                .active
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .ok()?;
        } else {
            self.state.active.fetch_add(1, Ordering::Relaxed);
        }
        Some(self.counted(tally))
    }

    /// The guard of a request already counted in `active`: counts it in tally `tally`.
    fn counted(self: Arc<Self>, tally: u16) -> InFlight {
        let (t, writer) = self.state.tally(tally);
        writer.add(&t.requests, 1);
        InFlight {
            backend: self,
            open: true,
            tally,
        }
    }

    /// Healthy, enabled and configured: a candidate for new requests.
    pub fn available(&self) -> bool {
        self.healthy() && self.enabled() && !self.removed()
    }

    /// Requests in flight.
    pub fn active(&self) -> u32 {
        self.state.active.load(Ordering::Relaxed)
    }

    pub fn latency_ewma(&self) -> Option<Duration> {
        match self.state.latency_ewma_us.load(Ordering::Relaxed) {
            NO_SAMPLE => None,
            bits => Some(Duration::from_secs_f64(f64::from_bits(bits) / 1e6)),
        }
    }

    pub(super) fn latency_ewma_us(&self) -> Option<f64> {
        match self.state.latency_ewma_us.load(Ordering::Relaxed) {
            NO_SAMPLE => None,
            bits => Some(f64::from_bits(bits)),
        }
    }

    pub fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        let mut latency_ns = 0u64;
        for t in &self.state.tallies {
            stats.requests += t.requests.load(Ordering::Relaxed);
            stats.successes += t.successes.load(Ordering::Relaxed);
            stats.errors += t.errors.load(Ordering::Relaxed);
            latency_ns = latency_ns.saturating_add(t.latency_total_ns.load(Ordering::Relaxed));
        }
        stats.total_latency = Duration::from_nanos(latency_ns);
        stats
    }

    /// Counts a request sent to this backend (in the shared tally, without a `max_connections`
    /// check); the guard (which keeps this handle) records how it ends.
    pub fn start(self: Arc<Self>) -> InFlight {
        self.start_in(0)
    }

    /// [`Backend::start`] in tally `tally`.
    fn start_in(self: Arc<Self>, tally: u16) -> InFlight {
        self.state.active.fetch_add(1, Ordering::Relaxed);
        self.counted(tally)
    }

    /// Feeds one health observation (a probe, or real traffic) through the hysteresis, and logs the
    /// transition it causes with `why`: down at warn, up at info.
    pub fn observe(&self, success: bool, why: &str) -> Option<Transition> {
        let mut transition = None;
        let update = self
            .state
            .health
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                let mut health = Hysteresis::unpack(bits);
                transition = health.record(success, self.rise, self.fall);
                let packed = health.pack();
                // No store when nothing changes: the common case of one more success.
                (packed != bits).then_some(packed)
            });
        if update.is_err() {
            return None;
        }
        match transition {
            Some(Transition::Down) => {
                log::warn!(
                    "backend {} is DOWN after {} consecutive failures (last: {why})",
                    self.name,
                    self.fall
                );
                self.record_event("down", why);
            }
            Some(Transition::Up) => {
                // A recovered backend is measured afresh by least_latency.
                self.state
                    .latency_ewma_us
                    .store(NO_SAMPLE, Ordering::Relaxed);
                log::info!(
                    "backend {} is UP after {} consecutive successes (last: {why})",
                    self.name,
                    self.rise
                );
                self.record_event("up", why);
            }
            None => {}
        }
        transition
    }

    fn record_event(&self, state: &'static str, why: &str) {
        self.events.push(HealthEvent {
            t: crate::history::unix_now(),
            pool: self.config.pool.clone(),
            backend: self.name.clone(),
            state,
            reason: why.to_string(),
        });
    }

    /// The moving average takes `latency`. Workers update it with a plain load and store: when two
    /// update it at the same instant one sample is lost, which an average of many does not notice,
    /// and no locked instruction is spent per request.
    fn record_latency(&self, latency: Duration) {
        let average = &self.state.latency_ewma_us;
        let sample = latency.as_secs_f64() * 1e6;
        let updated = match average.load(Ordering::Relaxed) {
            NO_SAMPLE => sample,
            bits => {
                let avg = f64::from_bits(bits);
                avg + LATENCY_EWMA_ALPHA * (sample - avg)
            }
        };
        average.store(updated.to_bits(), Ordering::Relaxed);
    }

    /// The response-time histogram's counts, over every tally.
    pub fn response_times(&self) -> Counts {
        let mut counts = Counts::default();
        self.add_response_times_to(&mut counts);
        counts
    }

    /// Adds the response-time histogram's counts, over every tally, to `total`.
    pub fn add_response_times_to(&self, total: &mut Counts) {
        for t in &self.state.tallies {
            t.responses.add_to(total);
        }
    }

    pub fn snapshot(&self) -> BackendSnapshot {
        let stats = self.stats();
        BackendSnapshot {
            pool: self.config.pool.clone(),
            url: self.config.url.clone(),
            address: self.config.addr.to_string(),
            discovered: self.config.resolve.is_some(),
            healthy: self.healthy(),
            enabled: self.enabled(),
            capacity: self.capacity(),
            active_connections: self.active(),
            latency: self.response_times(),
            request_count: stats.requests,
            success_count: stats.successes,
            error_count: stats.errors,
            average_latency_ms: stats.average_latency().as_secs_f64() * 1e3,
        }
    }
}

/// A request counted in flight on a backend. [`InFlight::finish`] records its outcome; dropped or
/// [abandoned](InFlight::abandon) without that, it is taken back out of the counts (the request will not
/// complete for a reason that is not the backend's), so that requests = successes + errors holds
/// whatever path a connection takes, an unwinding panic included. Either happens once: later calls do
/// nothing.
#[derive(Debug)]
pub struct InFlight {
    backend: Arc<Backend>,
    open: bool,
    /// The tally it is counted in (see [`BackendState`]).
    pub(super) tally: u16,
}

impl InFlight {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// The same request counted again on the same backend, in the same tally (a retry on a new
    /// connection after a pooled one failed: not the backend's failure). The guard it replaces takes
    /// its count back out when dropped.
    pub fn again(&self) -> InFlight {
        self.backend.clone().start_in(self.tally)
    }

    /// Records how the request ended. Failures (not 5xx answers) count toward `fall`; `why` names the
    /// cause in the log line of a health transition it causes.
    pub fn finish(&mut self, outcome: Outcome, why: &str) {
        if !std::mem::replace(&mut self.open, false) {
            return;
        }
        let backend = &self.backend;
        let s = &backend.state;
        s.active.fetch_sub(1, Ordering::Relaxed);
        let (t, writer) = s.tally(self.tally);
        match outcome {
            Outcome::Success { latency } => {
                writer.add(&t.successes, 1);
                t.responses.record_as(latency, writer);
                let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
                writer.add(&t.latency_total_ns, ns);
                backend.record_latency(latency);
                backend.observe(true, why);
            }
            Outcome::ErrorResponse { latency } => {
                writer.add(&t.errors, 1);
                t.responses.record_as(latency, writer);
            }
            Outcome::Failure => {
                writer.add(&t.errors, 1);
                backend.observe(false, why);
            }
        }
    }

    /// Takes the request back out of the counts.
    pub fn abandon(&mut self) {
        if std::mem::replace(&mut self.open, false) {
            let s = &self.backend.state;
            s.active.fetch_sub(1, Ordering::Relaxed);
            let (t, writer) = s.tally(self.tally);
            writer.sub(&t.requests, 1);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.abandon();
    }
}
