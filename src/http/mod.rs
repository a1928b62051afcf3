//! HTTP/1.1 as an intermediary sees it, with no sockets: request and response heads are parsed with
//! `httparse`, validated against RFC 9112/9110 (anything ambiguous is rejected before it can reach a
//! backend), and rewritten for the next hop (hop-by-hop headers dropped, framing normalised,
//! `X-Forwarded-*` added). Bodies are relayed by [`body::Relay`], which decides byte by byte what is
//! framing and what is payload. Canned error responses live here too.

pub mod body;
mod field;
pub mod redirect;
pub mod request;
pub mod response;
mod writer;

use std::fmt;

pub(crate) use field::Field;
pub use writer::HeadWriter;

/// Most header fields a head parsed by lb may carry.
pub const MAX_HEADERS: usize = 100;
/// Most fields a request may carry (more gives 431): room is left for the fields the rewrite adds
/// (`Host`, `X-Forwarded-For`, `X-Forwarded-Proto`), so that lb never forwards a head it would refuse.
pub const MAX_REQUEST_FIELDS: usize = MAX_HEADERS - 3;
/// Most fields a response may carry (more gives 502): room is left for the `Content-Length` and
/// `Connection` fields the rewrite may add.
pub const MAX_RESPONSE_FIELDS: usize = MAX_HEADERS - 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How a message body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    Length(u64),
    Chunked,
    /// Everything until the sender closes (responses only).
    UntilClose,
}

/// A byte range inside the buffer a head was parsed from, so parsed heads do not borrow the buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// Where `part` lies inside `base`, or `None` when it does not lie there at all. A parser may hand
    /// back a slice that is not part of its input (httparse returns a static `""` for a reason phrase
    /// that is absent or holds obs-text), so the position is computed with checked arithmetic and
    /// verified against `base` rather than assumed.
    pub fn within(base: &[u8], part: &[u8]) -> Option<Span> {
        let start = (part.as_ptr() as usize).checked_sub(base.as_ptr() as usize)?;
        let end = start.checked_add(part.len())?;
        if end > base.len() {
            return None;
        }
        Some(Span {
            start: u32::try_from(start).ok()?,
            end: u32::try_from(end).ok()?,
        })
    }

    /// A span of a slice the parser took from `base`; a slice from anywhere else is a malformed head
    /// rather than a reason to index out of bounds.
    fn of(base: &[u8], part: &[u8]) -> Result<Span, HeadError> {
        Span::within(base, part).ok_or(HeadError::Syntax("parser result outside the head"))
    }

    /// The bytes of the span in `base`: empty if the span does not fit `base` (a span is only ever
    /// used with the buffer it was made from, so that means a bug, not input).
    pub fn get(self, base: &[u8]) -> &[u8] {
        debug_assert!(self.start <= self.end && self.end as usize <= base.len());
        base.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// One header field's name and value positions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderSpan {
    pub name: Span,
    pub value: Span,
}

impl HeaderSpan {
    /// A field from its kept positions (see [`HeaderSpans`]).
    fn kept([name_start, name_end, value_start, value_end]: [u16; 4]) -> HeaderSpan {
        HeaderSpan {
            name: Span {
                start: u32::from(name_start),
                end: u32::from(name_end),
            },
            value: Span {
                start: u32::from(value_start),
                end: u32::from(value_end),
            },
        }
    }

    /// The field's line in `base` is already in the form a forwarded field is written in:
    /// `name: value` CRLF, one space, no trailing whitespace.
    #[inline]
    pub fn line_as_written(self, base: &[u8]) -> bool {
        let (name_end, value_start) = (self.name.end as usize, self.value.start as usize);
        let value_end = self.value.end as usize;
        value_start == name_end + 2
            && base.get(name_end..value_start) == Some(&b": "[..])
            && base.get(value_end..value_end + 2) == Some(&b"\r\n"[..])
    }
}

/// Fields whose positions a parsed head keeps; a head with more has them found again in its bytes.
const KEPT_FIELDS: usize = 12;

/// The header fields of a parsed head. The positions of the first fields (as many as nearly every head
/// has) are kept compactly; beyond that they are found again in the head's bytes when asked, rather
/// than stored (a hundred stored positions made every parsed head a 1.6 KB value, copied on every
/// move). The head was validated whole by httparse, so its field lines are exactly
/// `name ":" OWS value OWS` ending in CRLF or a bare LF, with no folding: a walk over the lines finds
/// the same names and values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderSpans {
    /// From the first field line to the end of the head.
    block: Span,
    len: u16,
    /// `[name start, name end, value start, value end]` of each field, when `len <= KEPT_FIELDS` and
    /// the head is under 64 KiB (`kept`).
    fields: [[u16; 4]; KEPT_FIELDS],
    kept: bool,
}

impl HeaderSpans {
    #[inline(always)]
    fn from_parsed(
        base: &[u8],
        headers: &[httparse::Header<'_>],
        head_len: usize,
    ) -> Result<HeaderSpans, HeadError> {
        let end = u32::try_from(head_len).map_err(|_| HeadError::TooLarge)?;
        let start = match headers.first() {
            Some(first) => Span::of(base, first.name.as_bytes())?.start,
            None => end,
        };
        let mut spans = HeaderSpans {
            block: Span { start, end },
            len: u16::try_from(headers.len()).map_err(|_| HeadError::TooManyHeaders)?,
            fields: [[0; 4]; KEPT_FIELDS],
            kept: false,
        };
        if headers.len() <= KEPT_FIELDS && head_len <= usize::from(u16::MAX) {
            // What `Span::of` checks, for both slices of a field at once: each lies inside `base`
            // (an offset that wrapped around ends before it starts, or past the end).
            let base_addr = base.as_ptr() as usize;
            for (slot, h) in spans.fields.iter_mut().zip(headers) {
                let name_start = (h.name.as_ptr() as usize).wrapping_sub(base_addr);
                let name_end = name_start.wrapping_add(h.name.len());
                let value_start = (h.value.as_ptr() as usize).wrapping_sub(base_addr);
                let value_end = value_start.wrapping_add(h.value.len());
                if name_start > name_end
                    || name_end > base.len()
                    || value_start > value_end
                    || value_end > base.len()
                {
                    return Err(HeadError::Syntax("parser result outside the head"));
                }
                // Below 64 KiB, as checked above.
                *slot = [name_start, name_end, value_start, value_end].map(|x| x as u16);
            }
            spans.kept = true;
        }
        Ok(spans)
    }

    /// The fields, in order, as positions in `base` (the buffer the head was parsed from).
    pub fn iter<'a>(&'a self, base: &'a [u8]) -> HeaderIter<'a> {
        HeaderIter {
            base,
            kept: if self.kept {
                &self.fields[..usize::from(self.len)]
            } else {
                &[]
            },
            pos: self.block.start as usize,
            end: (self.block.end as usize).min(base.len()),
            left: if self.kept { 0 } else { self.len },
        }
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Where the field lines are, from the first name to the last CRLF, when there are some and every
    /// one is already in its written form ([`HeaderSpans::lines_as_written`]): they can be forwarded
    /// in one piece.
    pub fn lines_span(&self, base: &[u8]) -> Option<(usize, usize)> {
        if !self.lines_as_written(base) {
            return None;
        }
        let kept = self.fields.get(..usize::from(self.len))?;
        let ([start, ..], [.., last_value_end]) = (kept.first()?, kept.last()?);
        Some((usize::from(*start), usize::from(*last_value_end) + 2))
    }

    /// Every field line in `base` is already in the form a forwarded field is written in
    /// (`name: value` CRLF), as far as the kept positions tell (false for a head whose positions are
    /// not kept).
    pub fn lines_as_written(&self, base: &[u8]) -> bool {
        self.kept
            && self.fields[..usize::from(self.len)]
                .iter()
                .all(|&kept| HeaderSpan::kept(kept).line_as_written(base))
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The fields of a head: the kept positions, or one line at a time (see [`HeaderSpans`]).
pub struct HeaderIter<'a> {
    base: &'a [u8],
    kept: &'a [[u16; 4]],
    pos: usize,
    end: usize,
    left: u16,
}

impl Iterator for HeaderIter<'_> {
    type Item = HeaderSpan;

    fn next(&mut self) -> Option<HeaderSpan> {
        if let Some((first, rest)) = self.kept.split_first() {
            self.kept = rest;
            return Some(HeaderSpan::kept(*first));
        }
        if self.left == 0 {
            return None;
        }
        let block = self.base.get(self.pos..self.end)?;
        let line_len = memchr::memchr(b'\n', block)?;
        let line = &block[..line_len];
        // Names are short: a plain scan beats a call into memchr.
        let colon = line.iter().position(|&b| b == b':')?;
        let after = &line[colon + 1..];
        let leading = after
            .iter()
            .position(|&b| b != b' ' && b != b'\t')
            .unwrap_or(after.len());
        let value = &after[leading..];
        let trailing = value
            .iter()
            .rposition(|&b| !matches!(b, b' ' | b'\t' | b'\r'))
            .map_or(0, |last| last + 1);
        let name_start = self.pos as u32;
        let value_start = (self.pos + colon + 1 + leading) as u32;
        self.pos += line_len + 1;
        self.left -= 1;
        Some(HeaderSpan {
            name: Span {
                start: name_start,
                end: name_start + colon as u32,
            },
            value: Span {
                start: value_start,
                end: value_start + trailing as u32,
            },
        })
    }
}

/// Why a head was refused. Each maps to one status (see [`request::RequestError::status`]) and a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    Syntax(&'static str),
    TooLarge,
    TooManyHeaders,
    BadContentLength,
    BadTransferEncoding,
    UnsupportedTransferEncoding,
    ContentLengthWithTransferEncoding,
    TransferEncodingInHttp10,
    MissingHost,
    DuplicateHost,
    BadHost,
    BadTarget,
    MethodNotSupported,
    UnexpectedUpgrade,
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::Syntax(what) => write!(f, "malformed head: {what}"),
            HeadError::TooLarge => f.write_str("head too large"),
            HeadError::TooManyHeaders => f.write_str("too many header fields"),
            HeadError::BadContentLength => f.write_str("invalid or conflicting Content-Length"),
            HeadError::BadTransferEncoding => f.write_str("invalid Transfer-Encoding"),
            HeadError::UnsupportedTransferEncoding => {
                f.write_str("transfer coding other than chunked")
            }
            HeadError::ContentLengthWithTransferEncoding => {
                f.write_str("both Content-Length and Transfer-Encoding")
            }
            HeadError::TransferEncodingInHttp10 => {
                f.write_str("Transfer-Encoding in an HTTP/1.0 message")
            }
            HeadError::MissingHost => f.write_str("HTTP/1.1 request without Host"),
            HeadError::DuplicateHost => f.write_str("more than one Host"),
            HeadError::BadHost => f.write_str("invalid Host"),
            HeadError::BadTarget => f.write_str("invalid request target"),
            HeadError::MethodNotSupported => f.write_str("CONNECT is not supported"),
            HeadError::UnexpectedUpgrade => {
                f.write_str("101 Switching Protocols without an upgrade request")
            }
        }
    }
}

impl From<httparse::Error> for HeadError {
    fn from(e: httparse::Error) -> HeadError {
        match e {
            httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
            httparse::Error::HeaderName => HeadError::Syntax("invalid header name"),
            httparse::Error::HeaderValue => HeadError::Syntax("invalid header value"),
            httparse::Error::NewLine => HeadError::Syntax("invalid line ending"),
            httparse::Error::Status => HeadError::Syntax("invalid status"),
            httparse::Error::Token => HeadError::Syntax("invalid token"),
            httparse::Error::Version => HeadError::Syntax("unsupported HTTP version"),
        }
    }
}

/// Parses one Content-Length field value: digits only, possibly a comma-separated list of identical
/// values (RFC 9110 8.6). `+5`, `5x`, `-1`, empty, overflow and differing list members are errors.
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    // Nearly every value is one number and nothing else.
    if let Some(n) = decimal(value) {
        return Some(n);
    }
    let mut result: Option<u64> = None;
    for member in value.split(|&b| b == b',') {
        let n = decimal(trim_ows(member))?;
        match result {
            Some(previous) if previous != n => return None,
            _ => result = Some(n),
        }
    }
    result
}

/// `digits` as a number: ASCII digits only, one to 19 of them (so that it cannot overflow).
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut n = 0u64;
    for &d in digits {
        let digit = d.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        // Below 10^19 after 19 digits: no overflow.
        n = n * 10 + u64::from(digit);
    }
    Some(n)
}

/// Folds one more Content-Length field into what was seen so far; every field must agree.
fn merge_content_length(seen: Option<u64>, value: &[u8]) -> Result<Option<u64>, HeadError> {
    let n = parse_content_length(value).ok_or(HeadError::BadContentLength)?;
    match seen {
        Some(previous) if previous != n => Err(HeadError::BadContentLength),
        _ => Ok(Some(n)),
    }
}

/// What the Transfer-Encoding fields of a message say, folded across fields in order.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TransferCodings {
    pub present: bool,
    /// `chunked` is the final coding.
    pub chunked_last: bool,
    /// `chunked` appears somewhere other than last, or twice.
    pub chunked_misplaced: bool,
    /// Codings other than chunked (gzip, deflate, ...).
    pub others: bool,
    /// A member that is not a token, or an empty list.
    pub malformed: bool,
}

impl TransferCodings {
    pub fn add_field(&mut self, value: &[u8]) {
        self.present = true;
        let mut any = false;
        for member in value.split(|&b| b == b',') {
            let member = trim_ows(member);
            if member.is_empty() {
                continue;
            }
            any = true;
            // Parameters (`;q=...`) are not allowed on transfer codings we would accept anyway.
            if !member.iter().all(|&b| is_tchar(b)) {
                self.malformed = true;
            }
            if self.chunked_last {
                // Something follows an earlier `chunked`.
                self.chunked_misplaced = true;
            }
            if member.eq_ignore_ascii_case(b"chunked") {
                self.chunked_last = true;
            } else {
                self.chunked_last = false;
                self.others = true;
            }
        }
        if !any {
            self.malformed = true;
        }
    }
}

/// The tokens of `Connection` fields that change how the proxy behaves.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTokens {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// A token other than the three above: the name of a field to treat as hop-by-hop.
    pub names_fields: bool,
}

impl ConnectionTokens {
    fn add_field(&mut self, value: &[u8]) {
        for token in value.split(|&b| b == b',').map(trim_ows) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            } else if !token.is_empty() {
                self.names_fields = true;
            }
        }
    }
}

/// True when some `Connection` field of the head lists `name` (which makes `name` hop-by-hop too).
fn listed_in_connection(base: &[u8], headers: &HeaderSpans, name: &[u8]) -> bool {
    headers
        .iter(base)
        .filter(|h| h.name.get(base).eq_ignore_ascii_case(b"connection"))
        .any(|h| {
            h.value
                .get(base)
                .split(|&b| b == b',')
                .any(|token| trim_ows(token).eq_ignore_ascii_case(name))
        })
}

pub fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// RFC 9110 token characters.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The complete responses the balancer itself sends. All close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorResponse {
    BadRequest,
    /// No route matches and there is no default pool.
    NotFound,
    /// The client's request rate is above `[limits]`.
    TooManyRequests,
    RequestTimeout,
    HeadTooLarge,
    NotImplemented,
    BadGateway,
    ServiceUnavailable,
    GatewayTimeout,
}

impl ErrorResponse {
    pub fn status(self) -> u16 {
        match self {
            ErrorResponse::BadRequest => 400,
            ErrorResponse::NotFound => 404,
            ErrorResponse::TooManyRequests => 429,
            ErrorResponse::RequestTimeout => 408,
            ErrorResponse::HeadTooLarge => 431,
            ErrorResponse::NotImplemented => 501,
            ErrorResponse::BadGateway => 502,
            ErrorResponse::ServiceUnavailable => 503,
            ErrorResponse::GatewayTimeout => 504,
        }
    }

    pub fn bytes(self) -> &'static [u8] {
        match self {
            ErrorResponse::BadRequest => {
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 16\r\nConnection: close\r\n\r\n400 Bad Request\n"
            }
            ErrorResponse::NotFound => {
                b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 14\r\nConnection: close\r\n\r\n404 Not Found\n"
            }
            ErrorResponse::TooManyRequests => {
                b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: 22\r\nRetry-After: 1\r\nConnection: close\r\n\r\n429 Too Many Requests\n"
            }
            ErrorResponse::RequestTimeout => {
                b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nConnection: close\r\n\r\n408 Request Timeout\n"
            }
            ErrorResponse::HeadTooLarge => {
                b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\nContent-Length: 36\r\nConnection: close\r\n\r\n431 Request Header Fields Too Large\n"
            }
            ErrorResponse::NotImplemented => {
                b"HTTP/1.1 501 Not Implemented\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nConnection: close\r\n\r\n501 Not Implemented\n"
            }
            ErrorResponse::BadGateway => {
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 16\r\nConnection: close\r\n\r\n502 Bad Gateway\n"
            }
            ErrorResponse::ServiceUnavailable => {
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 24\r\nConnection: close\r\nRetry-After: 1\r\n\r\n503 Service Unavailable\n"
            }
            ErrorResponse::GatewayTimeout => {
                b"HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nConnection: close\r\n\r\n504 Gateway Timeout\n"
            }
        }
    }
}

/// A field's name and value, copied.
#[cfg(test)]
pub(crate) type OwnedField = (Vec<u8>, Vec<u8>);

/// A request head's field positions as lb keeps them, and its fields as httparse reads them (owned),
/// for tests that compare the two or rewrite the head.
#[cfg(test)]
pub(crate) fn parsed_request(raw: &[u8]) -> (HeaderSpans, Vec<OwnedField>) {
    let mut slots = [httparse::EMPTY_HEADER; 16];
    let mut request = httparse::Request::new(&mut slots);
    let Ok(httparse::Status::Complete(head_len)) = request.parse(raw) else {
        panic!("not a complete request head: {raw:?}");
    };
    let spans = HeaderSpans::from_parsed(raw, request.headers, head_len).expect("spans");
    let fields = request
        .headers
        .iter()
        .map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec()))
        .collect();
    (spans, fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_values() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"0", Some(0)),
            (b"5", Some(5)),
            (b"005", Some(5)),
            (b" 5 ", Some(5)),
            (b"5, 5", Some(5)),
            (b"5,5,5", Some(5)),
            (b"18446744073709551615", None), // 20 digits: longer than we accept
            (b"9223372036854775807", Some(9223372036854775807)),
            (b"5, 6", None),
            (b"+5", None),
            (b"-5", None),
            (b"5x", None),
            (b"0x5", None),
            (b"5 5", None),
            (b"", None),
            (b",", None),
            (b"5,", None),
            (b"5.0", None),
            (b"99999999999999999999", None),
            (b"9999999999999999999", Some(9_999_999_999_999_999_999)), // 19 digits: the most accepted
            (b"1/", None), // the bytes on either side of the digits
            (b"1:", None),
        ];
        for (value, expected) in cases {
            assert_eq!(
                parse_content_length(value),
                *expected,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn transfer_codings() {
        // (fields, chunked_last, misplaced, others, malformed)
        type Case<'a> = (&'a [&'a [u8]], bool, bool, bool, bool);
        let cases: &[Case] = &[
            (&[b"chunked"], true, false, false, false),
            (&[b"Chunked"], true, false, false, false),
            (&[b" chunked "], true, false, false, false),
            (&[b"gzip, chunked"], true, false, true, false),
            (&[b"gzip", b"chunked"], true, false, true, false),
            (&[b"chunked, gzip"], false, true, true, false),
            (&[b"chunked", b"chunked"], true, true, false, false),
            (&[b"chunked, chunked"], true, true, false, false),
            (&[b"identity"], false, false, true, false),
            (&[b""], false, false, false, true),
            (&[b"chunked;q=1"], false, false, true, true),
            (&[b"\"chunked\""], false, false, true, true),
            (&[b"chunk ed"], false, false, true, true),
        ];
        for (fields, last, misplaced, others, malformed) in cases {
            let mut te = TransferCodings::default();
            for f in *fields {
                te.add_field(f);
            }
            assert_eq!(
                (
                    te.chunked_last,
                    te.chunked_misplaced,
                    te.others,
                    te.malformed
                ),
                (*last, *misplaced, *others, *malformed),
                "{fields:?}"
            );
        }
    }

    #[test]
    fn canned_responses_are_well_formed() {
        let all = [
            ErrorResponse::BadRequest,
            ErrorResponse::NotFound,
            ErrorResponse::TooManyRequests,
            ErrorResponse::RequestTimeout,
            ErrorResponse::HeadTooLarge,
            ErrorResponse::NotImplemented,
            ErrorResponse::BadGateway,
            ErrorResponse::ServiceUnavailable,
            ErrorResponse::GatewayTimeout,
        ];
        for e in all {
            let bytes = e.bytes();
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut response = httparse::Response::new(&mut headers);
            let head_len = response.parse(bytes).unwrap().unwrap();
            assert_eq!(response.code, Some(e.status()));
            let cl = response
                .headers
                .iter()
                .find(|h| h.name == "Content-Length")
                .map(|h| parse_content_length(h.value).unwrap())
                .unwrap();
            assert_eq!(cl as usize, bytes.len() - head_len, "{e:?}");
            assert!(
                response
                    .headers
                    .iter()
                    .any(|h| h.name == "Connection" && h.value == b"close")
            );
        }
        assert!(
            std::str::from_utf8(ErrorResponse::ServiceUnavailable.bytes())
                .unwrap()
                .contains("Retry-After: 1\r\n")
        );
    }

    #[test]
    fn fields_found_again_are_httparse_fields() {
        let heads: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\nX:  spaced  value \t\r\nEmpty:\r\nE2: \r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\nX-Obs: \xc3\x87a\n\n",
            b"\r\nGET / HTTP/1.1\r\nA:b:c\r\nB: x\ty\r\n\r\nbody",
            b"GET / HTTP/1.1\r\n\r\n",
        ];
        for raw in heads {
            let (spans, fields) = parsed_request(raw);
            let found: Vec<(&[u8], &[u8])> = spans
                .iter(raw)
                .map(|h| (h.name.get(raw), h.value.get(raw)))
                .collect();
            let expected: Vec<(&[u8], &[u8])> = fields
                .iter()
                .map(|(name, value)| (name.as_slice(), value.as_slice()))
                .collect();
            assert_eq!(found, expected, "{:?}", String::from_utf8_lossy(raw));
            assert_eq!(spans.len(), expected.len());
            // The same fields found by walking the lines, as for heads with many fields.
            let walked = HeaderSpans {
                kept: false,
                ..spans
            };
            let again: Vec<(&[u8], &[u8])> = walked
                .iter(raw)
                .map(|h| (h.name.get(raw), h.value.get(raw)))
                .collect();
            assert_eq!(again, expected, "{:?}", String::from_utf8_lossy(raw));
        }
    }
}
