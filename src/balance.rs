//! The backend pool: each backend's configuration, health, load and statistics, and the choice of a
//! backend for each request by the configured algorithm. Pure bookkeeping, no sockets: the event loop
//! calls in when requests start and finish and when health is observed. Every pick is one pass over the
//! backends with no allocation.

use crate::config::{Algorithm, BackendConfig};
use crate::health::{Hysteresis, Transition};
use std::net::IpAddr;
use std::time::Duration;

/// Per-backend counters, as in the original design.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests sent to this backend (each attempt that got a connection or tried to).
    pub requests: u64,
    /// Complete responses with status < 500.
    pub successes: u64,
    /// Connect failures, resets, timeouts, invalid responses, 5xx.
    pub errors: u64,
    /// Sum of response times of successful requests.
    pub total_latency: Duration,
}

impl Stats {
    pub fn average_latency(&self) -> Duration {
        if self.successes == 0 {
            Duration::ZERO
        } else {
            self.total_latency.div_f64(self.successes as f64)
        }
    }
}

/// Weight of the newest sample in the latency moving average.
const LATENCY_EWMA_ALPHA: f64 = 0.3;

#[derive(Debug, Clone)]
pub struct Backend {
    pub config: BackendConfig,
    pub capacity: u32,
    /// Operator switch: a disabled backend gets no new requests (in-flight ones finish).
    pub enabled: bool,
    pub health: Hysteresis,
    /// Requests in flight on this backend.
    pub active: u32,
    pub stats: Stats,
    /// Moving average of response times in microseconds; `None` until sampled (new or recovered).
    latency_ewma_us: Option<f64>,
    /// Smooth weighted round robin state.
    current_weight: i64,
    /// Identity for `ip_hash`, derived from the URL so it survives restarts and reloads.
    hash_key: u64,
    /// Dropped from the configuration by a reload. The slot stays (requests in flight still refer to
    /// it) but gets no new requests and is not listed.
    pub removed: bool,
}

impl Backend {
    pub fn new(config: BackendConfig) -> Backend {
        Backend {
            capacity: config.capacity,
            hash_key: mix64(fnv1a(config.url.as_bytes())),
            config,
            enabled: true,
            health: Hysteresis::new(),
            active: 0,
            stats: Stats::default(),
            latency_ewma_us: None,
            current_weight: 0,
            removed: false,
        }
    }

    pub fn healthy(&self) -> bool {
        self.health.healthy
    }

    pub fn available(&self) -> bool {
        self.health.healthy && self.enabled && !self.removed
    }

    pub fn latency_ewma(&self) -> Option<Duration> {
        self.latency_ewma_us
            .map(|us| Duration::from_secs_f64(us / 1e6))
    }
}

/// How a request ended, for statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success {
        latency: Duration,
    },
    /// A 5xx response: an error in the statistics, but the backend answered.
    ErrorResponse {
        latency: Duration,
    },
    /// Connect failure, reset, timeout or invalid response.
    Failure,
}

/// Backends already tried for one request (the first 64 are tracked; more is beyond any retry budget).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tried(u64);

impl Tried {
    pub fn with(self, index: usize) -> Tried {
        if index < 64 {
            Tried(self.0 | (1 << index))
        } else {
            self
        }
    }

    pub fn contains(self, index: usize) -> bool {
        index < 64 && self.0 & (1 << index) != 0
    }
}

/// A copy of one backend's figures, for the admin endpoint and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSnapshot {
    pub url: String,
    pub healthy: bool,
    pub enabled: bool,
    pub capacity: u32,
    pub active_connections: u32,
    pub request_count: u64,
    pub success_count: u64,
    pub error_count: u64,
    pub average_latency_ms: f64,
}

/// What a reload changed, by slot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconfigured {
    /// New backends, or removed ones configured again (their figures start afresh).
    pub added: Vec<usize>,
    pub removed: Vec<usize>,
    /// Kept backends whose address or health-check settings changed.
    pub changed: Vec<usize>,
    /// Kept backends whose address changed (their pooled connections point at the old one).
    pub moved: Vec<usize>,
}

pub struct Balancer {
    /// Backend slots. A slot index never changes meaning while the process runs: reloads append slots
    /// and mark dropped ones `removed`.
    pub backends: Vec<Backend>,
    /// Slots of the configured backends, in configuration order (the admin API's indexes).
    order: Vec<usize>,
    algorithm: Algorithm,
    rise: u32,
    fall: u32,
    cursor: usize,
    rng: u64,
}

impl Balancer {
    pub fn new(configs: &[BackendConfig], algorithm: Algorithm, rise: u32, fall: u32) -> Balancer {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9, |d| d.as_nanos() as u64);
        Balancer::with_seed(configs, algorithm, rise, fall, seed)
    }

    /// The balancer a configuration describes.
    pub fn from_config(config: &crate::config::Config) -> Balancer {
        Balancer::new(
            &config.backends,
            config.algorithm,
            config.health_check.rise,
            config.health_check.fall,
        )
    }

    pub fn with_seed(
        configs: &[BackendConfig],
        algorithm: Algorithm,
        rise: u32,
        fall: u32,
        seed: u64,
    ) -> Balancer {
        Balancer {
            backends: configs.iter().cloned().map(Backend::new).collect(),
            order: (0..configs.len()).collect(),
            algorithm,
            rise,
            fall,
            cursor: 0,
            rng: mix64(seed) | 1,
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The slot of the backend at `position` in the configuration.
    pub fn slot(&self, position: usize) -> Option<usize> {
        self.order.get(position).copied()
    }

    /// Slots of the configured backends, in configuration order.
    pub fn configured(&self) -> &[usize] {
        &self.order
    }

    /// Applies a reloaded configuration. Backends are matched by URL: kept ones keep their figures and
    /// health (their capacity follows the file only where the file changed it, so a capacity set at run
    /// time survives an unrelated reload), new ones start healthy, dropped ones stop getting requests.
    pub fn reconfigure(
        &mut self,
        configs: &[BackendConfig],
        algorithm: Algorithm,
        rise: u32,
        fall: u32,
    ) -> Reconfigured {
        let mut changes = Reconfigured::default();
        let mut order = Vec::with_capacity(configs.len());
        for config in configs {
            match self
                .backends
                .iter()
                .position(|b| b.config.url == config.url)
            {
                Some(slot) if self.backends[slot].removed => {
                    self.backends[slot] = Backend::new(config.clone());
                    changes.added.push(slot);
                    order.push(slot);
                }
                Some(slot) => {
                    let backend = &mut self.backends[slot];
                    if config.capacity != backend.config.capacity {
                        backend.capacity = config.capacity;
                    }
                    if config.addr != backend.config.addr {
                        changes.moved.push(slot);
                    }
                    if config.addr != backend.config.addr
                        || config.health_check_path != backend.config.health_check_path
                        || config.health_check_interval != backend.config.health_check_interval
                        || config.health_check_timeout != backend.config.health_check_timeout
                    {
                        changes.changed.push(slot);
                    }
                    backend.config = config.clone();
                    order.push(slot);
                }
                None => {
                    self.backends.push(Backend::new(config.clone()));
                    changes.added.push(self.backends.len() - 1);
                    order.push(self.backends.len() - 1);
                }
            }
        }
        for &slot in &self.order {
            if !order.contains(&slot) {
                self.backends[slot].removed = true;
                changes.removed.push(slot);
            }
        }
        self.order = order;
        self.algorithm = algorithm;
        self.rise = rise;
        self.fall = fall;
        changes
    }

    /// A pseudo-random number (xorshift64*): cheap, and good enough to spread load.
    pub fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn candidate(&self, index: usize, tried: Tried) -> bool {
        self.backends[index].available() && !tried.contains(index)
    }

    /// Sets the capacity of the backend at `position` in the configuration (the admin API's index).
    pub fn set_capacity(&mut self, position: usize, capacity: u32) -> bool {
        let Some(slot) = self.slot(position) else {
            return false;
        };
        self.backends[slot].capacity = capacity;
        true
    }

    /// Enables or disables (drains) the backend at `position` in the configuration.
    pub fn set_enabled(&mut self, position: usize, enabled: bool) -> bool {
        let Some(slot) = self.slot(position) else {
            return false;
        };
        self.backends[slot].enabled = enabled;
        true
    }

    /// Chooses a backend for a request from `client`, among available backends not in `tried`.
    /// `None` when there is none.
    pub fn pick(&mut self, client: IpAddr, tried: Tried) -> Option<usize> {
        match self.algorithm {
            Algorithm::RoundRobin => self.round_robin(tried),
            Algorithm::WeightedRoundRobin => self.smooth_weighted(tried),
            Algorithm::LeastConnections => self.least_connections(tried),
            Algorithm::LeastLatency => self.least_latency(tried),
            Algorithm::PowerOfTwo => self.power_of_two(tried),
            Algorithm::Random => self.weighted_random(tried),
            Algorithm::IpHash => self.rendezvous(client, tried),
        }
    }

    fn round_robin(&mut self, tried: Tried) -> Option<usize> {
        let n = self.backends.len();
        let index = (0..n)
            .map(|offset| (self.cursor + offset) % n)
            .find(|&i| self.candidate(i, tried))?;
        self.cursor = (index + 1) % n;
        Some(index)
    }

    /// Smooth weighted round robin (as in nginx): every candidate gains its capacity, the richest is
    /// chosen and pays the total. Capacities 5,1,1 give a a b a c a a.
    fn smooth_weighted(&mut self, tried: Tried) -> Option<usize> {
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None;
        for i in 0..self.backends.len() {
            if !self.candidate(i, tried) {
                continue;
            }
            let b = &mut self.backends[i];
            b.current_weight += i64::from(b.capacity);
            total += i64::from(b.capacity);
            if best.is_none_or(|(_, weight)| b.current_weight > weight) {
                best = Some((i, b.current_weight));
            }
        }
        let (chosen, _) = best?;
        self.backends[chosen].current_weight -= total;
        Some(chosen)
    }

    /// The candidate minimising `score`, scanning from the round-robin cursor so that ties rotate.
    fn min_by_score(
        &mut self,
        tried: Tried,
        mut lower: impl FnMut(&Backend, &Backend) -> bool,
    ) -> Option<usize> {
        let n = self.backends.len();
        let mut best: Option<usize> = None;
        for offset in 0..n {
            let i = (self.cursor + offset) % n;
            if self.candidate(i, tried)
                && best.is_none_or(|j| lower(&self.backends[i], &self.backends[j]))
            {
                best = Some(i);
            }
        }
        let chosen = best?;
        self.cursor = (chosen + 1) % n;
        Some(chosen)
    }

    /// Fewest active requests per unit of capacity; ties go round robin.
    fn least_connections(&mut self, tried: Tried) -> Option<usize> {
        self.min_by_score(tried, less_loaded)
    }

    /// Lowest moving average of response time, scaled by the requests already waiting on it. A backend
    /// without samples (new, or just recovered) and without requests in flight goes first.
    fn least_latency(&mut self, tried: Tried) -> Option<usize> {
        let fastest_known = self
            .backends
            .iter()
            .filter_map(|b| b.latency_ewma_us)
            .fold(f64::INFINITY, f64::min);
        let fallback = if fastest_known.is_finite() {
            fastest_known
        } else {
            1.0
        };
        let score = |b: &Backend| -> f64 {
            match b.latency_ewma_us {
                None if b.active == 0 => 0.0,
                None => fallback * f64::from(b.active + 1),
                Some(us) => us * f64::from(b.active + 1),
            }
        };
        self.min_by_score(tried, |a, b| score(a) < score(b))
    }

    /// Two distinct random candidates; the less loaded one wins.
    fn power_of_two(&mut self, tried: Tried) -> Option<usize> {
        let count = (0..self.backends.len())
            .filter(|&i| self.candidate(i, tried))
            .count();
        match count {
            0 => None,
            1 => self.nth_candidate(0, tried),
            _ => {
                let first = (self.random() % count as u64) as usize;
                let mut second = (self.random() % (count as u64 - 1)) as usize;
                if second >= first {
                    second += 1;
                }
                let a = self.nth_candidate(first, tried)?;
                let b = self.nth_candidate(second, tried)?;
                Some(if less_loaded(&self.backends[b], &self.backends[a]) {
                    b
                } else {
                    a
                })
            }
        }
    }

    fn nth_candidate(&self, n: usize, tried: Tried) -> Option<usize> {
        (0..self.backends.len())
            .filter(|&i| self.candidate(i, tried))
            .nth(n)
    }

    /// Random, with probability proportional to capacity.
    fn weighted_random(&mut self, tried: Tried) -> Option<usize> {
        let total: u64 = (0..self.backends.len())
            .filter(|&i| self.candidate(i, tried))
            .map(|i| u64::from(self.backends[i].capacity))
            .sum();
        if total == 0 {
            return None;
        }
        let mut point = self.random() % total;
        for i in 0..self.backends.len() {
            if !self.candidate(i, tried) {
                continue;
            }
            let capacity = u64::from(self.backends[i].capacity);
            if point < capacity {
                return Some(i);
            }
            point -= capacity;
        }
        None
    }

    /// Weighted rendezvous hashing on the client address: each candidate scores
    /// `capacity / -ln(hash(client, backend))` and the highest wins. A client keeps its backend while
    /// that backend is available; removing a backend moves only its own clients, spread over the others
    /// in proportion to capacity.
    fn rendezvous(&mut self, client: IpAddr, tried: Tried) -> Option<usize> {
        let client_hash = hash_ip(client);
        let mut best: Option<(usize, f64)> = None;
        for i in 0..self.backends.len() {
            if !self.candidate(i, tried) {
                continue;
            }
            let b = &self.backends[i];
            let h = mix64(client_hash ^ b.hash_key);
            // A uniform value in (0, 1]: 53 random bits, never zero.
            let unit = ((h >> 11) + 1) as f64 / (1u64 << 53) as f64;
            let score = f64::from(b.capacity) / -unit.ln();
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((i, score));
            }
        }
        best.map(|(i, _)| i)
    }

    /// A request was sent to `index`.
    pub fn start(&mut self, index: usize) {
        let backend = &mut self.backends[index];
        backend.active += 1;
        backend.stats.requests += 1;
    }

    /// The request sent to `index` will not be completed for a reason that is not the backend's (the client
    /// went away, or a pooled connection turned out stale and the request moves to a new one): it is
    /// taken back out of the counts, so that requests = successes + errors keeps holding.
    pub fn abandon(&mut self, index: usize) {
        let backend = &mut self.backends[index];
        backend.active = backend.active.saturating_sub(1);
        backend.stats.requests = backend.stats.requests.saturating_sub(1);
    }

    /// The request sent to `index` ended. Failures (not 5xx answers) count toward `fall`; the returned
    /// transition, if any, is for the caller to log.
    pub fn finish(&mut self, index: usize, outcome: Outcome) -> Option<Transition> {
        let backend = &mut self.backends[index];
        backend.active = backend.active.saturating_sub(1);
        match outcome {
            Outcome::Success { latency } => {
                backend.stats.successes += 1;
                backend.stats.total_latency += latency;
                let sample = latency.as_secs_f64() * 1e6;
                backend.latency_ewma_us = Some(match backend.latency_ewma_us {
                    None => sample,
                    Some(avg) => avg + LATENCY_EWMA_ALPHA * (sample - avg),
                });
                self.observe(index, true)
            }
            Outcome::ErrorResponse { .. } => {
                backend.stats.errors += 1;
                None
            }
            Outcome::Failure => {
                backend.stats.errors += 1;
                self.observe(index, false)
            }
        }
    }

    /// Logs a health transition of slot `index` with its cause: down at warn, up at info.
    pub fn log_transition(&self, index: usize, transition: Transition, why: &str) {
        let backend = &self.backends[index];
        match transition {
            Transition::Down => log::warn!(
                "backend {} is DOWN after {} consecutive failures (last: {why})",
                backend.config.url,
                backend.health.consecutive_failures()
            ),
            Transition::Up => log::info!(
                "backend {} is UP after {} consecutive successes (last: {why})",
                backend.config.url,
                self.rise
            ),
        }
    }

    /// Feeds one health observation (an active probe or real traffic) through the hysteresis.
    pub fn observe(&mut self, index: usize, success: bool) -> Option<Transition> {
        let backend = &mut self.backends[index];
        let transition = backend.health.record(success, self.rise, self.fall);
        if transition == Some(Transition::Up) {
            // A recovered backend is measured afresh by least_latency.
            backend.latency_ewma_us = None;
        }
        transition
    }

    /// The configured backends' figures, in configuration order.
    pub fn snapshot(&self) -> Vec<BackendSnapshot> {
        self.order
            .iter()
            .map(|&slot| &self.backends[slot])
            .map(|b| BackendSnapshot {
                url: b.config.url.clone(),
                healthy: b.healthy(),
                enabled: b.enabled,
                capacity: b.capacity,
                active_connections: b.active,
                request_count: b.stats.requests,
                success_count: b.stats.successes,
                error_count: b.stats.errors,
                average_latency_ms: b.stats.average_latency().as_secs_f64() * 1e3,
            })
            .collect()
    }
}

/// `a` carries less load per unit of capacity than `b` (cross-multiplied: no division, no rounding).
fn less_loaded(a: &Backend, b: &Backend) -> bool {
    u64::from(a.active) * u64::from(b.capacity) < u64::from(b.active) * u64::from(a.capacity)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// splitmix64's finaliser: spreads every input bit over the output.
fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn hash_ip(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => fnv1a(&v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => fnv1a(&v4.octets()),
            None => fnv1a(&v6.octets()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::net::Ipv4Addr;

    fn balancer(capacities: &[u32], algorithm: Algorithm) -> Balancer {
        let text: String = capacities
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "[[backends]]\nurl = \"http://127.0.0.1:{}\"\ncapacity = {c}\n",
                    9000 + i
                )
            })
            .collect();
        let config = Config::parse(&text).unwrap();
        Balancer::with_seed(&config.backends, algorithm, 2, 3, 42)
    }

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const NONE: Tried = Tried(0);

    fn picks(b: &mut Balancer, n: usize) -> Vec<usize> {
        (0..n).map(|_| b.pick(CLIENT, NONE).unwrap()).collect()
    }

    fn counts(b: &mut Balancer, n: usize) -> Vec<usize> {
        let mut counts = vec![0; b.backends.len()];
        for i in picks(b, n) {
            counts[i] += 1;
        }
        counts
    }

    fn mark_down(b: &mut Balancer, index: usize) {
        for _ in 0..3 {
            b.observe(index, false);
        }
        assert!(!b.backends[index].healthy());
    }

    #[test]
    fn round_robin_skips_unavailable_and_tried() {
        let mut b = balancer(&[1, 1, 1], Algorithm::RoundRobin);
        assert_eq!(picks(&mut b, 6), [0, 1, 2, 0, 1, 2]);
        mark_down(&mut b, 1);
        assert_eq!(picks(&mut b, 4), [0, 2, 0, 2]);
        assert_eq!(b.pick(CLIENT, Tried::default().with(0)), Some(2));
        b.backends[0].enabled = false;
        mark_down(&mut b, 2);
        assert_eq!(b.pick(CLIENT, NONE), None);
    }

    #[test]
    fn smooth_weighted_order() {
        let mut b = balancer(&[5, 1, 1], Algorithm::WeightedRoundRobin);
        assert_eq!(picks(&mut b, 7), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(picks(&mut b, 7), [0, 0, 1, 0, 2, 0, 0], "the cycle repeats");
        let mut b = balancer(&[3, 1], Algorithm::WeightedRoundRobin);
        assert_eq!(
            counts(&mut b, 400),
            [300, 100],
            "exact proportions over whole cycles"
        );
        mark_down(&mut b, 0);
        assert_eq!(picks(&mut b, 3), [1, 1, 1]);
    }

    #[test]
    fn least_connections_weighs_by_capacity_and_rotates_ties() {
        let mut b = balancer(&[1, 1, 2], Algorithm::LeastConnections);
        // All idle: ties rotate.
        assert_eq!(picks(&mut b, 3), [0, 1, 2]);
        b.backends[0].active = 2;
        b.backends[1].active = 1;
        b.backends[2].active = 3; // 1.5 per unit of capacity
        assert_eq!(b.pick(CLIENT, NONE), Some(1));
        b.backends[1].active = 2; // now 0: 2, 1: 2, 2: 1.5
        assert_eq!(b.pick(CLIENT, NONE), Some(2));
        // Requests started through the balancer count.
        let mut b = balancer(&[1, 1], Algorithm::LeastConnections);
        let first = b.pick(CLIENT, NONE).unwrap();
        b.start(first);
        let second = b.pick(CLIENT, NONE).unwrap();
        assert_ne!(first, second, "the busy backend is avoided");
    }

    #[test]
    fn least_latency_prefers_fast_and_tries_new_backends_first() {
        let mut b = balancer(&[1, 1, 1], Algorithm::LeastLatency);
        let ms = Duration::from_millis;
        for (i, latency) in [(0, ms(50)), (1, ms(5))] {
            b.start(i);
            b.finish(i, Outcome::Success { latency });
        }
        assert_eq!(
            b.pick(CLIENT, NONE),
            Some(2),
            "unsampled backend goes first"
        );
        b.start(2);
        b.finish(2, Outcome::Success { latency: ms(20) });
        assert_eq!(counts(&mut b, 10), [0, 10, 0], "then the fastest");
        // Load scales the score: 5ms with 9 waiting loses to 20ms with none.
        b.backends[1].active = 9;
        assert_eq!(b.pick(CLIENT, NONE), Some(2));
        // A recovered backend is measured afresh and tried first.
        b.backends[1].active = 0;
        mark_down(&mut b, 0);
        b.observe(0, true);
        b.observe(0, true);
        assert!(b.backends[0].healthy());
        assert_eq!(b.backends[0].latency_ewma(), None);
        assert_eq!(b.pick(CLIENT, NONE), Some(0));
    }

    #[test]
    fn latency_average_moves_toward_new_samples() {
        let mut b = balancer(&[1], Algorithm::LeastLatency);
        b.finish(
            0,
            Outcome::Success {
                latency: Duration::from_millis(10),
            },
        );
        b.finish(
            0,
            Outcome::Success {
                latency: Duration::from_millis(20),
            },
        );
        let avg = b.backends[0].latency_ewma().unwrap().as_secs_f64() * 1e3;
        assert!((avg - 13.0).abs() < 1e-6, "{avg}");
    }

    #[test]
    fn power_of_two_avoids_the_loaded_backend() {
        let mut b = balancer(&[1, 1, 1, 1], Algorithm::PowerOfTwo);
        let even = counts(&mut b, 40_000);
        for c in &even {
            assert!(
                (9_000..11_000).contains(c),
                "idle backends share evenly: {even:?}"
            );
        }
        b.backends[3].active = 100;
        let loaded = counts(&mut b, 30_000);
        assert_eq!(
            loaded[3], 0,
            "the loaded backend never wins a pair: {loaded:?}"
        );
        let mut single = balancer(&[1, 1], Algorithm::PowerOfTwo);
        mark_down(&mut single, 0);
        assert_eq!(picks(&mut single, 3), [1, 1, 1]);
        mark_down(&mut single, 1);
        assert_eq!(single.pick(CLIENT, NONE), None);
    }

    #[test]
    fn random_follows_capacity() {
        let mut b = balancer(&[1, 2, 7], Algorithm::Random);
        let c = counts(&mut b, 100_000);
        let expected = [10_000.0, 20_000.0, 70_000.0];
        for (got, want) in c.iter().zip(expected) {
            assert!((*got as f64 - want).abs() < want * 0.05, "within 5%: {c:?}");
        }
        mark_down(&mut b, 2);
        let c = counts(&mut b, 30_000);
        assert_eq!(c[2], 0);
        assert!((c[1] as f64 / c[0] as f64 - 2.0).abs() < 0.2, "{c:?}");
    }

    fn client(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn ip_hash_is_sticky_weighted_and_remaps_minimally() {
        let mut b = balancer(&[1, 1, 1, 1], Algorithm::IpHash);
        let before: Vec<usize> = (0..4000)
            .map(|i| b.pick(client(i), NONE).unwrap())
            .collect();
        let again: Vec<usize> = (0..4000)
            .map(|i| b.pick(client(i), NONE).unwrap())
            .collect();
        assert_eq!(before, again, "the same client keeps its backend");
        let mut share = [0usize; 4];
        for &i in &before {
            share[i] += 1;
        }
        for s in share {
            assert!(
                (850..1150).contains(&s),
                "even spread within 15%: {share:?}"
            );
        }
        // Backend 2 goes down: only its clients move, and they spread over the other three.
        mark_down(&mut b, 2);
        let after: Vec<usize> = (0..4000)
            .map(|i| b.pick(client(i), NONE).unwrap())
            .collect();
        let mut moved_to = [0usize; 4];
        for (x, y) in before.iter().zip(&after) {
            if x == y {
                continue;
            }
            assert_eq!(*x, 2, "a client of a healthy backend moved");
            moved_to[*y] += 1;
        }
        assert_eq!(moved_to.iter().sum::<usize>(), share[2]);
        for (i, m) in moved_to.iter().enumerate() {
            if i != 2 {
                assert!(*m > share[2] / 6, "orphans spread: {moved_to:?}");
            }
        }
        // It recovers: everyone is back where they were.
        b.observe(2, true);
        b.observe(2, true);
        let back: Vec<usize> = (0..4000)
            .map(|i| b.pick(client(i), NONE).unwrap())
            .collect();
        assert_eq!(back, before);
    }

    #[test]
    fn ip_hash_follows_capacity_and_treats_mapped_v4_as_v4() {
        let mut b = balancer(&[3, 1], Algorithm::IpHash);
        let mut share = [0usize; 2];
        for i in 0..8000 {
            share[b.pick(client(i), NONE).unwrap()] += 1;
        }
        assert!((5700..6300).contains(&share[0]), "3:1 within 5%: {share:?}");
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(b.pick(v4, NONE), b.pick(mapped, NONE));
    }

    #[test]
    fn stats_add_up_and_failures_take_a_backend_down() {
        let mut b = balancer(&[1], Algorithm::RoundRobin);
        b.start(0);
        b.start(0);
        b.start(0);
        assert_eq!(b.backends[0].active, 3);
        b.finish(
            0,
            Outcome::Success {
                latency: Duration::from_millis(10),
            },
        );
        b.finish(
            0,
            Outcome::ErrorResponse {
                latency: Duration::from_millis(1),
            },
        );
        b.finish(0, Outcome::Failure);
        b.start(0);
        b.abandon(0);
        let s = b.backends[0].stats;
        assert_eq!((s.requests, s.successes, s.errors), (3, 1, 2));
        assert_eq!(s.requests, s.successes + s.errors);
        assert_eq!(s.average_latency(), Duration::from_millis(10));
        assert_eq!(b.backends[0].active, 0);
        // A 5xx answer is not a health failure; connection failures are.
        assert!(b.backends[0].healthy());
        assert_eq!(b.finish(0, Outcome::Failure), None);
        assert_eq!(b.finish(0, Outcome::Failure), Some(Transition::Down));
        assert_eq!(b.pick(CLIENT, NONE), None);
        let snap = &b.snapshot()[0];
        assert_eq!(
            (snap.request_count, snap.success_count, snap.error_count),
            (3, 1, 4)
        );
        assert!(!snap.healthy);
    }

    #[test]
    fn reconfigure_keeps_figures_of_kept_backends() {
        let mut b = balancer(&[1, 1, 1], Algorithm::RoundRobin);
        b.start(1);
        b.finish(
            1,
            Outcome::Success {
                latency: Duration::from_millis(1),
            },
        );
        b.backends[1].capacity = 9; // set at run time
        let text = "[[backends]]\nurl = \"http://127.0.0.1:9001\"\n[[backends]]\nurl = \"http://127.0.0.1:9005\"\ncapacity = 2\n\
                    [[backends]]\nurl = \"http://127.0.0.1:9000\"\ncapacity = 4\n";
        let config = Config::parse(text).unwrap();
        let changes = b.reconfigure(&config.backends, Algorithm::LeastConnections, 2, 3);
        assert_eq!(changes.added, [3]);
        assert_eq!(changes.removed, [2]);
        assert_eq!(b.configured(), [1, 3, 0]);
        assert_eq!(b.algorithm(), Algorithm::LeastConnections);
        let snap = b.snapshot();
        assert_eq!(snap[0].url, "http://127.0.0.1:9001");
        assert_eq!(
            (snap[0].request_count, snap[0].capacity),
            (1, 9),
            "kept: figures and run-time capacity"
        );
        assert_eq!(snap[2].capacity, 4, "the file changed this capacity");
        assert!(!b.backends[2].available(), "removed slots get no requests");
        let picks: Vec<_> = (0..6).map(|_| b.pick(CLIENT, NONE).unwrap()).collect();
        assert!(!picks.contains(&2));
        // Configured again: a fresh start in its old slot.
        let config = Config::parse("[[backends]]\nurl = \"http://127.0.0.1:9002\"\n").unwrap();
        let changes = b.reconfigure(&config.backends, Algorithm::RoundRobin, 2, 3);
        assert_eq!(changes.added, [2]);
        assert_eq!(changes.removed, [1, 3, 0]);
        assert_eq!(b.pick(CLIENT, NONE), Some(2));
    }

    #[test]
    fn tried_set() {
        let t = Tried::default().with(0).with(5).with(70);
        assert!(t.contains(0) && t.contains(5));
        assert!(!t.contains(1) && !t.contains(70));
    }
}
