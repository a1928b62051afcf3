//! Writing a head for the next hop into a fixed slice: pieces, decimal numbers, and the fields of the
//! head being rewritten, copied as they are in runs when they are already in their written form.

use super::HeaderSpan;

/// Writes a head into a fixed slice, remembering whether it overflowed instead of failing at each call.
///
/// Field lines forwarded from the head being rewritten ([`HeadWriter::field`]) are copied in runs:
/// a line already written as `name: value` CRLF is the same bytes in and out, so consecutive such
/// lines leave in one copy instead of four pieces each. A run is written out before anything else is.
pub struct HeadWriter<'a> {
    out: &'a mut [u8],
    len: usize,
    overflow: bool,
    /// The head the fields come from, and the run of its bytes not written yet.
    source: &'a [u8],
    run_start: usize,
    run_end: usize,
}

/// Each octet's decimal digits and a dot (`"7."`, `"42."`, `"255."`), padded to four bytes, and how
/// many of the four they are.
static DOTTED_OCTETS: [([u8; 4], u8); 256] = {
    let mut table = [([0u8; 4], 0u8); 256];
    let mut octet = 0;
    while octet < 256 {
        let (text, len) = &mut table[octet];
        let mut at = 0;
        if octet >= 100 {
            text[at] = b'0' + (octet / 100) as u8;
            at += 1;
        }
        if octet >= 10 {
            text[at] = b'0' + (octet / 10 % 10) as u8;
            at += 1;
        }
        text[at] = b'0' + (octet % 10) as u8;
        text[at + 1] = b'.';
        *len = at as u8 + 2;
        octet += 1;
    }
    table
};

impl<'a> HeadWriter<'a> {
    pub fn new(out: &'a mut [u8]) -> HeadWriter<'a> {
        HeadWriter::with_source(out, &[])
    }

    /// A writer whose [`HeadWriter::field`]s are positions in `source`.
    pub fn with_source(out: &'a mut [u8], source: &'a [u8]) -> HeadWriter<'a> {
        HeadWriter {
            out,
            len: 0,
            overflow: false,
            source,
            run_start: 0,
            run_end: 0,
        }
    }

    // Inlined so that the many constant pieces are a store or two each.
    #[inline(always)]
    pub fn put(&mut self, bytes: &[u8]) {
        if self.run_end != self.run_start {
            self.flush_run();
        }
        self.put_now(bytes);
    }

    #[inline(always)]
    fn put_now(&mut self, bytes: &[u8]) {
        let n = bytes.len();
        if self.overflow || self.out.len() - self.len < n {
            self.overflow = true;
            return;
        }
        let out = &mut self.out[self.len..self.len + n];
        // Most pieces are a few bytes: two overlapping copies instead of a call to memcpy.
        match n {
            17..=32 => {
                out[..16].copy_from_slice(&bytes[..16]);
                out[n - 16..].copy_from_slice(&bytes[n - 16..]);
            }
            8..=16 => {
                out[..8].copy_from_slice(&bytes[..8]);
                out[n - 8..].copy_from_slice(&bytes[n - 8..]);
            }
            4..=7 => {
                out[..4].copy_from_slice(&bytes[..4]);
                out[n - 4..].copy_from_slice(&bytes[n - 4..]);
            }
            1..=3 => {
                out[0] = bytes[0];
                out[n / 2] = bytes[n / 2];
                out[n - 1] = bytes[n - 1];
            }
            _ => out.copy_from_slice(bytes),
        }
        self.len += n;
    }

    #[inline(never)]
    fn flush_run(&mut self) {
        let source = self.source;
        let run = source.get(self.run_start..self.run_end).unwrap_or_default();
        self.run_start = self.run_end;
        self.put_now(run);
    }

    pub fn put_u64(&mut self, n: u64) {
        // Numbers in heads are mostly short (statuses, address octets, small lengths): those are
        // written as the one, two or three bytes they are.
        let digit = |d: u64| b'0' + (d % 10) as u8;
        match n {
            0..=9 => self.put(&[digit(n)]),
            10..=99 => self.put(&[digit(n / 10), digit(n)]),
            100..=999 => self.put(&[digit(n / 100), digit(n / 10), digit(n)]),
            _ => {
                let mut digits = [0u8; 20];
                let mut i = digits.len();
                let mut n = n;
                loop {
                    i -= 1;
                    digits[i] = digit(n);
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
                self.put(&digits[i..]);
            }
        }
    }

    /// `n` in decimal and then `suffix`, in one piece when `n` is below 1000: a status and its space,
    /// a Content-Length and its CRLF are one inlined put instead of a call for the number and a
    /// second put.
    #[inline(always)]
    pub fn put_u64_then<const S: usize>(&mut self, n: u64, suffix: &[u8; S]) {
        const { assert!(S <= 5, "a short suffix: the piece stays within a word") };
        let digit = |d: u64| b'0' + (d % 10) as u8;
        let mut text = [0u8; 8];
        let len = match n {
            0..=9 => {
                text[0] = digit(n);
                1
            }
            10..=99 => {
                text[..2].copy_from_slice(&[digit(n / 10), digit(n)]);
                2
            }
            100..=999 => {
                text[..3].copy_from_slice(&[digit(n / 100), digit(n / 10), digit(n)]);
                3
            }
            _ => {
                self.put_u64(n);
                self.put(suffix);
                return;
            }
        };
        text[len..len + S].copy_from_slice(suffix);
        self.put(&text[..len + S]);
    }

    /// An IPv4 address in dotted decimal, as `Ipv4Addr`'s `Display` writes it, and then `suffix`:
    /// built on the stack and put in one piece (seven pieces one by one were most of a proxied
    /// request's X-Forwarded-For), each octet a four-byte copy from a table rather than digits
    /// worked out one by one.
    pub fn put_ipv4_then<const S: usize>(&mut self, ip: std::net::Ipv4Addr, suffix: &[u8; S]) {
        const { assert!(S <= 9, "the address and its suffix fit the 24-byte piece") };
        let mut text = [0u8; 24];
        let mut len = 0;
        for octet in ip.octets() {
            let (dotted, dotted_len) = DOTTED_OCTETS[usize::from(octet)];
            text[len..len + 4].copy_from_slice(&dotted);
            len += usize::from(dotted_len);
        }
        // The last octet's dot.
        len -= 1;
        text[len..len + S].copy_from_slice(suffix);
        self.put(&text[..len + S]);
    }

    pub fn header(&mut self, name: &[u8], value: &[u8]) {
        self.put(name);
        self.put(b": ");
        self.put(value);
        self.put(b"\r\n");
    }

    /// Forwards a field of the source head: its line as it is when that is already `name: value`
    /// CRLF (one space, no trailing whitespace), else rewritten so.
    pub fn field(&mut self, field: HeaderSpan) {
        let source = self.source;
        if !field.line_as_written(source) {
            self.header(field.name.get(source), field.value.get(source));
            return;
        }
        self.source_bytes(field.name.start as usize, field.value.end as usize + 2);
    }

    /// Forwards `source[start..end]` as it is (a line already in its written form): it joins the run
    /// being copied when it follows it, else starts the next one.
    pub fn source_bytes(&mut self, start: usize, end: usize) {
        if start != self.run_end {
            if self.run_end != self.run_start {
                self.flush_run();
            }
            self.run_start = start;
        }
        self.run_end = end;
    }

    /// Something did not fit: nothing more will be written.
    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    /// Nothing has been written and the run waiting to be copied is the source's first `end` bytes:
    /// the head written would be exactly those bytes as they are.
    pub fn copies_source_prefix(&self, end: usize) -> bool {
        !self.overflow && self.len == 0 && self.run_start == 0 && self.run_end == end
    }

    /// Bytes written, or `None` if the head did not fit.
    pub fn finish(mut self) -> Option<usize> {
        if self.run_end != self.run_start {
            self.flush_run();
        }
        (!self.overflow).then_some(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::HeaderSpans;

    #[test]
    fn fields_copied_in_runs_are_the_fields_rewritten() {
        let heads: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\nX:  spaced  value \t\r\nEmpty:\r\nE2: \r\nA: b\r\nC: d\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\nX-Obs: \xc3\x87a\n\n",
            b"\r\nGET / HTTP/1.1\r\nA:b:c\r\nB: x\ty\r\nC: d\nD: e\r\nE:\tf\r\n\r\nbody",
            b"GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\nAccept: */*\r\n\r\n",
        ];
        for raw in heads {
            let (spans, _) = crate::http::parsed_request(raw);
            // Every subset of the fields (some skipped, as a rewrite does), with pieces in between.
            for mask in 0..(1u32 << spans.len()) {
                let (mut copied, mut rewritten) = ([0u8; 512], [0u8; 512]);
                let mut a = HeadWriter::with_source(&mut copied, raw);
                let mut b = HeadWriter::new(&mut rewritten);
                for (i, h) in spans.iter(raw).enumerate() {
                    if mask & (1 << i) != 0 {
                        a.field(h);
                        b.header(h.name.get(raw), h.value.get(raw));
                    } else if i % 3 == 0 {
                        a.put_u64(i as u64);
                        b.put_u64(i as u64);
                    }
                }
                a.put(b"\r\n");
                b.put(b"\r\n");
                let (a, b) = (a.finish().unwrap(), b.finish().unwrap());
                assert_eq!(copied[..a], rewritten[..b], "{mask:b} {raw:?}");
            }
        }
        // A run that does not fit is an overflow like any other piece.
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n";
        let mut slots = [httparse::EMPTY_HEADER; 4];
        let mut request = httparse::Request::new(&mut slots);
        let Ok(httparse::Status::Complete(head_len)) = request.parse(raw) else {
            panic!();
        };
        let spans = HeaderSpans::from_parsed(raw, request.headers, head_len).unwrap();
        let mut out = [0u8; 20];
        let mut w = HeadWriter::with_source(&mut out, raw);
        spans.iter(raw).for_each(|h| w.field(h));
        assert_eq!(w.finish(), None);
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 7, 9, 10, 42, 99, 100, 255, 999, 1000, 65535, u64::MAX] {
            let mut out = [0u8; 32];
            let mut w = HeadWriter::new(&mut out);
            w.put_u64(n);
            let len = w.finish().unwrap();
            assert_eq!(&out[..len], n.to_string().as_bytes());
        }
    }

    /// Pieces of every length up to past the longest copied without memcpy, after pieces that leave
    /// the output at every alignment: the bytes written are the bytes put, and a piece that does
    /// not fit is an overflow.
    #[test]
    fn pieces_are_written_as_they_are() {
        let source: Vec<u8> = (0..64u8).map(|i| b'a' + i % 26).collect();
        for before in 0..8 {
            for n in 0..=40 {
                let mut out = [0u8; 64];
                let mut w = HeadWriter::new(&mut out);
                w.put(&source[..before]);
                w.put(&source[..n]);
                let written = w.finish().unwrap();
                assert_eq!(&out[..written], [&source[..before], &source[..n]].concat());
                let mut small = [0u8; 20];
                let mut w = HeadWriter::new(&mut small);
                w.put(&source[..n]);
                assert_eq!(w.finish(), (n <= 20).then_some(n));
            }
        }
    }

    /// Every octet value in every position, against `Display`.
    #[test]
    fn an_ipv4_address_is_written_as_display_writes_it() {
        for position in 0..4 {
            for value in 0..=255u8 {
                let mut octets = [1, 20, 255, 0];
                octets[position] = value;
                let ip = std::net::Ipv4Addr::from(octets);
                let mut out = [0u8; 32];
                let mut w = HeadWriter::new(&mut out);
                w.put_ipv4_then(ip, b"\r\n");
                let n = w.finish().unwrap();
                assert_eq!(&out[..n], format!("{ip}\r\n").as_bytes());
            }
        }
        // Too little room: an overflow, as for any piece.
        let mut out = [0u8; 16];
        let mut w = HeadWriter::new(&mut out);
        w.put_ipv4_then(std::net::Ipv4Addr::new(255, 255, 255, 255), b"\r\n");
        assert_eq!(w.finish(), None);
    }

    #[test]
    fn a_number_and_its_suffix_are_the_number_then_the_suffix() {
        let numbers = (0..=1000).chain([9999, 10000, 65535, u64::MAX]);
        for n in numbers {
            let (mut one, mut two) = ([0u8; 64], [0u8; 64]);
            let mut a = HeadWriter::new(&mut one);
            a.put_u64_then(n, b"\r\n");
            a.put_u64_then(n, b" ");
            let mut b = HeadWriter::new(&mut two);
            b.put_u64(n);
            b.put(b"\r\n");
            b.put_u64(n);
            b.put(b" ");
            let (a, b) = (a.finish().unwrap(), b.finish().unwrap());
            assert_eq!(one[..a], two[..b], "{n}");
        }
        // Too little room: an overflow, as for any piece.
        let mut out = [0u8; 4];
        let mut w = HeadWriter::new(&mut out);
        w.put_u64_then(200, b"\r\n");
        assert_eq!(w.finish(), None);
    }

    #[test]
    fn head_writer_reports_overflow() {
        let mut out = [0u8; 16];
        let mut w = HeadWriter::new(&mut out);
        w.header(b"A", b"1");
        w.put_u64(1234567890);
        assert_eq!(w.finish(), Some(16));
        let mut out = [0u8; 8];
        let mut w = HeadWriter::new(&mut out);
        w.put(b"0123456789");
        w.put(b"x");
        assert_eq!(w.finish(), None);
    }
}
