//! Fixed-capacity byte buffers and the pool their storage comes from. A buffer owns a block only while
//! it holds bytes or is being filled, so an idle keep-alive connection costs no buffer memory, and
//! blocks are recycled instead of being allocated per request. A block goes back to the pool by
//! ownership: when the buffer empties ([`Buffer::release_if_empty`]) or when it is dropped, whatever
//! path the connection took to its end.
//!
//! The pool is per thread (one event loop, or one connection's thread), so taking and giving blocks
//! never synchronises. Blocks come in two sizes. A buffer starts with a small block, enough for nearly
//! every request or response head, and trades it for a large one (copying what it holds, once) when it
//! fills up or must take a bigger head; bodies therefore stream through large blocks, while a thousand
//! connections waiting on their backends hold a small block each.

use std::cell::{Cell, RefCell};

/// Size of a small block: nearly every head fits, and a connection waiting on its backend holds this.
pub const SMALL_BLOCK: usize = 4 * 1024;
/// Size of a large block: the most a buffer holds, and so the largest head accepted.
pub const LARGE_BLOCK: usize = 16 * 1024;

/// A pool of small and large byte blocks. Blocks returned beyond `max_free` of a size are freed, so a
/// burst of connections does not pin its peak memory forever.
struct BufferPool {
    small_size: usize,
    large_size: usize,
    free_small: Vec<Box<[u8]>>,
    free_large: Vec<Box<[u8]>>,
    max_free: usize,
    in_use: usize,
}

impl BufferPool {
    const fn new() -> BufferPool {
        BufferPool {
            small_size: SMALL_BLOCK,
            large_size: LARGE_BLOCK,
            free_small: Vec::new(),
            free_large: Vec::new(),
            max_free: 16,
            in_use: 0,
        }
    }

    // `take` and `give` run four times each per proxied request: inlined into the pool's access (the
    // thread-local lookup and borrow), with the allocation kept out of line, each is a few loads and
    // stores instead of a further call (take's lookup is then inlined into `make_room` as well).
    #[inline(always)]
    fn take(&mut self, large: bool) -> Box<[u8]> {
        self.in_use += 1;
        let free = if large {
            &mut self.free_large
        } else {
            &mut self.free_small
        };
        match free.pop() {
            Some(block) => block,
            None => self.allocate(large),
        }
    }

    #[cold]
    #[inline(never)]
    fn allocate(&self, large: bool) -> Box<[u8]> {
        let size = if large {
            self.large_size
        } else {
            self.small_size
        };
        vec![0u8; size].into_boxed_slice()
    }

    #[inline(always)]
    fn give(&mut self, block: Box<[u8]>) {
        self.in_use = self.in_use.saturating_sub(1);
        let free = if block.len() == self.large_size {
            &mut self.free_large
        } else if block.len() == self.small_size {
            &mut self.free_small
        } else {
            // From before a reconfiguration of this thread's pool: just freed.
            return;
        };
        if free.len() < self.max_free {
            free.push(block);
        }
    }
}

thread_local! {
    static POOL: RefCell<BufferPool> = const { RefCell::new(BufferPool::new()) };
    /// The pool's large block size, readable without borrowing the pool (asked on every step).
    static CAPACITY: Cell<usize> = const { Cell::new(LARGE_BLOCK) };
}

#[inline(always)]
fn with_pool<T>(f: impl FnOnce(&mut BufferPool) -> T) -> T {
    POOL.with(|pool| f(&mut pool.borrow_mut()))
}

/// Sets how many free blocks of each size this thread's pool keeps (an event loop keeps many; a
/// connection's thread a few).
pub fn keep_free_blocks(max_free: usize) {
    with_pool(|pool| pool.max_free = max_free);
}

/// Sets this thread's block sizes (tests use tiny ones to reach the edges quickly). Buffers filled
/// before keep their blocks; they are freed, not pooled, when given back.
pub fn set_block_sizes(small: usize, large: usize) {
    assert!(
        small <= large,
        "small blocks must not be larger than large ones"
    );
    assert!(
        u32::try_from(large).is_ok(),
        "buffer blocks are addressed with u32 offsets"
    );
    CAPACITY.with(|c| c.set(large));
    with_pool(|pool| {
        pool.small_size = small;
        pool.large_size = large;
        pool.free_small.clear();
        pool.free_large.clear();
    });
}

/// Blocks of this thread's pool currently lent out to buffers.
pub fn blocks_in_use() -> usize {
    with_pool(|pool| pool.in_use)
}

/// The most a buffer can hold on this thread.
pub fn capacity() -> usize {
    CAPACITY.with(Cell::get)
}

/// A byte queue over one pooled block: bytes are appended at the end (`space` + `fill`) and taken from
/// the front (`data` + `consume`). When the tail runs out, the unread bytes move to the front, or to a
/// large block if the small one is full.
#[derive(Default)]
pub struct Buffer {
    storage: Option<Box<[u8]>>,
    // u32 offsets keep an idle connection's buffers small; blocks are far below 4 GiB.
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
    pub fn is_full(&self) -> bool {
        self.len() >= capacity()
    }

    pub fn has_storage(&self) -> bool {
        self.storage.is_some()
    }

    fn block_len(&self) -> usize {
        self.storage.as_ref().map_or(0, |b| b.len())
    }

    /// Makes room for at least `wanted` bytes at the end if the pool's blocks allow it: compacts, and
    /// trades a small block for a large one when compaction is not enough.
    fn make_room(&mut self, wanted: usize) {
        let wanted = wanted.max(1);
        if self.storage.is_none() {
            self.storage = Some(with_pool(|pool| pool.take(wanted > pool.small_size)));
        }
        let room = self.block_len() - self.end as usize;
        if room >= wanted {
            return;
        }
        let len = self.len();
        let large_size = capacity();
        if self.block_len() < large_size && self.block_len() - len < wanted {
            let mut large = with_pool(|pool| pool.take(true));
            large[..len].copy_from_slice(self.data());
            if let Some(small) = self.storage.replace(large) {
                with_pool(|pool| pool.give(small));
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
    pub fn space(&mut self) -> &mut [u8] {
        self.make_room(1);
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
    pub fn append(&mut self, bytes: &[u8]) -> bool {
        self.make_room(bytes.len());
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
    #[inline]
    pub fn write_with(&mut self, mut write: impl FnMut(&mut [u8]) -> Option<usize>) -> bool {
        self.write_after(|_, space| write(space))
    }

    /// [`Buffer::write_with`], with `write` also given the bytes the buffer holds.
    pub fn write_after(
        &mut self,
        mut write: impl FnMut(&[u8], &mut [u8]) -> Option<usize>,
    ) -> bool {
        loop {
            self.make_room(1);
            let (start, end) = (self.start as usize, self.end as usize);
            let Some(block) = self.storage.as_mut() else {
                return false;
            };
            let (held, space) = block.split_at_mut(end);
            let room = space.len();
            if let Some(n) = write(&held[start..], space) {
                self.fill(n);
                return true;
            }
            if self.block_len() >= capacity() {
                return false;
            }
            self.make_room(room + 1);
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

    /// Keeps only the first `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.end = self.start + len as u32;
        }
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Gives the block back to the pool when the buffer holds nothing.
    // Asked of every buffer after each pass over a connection (twelve times per proxied request, four
    // of them with a block to give): the asking is inlined, the giving is not.
    #[inline]
    pub fn release_if_empty(&mut self) {
        if self.is_empty() && self.storage.is_some() {
            self.give_back();
        }
    }

    #[inline(never)]
    fn give_back(&mut self) {
        if let Some(block) = self.storage.take() {
            with_pool(|pool| pool.give(block));
        }
    }

    /// Gives the block back whatever it holds.
    pub fn release(&mut self) {
        self.clear();
        self.release_if_empty();
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(block) = self.storage.take() {
            // While the thread itself is ending its pool may be gone: the block is then just freed.
            let _ = POOL.try_with(|pool| {
                if let Ok(mut pool) = pool.try_borrow_mut() {
                    pool.give(block);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each test runs on a thread of its own, so its pool settings are its own.
    fn tiny(small: usize, large: usize, max_free: usize) {
        set_block_sizes(small, large);
        keep_free_blocks(max_free);
    }

    #[test]
    fn fill_consume_and_compact() {
        tiny(8, 8, 4);
        let mut buf = Buffer::new();
        assert!(!buf.has_storage());
        assert_eq!(buf.space().len(), 8);
        assert!(buf.append(b"abcdef"));
        assert_eq!(buf.data(), b"abcdef");
        buf.consume(4);
        assert_eq!(buf.data(), b"ef");
        // 2 bytes left at the tail: compaction waits until the tail is exhausted.
        assert_eq!(buf.space().len(), 2);
        assert!(buf.append(b"gh"));
        assert_eq!(buf.space().len(), 4);
        assert_eq!(buf.data(), b"efgh");
        assert!(!buf.append(b"12345"));
        assert!(buf.append(b"1234"));
        assert!(buf.is_full());
        assert_eq!(buf.space().len(), 0);
        buf.consume(8);
        assert!(buf.is_empty());
        assert_eq!(buf.space().len(), 8);
    }

    #[test]
    fn small_blocks_grow_into_large_ones() {
        tiny(4, 16, 4);
        let mut buf = Buffer::new();
        assert_eq!(buf.space().len(), 4, "starts small");
        assert!(buf.append(b"abcd"));
        assert!(!buf.is_full(), "a full small block can still grow");
        assert_eq!(buf.space().len(), 12, "grown, contents kept at the front");
        assert_eq!(buf.data(), b"abcd");
        assert!(buf.append(b"efghijklmnop"));
        assert!(buf.is_full());
        assert_eq!(blocks_in_use(), 1, "the small block went back");
        buf.release();
        assert_eq!(blocks_in_use(), 0);
        // An append bigger than a small block takes a large one at once.
        let mut buf = Buffer::new();
        assert!(buf.append(b"0123456789"));
        assert_eq!(buf.data(), b"0123456789");
        assert!(!buf.append(b"0123456789"), "beyond the large size");
        buf.release();
        // write_with retries in a large block when the small one is too small.
        let mut buf = Buffer::new();
        let mut tries = Vec::new();
        assert!(buf.write_with(|out| {
            tries.push(out.len());
            (out.len() >= 6).then(|| {
                out[..6].copy_from_slice(b"header");
                6
            })
        }));
        assert_eq!(tries, [4, 16]);
        assert_eq!(buf.data(), b"header");
        assert!(!buf.write_with(|_| None));
    }

    /// `write_after` sees what the buffer holds and appends after it, in a large block when the
    /// small one has no room.
    #[test]
    fn write_after_sees_the_bytes_held() {
        tiny(8, 16, 4);
        let mut buf = Buffer::new();
        buf.append(b"abcdef");
        buf.consume(2);
        let doubled = buf.write_after(|held, out| {
            let n = held.len();
            out.get_mut(..n)?.copy_from_slice(held);
            Some(n)
        });
        assert!(doubled);
        assert_eq!(buf.data(), b"cdefcdef");
        assert!(buf.write_after(|held, out| {
            assert_eq!(held, b"cdefcdef");
            out.get_mut(..4)?.copy_from_slice(b"wxyz");
            Some(4)
        }));
        assert_eq!(buf.data(), b"cdefcdefwxyz");
        assert!(!buf.write_after(|_, out| (out.len() > 16).then_some(0)));
        assert_eq!(
            buf.data(),
            b"cdefcdefwxyz",
            "nothing written when nothing fits"
        );
    }

    #[test]
    fn storage_goes_back_by_ownership() {
        tiny(16, 16, 1);
        let mut a = Buffer::new();
        let mut b = Buffer::new();
        a.append(b"x");
        b.append(b"y");
        assert_eq!(blocks_in_use(), 2);
        a.release_if_empty();
        assert_eq!(blocks_in_use(), 2, "a non-empty buffer keeps its block");
        a.consume(1);
        a.release_if_empty();
        assert_eq!(blocks_in_use(), 1);
        drop(b);
        assert_eq!(blocks_in_use(), 0, "dropping a buffer gives its block back");
        assert_eq!(
            with_pool(|p| p.free_small.len() + p.free_large.len()),
            1,
            "only max_free blocks are kept"
        );
        assert!(!a.has_storage());
        assert!(a.data().is_empty());
    }
}
