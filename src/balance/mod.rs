//! The backend pool: the table of backends (each with its configuration and its live, atomically
//! shared state), the choice of a backend per request by the configured algorithm, reloads that keep
//! the figures of kept backends, and snapshots for the admin API. No sockets: engines call in when
//! requests start and finish (through [`InFlight`]) and when health is observed.
//!
//! Callers name backends by [`Arc<Backend>`] handles or by slot; nothing outside this module reaches
//! into the table.

mod backend;
mod pick;
mod pool;

pub use backend::{Backend, InFlight};
pub use pick::Picker;
pub use pool::{Pick, PoolState, QueueSpot};

use crate::config::{Algorithm, BackendConfig, Config, Pool};
use crate::random::Rng;
use backend::BackendState;
use std::net::IpAddr;
use std::sync::Arc;
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

impl Outcome {
    /// The outcome of a complete response with `status`.
    pub fn of_status(status: u16, latency: Duration) -> Outcome {
        if status < 500 {
            Outcome::Success { latency }
        } else {
            Outcome::ErrorResponse { latency }
        }
    }
}

/// Backends already tried for one request, by slot: the last [`Tried::KEPT`] of them, whatever their
/// slot numbers (DNS discovery gives every new address a new slot, so slots grow past any fixed
/// bitmap's range while a process runs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tried {
    slots: [u32; Tried::KEPT],
    /// Slots added so far; the ring holds the last `KEPT`.
    added: u32,
}

impl Tried {
    /// More than a retry budget ever needs: `retries` beyond it may try a backend again.
    pub const KEPT: usize = 8;
    pub const NONE: Tried = Tried {
        slots: [0; Tried::KEPT],
        added: 0,
    };

    pub fn with(mut self, slot: usize) -> Tried {
        self.slots[self.added as usize % Tried::KEPT] = slot as u32;
        self.added = self.added.saturating_add(1);
        self
    }

    pub fn contains(self, slot: usize) -> bool {
        let kept = (self.added as usize).min(Tried::KEPT);
        self.slots[..kept].iter().any(|&s| s as usize == slot)
    }
}

/// A copy of one backend's figures, for the admin endpoint and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSnapshot {
    pub pool: String,
    pub url: String,
    /// The address it is reached at.
    pub address: String,
    /// One address of a `resolve` backend (DNS discovery).
    pub discovered: bool,
    pub healthy: bool,
    pub enabled: bool,
    pub capacity: u32,
    pub active_connections: u32,
    /// Response times (successes and 5xx answers).
    pub latency: crate::histogram::Counts,
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
    /// Kept backends whose address, TLS or health-check settings changed.
    pub changed: Vec<usize>,
    /// Kept backends whose address or TLS settings changed (their pooled connections are stale).
    pub moved: Vec<usize>,
}

/// The backends as a reload left them, for [`Balancer::adopt`].
#[derive(Debug, Clone)]
pub struct Table {
    backends: Vec<Arc<Backend>>,
    order: Vec<usize>,
    pools: Vec<pool::PoolPicker>,
    rise: u32,
    fall: u32,
}

pub struct Balancer {
    /// Backend slots. A slot never changes meaning while the process runs: reloads append slots and
    /// mark dropped ones removed.
    backends: Vec<Arc<Backend>>,
    /// Slots of the configured backends, in configuration order (the admin API's indexes).
    order: Vec<usize>,
    /// The pools, in configuration order (the default pool first), each choosing among its members.
    pools: Vec<pool::PoolPicker>,
    /// Seeds new pools' generators, and probe jitter.
    rng: Rng,
    rise: u32,
    fall: u32,
    /// The backends' last health transitions.
    events: Arc<crate::history::EventLog>,
    /// Event-loop workers whose tallies new backends' states get.
    workers: usize,
    /// The tally this balancer's requests are counted in: 0, the shared one, or an event-loop
    /// worker's own, which only that worker's thread writes (see [`Balancer::share`]).
    tally: u16,
}

impl Balancer {
    /// The balancer a configuration describes.
    /// `resolve` backends have no address until their first DNS answer (`Balancer::reconfigure`).
    pub fn from_config(config: &Config) -> Balancer {
        let (backends, pools) = crate::dns::expand(&config.backends, &config.pools, |_| &[]);
        Balancer::build(
            &backends,
            &pools,
            config.health_check.rise,
            config.health_check.fall,
            Rng::from_time(),
            config.workers,
        )
    }

    /// One pool of every backend in `configs`, with `algorithm`.
    pub fn with_rng(
        configs: &[BackendConfig],
        algorithm: Algorithm,
        rise: u32,
        fall: u32,
        rng: Rng,
    ) -> Balancer {
        let pools = pool::single(crate::config::DEFAULT_POOL, algorithm, configs.len());
        Balancer::with_pools(configs, &pools, rise, fall, rng)
    }

    /// `configs` in `pools` (whose ranges index `configs`).
    pub fn with_pools(
        configs: &[BackendConfig],
        pools: &[Pool],
        rise: u32,
        fall: u32,
        rng: Rng,
    ) -> Balancer {
        Balancer::build(configs, pools, rise, fall, rng, 0)
    }

    /// `configs` in `pools`, whose backends keep a tally for each of `workers` event-loop workers
    /// besides the shared one.
    fn build(
        configs: &[BackendConfig],
        pools: &[Pool],
        rise: u32,
        fall: u32,
        mut rng: Rng,
        workers: usize,
    ) -> Balancer {
        let events = Arc::new(crate::history::EventLog::default());
        let backends: Vec<Arc<Backend>> = configs
            .iter()
            .enumerate()
            .map(|(slot, c)| {
                let state = Arc::new(BackendState::new(c.capacity, workers));
                Arc::new(Backend::new(
                    slot,
                    c.clone(),
                    rise,
                    fall,
                    state,
                    events.clone(),
                ))
            })
            .collect();
        let order: Vec<usize> = (0..configs.len()).collect();
        let pools = pool::build(pools, &backends, &order, &[], &mut rng);
        Balancer {
            backends,
            order,
            pools,
            rng,
            rise,
            fall,
            events,
            workers,
            tally: 0,
        }
    }

    /// The first pool's algorithm (the default pool's, when there is one).
    pub fn algorithm(&self) -> Algorithm {
        self.pools
            .first()
            .map_or(Algorithm::RoundRobin, |p| p.picker.algorithm)
    }

    /// The pools' names, in configuration order.
    pub fn pool_names(&self) -> impl Iterator<Item = &str> {
        self.pools.iter().map(|p| p.name.as_str())
    }

    /// Slots of the configured backends, in configuration order.
    pub fn configured(&self) -> &[usize] {
        &self.order
    }

    /// The backend in `slot`.
    pub fn get(&self, slot: usize) -> Option<&Arc<Backend>> {
        self.backends.get(slot)
    }

    /// The configured backend at `position` in the configuration (the admin API's index).
    pub fn at(&self, position: usize) -> Option<&Arc<Backend>> {
        self.order.get(position).and_then(|&slot| self.get(slot))
    }

    /// The configured backends, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.order.iter().filter_map(|&slot| self.get(slot))
    }

    /// Every slot, removed ones included.
    pub fn slots(&self) -> usize {
        self.backends.len()
    }

    /// A pseudo-random number from the balancer's generator (probe jitter).
    pub fn random(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// Chooses a backend of pool `pool` (a position in the configuration's pools) for a request from
    /// `client`, among its available backends not in `tried`: the one whose sticky id is `prefer`
    /// when it can take the request, else the pool's algorithm's choice.
    pub fn pick(&mut self, pool: usize, client: IpAddr, tried: Tried, prefer: Option<u64>) -> Pick {
        match self.pools.get_mut(pool) {
            Some(p) => p.pick(client, tried, prefer, self.tally),
            None => Pick::None,
        }
    }

    /// The shared state of pool `pool` (its queue).
    pub fn pool_state(&self, pool: usize) -> Option<&Arc<PoolState>> {
        self.pools.get(pool).map(|p| &p.state)
    }

    /// A place in pool `pool`'s queue, unless `size` requests already wait there.
    pub fn enqueue(&self, pool: usize, size: usize) -> Option<QueueSpot> {
        self.pool_state(pool)?.enqueue(size)
    }

    /// Each pool's name and queue length, in configuration order.
    pub fn queues(&self) -> Vec<(String, usize)> {
        self.pools
            .iter()
            .map(|p| (p.name.clone(), p.state.queued()))
            .collect()
    }

    /// Sets the capacity of the backend at `position` in the configuration.
    pub fn set_capacity(&self, position: usize, capacity: u32) -> bool {
        self.at(position)
            .map(|b| b.set_capacity(capacity))
            .is_some()
    }

    /// Enables or disables (drains) the backend at `position` in the configuration.
    pub fn set_enabled(&self, position: usize, enabled: bool) -> bool {
        self.at(position).map(|b| b.set_enabled(enabled)).is_some()
    }

    /// Applies a reloaded configuration, or new DNS answers (`configs` is the list
    /// `crate::dns::expand` serves). Backends are matched by pool and URL (and address, for `resolve`
    /// backends): kept ones keep their figures and
    /// health (their capacity follows the file only where the file changed it, so a capacity set at run
    /// time survives an unrelated reload), new ones start healthy. Dropped ones stop getting requests
    /// once [`Balancer::retire`] marks them: after every worker holds the new table, so that no worker
    /// is left with a table whose every backend is gone.
    pub fn reconfigure(
        &mut self,
        configs: &[BackendConfig],
        pools: &[Pool],
        rise: u32,
        fall: u32,
    ) -> Reconfigured {
        let mut changes = Reconfigured::default();
        let mut order = Vec::with_capacity(configs.len());
        for config in configs {
            let found = self
                .backends
                .iter()
                .position(|b| b.config.same_backend(config));
            let slot = found.unwrap_or(self.backends.len());
            let state = match found.map(|slot| &self.backends[slot]) {
                Some(old) if !old.removed() => {
                    if config.capacity != old.config.capacity {
                        old.set_capacity(config.capacity);
                    }
                    // Pooled connections went to the old address, or are sessions with the old TLS
                    // settings: they go.
                    if config.addr != old.config.addr || config.tls != old.config.tls {
                        changes.moved.push(slot);
                    }
                    if config.addr != old.config.addr
                        || config.tls != old.config.tls
                        || config.health_check_path != old.config.health_check_path
                        || config.health_check_interval != old.config.health_check_interval
                        || config.health_check_timeout != old.config.health_check_timeout
                    {
                        changes.changed.push(slot);
                    }
                    old.state.clone()
                }
                _ => {
                    changes.added.push(slot);
                    Arc::new(BackendState::new(config.capacity, self.workers))
                }
            };
            let backend = Arc::new(Backend::new(
                slot,
                config.clone(),
                rise,
                fall,
                state,
                self.events.clone(),
            ));
            if slot == self.backends.len() {
                self.backends.push(backend);
            } else {
                self.backends[slot] = backend;
            }
            order.push(slot);
        }
        for &slot in &self.order {
            if !order.contains(&slot) {
                changes.removed.push(slot);
            }
        }
        self.pools = pool::build(pools, &self.backends, &order, &self.pools, &mut self.rng);
        self.order = order;
        self.rise = rise;
        self.fall = fall;
        changes
    }

    /// Marks the backends a reload dropped (`Reconfigured::removed`): no new requests, in any worker.
    pub fn retire(&self, removed: &[usize]) {
        for &slot in removed {
            if let Some(backend) = self.backends.get(slot) {
                backend.mark_removed();
            }
        }
    }

    /// The balancer of event-loop worker `worker`: the same backends (the same live state, so
    /// in-flight counts, health and statistics are global), with a picker of its own, counting its
    /// requests in the worker's own tallies. Each worker's round robin starts one backend further
    /// along, so that the workers' first picks spread. Only the worker's thread may pick with it.
    pub fn share(&self, worker: usize) -> Balancer {
        Balancer {
            backends: self.backends.clone(),
            order: self.order.clone(),
            pools: self.pools_for_worker(&self.pools, worker),
            rng: Rng::with_seed(self.rng.clone().next_u64() ^ crate::random::mix64(worker as u64)),
            rise: self.rise,
            fall: self.fall,
            events: self.events.clone(),
            workers: self.workers,
            // Tally 0 is the shared one; a worker beyond `workers` counts there too.
            tally: u16::try_from(worker + 1).unwrap_or(0),
        }
    }

    /// The last health transitions, oldest first.
    pub fn health_events(&self) -> Vec<crate::history::HealthEvent> {
        self.events.events()
    }

    /// The totals the dashboard's history samples: requests answered by backends, errors, and
    /// every backend's response times together.
    pub fn totals(&self) -> (u64, crate::histogram::Counts) {
        let mut errors = 0;
        let mut latency = crate::histogram::Counts::default();
        for b in self.backends.iter() {
            errors += b.stats().errors;
            b.add_response_times_to(&mut latency);
        }
        (errors, latency)
    }

    /// The table after a reload, to hand to the other workers.
    pub fn table(&self) -> Table {
        Table {
            backends: self.backends.clone(),
            order: self.order.clone(),
            pools: self.pools.clone(),
            rise: self.rise,
            fall: self.fall,
        }
    }

    /// Takes the table another worker's reload built: the reload is worked out once, and every worker
    /// then names the same backends by the same slots.
    pub fn adopt(&mut self, table: Table) {
        // The pools' members and algorithms come from the table; this worker's picker state stays
        // (its own cursor and generator), as the first worker's does across a reload.
        let mut pools = table.pools;
        for pool in &mut pools {
            if let Some(mine) = self.pools.iter().find(|p| p.name == pool.name) {
                pool.picker = mine.picker.reconfigured(pool.picker.algorithm);
            }
        }
        self.backends = table.backends;
        self.order = table.order;
        self.pools = pools;
        self.rise = table.rise;
        self.fall = table.fall;
    }

    fn pools_for_worker(&self, pools: &[pool::PoolPicker], worker: usize) -> Vec<pool::PoolPicker> {
        pools
            .iter()
            .map(|p| pool::PoolPicker {
                name: p.name.clone(),
                state: p.state.clone(),
                members: p.members.clone(),
                picker: p.picker.for_worker(worker),
            })
            .collect()
    }

    /// The configured backends' figures, in configuration order.
    pub fn snapshot(&self) -> Vec<BackendSnapshot> {
        self.iter().map(|b| b.snapshot()).collect()
    }
}

#[cfg(test)]
mod tests;
