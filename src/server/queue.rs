//! The event loop's side of the pools' queues: the connections whose requests wait for a backend with
//! room, oldest first, per pool. After every batch of events (requests that ended in it may have freed
//! room), and every few milliseconds while any wait (a slot another worker freed sends this one no event), the
//! oldest waiting request of each pool is offered a backend again; it keeps its place until one takes
//! it, its queue timeout answers 503, or its client goes.

use super::*;
use std::collections::VecDeque;

/// While requests wait, how often to look again for room another worker freed.
const LOOK_AGAIN: Duration = Duration::from_millis(5);
const QUEUE_TIMER: TimerKey = TimerKey {
    owner: TimerOwner::Queue,
    generation: 0,
};

/// The waiting connections of one worker, per pool: (slab key, connection id).
#[derive(Default)]
pub(super) struct Queues {
    pools: Vec<VecDeque<(usize, u64)>>,
    waiting: usize,
    /// The look-again timer is in the heap: one entry at a time, never one per batch.
    armed: bool,
}

impl Queues {
    pub(super) fn is_empty(&self) -> bool {
        self.waiting == 0
    }
}

impl Shared {
    /// Connection `key` (`id`) waits in pool `pool`'s queue.
    pub(super) fn enqueue(&mut self, pool: usize, key: usize, id: u64) {
        let queues = &mut self.queues;
        if queues.pools.len() <= pool {
            queues.pools.resize_with(pool + 1, VecDeque::new);
        }
        queues.pools[pool].push_back((key, id));
        queues.waiting += 1;
        self.arm_queue_timer(Instant::now());
    }

    fn arm_queue_timer(&mut self, now: Instant) {
        if !self.queues.armed {
            self.queues.armed = true;
            Deadline::default().set(now + LOOK_AGAIN, &mut self.timers, QUEUE_TIMER);
        }
    }
}

impl Server {
    /// Offers a backend to the oldest waiting request of each pool, then the next, until one finds
    /// no room.
    pub(super) fn serve_queues(&mut self) {
        if self.shared.queues.is_empty() {
            return;
        }
        let now = self.now;
        for pool in 0..self.shared.queues.pools.len() {
            while let Some(&(key, id)) = self.shared.queues.pools[pool].front() {
                let waiting = self
                    .conns
                    .get(key)
                    .is_some_and(|c| c.id() == id && c.is_queued());
                if waiting {
                    let conn = self.conns.get_mut(key).map(|c| (c, &mut self.shared));
                    let Some((conn, shared)) = conn else { break };
                    match fault::contain(|| conn.retry_queued(shared, now)) {
                        Ok(Ok(())) => {}
                        Ok(Err(how)) => self.remove(key, how),
                        Err(cause) => self.contain_panic(key, &cause),
                    }
                    if self
                        .conns
                        .get(key)
                        .is_some_and(|c| c.id() == id && c.is_queued())
                    {
                        // No room yet: it keeps its place, and so does everyone behind it.
                        break;
                    }
                    self.drive(key, Pass::Full);
                }
                self.shared.queues.pools[pool].pop_front();
                self.shared.queues.waiting -= 1;
            }
        }
        if !self.shared.queues.is_empty() {
            self.shared.arm_queue_timer(now);
        }
    }

    /// The look-again timer fired.
    pub(super) fn on_queue_timer(&mut self) {
        self.shared.queues.armed = false;
        self.serve_queues();
    }
}
