//! The order of a batch's write pass: which connections had an event in the current batch of
//! events, and in which order they write (see the module notes of `server`). Those whose first event
//! came from their backend (most often a response to pass on) write first, then those woken by their
//! client, each group in the order of its first event.

/// A connection in the batch: its slab key and its id (a key may be reused within the batch).
pub(super) type Entry = (usize, u64);

#[derive(Debug, Default)]
pub(super) struct BatchReady {
    by_backend: Vec<Entry>,
    by_client: Vec<Entry>,
    /// How many entries `next_to_write` has handed out.
    written: usize,
}

impl BatchReady {
    /// A connection's first event in this batch, from its backend's socket or its client's.
    pub(super) fn push(&mut self, entry: Entry, from_backend: bool) {
        match from_backend {
            true => self.by_backend.push(entry),
            false => self.by_client.push(entry),
        }
    }

    /// The next connection to write; `None` once all have been, and the batch is then empty (its
    /// vectors keep their room for the next one).
    pub(super) fn next_to_write(&mut self) -> Option<Entry> {
        let first = self.by_backend.len();
        let next = match self.written.checked_sub(first) {
            None => self.by_backend.get(self.written),
            Some(i) => self.by_client.get(i),
        };
        match next {
            Some(&entry) => {
                self.written += 1;
                Some(entry)
            }
            None => {
                self.by_backend.clear();
                self.by_client.clear();
                self.written = 0;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events in arrival order (key, from its backend), and the keys in the order of the write pass.
    type Case = (&'static [(usize, bool)], &'static [usize]);

    #[test]
    fn responses_are_written_first() {
        let cases: &[Case] = &[
            (&[], &[]),
            (&[(1, false), (2, false)], &[1, 2]),
            (&[(1, true), (2, true)], &[1, 2]),
            (
                &[(1, false), (2, true), (3, false), (4, true)],
                &[2, 4, 1, 3],
            ),
            (&[(7, false), (3, true)], &[3, 7]),
        ];
        let mut batch = BatchReady::default();
        for (events, order) in cases {
            // The same value serves batch after batch.
            for round in 0..2 {
                for &(key, from_backend) in *events {
                    batch.push((key, key as u64 + 100), from_backend);
                }
                let written: Vec<Entry> = std::iter::from_fn(|| batch.next_to_write()).collect();
                let expected: Vec<Entry> = order.iter().map(|&k| (k, k as u64 + 100)).collect();
                assert_eq!(written, expected, "events {events:?}, round {round}");
                assert_eq!(batch.next_to_write(), None);
            }
        }
    }
}
