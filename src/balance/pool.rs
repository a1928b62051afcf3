//! Pools: the backends that serve one group of routes, each pool with the algorithm and the picker
//! state (cursor, smooth weights, generator) that choose among its members. Members are handles on the
//! same live state as the balancer's table, so a backend's figures are the same wherever it is seen.

use super::{Backend, InFlight, Picker, Tried};
use crate::config::{Algorithm, Pool};
use crate::random::{Rng, mix64};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What a pool shares across workers and threads: its queue's length, and for the threaded engine the
/// queue itself (waiting threads by ticket, oldest first).
#[derive(Debug, Default)]
pub struct PoolState {
    queued: AtomicUsize,
    tickets: Mutex<(u64, VecDeque<u64>)>,
    turn: Condvar,
}

impl PoolState {
    /// Requests waiting in this pool's queue, over every worker.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// A place in the queue if it has fewer than `size` requests: held until dropped.
    pub fn enqueue(self: &Arc<Self>, size: usize) -> Option<QueueSpot> {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < size).then_some(n + 1)
            })
            .ok()?;
        Some(QueueSpot { pool: self.clone() })
    }

    /// For a thread that waits its turn (the threaded engine): a place at the back of the line, left
    /// when the ticket is dropped — however the wait ends, a panic included.
    pub fn ticket(self: &Arc<Self>) -> Ticket {
        Ticket {
            number: self.take_ticket(),
            line: self.clone(),
        }
    }

    fn take_ticket(&self) -> u64 {
        let mut line = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        line.0 += 1;
        let ticket = line.0;
        line.1.push_back(ticket);
        ticket
    }

    /// Waits (at most `wait`) until `ticket` is first in line.
    pub fn wait_turn(&self, ticket: u64, wait: Duration) -> bool {
        let line = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        let (line, _) = self
            .turn
            .wait_timeout_while(line, wait, |l| l.1.front() != Some(&ticket))
            .unwrap_or_else(|p| p.into_inner());
        line.1.front() == Some(&ticket)
    }

    /// `ticket` leaves the line (served, or given up), and the next one gets its turn.
    fn leave(&self, ticket: u64) {
        let mut line = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        line.1.retain(|&t| t != ticket);
        drop(line);
        self.turn.notify_all();
    }
}

/// A thread's place in its pool's line (see [`PoolState::ticket`]).
#[derive(Debug)]
pub struct Ticket {
    number: u64,
    line: Arc<PoolState>,
}

impl Ticket {
    /// Waits (at most `wait`) until this ticket is first in line.
    pub fn wait_turn(&self, wait: Duration) -> bool {
        self.line.wait_turn(self.number, wait)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.line.leave(self.number);
    }
}

/// A request's place in its pool's queue; leaving it (served, timed out, or the client gone) is
/// dropping it.
#[derive(Debug)]
pub struct QueueSpot {
    pool: Arc<PoolState>,
}

impl Drop for QueueSpot {
    fn drop(&mut self) {
        self.pool.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a pick came to.
#[derive(Debug)]
pub enum Pick {
    /// A backend took the request: it is counted in flight there.
    Started(InFlight),
    /// Backends are up but all at their `max_connections`: the request may wait in the queue.
    Full,
    /// No backend of the pool is available (down, drained, or already tried).
    None,
}

#[derive(Debug, Clone)]
pub(super) struct PoolPicker {
    pub(super) name: String,
    pub(super) state: Arc<PoolState>,
    /// The pool's backends, in configuration order.
    pub(super) members: Vec<Arc<Backend>>,
    pub(super) picker: Picker,
}

impl PoolPicker {
    /// The member whose sticky id is `prefer` when it can take the request, else the algorithm's pick.
    /// The request is counted in tally `tally` of the backend that takes it.
    pub(super) fn pick(
        &mut self,
        client: IpAddr,
        tried: Tried,
        prefer: Option<u64>,
        tally: u16,
    ) -> Pick {
        if let Some(id) = prefer
            && let Some(sticky) = self.members.iter().find(|b| {
                b.sticky_id == id && b.available() && b.has_room() && !tried.contains(b.slot)
            })
            && let Some(started) = sticky.clone().try_start(tally)
        {
            return Pick::Started(started);
        }
        // Another worker may fill a backend between the pick and the start: pick again, at most once
        // per member.
        for _ in 0..self.members.len().max(1) {
            let Some(i) = self.picker.pick(&self.members, client, tried) else {
                break;
            };
            if let Some(started) = self.members.get(i).and_then(|b| b.clone().try_start(tally)) {
                return Pick::Started(started);
            }
        }
        let waiting = self
            .members
            .iter()
            .any(|b| b.available() && !tried.contains(b.slot) && !b.has_room());
        if waiting { Pick::Full } else { Pick::None }
    }
}

/// The pools of a configuration over the table's backends (`slot_of` gives a configured backend's
/// slot by its position in the flat list). A pool that was there before (same name) keeps its
/// generator and round-robin position; its smooth weights start again, as its members may have moved.
pub(super) fn build(
    pools: &[Pool],
    backends: &[Arc<Backend>],
    slot_of: &[usize],
    previous: &[PoolPicker],
    seed: &mut Rng,
) -> Vec<PoolPicker> {
    pools
        .iter()
        .map(|pool| {
            let members = pool
                .backends
                .clone()
                .filter_map(|position| slot_of.get(position))
                .filter_map(|&slot| backends.get(slot).cloned())
                .collect();
            let old = previous.iter().find(|p| p.name == pool.name);
            let picker = match old {
                Some(old) => old.picker.reconfigured(pool.algorithm),
                None => Picker::new(pool.algorithm, Rng::with_seed(mix64(seed.next_u64()))),
            };
            PoolPicker {
                name: pool.name.clone(),
                state: old.map_or_else(Arc::default, |o| o.state.clone()),
                members,
                picker,
            }
        })
        .collect()
}

/// One pool holding every backend, in order: what a list of backends without pools means.
pub(super) fn single(name: &str, algorithm: Algorithm, count: usize) -> Vec<Pool> {
    vec![Pool {
        name: name.to_string(),
        algorithm,
        backends: 0..count,
        sticky_cookie: None,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_holds_up_to_its_size_and_spots_give_places_back() {
        let pool = Arc::new(PoolState::default());
        // (size, spots taken and kept before, whether one more fits)
        let cases: &[(usize, usize, bool)] =
            &[(1, 0, true), (1, 1, false), (3, 2, true), (3, 3, false)];
        for &(size, held, fits) in cases {
            let spots: Vec<QueueSpot> = (0..held).filter_map(|_| pool.enqueue(size)).collect();
            assert_eq!(spots.len(), held);
            assert_eq!(
                pool.enqueue(size).is_some(),
                fits,
                "size {size}, {held} held"
            );
            drop(spots);
            assert_eq!(pool.queued(), 0, "dropped spots are given back");
        }
    }

    #[test]
    fn a_dropped_ticket_leaves_the_line() {
        let pool = Arc::new(PoolState::default());
        let first = pool.ticket();
        let second = pool.ticket();
        assert!(!second.wait_turn(Duration::ZERO));
        // However the first one's wait ended (a panic unwinding included), its turn passes on.
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _held = first;
            panic!("a bug while waiting");
        }));
        assert!(unwound.is_err());
        assert!(second.wait_turn(Duration::ZERO));
    }

    #[test]
    fn threads_get_their_turn_oldest_first() {
        let pool = PoolState::default();
        let (a, b, c) = (pool.take_ticket(), pool.take_ticket(), pool.take_ticket());
        let now = Duration::ZERO;
        assert!(pool.wait_turn(a, now));
        assert!(!pool.wait_turn(b, now) && !pool.wait_turn(c, now));
        // One that gives up leaves its place without taking anyone's turn.
        pool.leave(b);
        assert!(!pool.wait_turn(c, now));
        pool.leave(a);
        assert!(pool.wait_turn(c, now));
        // A waiter wakes as soon as its turn comes.
        let d = pool.take_ticket();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| pool.wait_turn(d, Duration::from_secs(10)));
            pool.leave(c);
            assert!(waiter.join().unwrap());
        });
    }
}
