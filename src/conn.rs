//! The client/backend connection pair: its state machine (an explicit enum, every transition through one
//! function that logs it), the per-request exchange record, edge-triggered readiness bookkeeping, and the
//! two I/O primitives both engines build on: `fill` (read until WouldBlock or full) and `pump` (move one
//! message body to a writer as the relay decides, payload written straight from the read buffer, framing
//! and heads from a small output buffer, both in one `writev`).
//!
//! Everything here works over `Read`/`Write`; which sockets, when, and what to do about it is `server.rs`'s
//! business.

use crate::balance::Tried;
use crate::buffer::{Buffer, BufferPool};
use crate::http::Version;
use crate::http::body::{FramingError, Relay, Step};
use crate::http::response::ResponsePlan;
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::time::Instant;

/// Where a client connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for a request head (the first, or the next on a keep-alive connection).
    ReadingHead,
    /// A head was accepted; a backend connection is being established.
    Connecting,
    /// The request is going to the backend and the response coming back.
    Exchanging,
    /// After `101 Switching Protocols`: bytes relayed both ways until either side closes.
    Tunnel,
    /// A final response (usually an error) is being flushed; the connection closes afterwards.
    Closing,
}

/// Logs a state transition at debug level and applies it.
pub fn set_state(id: u64, state: &mut State, next: State, why: &str) {
    if *state != next {
        log::debug!("conn {id}: {:?} -> {:?} ({why})", *state, next);
        *state = next;
    }
}

/// Edge-triggered readiness: a bit is set by an event and cleared only when the socket answers
/// `WouldBlock`, so work continues while the socket can still make progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    pub readable: bool,
    pub writable: bool,
    /// The peer closed its sending side: a read returned 0. Only a read sets this; events cannot be
    /// trusted with it, since an event queued for a closed socket may arrive after its token was reused.
    pub read_closed: bool,
    /// An event said the peer hung up: keep reading past a short read to see the EOF (see `fill`).
    pub hup: bool,
    /// The socket is registered for writability too. Sockets start out registered for reading only
    /// (writable is assumed) and ask for writability the first time a write would block: with small
    /// messages that never happens, and the kernel is spared a wake-up for every acknowledgement.
    pub write_interest: bool,
}

/// The facts of the current request needed after its head was consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestFacts {
    pub version: Version,
    pub keep_alive: bool,
    pub is_head: bool,
    pub idempotent: bool,
    pub upgrade: bool,
    pub has_body: bool,
}

/// Where the response of the current exchange is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseStage {
    /// Waiting for (the rest of) a response head; interim 1xx heads may pass before the final one.
    Head,
    /// Relaying the body as planned.
    Body(ResponsePlan),
    /// The response has been handed to the client's output in full.
    Done(ResponsePlan),
}

/// One request/response exchange on a client connection.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub started: Instant,
    pub line: RequestLine,
    pub backend: usize,
    pub request: RequestFacts,
    pub request_relay: Relay,
    /// Bytes of the request head still at the front of the client buffer (kept for a bodiless request until
    /// its response starts, so that it can be sent again on a fresh connection).
    pub head_in_client_buffer: usize,
    /// The backend connection came from the idle pool.
    pub reused_connection: bool,
    /// Attempts made so far (failures retried on other backends).
    pub attempts: u32,
    /// Backends that failed this request.
    pub tried: Tried,
    pub response: ResponseStage,
    /// How the response body is being relayed (meaningful in `ResponseStage::Body`).
    pub response_relay: Relay,
    /// The response head allows the backend connection to be pooled afterwards.
    pub backend_reusable: bool,
    /// Any response byte has arrived from the backend.
    pub response_started: bool,
    /// Any byte of this response has been queued for the client (an error response is then impossible).
    pub client_output_started: bool,
    /// Bytes of the response sent to the client (head and body).
    pub response_bytes: u64,
    pub status: u16,
}

/// The request line, kept inline (truncated) for the access log once the head has left the buffer.
#[derive(Clone, Copy)]
pub struct RequestLine {
    method: [u8; 16],
    method_len: u8,
    target: [u8; 96],
    target_len: u8,
    truncated: bool,
}

impl RequestLine {
    pub fn new(method: &[u8], target: &[u8]) -> RequestLine {
        let mut line = RequestLine {
            method: [0; 16],
            method_len: 0,
            target: [0; 96],
            target_len: 0,
            truncated: method.len() > 16 || target.len() > 96,
        };
        let m = method.len().min(16);
        line.method[..m].copy_from_slice(&method[..m]);
        line.method_len = m as u8;
        let t = target.len().min(96);
        line.target[..t].copy_from_slice(&target[..t]);
        line.target_len = t as u8;
        line
    }
}

impl RequestLine {
    /// The request target as kept (at most 96 bytes).
    pub fn target(&self) -> &[u8] {
        &self.target[..usize::from(self.target_len)]
    }
}

impl fmt::Display for RequestLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let method = String::from_utf8_lossy(&self.method[..self.method_len as usize]);
        let target = String::from_utf8_lossy(&self.target[..self.target_len as usize]);
        write!(
            f,
            "{method} {target}{}",
            if self.truncated { "..." } else { "" }
        )
    }
}

impl fmt::Debug for RequestLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestLine({self})")
    }
}

/// What one `fill` call saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filled {
    pub bytes: usize,
    /// The reader returned WouldBlock: wait for the next readable event.
    pub would_block: bool,
    pub eof: bool,
}

/// Reads from `src` into `buf` until WouldBlock, EOF, or the buffer is full.
///
/// A read shorter than the space offered means the socket's receive queue is empty (epoll(7)), so it
/// counts as WouldBlock and saves a system call per read — unless `peer_closed` says a FIN came with the
/// data, in which case reading goes on to see the EOF that no later event would announce.
pub fn fill<R: Read>(
    src: &mut R,
    buf: &mut Buffer,
    pool: &mut BufferPool,
    peer_closed: bool,
) -> io::Result<Filled> {
    let mut filled = Filled::default();
    loop {
        let space = buf.space(pool);
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

/// Writes as much of `out` as the writer takes. Returns bytes written and whether it blocked.
pub fn flush<W: Write>(dst: &mut W, out: &mut Buffer) -> io::Result<(usize, bool)> {
    let mut written = 0;
    while !out.is_empty() {
        match dst.write(out.data()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                out.consume(n);
                written += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((written, true)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((written, false))
}

/// Why a pump stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PumpStatus {
    /// The writer would block with bytes still to send.
    Blocked,
    /// Everything available was sent; the body needs more input.
    NeedInput,
    /// The body is complete and fully written (only heads/framing of this message were in `out`).
    Done,
}

#[derive(Debug)]
pub enum PumpError {
    Framing(FramingError),
    Io(io::Error),
}

impl fmt::Display for PumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PumpError::Framing(e) => write!(f, "body framing: {e}"),
            PumpError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Room kept in `out` for one framing emit.
const EMIT_ROOM: usize = 32;

/// Moves one message body from `input` to `dst` as `relay` decides: `out` (pending head or framing bytes)
/// goes first, payload is written straight from `input`, and both go in one `writev` when both are pending.
/// Returns the bytes written and why it stopped. Stops early when `out` cannot take a framing emit.
pub fn pump<W: Write>(
    relay: &mut Relay,
    input: &mut Buffer,
    out: &mut Buffer,
    dst: &mut W,
    pool: &mut BufferPool,
) -> Result<(u64, PumpStatus), PumpError> {
    let mut written: u64 = 0;
    loop {
        if out.len() + EMIT_ROOM > pool.capacity() {
            let (n, blocked) = flush(dst, out).map_err(PumpError::Io)?;
            written += n as u64;
            if blocked {
                return Ok((written, PumpStatus::Blocked));
            }
        }
        match relay.step(input.data()).map_err(PumpError::Framing)? {
            Step::Framing { consumed, emit } => {
                input.consume(consumed);
                if !emit.is_empty() && !out.append(pool, emit.as_bytes()) {
                    unreachable!("EMIT_ROOM is kept free in out");
                }
            }
            Step::Data(n) => {
                let head_len = out.len();
                let result = if head_len == 0 {
                    dst.write(&input.data()[..n])
                } else {
                    dst.write_vectored(&[
                        IoSlice::new(out.data()),
                        IoSlice::new(&input.data()[..n]),
                    ])
                };
                match result {
                    Ok(0) => return Err(PumpError::Io(io::ErrorKind::WriteZero.into())),
                    Ok(total) => {
                        written += total as u64;
                        let from_out = total.min(head_len);
                        out.consume(from_out);
                        let payload = total - from_out;
                        input.consume(payload);
                        relay.forwarded(payload);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok((written, PumpStatus::Blocked));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(PumpError::Io(e)),
                }
            }
            step @ (Step::NeedInput | Step::Done) => {
                let (n, blocked) = flush(dst, out).map_err(PumpError::Io)?;
                written += n as u64;
                if blocked {
                    return Ok((written, PumpStatus::Blocked));
                }
                let status = if step == Step::Done {
                    PumpStatus::Done
                } else {
                    PumpStatus::NeedInput
                };
                return Ok((written, status));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body::ChunkedDecoder;

    /// A writer that takes at most `per_call` bytes per call and blocks every other call.
    struct Trickle {
        taken: Vec<u8>,
        per_call: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(2) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.per_call);
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

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

    #[test]
    fn fill_reads_until_would_block_or_full() {
        let mut pool = BufferPool::new(8, 4);
        let mut buf = Buffer::new();
        let mut src = Chunks {
            chunks: vec![b"abc".to_vec(), b"de".to_vec()],
            eof: false,
        };
        let filled = fill(&mut src, &mut buf, &mut pool, true).unwrap();
        assert_eq!(
            filled,
            Filled {
                bytes: 5,
                would_block: true,
                eof: false
            }
        );
        let mut src = Chunks {
            chunks: vec![b"fghij".to_vec()],
            eof: true,
        };
        let filled = fill(&mut src, &mut buf, &mut pool, true).unwrap();
        assert_eq!(
            filled,
            Filled {
                bytes: 3,
                would_block: false,
                eof: false
            },
            "stops when full"
        );
        assert_eq!(buf.data(), b"abcdefgh");
        buf.consume(8);
        let filled = fill(&mut src, &mut buf, &mut pool, true).unwrap();
        assert_eq!(
            filled,
            Filled {
                bytes: 2,
                would_block: false,
                eof: true
            }
        );
        // Without a FIN hint, a short read is taken as an empty queue: no extra read call.
        let mut buf = Buffer::new();
        let mut src = Chunks {
            chunks: vec![b"abc".to_vec(), b"de".to_vec()],
            eof: false,
        };
        let filled = fill(&mut src, &mut buf, &mut pool, false).unwrap();
        assert_eq!(
            filled,
            Filled {
                bytes: 3,
                would_block: true,
                eof: false
            }
        );
    }

    /// Pumps a whole message through a trickling writer, feeding input in small pieces.
    fn pump_through(
        relay: &mut Relay,
        head: &[u8],
        body: &[u8],
        feed: usize,
        per_call: usize,
    ) -> Vec<u8> {
        let mut pool = BufferPool::new(64, 4);
        let mut input = Buffer::new();
        let mut out = Buffer::new();
        assert!(out.append(&mut pool, head));
        let mut dst = Trickle {
            taken: Vec::new(),
            per_call,
            calls: 0,
        };
        let mut fed = 0;
        for _ in 0..100_000 {
            if fed < body.len() {
                let space = input.space(&mut pool);
                let n = space.len().min(feed).min(body.len() - fed);
                space[..n].copy_from_slice(&body[fed..fed + n]);
                input.fill(n);
                fed += n;
            }
            match pump(relay, &mut input, &mut out, &mut dst, &mut pool).unwrap() {
                (_, PumpStatus::Done) => return dst.taken,
                (_, PumpStatus::NeedInput) if fed == body.len() && relay.ends_at_close() => {
                    return dst.taken;
                }
                _ => {}
            }
        }
        panic!("pump did not finish");
    }

    #[test]
    fn pump_relays_bodies_exactly() {
        let body: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
        let mut chunked_in = Vec::new();
        for piece in body.chunks(70) {
            chunked_in.extend_from_slice(format!("{:X};ext=1\r\n", piece.len()).as_bytes());
            chunked_in.extend_from_slice(piece);
            chunked_in.extend_from_slice(b"\r\n");
        }
        chunked_in.extend_from_slice(b"0\r\nTrailer: x\r\n\r\n");
        let mut chunked_out = Vec::new();
        for piece in body.chunks(70) {
            chunked_out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            chunked_out.extend_from_slice(piece);
            chunked_out.extend_from_slice(b"\r\n");
        }
        chunked_out.extend_from_slice(b"0\r\n\r\n");

        for (feed, per_call) in [(1, 1), (7, 3), (64, 64), (13, 100)] {
            let mut relay = Relay::Length {
                remaining: body.len() as u64,
            };
            let got = pump_through(&mut relay, b"HEAD\r\n", &body, feed, per_call);
            assert_eq!(
                got,
                [b"HEAD\r\n".as_slice(), &body].concat(),
                "length feed={feed} per_call={per_call}"
            );

            let mut relay = Relay::Chunked(ChunkedDecoder::new(true));
            let got = pump_through(&mut relay, b"H\r\n", &chunked_in, feed, per_call);
            assert_eq!(
                got,
                [b"H\r\n".as_slice(), &chunked_out].concat(),
                "chunked feed={feed} per_call={per_call}"
            );

            let mut relay = Relay::Chunked(ChunkedDecoder::new(false));
            let got = pump_through(&mut relay, b"", &chunked_in, feed, per_call);
            assert_eq!(got, body, "dechunked feed={feed} per_call={per_call}");

            let mut relay = Relay::UntilClose;
            let got = pump_through(&mut relay, b"", &body, feed, per_call);
            assert_eq!(got, body, "until close feed={feed} per_call={per_call}");
        }
    }

    #[test]
    fn pump_leaves_the_next_message_alone() {
        let mut pool = BufferPool::new(64, 4);
        let mut input = Buffer::new();
        let mut out = Buffer::new();
        input.append(&mut pool, b"helloGET / HTTP/1.1\r\n");
        let mut relay = Relay::Length { remaining: 5 };
        let mut dst = Vec::new();
        let (n, status) = pump(&mut relay, &mut input, &mut out, &mut dst, &mut pool).unwrap();
        assert_eq!((n, status), (5, PumpStatus::Done));
        assert_eq!(dst, b"hello");
        assert_eq!(input.data(), b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn pump_reports_framing_errors() {
        let mut pool = BufferPool::new(64, 4);
        let mut input = Buffer::new();
        let mut out = Buffer::new();
        input.append(&mut pool, b"zz\r\n");
        let mut relay = Relay::Chunked(ChunkedDecoder::new(true));
        let mut dst = Vec::new();
        let result = pump(&mut relay, &mut input, &mut out, &mut dst, &mut pool);
        assert!(matches!(
            result,
            Err(PumpError::Framing(FramingError::BadChunkSize))
        ));
    }
}
