//! The I/O primitives both drivers build on, over any [`Read`] / [`Write`] (a [`crate::transport::Transport`]
//! in practice): `fill` reads into a buffer until WouldBlock, EOF or full; `send` writes an
//! [`Outgoing`] (both of its parts in one `send`, or one `writev` when they are not small).

use crate::buffer::Buffer;
use crate::exchange::Outgoing;
use std::cell::RefCell;
use std::io::{self, Read, Write};

/// What one `fill` call saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filled {
    pub bytes: usize,
    /// The reader returned WouldBlock (or a short read said the queue is empty): wait for an event.
    pub would_block: bool,
    pub eof: bool,
}

/// Reads from `src` into `buf` until WouldBlock, EOF, or the buffer is full.
///
/// A read shorter than the space offered means the socket's receive queue is empty (epoll(7)), so it
/// counts as WouldBlock and saves a system call per read — unless `peer_closed` says a FIN came with the
/// data, in which case reading goes on to see the EOF that no later event would announce. A blocking
/// reader (`blocking`) returns after the first read that brought bytes.
pub fn fill<R: Read>(
    src: &mut R,
    buf: &mut Buffer,
    peer_closed: bool,
    blocking: bool,
) -> io::Result<Filled> {
    let mut filled = Filled::default();
    loop {
        let space = buf.space();
        let offered = space.len();
        if offered == 0 {
            return Ok(filled);
        }
        match src.read(space) {
            Ok(0) => {
                filled.eof = true;
                return Ok(filled);
            }
            Ok(n) => {
                buf.fill(n);
                filled.bytes += n;
                if blocking {
                    return Ok(filled);
                }
                if n < offered && !peer_closed {
                    filled.would_block = true;
                    return Ok(filled);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                filled.would_block = true;
                return Ok(filled);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// At most this many bytes in two parts are copied into one piece and sent with one `write`. On
/// loopback TCP, a `writev` of two parts took 150-300 ns more kernel time than a `send` of the
/// same 80 bytes in one piece (a C loop of 200,000 calls of each, three runs), where copying a few
/// hundred bytes takes a few dozen.
const COALESCED: usize = 512;

thread_local! {
    /// Where two small parts are joined: kept, rather than a stack array zeroed on every call.
    static JOINED: RefCell<[u8; COALESCED]> = const { RefCell::new([0; COALESCED]) };
}

/// Writes what `out` holds once (one `write`, or one `writev` for two parts that are not small).
/// `Ok(0)` only for an empty `out`.
pub fn send<W: Write>(dst: &mut W, out: Outgoing<'_>) -> io::Result<usize> {
    if out.is_empty() {
        return Ok(0);
    }
    let (slices, count) = out.slices();
    loop {
        let result = if count == 1 {
            dst.write(&slices[0])
        } else if out.len() <= COALESCED {
            JOINED.with_borrow_mut(|joined| {
                let (first, second) = joined.split_at_mut(out.first.len());
                first.copy_from_slice(out.first);
                second[..out.second.len()].copy_from_slice(out.second);
                dst.write(&joined[..out.len()])
            })
        } else {
            dst.write_vectored(&slices[..count])
        };
        match result {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out `chunks` one per call, then WouldBlock, then EOF if `eof`.
    struct Chunks {
        chunks: Vec<Vec<u8>>,
        eof: bool,
    }

    impl Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.chunks.is_empty() {
                return if self.eof {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let chunk = &mut self.chunks[0];
            let n = chunk.len().min(buf.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            chunk.drain(..n);
            if chunk.is_empty() {
                self.chunks.remove(0);
            }
            Ok(n)
        }
    }

    fn filled(bytes: usize, would_block: bool, eof: bool) -> Filled {
        Filled {
            bytes,
            would_block,
            eof,
        }
    }

    #[test]
    fn fill_reads_until_would_block_or_full() {
        crate::buffer::set_block_sizes(8, 8);
        let mut buf = Buffer::new();
        let mut src = Chunks {
            chunks: vec![b"abc".to_vec(), b"de".to_vec()],
            eof: false,
        };
        assert_eq!(
            fill(&mut src, &mut buf, true, false).unwrap(),
            filled(5, true, false)
        );
        let mut src = Chunks {
            chunks: vec![b"fghij".to_vec()],
            eof: true,
        };
        let stops_when_full = fill(&mut src, &mut buf, true, false).unwrap();
        assert_eq!(stops_when_full, filled(3, false, false));
        assert_eq!(buf.data(), b"abcdefgh");
        buf.consume(8);
        assert_eq!(
            fill(&mut src, &mut buf, true, false).unwrap(),
            filled(2, false, true)
        );
        // Without a FIN hint, a short read is taken as an empty queue: no extra read call.
        let mut buf = Buffer::new();
        let mut src = Chunks {
            chunks: vec![b"abc".to_vec(), b"de".to_vec()],
            eof: false,
        };
        assert_eq!(
            fill(&mut src, &mut buf, false, false).unwrap(),
            filled(3, true, false)
        );
        // A blocking reader returns with the first bytes.
        let mut src = Chunks {
            chunks: vec![b"x".to_vec(), b"y".to_vec()],
            eof: false,
        };
        let mut buf = Buffer::new();
        assert_eq!(
            fill(&mut src, &mut buf, true, true).unwrap(),
            filled(1, false, false)
        );
    }

    /// A writer that records each call: `(vectored, bytes)`.
    #[derive(Default)]
    struct Calls(Vec<(bool, Vec<u8>)>);

    impl Write for Calls {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.push((false, buf.to_vec()));
            Ok(buf.len())
        }
        fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
            let bytes: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            self.0.push((true, bytes.clone()));
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Both parts go in one call: joined into one `write` up to `COALESCED` bytes, vectored above.
    #[test]
    fn send_writes_both_parts_in_one_call() {
        let big = vec![b'b'; COALESCED];
        let cases: [(&[u8], &[u8], bool); 5] = [
            (b"head ", b"body", false),
            (b"", b"body", false),
            (b"head", b"", false),
            (&big[..COALESCED - 1], b"x", false),
            (&big[..COALESCED], b"x", true),
        ];
        for (first, second, vectored) in cases {
            let mut calls = Calls::default();
            let n = send(&mut calls, Outgoing { first, second }).unwrap();
            let both = [first, second].concat();
            assert_eq!(n, both.len());
            assert_eq!(
                calls.0,
                vec![(vectored, both)],
                "{} + {}",
                first.len(),
                second.len()
            );
        }
        assert_eq!(send(&mut Calls::default(), Outgoing::EMPTY).unwrap(), 0);
    }
}
