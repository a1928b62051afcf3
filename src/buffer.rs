//! Fixed-capacity byte buffers and the pool they come from. A buffer owns storage only while it holds
//! bytes or is being filled, so an idle keep-alive connection costs no buffer memory, and storage is
//! recycled through the pool instead of being allocated per request.
//!
//! Blocks come in two sizes. A buffer starts with a small block, enough for nearly every request or
//! response head, and trades it for a large one (copying what it holds, once) when it fills up or must
//! take a bigger head; bodies therefore stream through large blocks, while a thousand connections waiting
//! on their backends hold a small block each.

/// A pool of small and large byte blocks. Blocks returned beyond `max_free` of a size are freed, so a
/// burst of connections does not pin its peak memory forever.
pub struct BufferPool {
    small_size: usize,
    large_size: usize,
    free_small: Vec<Box<[u8]>>,
    free_large: Vec<Box<[u8]>>,
    max_free: usize,
    in_use: usize,
}

impl BufferPool {
    /// A pool of one block size (small and large alike).
    pub fn new(block_size: usize, max_free: usize) -> BufferPool {
        BufferPool::tiered(block_size, block_size, max_free)
    }

    pub fn tiered(small_size: usize, large_size: usize, max_free: usize) -> BufferPool {
        assert!(
            small_size <= large_size,
            "small blocks must not be larger than large ones"
        );
        assert!(
            u32::try_from(large_size).is_ok(),
            "buffer blocks are addressed with u32 offsets"
        );
        BufferPool {
            small_size,
            large_size,
            free_small: Vec::new(),
            free_large: Vec::new(),
            max_free,
            in_use: 0,
        }
    }

    /// The most a buffer can hold.
    pub fn capacity(&self) -> usize {
        self.large_size
    }

    /// Blocks currently lent out to buffers.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    fn take(&mut self, large: bool) -> Box<[u8]> {
        self.in_use += 1;
        let (free, size) = if large {
            (&mut self.free_large, self.large_size)
        } else {
            (&mut self.free_small, self.small_size)
        };
        free.pop()
            .unwrap_or_else(|| vec![0u8; size].into_boxed_slice())
    }

    fn give(&mut self, block: Box<[u8]>) {
        self.in_use -= 1;
        let free = if block.len() == self.large_size {
            &mut self.free_large
        } else {
            &mut self.free_small
        };
        if free.len() < self.max_free {
            free.push(block);
        }
    }
}

/// A byte queue over one pooled block: bytes are appended at the end (`space` + `fill`) and taken from the
/// front (`data` + `consume`). When the tail runs out, the unread bytes move to the front, or to a large
/// block if the small one is full.
#[derive(Default)]
pub struct Buffer {
    storage: Option<Box<[u8]>>,
    // u32 offsets keep an idle connection's four buffers small; blocks are far below 4 GiB.
    start: u32,
    end: u32,
}

impl Buffer {
    pub const fn new() -> Buffer {
        Buffer {
            storage: None,
            start: 0,
            end: 0,
        }
    }

    pub fn data(&self) -> &[u8] {
        match &self.storage {
            Some(block) => &block[self.start as usize..self.end as usize],
            None => &[],
        }
    }

    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// True when no byte can be appended even after compaction and growth.
    pub fn is_full(&self, pool: &BufferPool) -> bool {
        self.len() >= pool.large_size
    }

    pub fn has_storage(&self) -> bool {
        self.storage.is_some()
    }

    fn block_len(&self) -> usize {
        self.storage.as_ref().map_or(0, |b| b.len())
    }

    /// Makes room for at least `wanted` bytes at the end if the pool's blocks allow it: compacts, and
    /// trades a small block for a large one when compaction is not enough.
    fn make_room(&mut self, pool: &mut BufferPool, wanted: usize) {
        if self.storage.is_none() {
            self.storage = Some(pool.take(wanted > pool.small_size));
        }
        let room = self.block_len() - self.end as usize;
        if room >= wanted.max(1) {
            return;
        }
        let len = self.len();
        if self.block_len() < pool.large_size && self.block_len() - len < wanted.max(1) {
            let mut large = pool.take(true);
            large[..len].copy_from_slice(self.data());
            if let Some(small) = self.storage.replace(large) {
                pool.give(small);
            }
            self.start = 0;
            self.end = len as u32;
        } else if self.start > 0 {
            if let Some(block) = self.storage.as_mut() {
                block.copy_within(self.start as usize..self.end as usize, 0);
            }
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Free room at the end, taking a block from the pool if needed. Empty only when the buffer is full.
    pub fn space(&mut self, pool: &mut BufferPool) -> &mut [u8] {
        self.make_room(pool, 1);
        let end = self.end as usize;
        match self.storage.as_mut() {
            Some(block) => &mut block[end..],
            None => &mut [],
        }
    }

    /// Marks `n` bytes of the slice returned by `space` as written.
    pub fn fill(&mut self, n: usize) {
        assert!(
            self.end as usize + n <= self.block_len(),
            "Buffer::fill beyond capacity"
        );
        self.end += n as u32;
    }

    /// Appends all of `bytes`, or nothing when they do not fit.
    pub fn append(&mut self, pool: &mut BufferPool, bytes: &[u8]) -> bool {
        self.make_room(pool, bytes.len());
        let end = self.end as usize;
        let Some(block) = self.storage.as_mut() else {
            return false;
        };
        if block.len() - end < bytes.len() {
            return false;
        }
        block[end..end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len() as u32;
        true
    }

    /// Lets `write` fill the free room (it returns the bytes written, or `None` when they do not fit);
    /// if they do not fit in a small block, tries again with a large one. False when even that fails.
    pub fn write_with(
        &mut self,
        pool: &mut BufferPool,
        mut write: impl FnMut(&mut [u8]) -> Option<usize>,
    ) -> bool {
        loop {
            let space = self.space(pool);
            let room = space.len();
            if let Some(n) = write(space) {
                self.fill(n);
                return true;
            }
            if self.block_len() >= pool.large_size {
                return false;
            }
            self.make_room(pool, room + 1);
        }
    }

    /// Drops `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "Buffer::consume beyond data");
        self.start += n as u32;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Gives the block back to the pool when the buffer holds nothing.
    pub fn release_if_empty(&mut self, pool: &mut BufferPool) {
        if self.is_empty()
            && let Some(block) = self.storage.take()
        {
            pool.give(block);
        }
    }

    /// Gives the block back whatever it holds (the connection is going away).
    pub fn release(&mut self, pool: &mut BufferPool) {
        self.clear();
        self.release_if_empty(pool);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_consume_and_compact() {
        let mut pool = BufferPool::new(8, 4);
        let mut buf = Buffer::new();
        assert!(!buf.has_storage());
        assert_eq!(buf.space(&mut pool).len(), 8);
        assert!(buf.append(&mut pool, b"abcdef"));
        assert_eq!(buf.data(), b"abcdef");
        buf.consume(4);
        assert_eq!(buf.data(), b"ef");
        // 2 bytes left at the tail: compaction waits until the tail is exhausted.
        assert_eq!(buf.space(&mut pool).len(), 2);
        assert!(buf.append(&mut pool, b"gh"));
        assert_eq!(buf.space(&mut pool).len(), 4);
        assert_eq!(buf.data(), b"efgh");
        assert!(!buf.append(&mut pool, b"12345"));
        assert!(buf.append(&mut pool, b"1234"));
        assert!(buf.is_full(&pool));
        assert_eq!(buf.space(&mut pool).len(), 0);
        buf.consume(8);
        assert!(buf.is_empty());
        assert_eq!(buf.space(&mut pool).len(), 8);
    }

    #[test]
    fn small_blocks_grow_into_large_ones() {
        let mut pool = BufferPool::tiered(4, 16, 4);
        let mut buf = Buffer::new();
        assert_eq!(buf.space(&mut pool).len(), 4, "starts small");
        assert!(buf.append(&mut pool, b"abcd"));
        assert!(!buf.is_full(&pool), "a full small block can still grow");
        assert_eq!(
            buf.space(&mut pool).len(),
            12,
            "grown, contents kept at the front"
        );
        assert_eq!(buf.data(), b"abcd");
        assert!(buf.append(&mut pool, b"efghijklmnop"));
        assert!(buf.is_full(&pool));
        assert_eq!(pool.in_use(), 1, "the small block went back");
        buf.release(&mut pool);
        assert_eq!(pool.in_use(), 0);
        // An append bigger than a small block takes a large one at once.
        let mut buf = Buffer::new();
        assert!(buf.append(&mut pool, b"0123456789"));
        assert_eq!(buf.data(), b"0123456789");
        assert!(
            !buf.append(&mut pool, b"0123456789"),
            "beyond the large size"
        );
        buf.release(&mut pool);
        // write_with retries in a large block when the small one is too small.
        let mut buf = Buffer::new();
        let mut tries = Vec::new();
        assert!(buf.write_with(&mut pool, |out| {
            tries.push(out.len());
            (out.len() >= 6).then(|| {
                out[..6].copy_from_slice(b"header");
                6
            })
        }));
        assert_eq!(tries, [4, 16]);
        assert_eq!(buf.data(), b"header");
        assert!(!buf.write_with(&mut pool, |_| None));
    }

    #[test]
    fn storage_is_recycled() {
        let mut pool = BufferPool::new(16, 1);
        let mut a = Buffer::new();
        let mut b = Buffer::new();
        a.append(&mut pool, b"x");
        b.append(&mut pool, b"y");
        assert_eq!(pool.in_use(), 2);
        a.release_if_empty(&mut pool);
        assert_eq!(pool.in_use(), 2, "a non-empty buffer keeps its block");
        a.consume(1);
        a.release_if_empty(&mut pool);
        b.release(&mut pool);
        assert_eq!(pool.in_use(), 0);
        assert_eq!(pool.free_large.len(), 1, "only max_free blocks are kept");
        assert!(!a.has_storage());
        assert!(a.data().is_empty());
    }
}
