//! The balancing algorithms: each chooses among the available backends not yet tried for a request, in
//! one pass over the table with no allocation. The state an algorithm keeps between picks (round-robin
//! cursor, smooth weights, random generator) belongs to one picker; the load it reads (requests in
//! flight, latency averages, health) is the backends' shared state.

use super::{Backend, Tried};
use crate::config::Algorithm;
use crate::random::{Rng, mix64};
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Picker {
    pub(super) algorithm: Algorithm,
    cursor: usize,
    /// Smooth weighted round robin's running weight, by slot.
    weights: Vec<i64>,
    rng: Rng,
}

impl Picker {
    pub fn new(algorithm: Algorithm, rng: Rng) -> Picker {
        Picker {
            algorithm,
            cursor: 0,
            weights: Vec::new(),
            rng,
        }
    }

    /// A picker for worker `worker`: the same algorithm, its own generator, and a round-robin cursor
    /// `worker` places along. Smooth weighted round robin keeps per-worker weights: every worker's
    /// sequence follows the capacities, so their sum does too.
    pub fn for_worker(&self, worker: usize) -> Picker {
        let seed = self.rng.clone().next_u64() ^ mix64(worker as u64 + 1);
        Picker {
            algorithm: self.algorithm,
            cursor: worker,
            weights: Vec::new(),
            rng: Rng::with_seed(seed),
        }
    }

    /// The same picker after a reload: its generator and cursor go on, its smooth weights start again
    /// (the members they were kept for may have changed).
    pub fn reconfigured(&self, algorithm: Algorithm) -> Picker {
        Picker {
            algorithm,
            cursor: self.cursor,
            weights: Vec::new(),
            rng: self.rng.clone(),
        }
    }

    /// A pseudo-random number from the picker's generator.
    pub fn random(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// Chooses a backend for a request from `client`, among available `backends` whose slots are not
    /// in `tried`; the answer is a position in `backends`.
    pub fn pick(
        &mut self,
        backends: &[Arc<Backend>],
        client: IpAddr,
        tried: Tried,
    ) -> Option<usize> {
        if self.weights.len() < backends.len() {
            self.weights.resize(backends.len(), 0);
        }
        let candidates = Candidates { backends, tried };
        match self.algorithm {
            Algorithm::RoundRobin => self.round_robin(candidates),
            Algorithm::WeightedRoundRobin => self.smooth_weighted(candidates),
            Algorithm::LeastConnections => self.min_by(candidates, less_loaded),
            Algorithm::LeastLatency => self.least_latency(candidates),
            Algorithm::PowerOfTwo => self.power_of_two(candidates),
            Algorithm::Random => self.weighted_random(candidates),
            Algorithm::IpHash => rendezvous(candidates, client),
        }
    }

    fn round_robin(&mut self, c: Candidates<'_>) -> Option<usize> {
        let n = c.backends.len();
        if n == 0 {
            return None;
        }
        // Stepped with a compare rather than `%`, a division of tens of cycles on every request. The
        // cursor is only out of range when set from elsewhere (a worker's start, a smaller table).
        let mut index = if self.cursor < n {
            self.cursor
        } else {
            self.cursor % n
        };
        for _ in 0..n {
            let next = if index + 1 == n { 0 } else { index + 1 };
            if c.ok(index) {
                self.cursor = next;
                return Some(index);
            }
            index = next;
        }
        None
    }

    /// Smooth weighted round robin (as in nginx): every candidate gains its capacity, the richest is
    /// chosen and pays the total. Capacities 5,1,1 give a a b a c a a.
    fn smooth_weighted(&mut self, c: Candidates<'_>) -> Option<usize> {
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None;
        for i in 0..c.backends.len() {
            if !c.ok(i) {
                continue;
            }
            let capacity = i64::from(c.backends[i].capacity());
            self.weights[i] += capacity;
            total += capacity;
            if best.is_none_or(|(_, weight)| self.weights[i] > weight) {
                best = Some((i, self.weights[i]));
            }
        }
        let (chosen, _) = best?;
        self.weights[chosen] -= total;
        Some(chosen)
    }

    /// The candidate for which no other is `lower`, scanning from the round-robin cursor so that ties
    /// rotate.
    fn min_by(
        &mut self,
        c: Candidates<'_>,
        mut lower: impl FnMut(&Backend, &Backend) -> bool,
    ) -> Option<usize> {
        let n = c.backends.len();
        let mut best: Option<usize> = None;
        for offset in 0..n {
            let i = (self.cursor + offset) % n;
            if c.ok(i) && best.is_none_or(|j| lower(&c.backends[i], &c.backends[j])) {
                best = Some(i);
            }
        }
        let chosen = best?;
        self.cursor = (chosen + 1) % n;
        Some(chosen)
    }

    /// Lowest moving average of response time, scaled by the requests already waiting on it. A backend
    /// without samples (new, or just recovered) and without requests in flight goes first.
    fn least_latency(&mut self, c: Candidates<'_>) -> Option<usize> {
        let fastest_known = c
            .backends
            .iter()
            .filter_map(|b| b.latency_ewma_us())
            .fold(f64::INFINITY, f64::min);
        let fallback = if fastest_known.is_finite() {
            fastest_known
        } else {
            1.0
        };
        let score = |b: &Backend| -> f64 {
            let waiting = f64::from(b.active()) + 1.0;
            match b.latency_ewma_us() {
                None if b.active() == 0 => 0.0,
                None => fallback * waiting,
                Some(us) => us * waiting,
            }
        };
        self.min_by(c, |a, b| score(a) < score(b))
    }

    /// Two distinct random candidates; the less loaded one wins.
    fn power_of_two(&mut self, c: Candidates<'_>) -> Option<usize> {
        let count = c.count();
        match count {
            0 => None,
            1 => c.nth(0),
            _ => {
                let first = self.rng.below(count as u64) as usize;
                let mut second = self.rng.below(count as u64 - 1) as usize;
                if second >= first {
                    second += 1;
                }
                let a = c.nth(first)?;
                let b = c.nth(second)?;
                Some(if less_loaded(&c.backends[b], &c.backends[a]) {
                    b
                } else {
                    a
                })
            }
        }
    }

    /// Random, with probability proportional to capacity.
    fn weighted_random(&mut self, c: Candidates<'_>) -> Option<usize> {
        let total: u64 = (0..c.backends.len())
            .filter(|&i| c.ok(i))
            .map(|i| u64::from(c.backends[i].capacity()))
            .sum();
        if total == 0 {
            return None;
        }
        let mut point = self.rng.below(total);
        for i in 0..c.backends.len() {
            if !c.ok(i) {
                continue;
            }
            let capacity = u64::from(c.backends[i].capacity());
            if point < capacity {
                return Some(i);
            }
            point -= capacity;
        }
        None
    }
}

/// The table and the backends a request already tried.
#[derive(Clone, Copy)]
struct Candidates<'a> {
    backends: &'a [Arc<Backend>],
    tried: Tried,
}

impl Candidates<'_> {
    fn ok(&self, i: usize) -> bool {
        let backend = &self.backends[i];
        backend.available() && backend.has_room() && !self.tried.contains(backend.slot)
    }

    fn count(&self) -> usize {
        (0..self.backends.len()).filter(|&i| self.ok(i)).count()
    }

    fn nth(&self, n: usize) -> Option<usize> {
        (0..self.backends.len()).filter(|&i| self.ok(i)).nth(n)
    }
}

/// `a` carries less load per unit of capacity than `b` (cross-multiplied: no division, no rounding).
fn less_loaded(a: &Backend, b: &Backend) -> bool {
    u64::from(a.active()) * u64::from(b.capacity())
        < u64::from(b.active()) * u64::from(a.capacity())
}

/// Weighted rendezvous hashing on the client address: each candidate scores
/// `capacity / -ln(hash(client, backend))` and the highest wins. A client keeps its backend while that
/// backend is available; removing a backend moves only its own clients, spread over the others in
/// proportion to capacity.
fn rendezvous(c: Candidates<'_>, client: IpAddr) -> Option<usize> {
    let client_hash = hash_ip(client);
    let mut best: Option<(usize, f64)> = None;
    for i in 0..c.backends.len() {
        if !c.ok(i) {
            continue;
        }
        let b = &c.backends[i];
        let h = mix64(client_hash ^ b.hash_key);
        // A uniform value in (0, 1]: 53 random bits, never zero.
        let unit = ((h >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let score = f64::from(b.capacity()) / -unit.ln();
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
}

// Out of line: inlined, the compiler computed the hash ahead of the algorithm's dispatch, on every
// pick by every algorithm (about 90 instructions per request under round robin).
#[inline(never)]
fn hash_ip(ip: IpAddr) -> u64 {
    use crate::random::fnv1a;
    match ip {
        IpAddr::V4(v4) => fnv1a(&v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => fnv1a(&v4.octets()),
            None => fnv1a(&v6.octets()),
        },
    }
}
