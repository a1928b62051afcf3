//! Body relaying without buffering whole bodies: [`Relay`] looks at the bytes that have arrived and says,
//! step by step, which are payload to pass through unchanged (written straight from the read buffer) and
//! which are framing that it consumed (with the normalised framing to emit in their place). The chunked
//! decoder is strict: hex sizes with an overflow guard, CRLF only, bounded extensions and trailers;
//! extensions and trailer fields are dropped when forwarding.

use std::fmt;

/// Longest chunk-size line we accept, extensions included.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Most bytes of trailer fields we accept (and drop).
pub const MAX_TRAILERS: usize = 16 * 1024;

/// Bytes of framing to write in place of what was consumed. Small and inline: a chunk-size line at most.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Emit {
    bytes: [u8; 20],
    len: u8,
}

impl Emit {
    const NONE: Emit = Emit {
        bytes: [0; 20],
        len: 0,
    };

    fn from(s: &[u8]) -> Emit {
        let mut e = Emit::NONE;
        e.bytes[..s.len()].copy_from_slice(s);
        e.len = s.len() as u8;
        e
    }

    fn chunk_size(size: u64) -> Emit {
        let mut e = Emit::NONE;
        let digits = if size == 0 {
            1
        } else {
            (64 - size.leading_zeros()).div_ceil(4) as usize
        };
        for i in 0..digits {
            let nibble = (size >> (4 * (digits - 1 - i))) & 0xf;
            e.bytes[i] = b"0123456789abcdef"[nibble as usize];
        }
        e.bytes[digits] = b'\r';
        e.bytes[digits + 1] = b'\n';
        e.len = (digits + 2) as u8;
        e
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for Emit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Emit({:?})", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// The next thing to do with the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The first `n` input bytes are payload: forward them unchanged, then report with [`Relay::forwarded`].
    Data(usize),
    /// `consumed` framing bytes were used up; write `emit` to the output in their place.
    Framing { consumed: usize, emit: Emit },
    /// Nothing more can be done until more input arrives.
    NeedInput,
    /// The body is complete; bytes after it belong to the next message.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    BadChunkSize,
    ChunkSizeOverflow,
    ChunkLineTooLong,
    BadChunkLineEnding,
    BadChunkDataEnding,
    TrailersTooLarge,
    BadTrailer,
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FramingError::BadChunkSize => "invalid chunk size",
            FramingError::ChunkSizeOverflow => "chunk size overflows",
            FramingError::ChunkLineTooLong => "chunk extensions too long",
            FramingError::BadChunkLineEnding => "chunk size line not ended by CRLF",
            FramingError::BadChunkDataEnding => "chunk data not followed by CRLF",
            FramingError::TrailersTooLarge => "trailer section too large",
            FramingError::BadTrailer => "invalid trailer section",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading hex digits of a chunk size (`digits` so far).
    Size {
        size: u64,
        digits: u8,
    },
    /// Whitespace after the size: only `;` (extensions) may follow.
    SizeSpace {
        size: u64,
    },
    /// Inside chunk extensions, `len` bytes into the line.
    Extension {
        size: u64,
        len: u16,
    },
    /// CR seen at the end of the size line.
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line, or inside one (`line` bytes), `total` trailer bytes so far.
    Trailer {
        line: u16,
        total: u32,
    },
    TrailerLf {
        line: u16,
        total: u32,
    },
    Done,
}

/// A streaming chunked decoder. With `reencode`, it emits normalised chunk framing (for a chunked
/// output); without, it emits nothing (the payload alone is forwarded, for an HTTP/1.0 client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: Chunk,
    reencode: bool,
}

impl ChunkedDecoder {
    pub fn new(reencode: bool) -> ChunkedDecoder {
        ChunkedDecoder {
            state: Chunk::Size { size: 0, digits: 0 },
            reencode,
        }
    }

    fn emit(&self, bytes: &[u8]) -> Emit {
        if self.reencode {
            Emit::from(bytes)
        } else {
            Emit::NONE
        }
    }

    fn step(&mut self, input: &[u8]) -> Result<Step, FramingError> {
        if let Chunk::Data { remaining } = self.state {
            return Ok(match input.len() {
                0 => Step::NeedInput,
                n => Step::Data(n.min(usize::try_from(remaining).unwrap_or(usize::MAX))),
            });
        }
        if self.state == Chunk::Done {
            return Ok(Step::Done);
        }
        let mut consumed = 0;
        for &b in input {
            consumed += 1;
            let (next, emit) = self.advance(b)?;
            self.state = next;
            if !emit.is_empty() || matches!(next, Chunk::Data { .. } | Chunk::Done) {
                return Ok(Step::Framing { consumed, emit });
            }
        }
        Ok(if consumed == 0 {
            Step::NeedInput
        } else {
            Step::Framing {
                consumed,
                emit: Emit::NONE,
            }
        })
    }

    /// One framing byte: the next state and what to emit.
    fn advance(&self, b: u8) -> Result<(Chunk, Emit), FramingError> {
        let none = Emit::NONE;
        Ok(match self.state {
            Chunk::Size { size, digits } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    let nibble = (b as char).to_digit(16).unwrap_or(0) as u64;
                    if size > (u64::MAX >> 4) {
                        return Err(FramingError::ChunkSizeOverflow);
                    }
                    (
                        Chunk::Size {
                            size: (size << 4) | nibble,
                            digits: digits.saturating_add(1),
                        },
                        none,
                    )
                }
                _ if digits == 0 => return Err(FramingError::BadChunkSize),
                b'\r' => (Chunk::SizeLf { size }, none),
                b';' => (Chunk::Extension { size, len: 1 }, none),
                b' ' | b'\t' => (Chunk::SizeSpace { size }, none),
                _ => return Err(FramingError::BadChunkSize),
            },
            Chunk::SizeSpace { size } => match b {
                b' ' | b'\t' => (Chunk::SizeSpace { size }, none),
                b';' => (Chunk::Extension { size, len: 1 }, none),
                _ => return Err(FramingError::BadChunkSize),
            },
            Chunk::Extension { size, len } => match b {
                b'\r' => (Chunk::SizeLf { size }, none),
                _ if usize::from(len) >= MAX_CHUNK_LINE => {
                    return Err(FramingError::ChunkLineTooLong);
                }
                b'\t' | 0x20..=0x7e | 0x80..=0xff => {
                    (Chunk::Extension { size, len: len + 1 }, none)
                }
                _ => return Err(FramingError::BadChunkLineEnding),
            },
            Chunk::SizeLf { size } => match b {
                b'\n' if size == 0 => (Chunk::Trailer { line: 0, total: 0 }, self.emit(b"0\r\n")),
                b'\n' => (
                    Chunk::Data { remaining: size },
                    if self.reencode {
                        Emit::chunk_size(size)
                    } else {
                        none
                    },
                ),
                _ => return Err(FramingError::BadChunkLineEnding),
            },
            Chunk::DataCr => match b {
                b'\r' => (Chunk::DataLf, none),
                _ => return Err(FramingError::BadChunkDataEnding),
            },
            Chunk::DataLf => match b {
                b'\n' => (Chunk::Size { size: 0, digits: 0 }, self.emit(b"\r\n")),
                _ => return Err(FramingError::BadChunkDataEnding),
            },
            Chunk::Trailer { line, total } => {
                if total as usize >= MAX_TRAILERS {
                    return Err(FramingError::TrailersTooLarge);
                }
                match b {
                    b'\r' => (
                        Chunk::TrailerLf {
                            line,
                            total: total + 1,
                        },
                        none,
                    ),
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => (
                        Chunk::Trailer {
                            line: line.saturating_add(1),
                            total: total + 1,
                        },
                        none,
                    ),
                    _ => return Err(FramingError::BadTrailer),
                }
            }
            Chunk::TrailerLf { line, total } => match b {
                b'\n' if line == 0 => (Chunk::Done, self.emit(b"\r\n")),
                b'\n' => (
                    Chunk::Trailer {
                        line: 0,
                        total: total + 1,
                    },
                    none,
                ),
                _ => return Err(FramingError::BadTrailer),
            },
            Chunk::Data { .. } | Chunk::Done => unreachable!("handled in step"),
        })
    }

    fn forwarded(&mut self, n: usize) {
        if let Chunk::Data { remaining } = &mut self.state {
            // `n` comes from a `Step::Data` that never exceeds `remaining`.
            debug_assert!(n as u64 <= *remaining);
            *remaining = remaining.saturating_sub(n as u64);
            if *remaining == 0 {
                self.state = Chunk::DataCr;
            }
        }
    }
}

/// The body-relaying state of one message in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// No body, or the body is complete.
    Done,
    Length {
        remaining: u64,
    },
    Chunked(ChunkedDecoder),
    /// Everything until the peer closes (close-delimited responses, tunnels).
    UntilClose,
}

impl Relay {
    /// Decides the next step over the input bytes available.
    pub fn step(&mut self, input: &[u8]) -> Result<Step, FramingError> {
        Ok(match self {
            Relay::Done => Step::Done,
            Relay::Length { remaining: 0 } => {
                *self = Relay::Done;
                Step::Done
            }
            Relay::Length { remaining } => match input.len() {
                0 => Step::NeedInput,
                n => Step::Data(n.min(usize::try_from(*remaining).unwrap_or(usize::MAX))),
            },
            Relay::Chunked(decoder) => {
                let step = decoder.step(input)?;
                if step == Step::Done {
                    *self = Relay::Done;
                }
                step
            }
            Relay::UntilClose => match input.len() {
                0 => Step::NeedInput,
                n => Step::Data(n),
            },
        })
    }

    /// Records that `n` payload bytes announced by [`Step::Data`] were passed on.
    pub fn forwarded(&mut self, n: usize) {
        match self {
            Relay::Length { remaining } => {
                debug_assert!(n as u64 <= *remaining);
                *remaining = remaining.saturating_sub(n as u64);
                if *remaining == 0 {
                    *self = Relay::Done;
                }
            }
            Relay::Chunked(decoder) => decoder.forwarded(n),
            Relay::Done | Relay::UntilClose => {}
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(
            self,
            Relay::Done
                | Relay::Chunked(ChunkedDecoder {
                    state: Chunk::Done,
                    ..
                })
        )
    }

    /// True when the body can only end by the peer closing.
    pub fn ends_at_close(&self) -> bool {
        matches!(self, Relay::UntilClose)
    }
}

/// Runs a relay over a complete input in one call, collecting what would be written. For tests and tools;
/// the proxy drives [`Relay::step`] itself so that payload is never copied.
pub fn relay_all(
    relay: &mut Relay,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<usize, FramingError> {
    let mut pos = 0;
    loop {
        match relay.step(&input[pos..])? {
            Step::Data(n) => {
                out.extend_from_slice(&input[pos..pos + n]);
                relay.forwarded(n);
                pos += n;
            }
            Step::Framing { consumed, emit } => {
                out.extend_from_slice(emit.as_bytes());
                pos += consumed;
            }
            Step::NeedInput | Step::Done => return Ok(pos),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` whole, then one byte at a time, and checks both give the same output, end and position.
    fn decode_both_ways(
        input: &[u8],
        reencode: bool,
    ) -> Result<(Vec<u8>, bool, usize), FramingError> {
        let mut whole = Relay::Chunked(ChunkedDecoder::new(reencode));
        let mut out_whole = Vec::new();
        let used_whole = relay_all(&mut whole, input, &mut out_whole);

        let mut bytewise = Relay::Chunked(ChunkedDecoder::new(reencode));
        let mut out_bytes = Vec::new();
        let mut used_bytes = 0;
        let mut pending: Vec<u8> = Vec::new();
        let mut error = None;
        for &b in input {
            if bytewise.is_done() {
                break;
            }
            pending.push(b);
            match relay_all(&mut bytewise, &pending, &mut out_bytes) {
                Ok(n) => {
                    used_bytes += n;
                    pending.drain(..n);
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        match (used_whole, error) {
            (Err(a), Some(b)) => {
                assert_eq!(a, b, "same error both ways");
                Err(a)
            }
            (Ok(n), None) => {
                assert_eq!(
                    out_whole,
                    out_bytes,
                    "same output both ways for {:?}",
                    String::from_utf8_lossy(input)
                );
                assert_eq!(whole.is_done(), bytewise.is_done());
                assert_eq!(n, used_bytes, "same bytes used both ways");
                Ok((out_whole, whole.is_done(), n))
            }
            (a, b) => panic!(
                "whole gave {a:?}, bytewise gave {b:?} for {:?}",
                String::from_utf8_lossy(input)
            ),
        }
    }

    #[test]
    fn chunked_cases() {
        // (input, re-encoded output, payload only, complete, bytes used)
        type Case<'a> = (&'a [u8], &'a [u8], &'a [u8], bool, usize);
        let cases: &[Case] = &[
            (
                b"5\r\nhello\r\n0\r\n\r\n",
                b"5\r\nhello\r\n0\r\n\r\n",
                b"hello",
                true,
                15,
            ),
            (
                b"5\r\nhello\r\n0\r\n\r\nGET /",
                b"5\r\nhello\r\n0\r\n\r\n",
                b"hello",
                true,
                15,
            ),
            (b"0\r\n\r\n", b"0\r\n\r\n", b"", true, 5),
            (
                b"000A\r\n0123456789\r\n0\r\n\r\n",
                b"a\r\n0123456789\r\n0\r\n\r\n",
                b"0123456789",
                true,
                23,
            ),
            (
                b"3;name=val;x\r\nabc\r\n0;last\r\n\r\n",
                b"3\r\nabc\r\n0\r\n\r\n",
                b"abc",
                true,
                29,
            ),
            (
                b"3 ;x\r\nabc\r\n0\r\n\r\n",
                b"3\r\nabc\r\n0\r\n\r\n",
                b"abc",
                true,
                16,
            ),
            (
                b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n",
                b"3\r\nabc\r\n0\r\n\r\n",
                b"abc",
                true,
                33,
            ),
            (
                b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n",
                b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n",
                b"abcd",
                true,
                19,
            ),
            (
                b"10\r\n0123456789abcdef\r\n0\r\n\r\n",
                b"10\r\n0123456789abcdef\r\n0\r\n\r\n",
                b"0123456789abcdef",
                true,
                27,
            ),
            (b"5\r\nhel", b"5\r\nhel", b"hel", false, 6),
            (b"5\r\nhello\r\n", b"5\r\nhello\r\n", b"hello", false, 10),
            (
                b"5\r\nhello\r\n0\r\n",
                b"5\r\nhello\r\n0\r\n",
                b"hello",
                false,
                13,
            ),
        ];
        for (input, reencoded, payload, complete, used) in cases {
            let (out, done, n) = decode_both_ways(input, true).unwrap();
            assert_eq!(
                out,
                *reencoded,
                "re-encoded {:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(
                (done, n),
                (*complete, *used),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            let (out, _, _) = decode_both_ways(input, false).unwrap();
            assert_eq!(
                out,
                *payload,
                "payload {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn chunked_errors() {
        let long_ext = format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(MAX_CHUNK_LINE + 1));
        let long_trailer = format!("0\r\nX: {}\r\n\r\n", "y".repeat(MAX_TRAILERS));
        let cases: Vec<(&[u8], FramingError)> = vec![
            (b"\r\n", FramingError::BadChunkSize),
            (b"x\r\n", FramingError::BadChunkSize),
            (b"-1\r\n", FramingError::BadChunkSize),
            (b"+1\r\n", FramingError::BadChunkSize),
            (b"0x5\r\nhello\r\n", FramingError::BadChunkSize),
            (b" 5\r\nhello\r\n", FramingError::BadChunkSize),
            (b"5 \r\nhello\r\n", FramingError::BadChunkSize),
            (b"5\nhello\r\n", FramingError::BadChunkSize),
            (b"5\r\r\nhello", FramingError::BadChunkLineEnding),
            (b"5;a\nb\r\n", FramingError::BadChunkLineEnding),
            (b"5;a\0\r\n", FramingError::BadChunkLineEnding),
            (b"10000000000000000\r\n", FramingError::ChunkSizeOverflow),
            (b"fffffffffffffffff\r\n", FramingError::ChunkSizeOverflow),
            (b"5\r\nhelloX\r\n", FramingError::BadChunkDataEnding),
            (b"5\r\nhello\n0\r\n\r\n", FramingError::BadChunkDataEnding),
            (b"5\r\nhello\rX", FramingError::BadChunkDataEnding),
            (b"0\r\nX: 1\n\r\n", FramingError::BadTrailer),
            (b"0\r\nX: \x001\r\n\r\n", FramingError::BadTrailer),
            (b"0\r\n\n", FramingError::BadTrailer),
            (long_ext.as_bytes(), FramingError::ChunkLineTooLong),
            (long_trailer.as_bytes(), FramingError::TrailersTooLarge),
        ];
        for (input, expected) in cases {
            assert_eq!(
                decode_both_ways(input, true).err(),
                Some(expected),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn largest_chunk_size_is_accepted() {
        let mut relay = Relay::Chunked(ChunkedDecoder::new(true));
        let step = relay.step(b"ffffffffffffffff\r\nabc").unwrap();
        assert_eq!(
            step,
            Step::Framing {
                consumed: 18,
                emit: Emit::from(b"ffffffffffffffff\r\n")
            }
        );
        assert_eq!(relay.step(b"abc").unwrap(), Step::Data(3));
    }

    #[test]
    fn length_and_until_close() {
        let mut relay = Relay::Length { remaining: 5 };
        assert_eq!(relay.step(b"").unwrap(), Step::NeedInput);
        assert_eq!(relay.step(b"hel").unwrap(), Step::Data(3));
        relay.forwarded(3);
        assert_eq!(relay.step(b"loGET").unwrap(), Step::Data(2));
        relay.forwarded(2);
        assert!(relay.is_done());
        assert_eq!(relay.step(b"GET").unwrap(), Step::Done);

        let mut relay = Relay::UntilClose;
        assert_eq!(relay.step(b"abc").unwrap(), Step::Data(3));
        relay.forwarded(3);
        assert!(!relay.is_done());
        assert!(relay.ends_at_close());
    }

    #[test]
    fn chunk_size_emits() {
        for (size, text) in [
            (1u64, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (4096, "1000\r\n"),
            (u64::MAX, "ffffffffffffffff\r\n"),
        ] {
            assert_eq!(Emit::chunk_size(size).as_bytes(), text.as_bytes());
        }
    }
}
