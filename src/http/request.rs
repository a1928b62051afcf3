//! Request heads: parse and validate what a client sent, then write the head the backend receives.
//! Validation happens entirely before a backend is chosen, so a malformed or ambiguous request never
//! reaches one.

use super::{
    ConnectionTokens, Field, Framing, HeadError, HeadWriter, HeaderSpans, MAX_HEADERS,
    MAX_REQUEST_FIELDS, Span, TransferCodings, Version, listed_in_connection, merge_content_length,
    trim_ows,
};
use crate::http::ErrorResponse;
use crate::http::field::framing_lookalike;
use std::io::Write as _;
use std::net::IpAddr;

/// A validated request head; positions refer to the buffer it was parsed from.
#[derive(Clone)]
pub struct RequestHead {
    /// Bytes the head occupies at the start of the buffer (including leading empty lines).
    pub head_len: usize,
    pub method: Span,
    pub target: Span,
    /// The authority of an absolute-form target (`GET http://host/path`); it replaces `Host`.
    pub authority: Option<Span>,
    pub version: Version,
    pub headers: HeaderSpans,
    pub framing: Framing,
    /// The client asked for the connection to stay open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` in an HTTP/1.1 request.
    pub expect_continue: bool,
    /// `Connection: upgrade` with an `Upgrade` field: a protocol switch (WebSocket) is requested.
    pub upgrade: bool,
    pub is_head: bool,
    /// Safe to send again after a failure (RFC 9110 9.2.2).
    pub idempotent: bool,
    has_host: bool,
    /// The value of the one `Host` field, when `has_host` (found while validating, not searched again).
    host_value: Span,
    /// Some `X-Forwarded-For` field came with the request.
    has_forwarded_for: bool,
    /// Some `Connection` field names other fields, which are then hop-by-hop too.
    connection_lists_fields: bool,
    /// Every field goes to the backend as it is (none is hop-by-hop, framing, `X-Forwarded-*`, a
    /// `Host` an absolute-form target replaces, an HTTP/1.0 `Expect`, or a framing lookalike): the
    /// rewrite may copy them whole (see [`write_request_head`]).
    fields_forwarded_whole: bool,
}

impl RequestHead {
    pub fn method<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        self.method.get(buf)
    }

    pub fn has_body(&self) -> bool {
        !matches!(self.framing, Framing::Empty)
    }

    /// The host the client asked for: an absolute-form target's authority, else the `Host` field.
    pub fn host<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        if let Some(authority) = self.authority {
            return Some(authority.get(buf));
        }
        if !self.has_host {
            return None;
        }
        Some(trim_ows(self.host_value.get(buf))).filter(|v| !v.is_empty())
    }
}

/// What a rejected request gets back.
pub fn error_response(e: HeadError) -> ErrorResponse {
    match e {
        HeadError::TooLarge | HeadError::TooManyHeaders => ErrorResponse::HeadTooLarge,
        HeadError::MethodNotSupported | HeadError::UnsupportedTransferEncoding => {
            ErrorResponse::NotImplemented
        }
        _ => ErrorResponse::BadRequest,
    }
}

/// Parses and validates a request head at the start of `buf`. `Ok(None)` means more bytes are needed;
/// a partial head that already fills `max_head` bytes is [`HeadError::TooLarge`].
pub fn parse_request(buf: &[u8], max_head: usize) -> Result<Option<RequestHead>, HeadError> {
    parse_request_limited(buf, max_head, MAX_REQUEST_FIELDS)
}

/// [`parse_request`] with a field limit of the caller's (at most [`MAX_HEADERS`]): what a peer with
/// another limit would accept.
pub fn parse_request_limited(
    buf: &[u8],
    max_head: usize,
    max_fields: usize,
) -> Result<Option<RequestHead>, HeadError> {
    // Uninitialised slots: httparse fills what it uses, and zeroing 100 headers per request is waste.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let head_len = match request.parse_with_uninit_headers(buf, &mut headers)? {
        httparse::Status::Complete(n) if n <= max_head => n,
        httparse::Status::Complete(_) => return Err(HeadError::TooLarge),
        httparse::Status::Partial if buf.len() >= max_head => return Err(HeadError::TooLarge),
        httparse::Status::Partial => return Ok(None),
    };
    if request.headers.len() > max_fields {
        return Err(HeadError::TooManyHeaders);
    }
    // httparse guarantees these are set on a complete parse.
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Err(HeadError::Syntax("incomplete request line"));
    };
    let version = if version == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    let method_bytes = method.as_bytes();
    if method_bytes == b"CONNECT" {
        return Err(HeadError::MethodNotSupported);
    }
    let (target_span, authority) = split_target(buf, method_bytes, target.as_bytes())?;
    let fields = RequestFields::scan(request.headers)?;
    if fields.host_count == 0 && version == Version::Http11 {
        return Err(HeadError::MissingHost);
    }
    let framing = fields.framing(version)?;
    let headers = HeaderSpans::from_parsed(buf, request.headers, head_len)?;
    let connection = fields.connection;
    // A field the client lists in Connection is hop-by-hop and not forwarded: an Expect listed there
    // asks nothing of the backend.
    let expect_continue = fields.expect_continue
        && version == Version::Http11
        && !(connection.names_fields && listed_in_connection(buf, &headers, b"expect"));
    let keep_alive = match version {
        Version::Http11 => !connection.close,
        Version::Http10 => connection.keep_alive && !connection.close,
    };
    let idempotent = matches!(
        method_bytes,
        b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
    );
    Ok(Some(RequestHead {
        head_len,
        method: Span::of(buf, method_bytes)?,
        target: target_span,
        authority,
        version,
        headers,
        framing,
        keep_alive,
        expect_continue,
        upgrade: connection.upgrade && fields.has_upgrade_field && version == Version::Http11,
        is_head: method_bytes == b"HEAD",
        idempotent,
        has_host: fields.host_count == 1,
        host_value: match fields.host {
            Some(value) => Span::of(buf, value)?,
            None => Span::default(),
        },
        has_forwarded_for: fields.forwarded_for,
        connection_lists_fields: connection.names_fields,
        fields_forwarded_whole: fields.forwarded_whole
            && authority.is_none()
            && !(fields.has_expect && version == Version::Http10),
    }))
}

/// What a request's fields say about framing, Host, Connection, Expect and Upgrade.
struct RequestFields<'a> {
    content_length: Option<u64>,
    codings: TransferCodings,
    connection: ConnectionTokens,
    host_count: usize,
    expect_continue: bool,
    has_upgrade_field: bool,
    forwarded_for: bool,
    has_expect: bool,
    /// No field is one the rewrite drops or changes whatever the request line says.
    forwarded_whole: bool,
    /// The value of the last `Host` field.
    host: Option<&'a [u8]>,
}

impl<'a> RequestFields<'a> {
    fn scan(headers: &[httparse::Header<'a>]) -> Result<RequestFields<'a>, HeadError> {
        let mut fields = RequestFields {
            content_length: None,
            codings: TransferCodings::default(),
            connection: ConnectionTokens::default(),
            host_count: 0,
            expect_continue: false,
            has_upgrade_field: false,
            forwarded_for: false,
            has_expect: false,
            forwarded_whole: true,
            host: None,
        };
        for h in headers {
            let field = Field::of(h.name.as_bytes());
            fields.forwarded_whole &= match field {
                Field::Other => !framing_lookalike(h.name.as_bytes()),
                Field::Host | Field::Expect => true,
                _ => false,
            };
            match field {
                Field::ContentLength => {
                    fields.content_length = merge_content_length(fields.content_length, h.value)?;
                }
                Field::TransferEncoding => fields.codings.add_field(h.value),
                Field::Connection => fields.connection.add_field(h.value),
                Field::Host => {
                    fields.host_count += 1;
                    fields.host = Some(h.value);
                }
                Field::Expect => {
                    fields.has_expect = true;
                    fields.expect_continue |=
                        trim_ows(h.value).eq_ignore_ascii_case(b"100-continue");
                }
                Field::Upgrade => fields.has_upgrade_field = true,
                Field::XForwardedFor => fields.forwarded_for = true,
                _ => {}
            }
        }
        match (fields.host_count, fields.host) {
            (2.., _) => Err(HeadError::DuplicateHost),
            (_, Some(value)) if !valid_host(value) => Err(HeadError::BadHost),
            _ => Ok(fields),
        }
    }

    /// RFC 9112 6: chunked as the final transfer coding, else Content-Length, else no body; anything
    /// ambiguous is refused.
    fn framing(&self, version: Version) -> Result<Framing, HeadError> {
        let codings = &self.codings;
        if !codings.present {
            return Ok(match self.content_length {
                None | Some(0) => Framing::Empty,
                Some(n) => Framing::Length(n),
            });
        }
        if version == Version::Http10 {
            return Err(HeadError::TransferEncodingInHttp10);
        }
        if self.content_length.is_some() {
            return Err(HeadError::ContentLengthWithTransferEncoding);
        }
        if codings.malformed || codings.chunked_misplaced || !codings.chunked_last {
            return Err(HeadError::BadTransferEncoding);
        }
        if codings.others {
            return Err(HeadError::UnsupportedTransferEncoding);
        }
        Ok(Framing::Chunked)
    }
}

/// Splits the request target into what the backend receives (origin-form) and, for absolute-form, the
/// authority that replaces `Host` (RFC 9112 3.2.2).
fn split_target(
    buf: &[u8],
    method: &[u8],
    target: &[u8],
) -> Result<(Span, Option<Span>), HeadError> {
    if target.first() == Some(&b'/') {
        return Ok((Span::of(buf, target)?, None));
    }
    if target == b"*" {
        return if method == b"OPTIONS" {
            Ok((Span::of(buf, target)?, None))
        } else {
            Err(HeadError::BadTarget)
        };
    }
    let rest = strip_prefix_ignore_case(target, b"http://")
        .or_else(|| strip_prefix_ignore_case(target, b"https://"))
        .ok_or(HeadError::BadTarget)?;
    let authority_len = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    if authority.is_empty() || authority.contains(&b'@') || !valid_host(authority) {
        return Err(HeadError::BadTarget);
    }
    // An empty path becomes "/" when written; an authority followed directly by a query keeps the query.
    Ok((
        Span::of(buf, &rest[authority_len..])?,
        Some(Span::of(buf, authority)?),
    ))
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// `Host` is `uri-host [":" port]`: reg-name characters, an IP literal in brackets, digits after a colon.
fn valid_host(value: &[u8]) -> bool {
    // Every byte looked up, without a branch per byte: a valid Host (the case to make fast) is read
    // to its end anyway, and the compiler unrolls the loop.
    value
        .iter()
        .fold(true, |valid, &b| valid & HOST_BYTES[usize::from(b)])
}

/// The bytes [`valid_host`] allows, as a table: looked up for every byte of every request's `Host`.
const HOST_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let others = b"-._~%!$&'()*+,;=:[]";
    let mut i = 0;
    while i < others.len() {
        table[others[i] as usize] = true;
        i += 1;
    }
    table
};

/// Per-hop facts the rewritten head needs.
pub struct ForwardInfo<'a> {
    pub client_ip: IpAddr,
    /// The client came over TLS: `X-Forwarded-Proto: https`.
    pub secure: bool,
    /// `Host` for requests that carry none (HTTP/1.0): the backend's `host:port`.
    pub default_host: &'a [u8],
    /// Bytes at the start of the path the backend does not see (a route's `strip_path_prefix`).
    pub strip_prefix: usize,
}

/// Writes the head the backend receives: HTTP/1.1 request line, the client's end-to-end fields, `Host`,
/// normalised framing, `X-Forwarded-For` (appended to), `X-Forwarded-Proto`. Returns the length written,
/// or `None` when it does not fit in `out`.
pub fn write_request_head(
    buf: &[u8],
    head: &RequestHead,
    info: &ForwardInfo<'_>,
    out: &mut [u8],
) -> Option<usize> {
    let whole = head.fields_forwarded_whole;
    let written = write_request_head_with(buf, head, info, out, whole);
    // Every test build checks that copying the fields whole writes what the field-by-field
    // rewrite writes.
    #[cfg(debug_assertions)]
    if whole && let Some(n) = written {
        let mut by_field = vec![0; n];
        let again = write_request_head_with(buf, head, info, &mut by_field, false);
        debug_assert_eq!(
            again,
            Some(n),
            "the fields copied whole are not the fields rewritten"
        );
        debug_assert!(out[..n] == by_field[..], "the fields copied whole differ");
    }
    written
}

/// [`write_request_head`], the fields copied whole in one run when `whole` allows and they are
/// already written `name: value` CRLF, else field by field.
fn write_request_head_with(
    buf: &[u8],
    head: &RequestHead,
    info: &ForwardInfo<'_>,
    out: &mut [u8],
    whole: bool,
) -> Option<usize> {
    let mut w = HeadWriter::with_source(out, buf);
    match forwarded_as_is(buf, head, info) {
        // Copied with the fields that follow it, in one run.
        Some(line_end) => w.source_bytes(head.method.start as usize, line_end),
        None => {
            w.put(head.method.get(buf));
            w.put(b" ");
            let target = head.target.get(buf);
            let target = target.get(info.strip_prefix..).unwrap_or(target);
            // An absolute-form target with an empty path (`http://a`, `http://a?q`) gets the "/"
            // that origin-form requires (RFC 9112 3.2.1), and so does a path whose prefix was
            // stripped.
            if target.first() != Some(&b'/') && target != b"*" {
                w.put(b"/");
            }
            w.put(target);
            w.put(b" HTTP/1.1\r\n");
        }
    }

    // Where the lines are is only looked for when they may go whole.
    let whole_lines = if whole {
        head.headers.lines_span(buf)
    } else {
        None
    };
    let forwarded_for_written = match whole_lines {
        // No X-Forwarded-For among them to fold the client into.
        Some((start, end)) => {
            w.source_bytes(start, end);
            false
        }
        None => forward_fields(&mut w, buf, head, info),
    };
    write_added_fields(&mut w, buf, head, info, forwarded_for_written);
    w.finish()
}

/// The fields lb writes after the client's: `Host` when the client's is replaced or missing, the
/// framing, `Connection: upgrade`, `X-Forwarded-For` unless folded into the client's, and
/// `X-Forwarded-Proto`; then the blank line.
fn write_added_fields(
    w: &mut HeadWriter<'_>,
    buf: &[u8],
    head: &RequestHead,
    info: &ForwardInfo<'_>,
    forwarded_for_written: bool,
) {
    if let Some(authority) = head.authority {
        w.header(b"Host", authority.get(buf));
    } else if !head.has_host {
        w.header(b"Host", info.default_host);
    }
    match head.framing {
        Framing::Empty | Framing::UntilClose => {}
        Framing::Length(n) => {
            w.put(b"Content-Length: ");
            w.put_u64_then(n, b"\r\n");
        }
        Framing::Chunked => w.put(b"Transfer-Encoding: chunked\r\n"),
    }
    if head.upgrade {
        w.put(b"Connection: upgrade\r\n");
    }
    if !forwarded_for_written {
        write_forwarded_for(w, buf, head, info.client_ip);
    }
    w.put(if info.secure {
        b"X-Forwarded-Proto: https\r\n\r\n"
    } else {
        b"X-Forwarded-Proto: http\r\n\r\n"
    });
}

/// Where the client's fields end when the head the backend receives is the client's head as it is,
/// up to its blank line, and then only the fields lb adds ([`write_added_to_received`]): a bodiless
/// request whose request line and fields are forwarded unchanged, that names its Host, and whose
/// head starts the buffer and ends in CRLF CRLF. `None` when the head is written anew
/// ([`write_request_head`]).
pub fn head_goes_as_received(
    buf: &[u8],
    head: &RequestHead,
    info: &ForwardInfo<'_>,
) -> Option<usize> {
    if !(head.fields_forwarded_whole
        && head.method.start == 0
        && head.has_host
        && head.framing == Framing::Empty
        && !head.upgrade)
    {
        return None;
    }
    let line_end = forwarded_as_is(buf, head, info)?;
    let (fields_start, fields_end) = head.headers.lines_span(buf)?;
    let as_received = fields_start == line_end
        && fields_end + 2 == head.head_len
        && buf.get(fields_end..head.head_len) == Some(&b"\r\n"[..]);
    as_received.then_some(fields_end)
}

/// The fields lb adds to a head that goes as received ([`head_goes_as_received`]), and the blank
/// line: what follows `kept`, the client's head up to the end of its fields. Returns the length
/// written, or `None` when it does not fit in `out`.
pub fn write_added_to_received(
    kept: &[u8],
    head: &RequestHead,
    info: &ForwardInfo<'_>,
    out: &mut [u8],
) -> Option<usize> {
    let mut w = HeadWriter::new(out);
    // The client's fields hold no X-Forwarded-For: they would not be forwarded whole.
    write_added_fields(&mut w, kept, head, info, false);
    let written = w.finish();
    // Every test build checks that the client's bytes and these are the head written anew.
    #[cfg(debug_assertions)]
    if let Some(n) = written {
        let lead = kept.len();
        let mut whole = vec![0; lead + n];
        let again = write_request_head(kept, head, info, &mut whole);
        debug_assert_eq!(
            again,
            Some(lead + n),
            "a head as received has another length"
        );
        debug_assert!(
            whole[..lead] == *kept && whole[lead..] == out[..n],
            "a head as received differs from the head written anew"
        );
    }
    written
}

/// The client's fields the backend gets, one by one: hop-by-hop ones and those the rewrite replaces
/// left out, every `X-Forwarded-For` folded into the first with the client appended. True when that
/// field was written.
fn forward_fields(
    w: &mut HeadWriter<'_>,
    buf: &[u8],
    head: &RequestHead,
    info: &ForwardInfo<'_>,
) -> bool {
    let mut forwarded_for_written = false;
    for h in head.headers.iter(buf) {
        let name = h.name.get(buf);
        let field = Field::of(name);
        if field == Field::XForwardedFor {
            // All X-Forwarded-For fields are folded into one, with the client appended, in place of the first.
            if !forwarded_for_written {
                forwarded_for_written = true;
                write_forwarded_for(w, buf, head, info.client_ip);
            }
            continue;
        }
        let skip = if head.upgrade && field == Field::Upgrade {
            false
        } else {
            field.is_hop_by_hop()
                || field == Field::XForwardedProto
                || (head.authority.is_some() && field == Field::Host)
                || (head.version == Version::Http10 && field == Field::Expect)
                || (head.connection_lists_fields
                    && field != Field::Host
                    && listed_in_connection(buf, &head.headers, name))
                // A lookalike has an underscore, which no name lb knows has.
                || (field == Field::Other && framing_lookalike(name))
        };
        if !skip {
            w.field(h);
        }
    }
    forwarded_for_written
}

/// Where the request line ends when the client's is already the line the backend gets (an
/// origin-form target kept whole, single spaces, HTTP/1.1, CRLF), which is then copied as it is; `None`
/// when it is written anew.
fn forwarded_as_is(buf: &[u8], head: &RequestHead, info: &ForwardInfo<'_>) -> Option<usize> {
    let (method_end, target) = (head.method.end as usize, head.target);
    let line_end = target.end as usize + 11;
    let as_is = info.strip_prefix == 0
        && head.authority.is_none()
        && target.get(buf).first() == Some(&b'/')
        && method_end + 1 == target.start as usize
        && buf.get(method_end) == Some(&b' ')
        && buf.get(target.end as usize..line_end) == Some(&b" HTTP/1.1\r\n"[..]);
    as_is.then_some(line_end)
}

fn write_forwarded_for(w: &mut HeadWriter<'_>, buf: &[u8], head: &RequestHead, client_ip: IpAddr) {
    w.put(b"X-Forwarded-For: ");
    // Another walk over the fields only when the client sent some of its own.
    if head.has_forwarded_for {
        for h in head.headers.iter(buf) {
            if h.name.get(buf).eq_ignore_ascii_case(b"x-forwarded-for") {
                let value = trim_ows(h.value.get(buf));
                if !value.is_empty() {
                    w.put(value);
                    w.put(b", ");
                }
            }
        }
    }
    match client_ip {
        // The common case, without core::fmt (a thousand instructions per request otherwise).
        IpAddr::V4(v4) => w.put_ipv4_then(v4, b"\r\n"),
        IpAddr::V6(v6) => {
            let mut ip_text = [0u8; 64];
            let mut cursor = &mut ip_text[..];
            // An IPv6 address always fits in 64 bytes, so this write cannot fail.
            let _ = write!(cursor, "{v6}\r\n");
            let written = 64 - cursor.len();
            w.put(&ip_text[..written]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 8192;

    fn parse(raw: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_request(raw.as_bytes(), MAX)
    }

    fn forward(raw: &str) -> String {
        let head = parse(raw).unwrap().unwrap();
        let mut out = [0u8; 4096];
        let info = ForwardInfo {
            client_ip: "192.0.2.7".parse().unwrap(),
            secure: false,
            default_host: b"10.0.0.1:8001",
            strip_prefix: 0,
        };
        let n = write_request_head(raw.as_bytes(), &head, &info, &mut out).unwrap();
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    /// A head goes as received only when the backend's head is the client's up to its last field,
    /// then lb's fields: the client's bytes and those added are then the head written anew.
    #[test]
    fn heads_go_as_received() {
        let info = |strip_prefix| ForwardInfo {
            client_ip: "192.0.2.7".parse().unwrap(),
            secure: true,
            default_host: b"10.0.0.1:8001",
            strip_prefix,
        };
        let added = "X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: https\r\n\r\n";
        // (head, prefix stripped, goes as received)
        let cases: &[(&str, usize, bool)] = &[
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0, true),
            (
                "GET /x?q HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nA:b\r\n\r\n",
                0,
                false,
            ),
            (
                "GET /x?q HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n",
                0,
                true,
            ),
            (
                "HEAD /x HTTP/1.1\r\nhost: a\r\nUser-Agent: u\r\n\r\n",
                0,
                true,
            ),
            ("GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n", 4, false),
            ("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 0, false),
            ("GET / HTTP/1.1\nHost: a\n\n", 0, false),
            ("GET / HTTP/1.1\r\nHost: a\r\n\n", 0, false),
            ("GET / HTTP/1.0\r\nHost: a\r\n\r\n", 0, false),
            ("GET / HTTP/1.0\r\n\r\n", 0, false),
            ("GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 0, false),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
                0,
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
                0,
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: ws\r\n\r\n",
                0,
                false,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",
                0,
                false,
            ),
            ("GET / HTTP/1.1\r\nHost:  a \r\n\r\n", 0, false),
        ];
        for &(raw, strip, as_received) in cases {
            let head = parse(raw).unwrap().unwrap();
            let info = info(strip);
            let lead = head_goes_as_received(raw.as_bytes(), &head, &info);
            assert_eq!(lead.is_some(), as_received, "{raw:?}");
            let Some(lead) = lead else { continue };
            assert_eq!(raw.len(), lead + 2, "{raw:?}: all but the blank line");
            let kept = &raw.as_bytes()[..lead];
            let mut out = [0u8; 128];
            let n = write_added_to_received(kept, &head, &info, &mut out).unwrap();
            assert_eq!(&out[..n], added.as_bytes(), "{raw:?}");
            let mut whole = [0u8; 256];
            let m = write_request_head(raw.as_bytes(), &head, &info, &mut whole).unwrap();
            assert_eq!(whole[..m], [kept, &out[..n]].concat(), "{raw:?}");
            assert_eq!(
                write_added_to_received(kept, &head, &info, &mut out[..n - 1]),
                None
            );
        }
    }

    /// A request line is copied as it is only when it is the line the rewrite would write; whichever
    /// way it goes, the backend gets that line.
    #[test]
    fn request_lines_copied_as_they_are() {
        // (request line, prefix stripped, copied as it is, the line the backend gets)
        let cases: &[(&str, usize, bool, &str)] = &[
            ("GET / HTTP/1.1\r\n", 0, true, "GET / HTTP/1.1\r\n"),
            (
                "POST /a/b?c=d HTTP/1.1\r\n",
                0,
                true,
                "POST /a/b?c=d HTTP/1.1\r\n",
            ),
            ("GET /api/x HTTP/1.1\r\n", 4, false, "GET /x HTTP/1.1\r\n"),
            ("GET / HTTP/1.0\r\n", 0, false, "GET / HTTP/1.1\r\n"),
            ("GET / HTTP/1.1\n", 0, false, "GET / HTTP/1.1\r\n"),
            ("\r\nGET /x HTTP/1.1\r\n", 0, true, "GET /x HTTP/1.1\r\n"),
            (
                "GET http://h/x HTTP/1.1\r\n",
                0,
                false,
                "GET /x HTTP/1.1\r\n",
            ),
            ("OPTIONS * HTTP/1.1\r\n", 0, false, "OPTIONS * HTTP/1.1\r\n"),
        ];
        for &(line, strip, as_is, expected) in cases {
            let raw = format!("{line}Host: h\r\n\r\n");
            let head = parse(&raw).unwrap().unwrap();
            let info = ForwardInfo {
                client_ip: "192.0.2.7".parse().unwrap(),
                secure: false,
                default_host: b"10.0.0.1:8001",
                strip_prefix: strip,
            };
            let found = forwarded_as_is(raw.as_bytes(), &head, &info);
            assert_eq!(found.is_some(), as_is, "{line:?}");
            let mut out = [0u8; 512];
            let n = write_request_head(raw.as_bytes(), &head, &info, &mut out).unwrap();
            let sent = String::from_utf8(out[..n].to_vec()).unwrap();
            assert!(sent.starts_with(expected), "{line:?}: {sent:?}");
        }
    }

    #[test]
    fn host_bytes_are_reg_name_ip_literal_and_port_characters() {
        for b in 0..=255u8 {
            let allowed = b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b);
            assert_eq!(valid_host(&[b'a', b]), allowed, "{b:#x}");
        }
    }

    #[test]
    fn valid_requests_and_their_framing() {
        // (raw head, framing, keep_alive, expect_continue, upgrade)
        let cases: &[(&str, Framing, bool, bool, bool)] = &[
            (
                "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                Framing::Empty,
                true,
                false,
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                Framing::Empty,
                false,
                false,
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n",
                Framing::Empty,
                false,
                false,
                false,
            ),
            (
                "GET / HTTP/1.0\r\n\r\n",
                Framing::Empty,
                false,
                false,
                false,
            ),
            (
                "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                Framing::Empty,
                true,
                false,
                false,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
                Framing::Length(5),
                true,
                false,
                false,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
                Framing::Empty,
                true,
                false,
                false,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                Framing::Length(5),
                true,
                false,
                false,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
                Framing::Length(5),
                true,
                false,
                false,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                Framing::Chunked,
                true,
                false,
                false,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n",
                Framing::Chunked,
                true,
                false,
                false,
            ),
            (
                "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
                Framing::Length(3),
                true,
                true,
                false,
            ),
            (
                "PUT / HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
                Framing::Length(3),
                false,
                false,
                false,
            ),
            (
                "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                Framing::Empty,
                true,
                false,
                true,
            ),
            (
                "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
                Framing::Empty,
                true,
                false,
                false,
            ),
            (
                "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
                Framing::Empty,
                true,
                false,
                false,
            ),
            (
                "GET http://example.com/x HTTP/1.1\r\nHost: other\r\n\r\n",
                Framing::Empty,
                true,
                false,
                false,
            ),
            (
                "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
                Framing::Empty,
                true,
                false,
                false,
            ),
            (
                "GET / HTTP/1.1\nHost: a\n\n",
                Framing::Empty,
                true,
                false,
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
                Framing::Empty,
                true,
                false,
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: \r\n\r\n",
                Framing::Empty,
                true,
                false,
                false,
            ),
        ];
        for (raw, framing, keep_alive, expect, upgrade) in cases {
            let head = parse(raw)
                .unwrap_or_else(|e| panic!("{raw:?}: {e}"))
                .unwrap();
            assert_eq!(head.framing, *framing, "{raw:?}");
            assert_eq!(head.keep_alive, *keep_alive, "{raw:?}");
            assert_eq!(head.expect_continue, *expect, "{raw:?}");
            assert_eq!(head.upgrade, *upgrade, "{raw:?}");
            assert_eq!(head.head_len, raw.len(), "{raw:?}");
        }
    }

    #[test]
    fn rejected_requests() {
        let cases: &[(&str, HeadError, u16)] = &[
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::ContentLengthWithTransferEncoding,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                HeadError::ContentLengthWithTransferEncoding,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                HeadError::BadContentLength,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
                HeadError::BadContentLength,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5x\r\n\r\n",
                HeadError::BadContentLength,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
                HeadError::BadContentLength,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
                HeadError::BadContentLength,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n",
                HeadError::BadContentLength,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                HeadError::BadTransferEncoding,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::BadTransferEncoding,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
                HeadError::BadTransferEncoding,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
                HeadError::BadTransferEncoding,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n",
                HeadError::BadTransferEncoding,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                HeadError::UnsupportedTransferEncoding,
                501,
            ),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::TransferEncodingInHttp10,
                400,
            ),
            ("GET / HTTP/1.1\r\n\r\n", HeadError::MissingHost, 400),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                HeadError::DuplicateHost,
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
                HeadError::BadHost,
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
                HeadError::BadHost,
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
                HeadError::BadHost,
                400,
            ),
            (
                "GET x HTTP/1.1\r\nHost: a\r\n\r\n",
                HeadError::BadTarget,
                400,
            ),
            (
                "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
                HeadError::BadTarget,
                400,
            ),
            (
                "GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
                HeadError::BadTarget,
                400,
            ),
            (
                "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n",
                HeadError::BadTarget,
                400,
            ),
            (
                "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
                HeadError::MethodNotSupported,
                501,
            ),
            (
                "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
                HeadError::Syntax("invalid header name"),
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n",
                HeadError::Syntax("invalid header name"),
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n",
                HeadError::Syntax("invalid header value"),
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n",
                HeadError::Syntax("invalid header value"),
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHo\0st: a\r\n\r\n",
                HeadError::Syntax("invalid header name"),
                400,
            ),
            (
                "GET / HTTP/1.1\r\n: a\r\n\r\n",
                HeadError::Syntax("invalid header name"),
                400,
            ),
            (
                "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
                HeadError::Syntax("unsupported HTTP version"),
                400,
            ),
            (
                "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
                HeadError::Syntax("invalid token"),
                400,
            ),
        ];
        for (raw, expected, status) in cases {
            match parse(raw) {
                Err(e) => {
                    assert_eq!(e, *expected, "{raw:?}");
                    assert_eq!(error_response(e).status(), *status, "{raw:?}");
                }
                Ok(_) => panic!("{raw:?} should be rejected with {expected:?}"),
            }
        }
    }

    #[test]
    fn partial_and_oversized_heads() {
        assert!(parse("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        assert!(parse("GET / HT").unwrap().is_none());
        assert!(parse("").unwrap().is_none());
        let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n", "a".repeat(MAX));
        assert_eq!(parse(&big).err(), Some(HeadError::TooLarge));
        let big_complete = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "a".repeat(MAX)
        );
        assert_eq!(parse(&big_complete).err(), Some(HeadError::TooLarge));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert_eq!(parse(&raw).err(), Some(HeadError::TooManyHeaders));
        assert_eq!(error_response(HeadError::TooManyHeaders).status(), 431);
    }

    #[test]
    fn body_bytes_are_not_part_of_the_head() {
        let raw = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n";
        let head = parse(raw).unwrap().unwrap();
        assert_eq!(&raw[head.head_len..], "helloGET / HTTP/1.1\r\n");
    }

    #[test]
    fn rewriting_for_the_backend() {
        // (client head, head the backend must receive)
        let cases: &[(&str, &str)] = &[
            (
                "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
                "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\nX-Secret: 1\r\nTE: trailers\r\nProxy-Connection: x\r\nX-Forwarded-Proto: https\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
            (
                "GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.2 \r\n\r\n",
                "GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2, 192.0.2.7\r\nHost: a\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
            (
                "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 005\r\n\r\n",
                "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
            (
                "POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n",
                "POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
            (
                "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: 10.0.0.1:8001\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
            (
                "PUT / HTTP/1.0\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
                "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
            (
                "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
                "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
            (
                "GET http://example.com:81 HTTP/1.1\r\nHost: ignored\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: example.com:81\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
            (
                "GET http://example.com/x?y HTTP/1.1\r\nHost: ignored\r\n\r\n",
                "GET /x?y HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
            (
                "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: k\r\n\r\n",
                "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nConnection: upgrade\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
            (
                "GET / HTTP/1.1\nHost: a\n\n",
                "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
            (
                "GET http://example.com?y=1 HTTP/1.1\r\nHost: other\r\n\r\n",
                "GET /?y=1 HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: host, x-a\r\nX-A: 1\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nConnection: expect\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
        ];
        for (client, backend) in cases {
            assert_eq!(forward(client), *backend, "for {client:?}");
        }
    }

    #[test]
    fn an_expect_listed_in_connection_expects_nothing() {
        let listed = "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nConnection: Expect\r\nContent-Length: 1\r\n\r\n";
        assert!(!parse(listed).unwrap().unwrap().expect_continue);
    }

    #[test]
    fn the_field_limit_leaves_room_for_the_rewrite() {
        let fields = |n: usize| -> String { (0..n).map(|i| format!("X-{i}: v\r\n")).collect() };
        let at_limit = format!(
            "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
            fields(MAX_REQUEST_FIELDS - 1)
        );
        let head = parse(&at_limit).unwrap().unwrap();
        let mut out = [0u8; 4096];
        let info = ForwardInfo {
            client_ip: "192.0.2.7".parse().unwrap(),
            secure: false,
            default_host: b"h",
            strip_prefix: 0,
        };
        let n = write_request_head(at_limit.as_bytes(), &head, &info, &mut out).unwrap();
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut again = httparse::Request::new(&mut slots);
        assert!(
            again.parse(&out[..n]).unwrap().is_complete(),
            "the rewrite fits the limit"
        );
        let over = format!(
            "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
            fields(MAX_REQUEST_FIELDS)
        );
        assert_eq!(parse(&over).err(), Some(HeadError::TooManyHeaders));
    }

    #[test]
    fn rewriting_reports_overflow() {
        let raw = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let head = parse(raw).unwrap().unwrap();
        let info = ForwardInfo {
            client_ip: "::1".parse().unwrap(),
            secure: false,
            default_host: b"x",
            strip_prefix: 0,
        };
        let mut small = [0u8; 20];
        assert_eq!(
            write_request_head(raw.as_bytes(), &head, &info, &mut small),
            None
        );
    }

    #[test]
    fn https_requests_are_marked_and_name_their_host() {
        let raw = "GET /x HTTP/1.1\r\nHost: site.test:8443\r\nX-Forwarded-Proto: http\r\n\r\n";
        let head = parse(raw).unwrap().unwrap();
        let mut out = [0u8; 1024];
        let info = ForwardInfo {
            client_ip: "192.0.2.7".parse().unwrap(),
            secure: true,
            default_host: b"b",
            strip_prefix: 0,
        };
        let n = write_request_head(raw.as_bytes(), &head, &info, &mut out).unwrap();
        assert_eq!(
            std::str::from_utf8(&out[..n]).unwrap(),
            "GET /x HTTP/1.1\r\nHost: site.test:8443\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: https\r\n\r\n"
        );
        let cases: &[(&str, Option<&str>)] = &[
            (raw, Some("site.test:8443")),
            (
                "GET http://abs.test/p HTTP/1.1\r\nHost: other\r\n\r\n",
                Some("abs.test"),
            ),
            ("GET / HTTP/1.0\r\n\r\n", None),
        ];
        for (raw, host) in cases {
            let head = parse(raw).unwrap().unwrap();
            let found = head
                .host(raw.as_bytes())
                .map(|h| std::str::from_utf8(h).unwrap());
            assert_eq!(found, *host, "{raw:?}");
        }
    }
}
