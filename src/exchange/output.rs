//! One direction of an exchange as bytes to write, without writing them: an [`Outbox`] is a message body
//! on its way from an input buffer to a peer. Stepping its relay consumes framing from the input and
//! queues normalised framing (and heads) in a small output buffer, until payload is next; the driver
//! then writes the queued bytes and the payload straight from the input buffer, in one write, and
//! reports how much went (`io::send` joins the two parts when they are small, since a `writev` costs
//! the kernel more than that copy). A large payload is never copied, and neither is a head that goes
//! as it was received: a response head stays at the front of the backend's input and leaves ahead of
//! its payload; a bodiless request head leaves from the client's input ([`ReceivedHead`]).

use crate::buffer::{self, Buffer};
use crate::http::body::{FramingError, Relay, Step};
use std::io::IoSlice;

/// Room kept in the output buffer for one framing emit (a chunk-size line at most).
const EMIT_ROOM: usize = 32;

/// Bytes ready for one peer, in two parts written in this order by one write. For a body: queued
/// heads and framing, then payload from the input. For a request head that goes as received
/// ([`ReceivedHead`]): all of it in `first`, from the client's input.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub first: &'a [u8],
    pub second: &'a [u8],
}

impl<'a> Outgoing<'a> {
    pub const EMPTY: Outgoing<'static> = Outgoing {
        first: &[],
        second: &[],
    };

    pub fn is_empty(&self) -> bool {
        self.first.is_empty() && self.second.is_empty()
    }

    pub fn len(&self) -> usize {
        self.first.len() + self.second.len()
    }

    /// Both parts as slices for a vectored write (an empty part is left out).
    pub fn slices(&self) -> ([IoSlice<'a>; 2], usize) {
        match (self.first.is_empty(), self.second.is_empty()) {
            (false, false) => ([IoSlice::new(self.first), IoSlice::new(self.second)], 2),
            (false, true) => ([IoSlice::new(self.first), IoSlice::new(&[])], 1),
            _ => ([IoSlice::new(self.second), IoSlice::new(&[])], 1),
        }
    }
}

/// Where a body stands after [`Outbox::prepare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Bytes are ready to write.
    Ready,
    /// Everything available is queued or written; the body needs more input.
    NeedInput,
    /// The body has been read completely (queued bytes may still wait to be written).
    Complete,
}

/// A message body in transit from `input` (owned by the caller) through `relay`, with `queued` bytes
/// (heads, framing) to go first.
#[derive(Debug, Clone, Copy)]
pub struct Outbox {
    pub relay: Relay,
    /// Bytes of a head at the front of the input that go to the peer as they are, ahead of the body
    /// (a head that needed no rewriting is relayed from where it was read, not copied).
    head: usize,
    /// Payload bytes after the head that the relay has cleared for writing.
    ready: usize,
}

impl Outbox {
    pub fn new(relay: Relay) -> Outbox {
        Outbox {
            relay,
            head: 0,
            ready: 0,
        }
    }

    /// A body whose head is the first `head` bytes of the input, relayed as they are before it.
    pub fn after_head(relay: Relay, head: usize) -> Outbox {
        Outbox {
            relay,
            head,
            ready: 0,
        }
    }

    /// Steps the relay until payload is ready, the input runs out, or the body is complete.
    // Asked whenever an event reaches `settle` (three times per bodiless request, for its absent
    // body): the answer for a finished body is inlined, the stepping is not.
    #[inline]
    pub fn prepare(
        &mut self,
        input: &mut Buffer,
        queued: &mut Buffer,
    ) -> Result<Flow, FramingError> {
        if self.stepped_out() {
            return Ok(Flow::Complete);
        }
        self.step(input, queued)
    }

    /// The body is over and its last payload taken: [`Outbox::prepare`] has nothing left to step.
    pub fn stepped_out(&self) -> bool {
        self.ready == 0 && self.head == 0 && matches!(self.relay, Relay::Done)
    }

    #[inline(never)]
    fn step(&mut self, input: &mut Buffer, queued: &mut Buffer) -> Result<Flow, FramingError> {
        loop {
            if self.ready > 0 {
                return Ok(Flow::Ready);
            }
            if queued.len() + EMIT_ROOM > buffer::capacity() {
                // Framing piled up faster than it was written: write it before stepping further.
                return Ok(Flow::Ready);
            }
            if self.head > 0 && matches!(self.relay, Relay::Chunked(_)) {
                // A chunked body's framing is consumed from the front of the input, where the head
                // still is: it is stepped once the head has gone.
                return Ok(Flow::Ready);
            }
            let body = input.data().get(self.head..).unwrap_or_default();
            match self.relay.step(body)? {
                Step::Framing { consumed, emit } => {
                    input.consume(consumed);
                    if !emit.is_empty() && !queued.append(emit.as_bytes()) {
                        unreachable!("EMIT_ROOM is kept free in the queue");
                    }
                }
                Step::Data(n) => self.ready = n,
                Step::NeedInput => return Ok(Flow::NeedInput),
                Step::Done => return Ok(Flow::Complete),
            }
        }
    }

    /// What can be written now.
    pub fn outgoing<'a>(&self, input: &'a Buffer, queued: &'a Buffer) -> Outgoing<'a> {
        Outgoing {
            first: queued.data(),
            second: &input.data()[..self.head + self.ready],
        }
    }

    /// Records that the first `written` bytes of [`Outbox::outgoing`] were written.
    pub fn sent(&mut self, written: usize, input: &mut Buffer, queued: &mut Buffer) {
        let from_queue = written.min(queued.len());
        queued.consume(from_queue);
        let from_head = (written - from_queue).min(self.head);
        self.head -= from_head;
        let payload = (written - from_queue - from_head).min(self.ready);
        input.consume(from_head + payload);
        self.relay.forwarded(payload);
        self.ready -= payload;
    }

    /// The body is complete and nothing of it (or of its head) waits to be written.
    pub fn finished(&self, queued: &Buffer) -> bool {
        self.relay.is_done() && self.ready == 0 && self.head == 0 && queued.is_empty()
    }
}

/// A request head sent from where it was received: the first `len` bytes of the client's input,
/// which are the client's head up to its last field with lb's added fields written after it, in
/// place of its blank line. They stay there until the response starts (for a retry), and leave in
/// one `send`: the client's bytes are never copied, and no output block is taken for them.
/// `len == 0`: the head was written anew into the output buffer.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceivedHead {
    len: u32,
    sent: u32,
}

impl ReceivedHead {
    pub const NONE: ReceivedHead = ReceivedHead { len: 0, sent: 0 };

    pub fn new(len: usize) -> Option<ReceivedHead> {
        Some(ReceivedHead {
            len: u32::try_from(len).ok()?,
            sent: 0,
        })
    }

    /// Bytes of the head at the front of the client's input (0 when it is not sent from there).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// The head goes this way (rather than from the output buffer).
    pub fn is_used(&self) -> bool {
        self.len > 0
    }

    /// Part of it is still to be written.
    pub fn pending(&self) -> bool {
        self.sent < self.len
    }

    /// What is left to write, given the client's input (whose front is the head).
    pub fn outgoing<'a>(&self, input: &'a [u8]) -> Outgoing<'a> {
        debug_assert!(
            input.len() >= self.len as usize,
            "a received head left the input before it was sent"
        );
        Outgoing {
            first: input
                .get(self.sent as usize..self.len as usize)
                .unwrap_or_default(),
            second: &[],
        }
    }

    /// Records that the first `written` bytes of [`ReceivedHead::outgoing`] were written.
    pub fn sent(&mut self, written: usize) {
        self.sent = self.len.min(self.sent.saturating_add(written as u32));
    }

    /// Written again from the start, for another attempt.
    pub fn restart(&mut self) {
        self.sent = 0;
    }

    /// The client's bytes are about to leave the input while part of the head is unwritten (a
    /// backend answered before reading the whole request): what is left moves to `queued`, to be
    /// written from there. False when it does not fit.
    #[cold]
    pub fn move_rest(&mut self, input: &[u8], queued: &mut Buffer) -> bool {
        let moved = queued.append(self.outgoing(input).first);
        *self = ReceivedHead::NONE;
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body::ChunkedDecoder;

    /// Runs a body through an outbox, feeding `feed` input bytes at a time and "writing" at most
    /// `per_write` bytes at a time; returns everything written.
    fn run(relay: Relay, head: &[u8], body: &[u8], feed: usize, per_write: usize) -> Vec<u8> {
        buffer::set_block_sizes(64, 64);
        let mut outbox = Outbox::new(relay);
        let mut input = Buffer::new();
        let mut queued = Buffer::new();
        assert!(queued.append(head));
        let mut written = Vec::new();
        let mut fed = 0;
        for _ in 0..100_000 {
            if fed < body.len() {
                let space = input.space();
                let n = space.len().min(feed).min(body.len() - fed);
                space[..n].copy_from_slice(&body[fed..fed + n]);
                input.fill(n);
                fed += n;
            }
            let flow = outbox.prepare(&mut input, &mut queued).unwrap();
            let out = outbox.outgoing(&input, &queued);
            let n = out.len().min(per_write);
            let bytes = [out.first, out.second].concat();
            written.extend_from_slice(&bytes[..n]);
            outbox.sent(n, &mut input, &mut queued);
            let until_close = outbox.relay.ends_at_close() && fed == body.len() && input.is_empty();
            if outbox.finished(&queued) || (until_close && queued.is_empty()) {
                return written;
            }
            assert!(flow != Flow::Complete || !queued.is_empty() || outbox.ready > 0);
        }
        panic!("the body did not finish");
    }

    #[test]
    fn bodies_are_relayed_exactly() {
        let body: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
        let mut chunked_in = Vec::new();
        let mut chunked_out = Vec::new();
        for piece in body.chunks(70) {
            chunked_in.extend_from_slice(format!("{:X};ext=1\r\n", piece.len()).as_bytes());
            chunked_in.extend_from_slice(piece);
            chunked_in.extend_from_slice(b"\r\n");
            chunked_out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            chunked_out.extend_from_slice(piece);
            chunked_out.extend_from_slice(b"\r\n");
        }
        chunked_in.extend_from_slice(b"0\r\nTrailer: x\r\n\r\n");
        chunked_out.extend_from_slice(b"0\r\n\r\n");
        for (feed, per_write) in [(1, 1), (7, 3), (64, 64), (13, 100)] {
            let length = Relay::Length {
                remaining: body.len() as u64,
            };
            let got = run(length, b"HEAD\r\n", &body, feed, per_write);
            assert_eq!(
                got,
                [b"HEAD\r\n".as_slice(), &body].concat(),
                "{feed}/{per_write}"
            );
            let chunked = Relay::Chunked(ChunkedDecoder::new(true));
            let got = run(chunked, b"H\r\n", &chunked_in, feed, per_write);
            assert_eq!(
                got,
                [b"H\r\n".as_slice(), &chunked_out].concat(),
                "{feed}/{per_write}"
            );
            let dechunked = Relay::Chunked(ChunkedDecoder::new(false));
            assert_eq!(run(dechunked, b"", &chunked_in, feed, per_write), body);
            assert_eq!(run(Relay::UntilClose, b"", &body, feed, per_write), body);
        }
    }

    /// A head left at the front of the input goes first, as it is, and is never taken for body:
    /// whole or a byte at a time, with the body's framing stepped only once the head has gone, and
    /// the next message left in the input.
    #[test]
    fn a_head_left_in_the_input_goes_first_as_it_is() {
        buffer::set_block_sizes(64, 64);
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        let chunked = b"5\r\nhello\r\n0\r\n\r\n";
        let bodies: [(Relay, &[u8], &[u8]); 3] = [
            (Relay::Length { remaining: 5 }, b"hello", b"hello"),
            (Relay::Chunked(ChunkedDecoder::new(true)), chunked, chunked),
            (Relay::Done, b"", b""),
        ];
        for per_write in [1, 3, 100] {
            for (relay, body, relayed) in bodies {
                let mut input = Buffer::new();
                assert!(input.append(&[head.as_slice(), body, b"NEXT"].concat()));
                let mut queued = Buffer::new();
                let mut outbox = Outbox::after_head(relay, head.len());
                assert!(!outbox.stepped_out());
                let mut written = Vec::new();
                for _ in 0..1000 {
                    outbox.prepare(&mut input, &mut queued).unwrap();
                    let out = outbox.outgoing(&input, &queued);
                    let n = out.len().min(per_write);
                    if n == 0 {
                        break;
                    }
                    written.extend_from_slice(&[out.first, out.second].concat()[..n]);
                    outbox.sent(n, &mut input, &mut queued);
                }
                assert_eq!(written, [head.as_slice(), relayed].concat(), "{per_write}");
                assert!(outbox.finished(&queued), "{per_write}");
                assert_eq!(input.data(), b"NEXT", "{per_write}");
            }
        }
    }

    /// A head sent from the input goes in whatever pieces the writes take, again from its first byte
    /// for a retry, and what is left of it moves to the queue when the input must let it go.
    #[test]
    fn a_received_head_goes_from_the_input_as_often_as_asked() {
        buffer::set_block_sizes(64, 64);
        let input = b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\nNEXT";
        let len = input.len() - 4;
        for per_write in [1, 3, 100] {
            let mut head = ReceivedHead::new(len).unwrap();
            assert!(head.is_used() && head.pending());
            for _ in 0..2 {
                let mut written = Vec::new();
                while head.pending() {
                    let out = head.outgoing(input);
                    assert!(out.second.is_empty());
                    let n = out.first.len().min(per_write);
                    written.extend_from_slice(&out.first[..n]);
                    head.sent(n);
                }
                assert_eq!(written, input[..len], "{per_write}");
                assert!(head.outgoing(input).is_empty());
                head.restart();
            }
            head.sent(per_write.min(len));
            let mut queued = Buffer::new();
            assert!(head.move_rest(input, &mut queued));
            assert_eq!(queued.data(), &input[per_write.min(len)..len]);
            assert!(!head.is_used() && !head.pending());
        }
        assert!(!ReceivedHead::NONE.pending());
        assert!(ReceivedHead::NONE.outgoing(input).is_empty());
    }

    #[test]
    fn the_next_message_is_left_alone_and_errors_surface() {
        buffer::set_block_sizes(64, 64);
        let mut input = Buffer::new();
        let mut queued = Buffer::new();
        input.append(b"helloGET / HTTP/1.1\r\n");
        let mut outbox = Outbox::new(Relay::Length { remaining: 5 });
        assert_eq!(outbox.prepare(&mut input, &mut queued), Ok(Flow::Ready));
        assert_eq!(outbox.outgoing(&input, &queued).second, b"hello");
        outbox.sent(5, &mut input, &mut queued);
        assert!(outbox.finished(&queued));
        assert_eq!(outbox.prepare(&mut input, &mut queued), Ok(Flow::Complete));
        assert_eq!(input.data(), b"GET / HTTP/1.1\r\n");

        let mut input = Buffer::new();
        input.append(b"zz\r\n");
        let mut outbox = Outbox::new(Relay::Chunked(ChunkedDecoder::new(true)));
        assert_eq!(
            outbox.prepare(&mut input, &mut queued),
            Err(FramingError::BadChunkSize)
        );
        let slices = Outgoing {
            first: b"ab",
            second: b"",
        }
        .slices();
        assert_eq!((slices.0[0].len(), slices.1), (2, 1));
    }
}
