//! The I/O primitives both drivers build on, over any [`Read`] / [`Write`] (a [`crate::transport::Transport`]
//! in practice): `fill` reads into a buffer until WouldBlock, EOF or full; `send` writes an
//! [`Outgoing`] (queued bytes and payload in one `writev`).

use crate::buffer::Buffer;
use crate::exchange::Outgoing;
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

/// Writes what `out` holds once (one `write` or `writev`). `Ok(0)` only for an empty `out`.
pub fn send<W: Write>(dst: &mut W, out: Outgoing<'_>) -> io::Result<usize> {
    if out.is_empty() {
        return Ok(0);
    }
    loop {
        let (slices, count) = out.slices();
        let result = if count == 1 {
            dst.write(&slices[0])
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

    #[test]
    fn send_writes_both_parts_in_one_call() {
        let mut out = Vec::new();
        let n = send(
            &mut out,
            Outgoing {
                first: b"head ",
                second: b"body",
            },
        )
        .unwrap();
        // Vec's write_vectored takes every slice.
        assert_eq!((n, out.as_slice()), (9, b"head body".as_slice()));
        assert_eq!(send(&mut out, Outgoing::EMPTY).unwrap(), 0);
    }
}
