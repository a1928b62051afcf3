//! Buffers for TLS records on their way in from a socket or out to it. A session holds a block only
//! while records are in it: an idle TLS connection holds none. Blocks come from a per-thread pool (like
//! `crate::buffer`'s) and are sized for the largest record TLS allows, so that a whole record always
//! fits; a handshake message larger than that (a long certificate chain) grows a block of its own, up
//! to TLS's handshake limit as rustls enforces it, which is freed rather than pooled.

use std::cell::RefCell;

/// The largest record on the wire: 2^14 bytes of plaintext plus TLS 1.2's 2048 bytes of expansion and
/// the 5-byte header, rounded up.
pub const RECORD_BLOCK: usize = 18 * 1024 + 512;
/// The most a block may grow to while a handshake message is joined from its records.
const MAX_BLOCK: usize = 64 * 1024 + RECORD_BLOCK;
/// Free blocks a thread keeps.
const KEPT_FREE: usize = 64;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take_block() -> Box<[u8]> {
    FREE.with(|free| free.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; RECORD_BLOCK].into_boxed_slice())
}

fn give_block(block: Box<[u8]>) {
    if block.len() != RECORD_BLOCK {
        return;
    }
    let _ = FREE.try_with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < KEPT_FREE {
            free.push(block);
        }
    });
}

/// A queue of record bytes over a block held only while non-empty.
#[derive(Default)]
pub struct Records {
    block: Option<Box<[u8]>>,
    start: usize,
    end: usize,
}

impl Records {
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn data(&self) -> &[u8] {
        match &self.block {
            Some(block) => &block[self.start..self.end],
            None => &[],
        }
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        match &mut self.block {
            Some(block) => &mut block[self.start..self.end],
            None => &mut [],
        }
    }

    /// Drops `n` bytes from the front; the block goes back to the pool once nothing is left.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if let Some(block) = self.block.take() {
                give_block(block);
            }
        }
    }

    /// Free space at the end, at least `at_least` bytes of it (moving the data to the front, or to a
    /// larger block). `None` when that would pass the size limit.
    pub fn space(&mut self, at_least: usize) -> Option<&mut [u8]> {
        let len = self.len();
        let block = self.block.get_or_insert_with(take_block);
        if block.len() - self.end < at_least {
            if len + at_least <= block.len() {
                block.copy_within(self.start..self.end, 0);
            } else {
                let size = (len + at_least).max(block.len() * 2);
                if size > MAX_BLOCK {
                    return None;
                }
                let mut larger = vec![0u8; size].into_boxed_slice();
                larger[..len].copy_from_slice(&block[self.start..self.end]);
                give_block(std::mem::replace(block, larger));
            }
            self.start = 0;
            self.end = len;
        }
        Some(&mut block[self.end..])
    }

    /// Counts `n` bytes written into the space [`Records::space`] gave.
    pub fn filled(&mut self, n: usize) {
        if let Some(block) = &self.block {
            self.end = (self.end + n).min(block.len());
        }
    }

    /// Whether a block is held (memory accounting in tests).
    #[cfg(test)]
    pub fn holds_block(&self) -> bool {
        self.block.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_held_only_while_bytes_are() {
        let mut records = Records::default();
        assert!(!records.holds_block());
        let space = records.space(10).unwrap();
        assert_eq!(space.len(), RECORD_BLOCK);
        space[..5].copy_from_slice(b"hello");
        records.filled(5);
        assert_eq!(records.data(), b"hello");
        records.consume(2);
        assert_eq!(records.data(), b"llo");
        records.consume(3);
        assert!(records.is_empty() && !records.holds_block());
    }

    #[test]
    fn space_compacts_then_grows_up_to_the_limit() {
        let mut records = Records::default();
        let n = records.space(1).unwrap().len();
        records.filled(n);
        records.consume(n - 10);
        // Ten bytes left at the end of the block: asking for more moves them to the front.
        let space = records.space(100).unwrap().len();
        assert_eq!(space, RECORD_BLOCK - 10);
        assert_eq!(records.len(), 10);
        records.filled(space);
        // Full: a larger block, data kept.
        let space = records.space(1000).unwrap().len();
        assert!(space >= 1000);
        assert_eq!(records.len(), RECORD_BLOCK);
        assert!(records.space(MAX_BLOCK).is_none());
        records.consume(records.len());
        assert!(!records.holds_block());
    }
}
