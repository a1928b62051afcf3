//! Deadlines for the event loop: a min-heap of wake-ups with lazy cancellation. Nothing is ever removed
//! from the heap; instead every entry carries the key of its owner plus a generation, and the owner keeps a
//! [`Deadline`] that says which wake-up it still wants. A popped entry whose owner is gone, or whose owner
//! was re-armed since, is simply dropped, so a stale timer never fires on a reused slab slot.
//!
//! Pushing back a deadline (progress on a connection) costs no heap operation: the entry already in the
//! heap fires early, sees the later deadline and re-arms itself once.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// What a timer entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerOwner {
    /// The listener's accept backoff.
    Accept,
    /// A client connection, by slab key.
    Conn(usize),
    /// A backend's health prober, by backend slot.
    Prober(usize),
    /// An admin connection, by slab key.
    Admin(usize),
    /// The once-a-second bookkeeping (requests per second).
    Tick,
    /// The end of the drain period after SIGTERM.
    Drain,
    /// Requests wait in a pool's queue: look for room again.
    Queue,
    /// DNS discovery's next lookup or timeout.
    Dns,
}

/// Who a timer entry wakes: the owner's slot and the generation of the thing living there when it was
/// armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerKey {
    pub owner: TimerOwner,
    pub generation: u64,
}

#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, TimerKey)>>,
}

impl Timers {
    pub fn new() -> Timers {
        Timers::default()
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    fn push(&mut self, at: Instant, key: TimerKey) {
        self.heap.push(Reverse((at, key)));
    }

    /// How long the poll may sleep: the distance to the earliest entry (stale ones included, which only
    /// costs a spurious wake-up).
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((at, _))| at.saturating_duration_since(now))
    }

    /// Pops one entry that is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, TimerKey)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(entry)| entry),
            _ => None,
        }
    }
}

/// The owner's side of a timer: when it wants to be woken (`due`) and the earliest wake-up it has in the
/// heap (`armed`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    due: Option<Instant>,
    armed: Option<Instant>,
}

/// What to do with a popped entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The deadline has passed: act on it.
    Fire,
    /// The entry was superseded or re-armed for a later time: nothing to do.
    Stale,
}

impl Deadline {
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Sets the deadline; pushes a heap entry only if nothing earlier is armed already.
    pub fn set(&mut self, at: Instant, timers: &mut Timers, key: TimerKey) {
        self.due = Some(at);
        if self.armed.is_none_or(|armed| at < armed) {
            self.armed = Some(at);
            timers.push(at, key);
        }
    }

    pub fn clear(&mut self) {
        self.due = None;
    }

    /// Handles an entry for this owner popped at `now`: an entry other than the armed one is stale; the
    /// armed one fires if the deadline has passed, else re-arms for the current deadline.
    pub fn on_pop(
        &mut self,
        entry_at: Instant,
        now: Instant,
        timers: &mut Timers,
        key: TimerKey,
    ) -> Expiry {
        if self.armed != Some(entry_at) {
            return Expiry::Stale;
        }
        self.armed = None;
        match self.due {
            Some(due) if due <= now => {
                self.due = None;
                Expiry::Fire
            }
            Some(due) => {
                self.armed = Some(due);
                timers.push(due, key);
                Expiry::Stale
            }
            None => Expiry::Stale,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(slot: usize, generation: u64) -> TimerKey {
        TimerKey {
            owner: TimerOwner::Conn(slot),
            generation,
        }
    }

    fn slot(k: TimerKey) -> usize {
        match k.owner {
            TimerOwner::Conn(slot) => slot,
            other => panic!("unexpected owner {other:?}"),
        }
    }

    /// Runs the timers up to `now` against a table of owners, returning the slots that fired.
    fn run(timers: &mut Timers, owners: &mut [(u64, Deadline)], now: Instant) -> Vec<usize> {
        let mut fired = Vec::new();
        while let Some((at, k)) = timers.pop_due(now) {
            let (generation, deadline) = &mut owners[slot(k)];
            if *generation != k.generation {
                continue;
            }
            if deadline.on_pop(at, now, timers, k) == Expiry::Fire {
                fired.push(slot(k));
            }
        }
        fired
    }

    #[test]
    fn fires_in_order_and_only_when_due() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut timers = Timers::new();
        let mut owners = vec![(1, Deadline::default()), (1, Deadline::default())];
        owners[0].1.set(t0 + ms(20), &mut timers, key(0, 1));
        owners[1].1.set(t0 + ms(10), &mut timers, key(1, 1));
        assert_eq!(timers.next_timeout(t0), Some(ms(10)));
        assert_eq!(
            run(&mut timers, &mut owners, t0 + ms(5)),
            Vec::<usize>::new()
        );
        assert_eq!(run(&mut timers, &mut owners, t0 + ms(10)), vec![1]);
        assert_eq!(run(&mut timers, &mut owners, t0 + ms(30)), vec![0]);
        assert!(timers.is_empty());
    }

    #[test]
    fn extending_a_deadline_rearms_once() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut timers = Timers::new();
        let mut owners = vec![(7, Deadline::default())];
        owners[0].1.set(t0 + ms(10), &mut timers, key(0, 7));
        // Progress pushes the deadline back twice: no new heap entries.
        owners[0].1.set(t0 + ms(20), &mut timers, key(0, 7));
        owners[0].1.set(t0 + ms(30), &mut timers, key(0, 7));
        assert_eq!(timers.len(), 1);
        assert_eq!(
            run(&mut timers, &mut owners, t0 + ms(15)),
            Vec::<usize>::new()
        );
        assert_eq!(timers.len(), 1, "re-armed for the later deadline");
        assert_eq!(run(&mut timers, &mut owners, t0 + ms(30)), vec![0]);
    }

    #[test]
    fn shortening_a_deadline_pushes_an_earlier_entry() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut timers = Timers::new();
        let mut owners = vec![(1, Deadline::default())];
        owners[0].1.set(t0 + ms(60), &mut timers, key(0, 1));
        owners[0].1.set(t0 + ms(10), &mut timers, key(0, 1));
        assert_eq!(run(&mut timers, &mut owners, t0 + ms(10)), vec![0]);
        // The 60ms entry is stale now.
        assert_eq!(
            run(&mut timers, &mut owners, t0 + ms(100)),
            Vec::<usize>::new()
        );
        assert!(timers.is_empty());
    }

    #[test]
    fn cleared_and_reused_slots_never_fire() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut timers = Timers::new();
        let mut owners = vec![(1, Deadline::default()), (1, Deadline::default())];
        owners[0].1.set(t0 + ms(10), &mut timers, key(0, 1));
        owners[0].1.clear();
        // Slot 1's owner is replaced by a new one (new generation) with a fresh deadline.
        owners[1].1.set(t0 + ms(10), &mut timers, key(1, 1));
        owners[1] = (2, Deadline::default());
        owners[1].1.set(t0 + ms(50), &mut timers, key(1, 2));
        assert_eq!(
            run(&mut timers, &mut owners, t0 + ms(20)),
            Vec::<usize>::new()
        );
        assert_eq!(run(&mut timers, &mut owners, t0 + ms(50)), vec![1]);
    }
}
