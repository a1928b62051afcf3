//! Response heads: parse what a backend sent, decide how its body is delimited, whether the backend
//! connection can be reused and how the body is framed for the client, then write the client's head,
//! or tell that it would be the backend's as it is (it then goes to the client as it was received).

use super::{
    ConnectionTokens, Field, Framing, HeadError, HeadWriter, HeaderSpans, MAX_HEADERS,
    MAX_RESPONSE_FIELDS, Span, TransferCodings, Version, decimal, listed_in_connection,
    merge_content_length,
};

#[derive(Clone)]
pub struct ResponseHead {
    pub head_len: usize,
    pub status: u16,
    pub reason: Span,
    pub version: Version,
    pub headers: HeaderSpans,
    /// How the body is delimited on the backend connection.
    pub framing: Framing,
    /// The head allows the backend connection to carry another request once this body is complete.
    pub reusable: bool,
    connection_lists_fields: bool,
    /// Transfer codings other than chunked (e.g. `gzip, chunked`): forwarded as they are to HTTP/1.1
    /// clients, impossible to express to HTTP/1.0 ones.
    other_codings: bool,
    /// A hop-by-hop field other than Content-Length is present: the client's head cannot be the
    /// backend's as it is (see [`head_goes_as_received`]).
    hop_by_hop: bool,
    /// How many Content-Length fields there are, and whether the one there is states the length in
    /// the form lb would write it (see [`head_goes_as_received`]).
    length_fields: u8,
    length_as_written: bool,
}

impl ResponseHead {
    pub fn is_informational(&self) -> bool {
        (100..200).contains(&self.status)
    }
}

/// Parses a response head from a backend. `request_is_head` matters because a response to HEAD never has a
/// body whatever its headers say. `Ok(None)` means more bytes are needed; a partial head that fills
/// `max_head` is an error (the backend is sending garbage or an absurd head).
pub fn parse_response(
    buf: &[u8],
    request_is_head: bool,
    max_head: usize,
) -> Result<Option<ResponseHead>, HeadError> {
    parse_response_limited(buf, request_is_head, max_head, MAX_RESPONSE_FIELDS)
}

/// [`parse_response`] with a field limit of the caller's (at most [`MAX_HEADERS`]): what a peer with
/// another limit would accept.
pub fn parse_response_limited(
    buf: &[u8],
    request_is_head: bool,
    max_head: usize,
    max_fields: usize,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut headers,
    )? {
        httparse::Status::Complete(n) if n <= max_head => n,
        httparse::Status::Complete(_) => return Err(HeadError::TooLarge),
        httparse::Status::Partial if buf.len() >= max_head => return Err(HeadError::TooLarge),
        httparse::Status::Partial => return Ok(None),
    };
    if response.headers.len() > max_fields {
        return Err(HeadError::TooManyHeaders);
    }
    let (Some(status), Some(version)) = (response.code, response.version) else {
        return Err(HeadError::Syntax("incomplete status line"));
    };
    if !(100..=999).contains(&status) {
        return Err(HeadError::Syntax("invalid status"));
    }
    let version = if version == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    let mut content_length: Option<u64> = None;
    let mut codings = TransferCodings::default();
    let mut connection = ConnectionTokens::default();
    let mut hop_by_hop = false;
    let (mut length_fields, mut length_value) = (0u8, &b""[..]);
    for h in response.headers.iter() {
        match Field::of(h.name.as_bytes()) {
            Field::ContentLength => {
                content_length = merge_content_length(content_length, h.value)?;
                length_fields = length_fields.saturating_add(1);
                length_value = h.value;
            }
            Field::TransferEncoding => {
                codings.add_field(h.value);
                hop_by_hop = true;
            }
            Field::Connection => {
                connection.add_field(h.value);
                hop_by_hop = true;
            }
            field => hop_by_hop |= field.is_hop_by_hop(),
        }
    }
    let bodiless =
        request_is_head || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = if bodiless {
        Framing::Empty
    } else if codings.present {
        // RFC 9112 6.3: chunked last means chunked (Content-Length is ignored); anything else means the
        // body runs until the backend closes.
        if codings.chunked_last && !codings.chunked_misplaced && !codings.malformed {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match content_length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    let persistent = match version {
        Version::Http11 => !connection.close,
        Version::Http10 => connection.keep_alive && !connection.close,
    };
    Ok(Some(ResponseHead {
        head_len,
        status,
        reason: phrase_span(buf, response.reason, head_len),
        version,
        headers: HeaderSpans::from_parsed(buf, response.headers, head_len)?,
        framing,
        // Content-Length alongside Transfer-Encoding is a smuggling signal, and Transfer-Encoding in
        // HTTP/1.0 is faulty framing (RFC 9112 6.1): never reuse such a connection.
        reusable: persistent
            && framing != Framing::UntilClose
            && !(codings.present && (content_length.is_some() || version == Version::Http10)),
        connection_lists_fields: connection.names_fields,
        other_codings: codings.others,
        hop_by_hop,
        length_fields,
        length_as_written: length_fields == 1
            && content_length.is_some_and(|n| is_shortest_decimal(length_value, n)),
    }))
}

/// The reason phrase of a parsed status line: the one httparse found when it is a slice of the head,
/// else looked for in the head by [`reason_span`].
fn phrase_span(buf: &[u8], parsed: Option<&str>, head_len: usize) -> Span {
    let span = match parsed.and_then(|reason| Span::within(buf, reason.as_bytes())) {
        Some(span) if !span.is_empty() => span,
        _ => reason_span(buf, head_len),
    };
    // Every test build checks the two agree, on every head any test parses (the property tests' too).
    debug_assert_eq!(span, reason_span(buf, head_len));
    span
}

/// The reason phrase of a parsed status line, found in the buffer itself. httparse cannot always be
/// asked: it returns a static `""` for an absent reason and for one holding obs-text (bytes 0x80-0xFF,
/// legal in a reason phrase), and the phrase is relayed byte for byte. The status line is the first line
/// that is not empty, `HTTP/1.x NNN` (12 bytes, single spaces: httparse is not configured to accept
/// more), then a space and the reason up to CR LF or a bare LF. Without a reason the span is empty.
fn reason_span(buf: &[u8], head_len: usize) -> Span {
    let head = &buf[..head_len.min(buf.len())];
    let line_start = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(head.len());
    let line_end = head[line_start..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(head.len(), |n| line_start + n);
    let end = if line_end > line_start && head[line_end - 1] == b'\r' {
        line_end - 1
    } else {
        line_end
    };
    let start = (line_start + 13).min(end);
    // Offsets are below the head limit, which buffers address with u32.
    Span {
        start: start as u32,
        end: end as u32,
    }
}

/// How the response body travels to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientBody {
    Empty,
    Length(u64),
    /// Chunked on both sides, chunk framing normalised.
    Chunked,
    /// Chunked from the backend, decoded for an HTTP/1.0 client and delimited by closing.
    Dechunked,
    /// Delimited by closing on both sides.
    UntilClose,
    /// After `101 Switching Protocols`: raw bytes both ways.
    Tunnel,
}

/// What to do with a response, decided once its head is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponsePlan {
    pub body: ClientBody,
    /// The client connection is closed once this response is delivered.
    pub close_client: bool,
}

/// Decides the client-side framing for a final (non-1xx) response or a `101`.
/// `client_keep_alive` is whether the client connection may persist as far as the request is concerned.
pub fn plan_response(
    head: &ResponseHead,
    client_version: Version,
    client_keep_alive: bool,
    upgrade_requested: bool,
) -> Result<ResponsePlan, HeadError> {
    if head.status == 101 {
        return if upgrade_requested {
            Ok(ResponsePlan {
                body: ClientBody::Tunnel,
                close_client: true,
            })
        } else {
            Err(HeadError::UnexpectedUpgrade)
        };
    }
    let body = match head.framing {
        Framing::Empty => ClientBody::Empty,
        Framing::Length(n) => ClientBody::Length(n),
        Framing::Chunked if client_version == Version::Http11 => ClientBody::Chunked,
        Framing::Chunked if head.other_codings => {
            return Err(HeadError::UnsupportedTransferEncoding);
        }
        Framing::Chunked => ClientBody::Dechunked,
        Framing::UntilClose => ClientBody::UntilClose,
    };
    let self_delimited = !matches!(body, ClientBody::Dechunked | ClientBody::UntilClose);
    Ok(ResponsePlan {
        body,
        close_client: !client_keep_alive || !self_delimited,
    })
}

/// Writes the head the client receives. `plan` is `None` for an interim (1xx) response, which is passed
/// on as it is minus hop-by-hop fields.
pub fn write_response_head(
    buf: &[u8],
    head: &ResponseHead,
    plan: Option<&ResponsePlan>,
    client_version: Version,
    out: &mut [u8],
) -> Option<usize> {
    write_response_head_with(buf, head, plan, client_version, b"", out)
}

/// [`write_response_head`] with `extra` (whole field lines, each ending in CRLF, such as a sticky
/// session's `Set-Cookie`) after the backend's fields.
pub fn write_response_head_with(
    buf: &[u8],
    head: &ResponseHead,
    plan: Option<&ResponsePlan>,
    client_version: Version,
    extra: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    let mut w = HeadWriter::with_source(out, buf);
    write_client_head(&mut w, buf, head, plan, client_version, extra);
    w.finish()
}

/// Whether the head the client gets is the backend's, byte for byte, so that it can be relayed from
/// where it was read rather than written anew. Told from what parsing found, by the rules
/// [`write_client_head`] follows: the status line is already the one written, every field line is
/// already in its written form and kept (no hop-by-hop field; the one Content-Length already states
/// the length as written, or a bodiless response's is kept), nothing is added (no extra fields, no
/// `Connection`), and the blank line is CRLF. Every test build checks that the writer then copies
/// the head whole.
pub fn head_goes_as_received(
    buf: &[u8],
    head: &ResponseHead,
    plan: &ResponsePlan,
    client_version: Version,
    extra: &[u8],
) -> bool {
    let fields_kept = match plan.body {
        ClientBody::Length(_) => head.length_as_written,
        ClientBody::Empty => head.length_fields == 0 || head.status != 204,
        _ => false,
    };
    let head_len = head.head_len;
    let as_received = fields_kept
        && matches!(status_line_as_is(buf, head), Some((0, _)))
        && !head.hop_by_hop
        && extra.is_empty()
        && !plan.close_client
        && client_version == Version::Http11
        && head_len >= 4
        && buf.get(head_len - 2..head_len) == Some(&b"\r\n"[..])
        && head.headers.lines_as_written(buf);
    debug_assert!(
        !as_received || writer_copies_head(buf, head, plan, client_version, extra),
        "a head said to go as received is rewritten"
    );
    as_received
}

/// The writer, given no room to write in, would copy the backend's head whole and put nothing of
/// its own.
fn writer_copies_head(
    buf: &[u8],
    head: &ResponseHead,
    plan: &ResponsePlan,
    client_version: Version,
    extra: &[u8],
) -> bool {
    let mut w = HeadWriter::with_source(&mut [], buf);
    write_client_head(&mut w, buf, head, Some(plan), client_version, extra);
    w.copies_source_prefix(head.head_len)
}

/// The client's head, written by `w`: the status line, the backend's fields less the hop-by-hop ones,
/// `extra`, the framing and `Connection` fields the plan calls for, and the blank line.
fn write_client_head(
    w: &mut HeadWriter<'_>,
    buf: &[u8],
    head: &ResponseHead,
    plan: Option<&ResponsePlan>,
    client_version: Version,
    extra: &[u8],
) {
    let tunnel = matches!(
        plan,
        Some(ResponsePlan {
            body: ClientBody::Tunnel,
            ..
        })
    );
    let length = match plan {
        Some(ResponsePlan {
            body: ClientBody::Length(n),
            ..
        }) => Some(*n),
        _ => None,
    };
    // The backend's Content-Length stays where it is when it already states the length in the form
    // lb writes; otherwise the length is written after the fields.
    let mut length_kept = false;
    match status_line_as_is(buf, head) {
        // Copied with the fields that follow it, in one run.
        Some((start, end)) => w.source_bytes(start, end),
        None => {
            w.put(b"HTTP/1.1 ");
            w.put_u64_then(u64::from(head.status), b" ");
            w.put(head.reason.get(buf));
            w.put(b"\r\n");
        }
    }
    for h in head.headers.iter(buf) {
        if w.overflowed() {
            return;
        }
        let name = h.name.get(buf);
        let keep = match Field::of(name) {
            Field::Upgrade => tunnel,
            // Chunked is relayed as chunked, so the codings the backend applied stay true.
            Field::TransferEncoding => matches!(
                plan,
                Some(ResponsePlan {
                    body: ClientBody::Chunked,
                    ..
                })
            ),
            Field::ContentLength => match length {
                Some(n) if !length_kept && is_shortest_decimal(h.value.get(buf), n) => {
                    length_kept = true;
                    true
                }
                // A bodiless response (HEAD, 304) keeps its Content-Length: it describes the
                // resource.
                _ => {
                    head.framing == Framing::Empty && !head.is_informational() && head.status != 204
                }
            },
            field => {
                !(field.is_hop_by_hop()
                    || head.connection_lists_fields
                        && listed_in_connection(buf, &head.headers, name))
            }
        };
        if keep {
            w.field(h);
        }
    }
    if !extra.is_empty() {
        w.put(extra);
    }
    if let Some(plan) = plan {
        if let (Some(n), false) = (length, length_kept) {
            w.put(b"Content-Length: ");
            w.put_u64_then(n, b"\r\n");
        }
        if tunnel {
            w.put(b"Connection: upgrade\r\n");
        } else if plan.close_client {
            w.put(b"Connection: close\r\n");
        } else if client_version == Version::Http10 {
            w.put(b"Connection: keep-alive\r\n");
        }
    }
    // The blank line, copied when the backend's is already CRLF (the head's last two bytes are then
    // exactly that line).
    let head_len = head.head_len;
    match head_len.checked_sub(2) {
        Some(at) if buf.get(at..head_len) == Some(&b"\r\n"[..]) => w.source_bytes(at, head_len),
        _ => w.put(b"\r\n"),
    }
}

/// `value` is `n` in decimal with no leading zero: what lb would write for it.
fn is_shortest_decimal(value: &[u8], n: u64) -> bool {
    let leading_zero = value.len() > 1 && value.first() == Some(&b'0');
    !leading_zero && decimal(value) == Some(n)
}

/// Where the status line is when the backend's is already the line the client gets (`HTTP/1.1`, the
/// status, single spaces, the reason phrase, CRLF), which is then copied as it is; `None` when it is
/// written anew.
fn status_line_as_is(buf: &[u8], head: &ResponseHead) -> Option<(usize, usize)> {
    let reason = head.reason;
    let start = (reason.start as usize).checked_sub(13)?;
    let end = reason.end as usize + 2;
    let line = buf.get(start..end)?;
    // httparse took `HTTP/1.x`, one space, three digits and one space before the reason, so a line
    // starting `HTTP/1.1 ` 13 bytes before the reason is the status line, its digits the status. (A
    // missing reason is placed 12 bytes into the line, and 13 bytes before it is the CR or LF
    // ending an empty line before the head, or nothing.) Every test build checks the digits.
    let as_is = line.first_chunk::<9>() == Some(b"HTTP/1.1 ") && line.ends_with(b"\r\n");
    debug_assert!(
        !as_is || line[9..13] == *format!("{:03} ", head.status).as_bytes(),
        "a status line copied as it is has other digits than the status"
    );
    as_is.then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 8192;

    /// A head goes as received exactly when the writer would copy it whole: where it is said to,
    /// the written head is the backend's byte for byte; where it is not, the table says why, and a
    /// Content-Length not already in its written form (or a second one) is written after the fields.
    #[test]
    fn heads_go_as_received_only_when_the_writer_would_copy_them() {
        // (raw head, request was HEAD, client HTTP/1.1, extra, goes as received, head written)
        let cases: &[(&str, bool, bool, &str, bool, &str)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n",
                false,
                true,
                "",
                true,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n",
            ),
            // The length first: kept in its place.
            (
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nServer: x\r\n\r\n",
                false,
                true,
                "",
                true,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nServer: x\r\n\r\n",
            ),
            // HEAD and 304 keep the Content-Length that describes the resource.
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                true,
                true,
                "",
                true,
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\n\r\n",
                false,
                true,
                "",
                true,
                "HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\n\r\n",
            ),
            // Status lines: an empty reason is kept as it is; a missing one gets its space.
            (
                "HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\n",
                false,
                true,
                "",
                true,
                "HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\n",
            ),
            (
                "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\n",
                false,
                true,
                "",
                false,
                "HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\n",
            ),
            // After a leading empty line, a missing reason is found at byte 13 all the same.
            (
                "\nHTTP/1.1 200\r\nContent-Length: 2\r\n\r\n",
                false,
                true,
                "",
                false,
                "HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\n",
            ),
            (
                "\nHTTP/1.1 204\r\n\r\n",
                false,
                true,
                "",
                false,
                "HTTP/1.1 204 \r\n\r\n",
            ),
            // The backend's spelling of a Content-Length kept in place stays.
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n",
                false,
                true,
                "",
                true,
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n",
            ),
            (
                "HTTP/1.1 299 Ça va\r\nContent-Length: 2\r\n\r\n",
                false,
                true,
                "",
                true,
                "HTTP/1.1 299 Ça va\r\nContent-Length: 2\r\n\r\n",
            ),
            // A 204's Content-Length is dropped.
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
                false,
                true,
                "",
                false,
                "HTTP/1.1 204 No Content\r\n\r\n",
            ),
            // A length not in its shortest form, or stated twice: written anew, after the fields.
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 013\r\nA: b\r\n\r\n",
                false,
                true,
                "",
                false,
                "HTTP/1.1 200 OK\r\nA: b\r\nContent-Length: 13\r\n\r\n",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nA: b\r\nContent-Length: 2\r\n\r\n",
                false,
                true,
                "",
                false,
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nA: b\r\n\r\n",
            ),
            // Hop-by-hop fields are dropped.
            (
                "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n",
                false,
                true,
                "",
                false,
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
            ),
            (
                "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\n",
                false,
                true,
                "",
                false,
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
            ),
            // Lines not in their written form.
            (
                "HTTP/1.1 200 OK\r\nA:b\r\nContent-Length: 2\r\n\r\n",
                false,
                true,
                "",
                false,
                "HTTP/1.1 200 OK\r\nA: b\r\nContent-Length: 2\r\n\r\n",
            ),
            (
                "HTTP/1.1 200 OK\nContent-Length: 2\n\n",
                false,
                true,
                "",
                false,
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\n",
                false,
                true,
                "",
                false,
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
                false,
                true,
                "",
                false,
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
            ),
            (
                "\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
                false,
                true,
                "",
                false,
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
            ),
            // Something added: extra fields, or a Connection for an HTTP/1.0 client.
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
                false,
                true,
                "Set-Cookie: s=1\r\n",
                false,
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: s=1\r\n\r\n",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
                false,
                false,
                "",
                false,
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n",
            ),
            // Chunked and close-delimited bodies are never relayed with the head as it is.
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                true,
                "",
                false,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            (
                "HTTP/1.1 200 OK\r\nA: b\r\n\r\n",
                false,
                true,
                "",
                false,
                "HTTP/1.1 200 OK\r\nA: b\r\nConnection: close\r\n\r\n",
            ),
        ];
        for &(raw, is_head, client_11, extra, as_received, written) in cases {
            let buf = raw.as_bytes();
            let head = parse_response(buf, is_head, MAX).unwrap().unwrap();
            let version = if client_11 {
                Version::Http11
            } else {
                Version::Http10
            };
            let plan = plan_response(&head, version, true, false).unwrap();
            let extra = extra.as_bytes();
            assert_eq!(
                head_goes_as_received(buf, &head, &plan, version, extra),
                as_received,
                "{raw:?}"
            );
            let mut out = [0u8; 512];
            let n = write_response_head_with(buf, &head, Some(&plan), version, extra, &mut out)
                .unwrap();
            assert_eq!(std::str::from_utf8(&out[..n]).unwrap(), written, "{raw:?}");
            if as_received {
                assert_eq!(&out[..n], &buf[..head.head_len], "{raw:?}");
            }
            assert_eq!(
                writer_copies_head(buf, &head, &plan, version, extra),
                out[..n] == buf[..head.head_len],
                "{raw:?}"
            );
        }
    }

    #[test]
    fn framing_and_reuse() {
        // (raw head, request was HEAD, framing, reusable)
        let cases: &[(&str, bool, Framing, bool)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                false,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                true,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false,
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Chunked,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                false,
                Framing::UntilClose,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", false, Framing::UntilClose, false),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
                false,
                Framing::Length(5),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Length(5),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
                false,
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                Framing::Empty,
                true,
            ),
            ("HTTP/1.1 100 Continue\r\n\r\n", false, Framing::Empty, true),
            (
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                Framing::Chunked,
                false,
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                false,
                Framing::Empty,
                true,
            ),
        ];
        for (raw, is_head, framing, reusable) in cases {
            let head = parse_response(raw.as_bytes(), *is_head, MAX)
                .unwrap()
                .unwrap();
            assert_eq!(head.framing, *framing, "{raw:?}");
            assert_eq!(head.reusable, *reusable, "{raw:?}");
            assert_eq!(head.head_len, raw.len());
        }
    }

    #[test]
    fn reason_phrases_are_found_in_the_buffer() {
        let long_reason = "r".repeat(4000);
        let long = format!("HTTP/1.1 200 {long_reason}\r\n\r\n");
        // (raw head, reason as relayed)
        let cases: &[(&[u8], &[u8])] = &[
            (b"HTTP/1.1 200 OK\r\n\r\n", b"OK"),
            (b"HTTP/1.1 200\r\n\r\n", b""),
            (b"HTTP/1.1 200 \r\n\r\n", b""),
            (b"HTTP/1.1 200\n\n", b""),
            (b"HTTP/1.1 200 \xc3\x87a va\r\n\r\n", b"\xc3\x87a va"),
            (b"HTTP/1.1 404 Not\tFound \r\n\r\n", b"Not\tFound "),
            (b"HTTP/1.1 200 OK\nServer: x\n\n", b"OK"),
            (b"\r\n\nHTTP/1.1 204 No Content\r\n\r\n", b"No Content"),
            (b"HTTP/1.0 200 \xff\r\nContent-Length: 0\r\n\r\n", b"\xff"),
            (long.as_bytes(), long_reason.as_bytes()),
        ];
        for (raw, reason) in cases {
            let head = parse_response(raw, false, MAX)
                .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(raw)))
                .unwrap();
            assert_eq!(
                head.reason.get(raw),
                *reason,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
            assert!(head.reason.end as usize <= head.head_len);
            // httparse's phrase, where it gives one, is the one the head's own bytes hold.
            assert_eq!(head.reason, reason_span(raw, head.head_len), "{raw:?}");
            let mut out = vec![0u8; 8192];
            let n = write_response_head(raw, &head, None, Version::Http11, &mut out).unwrap();
            let expected = [
                b"HTTP/1.1 ".as_slice(),
                &raw[raw.len() - raw.trim_ascii_start().len()..][9..12],
                b" ",
                reason,
                b"\r\n",
            ]
            .concat();
            assert!(
                out[..n].starts_with(&expected),
                "{:?}",
                String::from_utf8_lossy(&out[..n])
            );
        }
    }

    #[test]
    fn garbage_is_rejected() {
        let cases: &[&str] = &[
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 099 Low\r\n\r\n",
            "HTTZ/1.1 200 OK\r\n\r\n",
            "<html>hello</html>\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
        ];
        for raw in cases {
            assert!(
                parse_response(raw.as_bytes(), false, MAX).is_err(),
                "{raw:?}"
            );
        }
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\n", false, MAX)
                .unwrap()
                .is_none()
        );
        let big = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(100));
        assert_eq!(
            parse_response(big.as_bytes(), false, 64).err(),
            Some(HeadError::TooLarge)
        );
    }

    #[test]
    fn plans() {
        let parse = |raw: &str| parse_response(raw.as_bytes(), false, MAX).unwrap().unwrap();
        let cl = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        let chunked = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        let eof = parse("HTTP/1.1 200 OK\r\n\r\n");
        let switching = parse("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
        let v11 = Version::Http11;
        let v10 = Version::Http10;
        // (head, client version, client keep-alive, upgrade requested, body, close client)
        let cases: Vec<(&ResponseHead, Version, bool, bool, ClientBody, bool)> = vec![
            (&cl, v11, true, false, ClientBody::Length(5), false),
            (&cl, v11, false, false, ClientBody::Length(5), true),
            (&cl, v10, true, false, ClientBody::Length(5), false),
            (&chunked, v11, true, false, ClientBody::Chunked, false),
            (&chunked, v10, true, false, ClientBody::Dechunked, true),
            (&eof, v11, true, false, ClientBody::UntilClose, true),
            (&switching, v11, true, true, ClientBody::Tunnel, true),
        ];
        for (head, version, keep_alive, upgrade, body, close) in cases {
            let plan = plan_response(head, version, keep_alive, upgrade).unwrap();
            assert_eq!(
                (plan.body, plan.close_client),
                (body, close),
                "status {} {:?}",
                head.status,
                head.framing
            );
        }
        assert_eq!(
            plan_response(&switching, v11, true, false),
            Err(HeadError::UnexpectedUpgrade)
        );
        let gzip = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(
            plan_response(&gzip, v11, true, false).unwrap().body,
            ClientBody::Chunked
        );
        assert_eq!(
            plan_response(&gzip, v10, true, false),
            Err(HeadError::UnsupportedTransferEncoding)
        );
    }

    fn rewrite(
        raw: &str,
        is_head: bool,
        client_version: Version,
        client_keep_alive: bool,
        upgrade: bool,
    ) -> String {
        let head = parse_response(raw.as_bytes(), is_head, MAX)
            .unwrap()
            .unwrap();
        let plan = if head.is_informational() && head.status != 101 {
            None
        } else {
            Some(plan_response(&head, client_version, client_keep_alive, upgrade).unwrap())
        };
        let mut out = [0u8; 2048];
        let n = write_response_head(
            raw.as_bytes(),
            &head,
            plan.as_ref(),
            client_version,
            &mut out,
        )
        .unwrap();
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    /// A status line is copied as it is only when it is the line the rewrite would write; whichever
    /// way it goes, the client gets that line.
    #[test]
    fn status_lines_copied_as_they_are() {
        // (backend head, copied as it is, the status line the client gets)
        let cases: &[(&str, bool, &str)] = &[
            ("HTTP/1.1 200 OK\r\n", true, "HTTP/1.1 200 OK\r\n"),
            (
                "HTTP/1.1 404 Not Found\r\n",
                true,
                "HTTP/1.1 404 Not Found\r\n",
            ),
            ("HTTP/1.1 200 \r\n", true, "HTTP/1.1 200 \r\n"),
            ("HTTP/1.1 200\r\n", false, "HTTP/1.1 200 \r\n"),
            ("HTTP/1.0 200 OK\r\n", false, "HTTP/1.1 200 OK\r\n"),
            ("HTTP/1.1 200 OK\n", false, "HTTP/1.1 200 OK\r\n"),
            (
                "\r\nHTTP/1.1 204 No Content\r\n",
                true,
                "HTTP/1.1 204 No Content\r\n",
            ),
            ("\nHTTP/1.1 200\r\n", false, "HTTP/1.1 200 \r\n"),
            (
                "HTTP/1.1 599 Odd: reason \t\r\n",
                true,
                "HTTP/1.1 599 Odd: reason \t\r\n",
            ),
        ];
        for &(line, as_is, expected) in cases {
            let raw = format!("{line}Content-Length: 0\r\n\r\n");
            let head = parse_response(raw.as_bytes(), false, MAX).unwrap().unwrap();
            assert_eq!(
                status_line_as_is(raw.as_bytes(), &head).is_some(),
                as_is,
                "{line:?}"
            );
            let client = rewrite(&raw, false, Version::Http11, true, false);
            assert!(client.starts_with(expected), "{line:?}: {client:?}");
        }
    }

    #[test]
    fn rewriting_for_the_client() {
        let v11 = Version::Http11;
        let v10 = Version::Http10;
        // (backend head, request was HEAD, client version, keep-alive, upgrade requested, client head)
        let cases: &[(&str, bool, Version, bool, bool, &str)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n",
                false,
                v11,
                true,
                false,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, X-Private\r\nKeep-Alive: timeout=5\r\nX-Private: 1\r\nProxy-Authenticate: Basic\r\n\r\n",
                false,
                v11,
                true,
                false,
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                false,
                v11,
                false,
                false,
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n",
                false,
                v10,
                true,
                false,
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                v11,
                true,
                false,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                v11,
                true,
                false,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                v10,
                true,
                false,
                "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 10\r\n\r\n",
                false,
                v11,
                true,
                false,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            (
                "HTTP/1.1 200 OK\r\nServer: x\r\n\r\n",
                false,
                v11,
                true,
                false,
                "HTTP/1.1 200 OK\r\nServer: x\r\nConnection: close\r\n\r\n",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
                true,
                v11,
                true,
                false,
                "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 99\r\n\r\n",
                false,
                v11,
                true,
                false,
                "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 99\r\n\r\n",
            ),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
                false,
                v11,
                true,
                false,
                "HTTP/1.1 204 No Content\r\n\r\n",
            ),
            (
                "HTTP/1.1 100 Continue\r\n\r\n",
                false,
                v11,
                true,
                false,
                "HTTP/1.1 100 Continue\r\n\r\n",
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: a\r\n\r\n",
                false,
                v11,
                true,
                true,
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: a\r\nConnection: upgrade\r\n\r\n",
            ),
        ];
        for (backend, is_head, version, keep_alive, upgrade, client) in cases {
            assert_eq!(
                rewrite(backend, *is_head, *version, *keep_alive, *upgrade),
                *client,
                "for {backend:?}"
            );
        }
    }
}
