//! What the event-loop workers of one process share besides the backends (whose state is in
//! `balance`): the count of open client connections that `max_connections` bounds for the whole
//! process, and each worker's figures for `/stats` and `/metrics`. Every field is an atomic that one
//! worker writes and any thread reads, so no worker waits on another; each worker's figures sit on
//! cache lines of their own, so that counting a request never contends with another worker's.

use crate::counter::Writer;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The most workers a process runs: `workers = N` beyond it is a configuration error.
pub const MAX_WORKERS: usize = 256;

/// The figures of one worker.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot {
    requests: AtomicU64,
    open: AtomicUsize,
    internal_errors: AtomicU64,
    tls_handshake_failures: AtomicU64,
    /// Published once per batch of events: they change with every connection, and only leak checks
    /// and the admin API read them.
    pooled: AtomicUsize,
    sockets: AtomicUsize,
    timers: AtomicUsize,
}

/// A copy of one worker's figures, or of their sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub requests: u64,
    pub open: usize,
    pub internal_errors: u64,
    pub tls_handshake_failures: u64,
    pub pooled: usize,
    pub sockets: usize,
    pub timers: usize,
}

impl Figures {
    fn add(self, o: Figures) -> Figures {
        Figures {
            requests: self.requests + o.requests,
            open: self.open + o.open,
            internal_errors: self.internal_errors + o.internal_errors,
            tls_handshake_failures: self.tls_handshake_failures + o.tls_handshake_failures,
            pooled: self.pooled + o.pooled,
            sockets: self.sockets + o.sockets,
            timers: self.timers + o.timers,
        }
    }
}

/// The figures of every worker, and the process-wide client count.
#[derive(Debug)]
pub struct Process {
    /// Open client connections in the whole process: what `max_connections` bounds.
    clients: AtomicUsize,
    slots: Box<[Slot]>,
}

impl Process {
    pub fn new(workers: usize) -> Arc<Process> {
        Arc::new(Process {
            clients: AtomicUsize::new(0),
            slots: (0..workers.max(1)).map(|_| Slot::default()).collect(),
        })
    }

    pub fn workers(&self) -> usize {
        self.slots.len()
    }

    /// Takes a client connection into the count if it stays within `max`; false when the process is
    /// full. Exact across workers: two workers cannot both take the last place.
    pub fn admit(&self, worker: usize, max: usize) -> bool {
        let admitted = self
            .clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            self.slot(worker).open.fetch_add(1, Ordering::Relaxed);
        }
        admitted
    }

    /// A client connection admitted by `worker` closed.
    pub fn release(&self, worker: usize) {
        self.slot(worker).open.fetch_sub(1, Ordering::Relaxed);
        self.clients.fetch_sub(1, Ordering::AcqRel);
    }

    /// Open client connections in the process.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Acquire)
    }

    /// Counts a request answered by `worker`: called on that worker's thread only (its slot's sole
    /// writer, so no locked instruction is spent).
    pub fn count_request(&self, worker: usize) {
        Writer::Sole.add(&self.slot(worker).requests, 1);
    }

    pub fn count_internal_error(&self, worker: usize) {
        self.slot(worker)
            .internal_errors
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_tls_handshake_failure(&self, worker: usize) {
        self.slot(worker)
            .tls_handshake_failures
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Publishes a worker's pooled connections, registered sockets and timer entries.
    pub fn publish(&self, worker: usize, pooled: usize, sockets: usize, timers: usize) {
        let slot = self.slot(worker);
        slot.pooled.store(pooled, Ordering::Relaxed);
        slot.sockets.store(sockets, Ordering::Relaxed);
        slot.timers.store(timers, Ordering::Relaxed);
    }

    /// One worker's figures.
    pub fn figures(&self, worker: usize) -> Figures {
        let s = self.slot(worker);
        Figures {
            requests: s.requests.load(Ordering::Relaxed),
            open: s.open.load(Ordering::Relaxed),
            internal_errors: s.internal_errors.load(Ordering::Relaxed),
            tls_handshake_failures: s.tls_handshake_failures.load(Ordering::Relaxed),
            pooled: s.pooled.load(Ordering::Relaxed),
            sockets: s.sockets.load(Ordering::Relaxed),
            timers: s.timers.load(Ordering::Relaxed),
        }
    }

    /// Every worker's figures, in worker order.
    pub fn each(&self) -> Vec<Figures> {
        (0..self.workers()).map(|w| self.figures(w)).collect()
    }

    /// The sum over the workers.
    pub fn total(&self) -> Figures {
        (0..self.workers())
            .map(|w| self.figures(w))
            .fold(Figures::default(), Figures::add)
    }

    fn slot(&self, worker: usize) -> &Slot {
        // A worker index comes from this process's own worker list: out of range is a bug, and the
        // figures go to the last slot rather than taking the worker down.
        &self.slots[worker.min(self.slots.len() - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_is_exact_across_threads() {
        let process = Process::new(4);
        let admitted = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for worker in 0..4 {
                let (process, admitted) = (&process, &admitted);
                s.spawn(move || {
                    for _ in 0..1000 {
                        if process.admit(worker, 1500) {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::Relaxed), 1500);
        assert_eq!(process.clients(), 1500);
        assert_eq!(process.total().open, 1500);
        for worker in 0..4 {
            for _ in 0..process.figures(worker).open {
                process.release(worker);
            }
        }
        assert_eq!(process.clients(), 0);
        assert!(process.admit(0, 1));
        assert!(!process.admit(1, 1));
    }

    #[test]
    fn totals_add_every_worker() {
        let process = Process::new(2);
        let cases: &[(usize, u64, u64, u64)] = &[(0, 3, 1, 0), (1, 5, 0, 2)];
        for &(worker, requests, errors, tls) in cases {
            for _ in 0..requests {
                process.count_request(worker);
            }
            for _ in 0..errors {
                process.count_internal_error(worker);
            }
            for _ in 0..tls {
                process.count_tls_handshake_failure(worker);
            }
            process.publish(worker, worker + 1, 10 * (worker + 1), 100);
        }
        let total = process.total();
        assert_eq!(
            (
                total.requests,
                total.internal_errors,
                total.tls_handshake_failures
            ),
            (8, 1, 2)
        );
        assert_eq!((total.pooled, total.sockets, total.timers), (3, 30, 200));
        assert_eq!(process.each()[1].requests, 5);
        assert_eq!(Process::new(0).workers(), 1);
    }
}
