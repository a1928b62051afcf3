//! Fixed-capacity byte buffers and the pool they come from. A buffer owns its storage only while it
//! holds bytes or is being filled, so an idle keep-alive connection costs no buffer memory, and storage
//! is recycled through the pool instead of being allocated per request.

/// A pool of equally sized byte blocks. Blocks returned beyond `max_free` are freed, so a burst of
/// connections does not pin its peak memory forever.
pub struct BufferPool {
    block_size: usize,
    free: Vec<Box<[u8]>>,
    max_free: usize,
    allocated: usize,
}

impl BufferPool {
    pub fn new(block_size: usize, max_free: usize) -> BufferPool {
        assert!(u32::try_from(block_size).is_ok(), "buffer blocks are addressed with u32 offsets");
        BufferPool {
            block_size,
            free: Vec::new(),
            max_free,
            allocated: 0,
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks currently lent out to buffers.
    pub fn in_use(&self) -> usize {
        self.allocated
    }

    fn take(&mut self) -> Box<[u8]> {
        self.allocated += 1;
        self.free
            .pop()
            .unwrap_or_else(|| vec![0u8; self.block_size].into_boxed_slice())
    }

    fn give(&mut self, block: Box<[u8]>) {
        self.allocated -= 1;
        if self.free.len() < self.max_free {
            self.free.push(block);
        }
    }
}

/// A byte queue over one pooled block: bytes are appended at the end (`space` + `fill`) and taken from the
/// front (`data` + `consume`). When the tail runs out, the unread bytes are moved to the front.
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

    /// True when no byte can be appended even after compaction.
    pub fn is_full(&self) -> bool {
        match &self.storage {
            Some(block) => self.len() == block.len(),
            None => false,
        }
    }

    pub fn has_storage(&self) -> bool {
        self.storage.is_some()
    }

    /// Free room at the end, taking a block from the pool if needed and compacting when the unread bytes
    /// sit away from the front. Empty only when the buffer is full.
    pub fn space(&mut self, pool: &mut BufferPool) -> &mut [u8] {
        let block = self.storage.get_or_insert_with(|| pool.take());
        if self.start > 0 && self.end as usize == block.len() {
            block.copy_within(self.start as usize..self.end as usize, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut block[self.end as usize..]
    }

    /// Marks `n` bytes of the slice returned by `space` as written.
    pub fn fill(&mut self, n: usize) {
        let capacity = self.storage.as_ref().map_or(0, |b| b.len());
        assert!(self.end as usize + n <= capacity, "Buffer::fill beyond capacity");
        self.end += n as u32;
    }

    /// Appends all of `bytes`, or nothing when they do not fit.
    pub fn append(&mut self, pool: &mut BufferPool, bytes: &[u8]) -> bool {
        let space = self.space(pool);
        if bytes.len() > space.len() {
            return false;
        }
        space[..bytes.len()].copy_from_slice(bytes);
        self.fill(bytes.len());
        true
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
        // 2 bytes left at the tail; asking for space at the end compacts only when the tail is exhausted.
        assert_eq!(buf.space(&mut pool).len(), 2);
        assert!(buf.append(&mut pool, b"gh"));
        assert_eq!(buf.space(&mut pool).len(), 4);
        assert_eq!(buf.data(), b"efgh");
        assert!(!buf.append(&mut pool, b"12345"));
        assert!(buf.append(&mut pool, b"1234"));
        assert!(buf.is_full());
        assert_eq!(buf.space(&mut pool).len(), 0);
        buf.consume(8);
        assert!(buf.is_empty());
        assert_eq!(buf.space(&mut pool).len(), 8);
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
        assert_eq!(pool.free.len(), 1, "only max_free blocks are kept");
        assert!(!a.has_storage());
        assert!(a.data().is_empty());
    }
}
