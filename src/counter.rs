//! Counters that threads update without a lock, and who may write them. A counter only one thread
//! ever writes (an event-loop worker's own figures) is updated with a plain load and store, which
//! every reader sees the same as an atomic add; a counter several threads write takes the locked
//! read-modify-write. On the request path that difference is most of the atomics' cost: in a profile
//! of lb at 64 connections, about 9% of its own user-time samples fell just after a locked
//! instruction.

use std::sync::atomic::{AtomicU64, Ordering};

/// Who writes a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Writer {
    /// Any thread, at any time.
    #[default]
    Any,
    /// Only the calling thread, ever.
    Sole,
}

impl Writer {
    #[inline(always)]
    pub fn add(self, counter: &AtomicU64, n: u64) {
        match self {
            Writer::Any => {
                counter.fetch_add(n, Ordering::Relaxed);
            }
            Writer::Sole => counter.store(
                counter.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            ),
        }
    }

    #[inline(always)]
    pub fn sub(self, counter: &AtomicU64, n: u64) {
        self.add(counter, n.wrapping_neg());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_writers_add_and_take_away_the_same() {
        // (start, added, taken away, result): wrapping like an atomic add.
        let cases = [
            (0, 1, 0, 1),
            (5, 3, 2, 6),
            (1, 0, 1, 0),
            (u64::MAX, 1, 0, 0),
            (0, 0, 1, u64::MAX),
        ];
        for (start, added, taken, result) in cases {
            for writer in [Writer::Any, Writer::Sole] {
                let counter = AtomicU64::new(start);
                writer.add(&counter, added);
                writer.sub(&counter, taken);
                assert_eq!(
                    counter.load(Ordering::Relaxed),
                    result,
                    "{writer:?}: {start} + {added} - {taken}"
                );
            }
        }
    }
}
