//! The backend pool: each backend's configuration, health, load and statistics, and the choice of a
//! backend for each request. Pure bookkeeping, no sockets; the event loop calls in when requests start
//! and finish.

use crate::config::{Algorithm, BackendConfig};
use std::net::IpAddr;
use std::time::Duration;

/// Per-backend counters, as in the original design.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests sent to this backend (each attempt that reached a connection).
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
            self.total_latency / self.successes as u32
        }
    }
}

#[derive(Debug, Clone)]
pub struct Backend {
    pub config: BackendConfig,
    pub capacity: u32,
    pub healthy: bool,
    pub enabled: bool,
    /// Requests in flight on this backend.
    pub active: u32,
    pub stats: Stats,
}

impl Backend {
    pub fn new(config: BackendConfig) -> Backend {
        Backend {
            capacity: config.capacity,
            config,
            healthy: true,
            enabled: true,
            active: 0,
            stats: Stats::default(),
        }
    }

    pub fn available(&self) -> bool {
        self.healthy && self.enabled
    }
}

/// How a request ended, for statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success { latency: Duration },
    Failure,
}

pub struct Balancer {
    pub backends: Vec<Backend>,
    algorithm: Algorithm,
    cursor: usize,
}

impl Balancer {
    pub fn new(configs: &[BackendConfig], algorithm: Algorithm) -> Balancer {
        Balancer {
            backends: configs.iter().cloned().map(Backend::new).collect(),
            algorithm,
            cursor: 0,
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Chooses a backend for a request from `client`, skipping `exclude` (a backend that just failed
    /// this request). `None` when no backend is available.
    pub fn pick(&mut self, _client: IpAddr, exclude: Option<usize>) -> Option<usize> {
        let n = self.backends.len();
        for offset in 0..n {
            let index = (self.cursor + offset) % n;
            if self.backends[index].available() && Some(index) != exclude {
                self.cursor = (index + 1) % n;
                return Some(index);
            }
        }
        None
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

    /// The request sent to `index` ended.
    pub fn finish(&mut self, index: usize, outcome: Outcome) {
        let backend = &mut self.backends[index];
        backend.active = backend.active.saturating_sub(1);
        match outcome {
            Outcome::Success { latency } => {
                backend.stats.successes += 1;
                backend.stats.total_latency += latency;
            }
            Outcome::Failure => backend.stats.errors += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn balancer(n: usize) -> Balancer {
        let text: String = (0..n)
            .map(|i| format!("[[backends]]\nurl = \"http://127.0.0.1:{}\"\n", 9000 + i))
            .collect();
        let config = Config::parse(&text).unwrap();
        Balancer::new(&config.backends, config.algorithm)
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn round_robin_skips_unavailable_and_excluded() {
        let mut b = balancer(3);
        let picks: Vec<_> = (0..6).map(|_| b.pick(CLIENT, None).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        b.backends[1].healthy = false;
        let picks: Vec<_> = (0..4).map(|_| b.pick(CLIENT, None).unwrap()).collect();
        assert_eq!(picks, [0, 2, 0, 2]);
        assert_eq!(b.pick(CLIENT, Some(0)), Some(2));
        b.backends[0].enabled = false;
        b.backends[2].healthy = false;
        assert_eq!(b.pick(CLIENT, None), None);
    }

    #[test]
    fn stats_add_up() {
        let mut b = balancer(1);
        b.start(0);
        b.start(0);
        assert_eq!(b.backends[0].active, 2);
        b.finish(
            0,
            Outcome::Success {
                latency: Duration::from_millis(10),
            },
        );
        b.finish(0, Outcome::Failure);
        b.start(0);
        b.abandon(0);
        let s = b.backends[0].stats;
        assert_eq!((s.requests, s.successes, s.errors), (2, 1, 1));
        assert_eq!(s.average_latency(), Duration::from_millis(10));
        assert_eq!(b.backends[0].active, 0);
    }
}
