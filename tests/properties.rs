//! Property tests of the pure HTTP code (request heads, response heads, the chunked decoder).
//!
//! Inputs: arbitrary bytes; HTTP-looking byte soup; valid heads (HTTP/1.0 and 1.1, origin-, absolute- and
//! asterisk-form targets, leading empty lines, bare-LF line ends, odd status lines: no reason, empty or
//! obs-text reasons, 2- and 4-digit codes) and those heads mutated: inserted or replaced CR, LF, NUL,
//! 0x80-0xFF, spaces, tabs and colons, deleted bytes, duplicated framing fields (Content-Length,
//! Transfer-Encoding, Host, Connection, Expect, Upgrade), truncation anywhere. Chunked bodies with random
//! chunk sizes, size-line styles (leading zeros, upper case, whitespace, extensions) and trailers, fed in
//! random pieces, and the same bodies mutated.
//!
//! Properties:
//! - nothing panics, whatever the input;
//! - every span of an accepted head lies inside its buffer and inside the head (`start <= end <=
//!   head_len <= buf.len()`): method, target, authority, reason, every header name and value; and
//!   every strict prefix of an accepted head is "need more bytes", never an error or another head;
//! - an accepted request rewritten for the backend (`write_request_head`) parses again with the same
//!   method, origin-form target, framing, upgrade and `Expect` facts, one `Host` (the client's, the
//!   absolute-form authority or the default) and one `X-Forwarded-For` ending with the client;
//! - an accepted response rewritten for the client (`write_response_head`, for every plan
//!   `plan_response` gives: HTTP/1.1 and 1.0 clients, keep-alive or not, the request HEAD or not) parses
//!   again with the same status and reason bytes and the framing the plan promised; interim heads too;
//! - the chunked decoder's output is never longer than what it consumed, feeding in pieces gives what
//!   feeding whole gives, a body chunked in any valid style decodes to itself and stops exactly at its
//!   end, and the re-encoded form is canonical (independent of the input style) and decodes to the body;
//! - the earlier ones: a valid request split anywhere parses like the whole, truncated chunked bodies
//!   never complete, request framing decisions match a small reference model of RFC 9112 6.
//!
//! Failures found this way are kept at the end of the file as regression cases.

use lb::http::body::{ChunkedDecoder, Relay, Step, relay_all};
use lb::http::request::{
    ForwardInfo, RequestHead, parse_request, parse_request_limited, write_request_head,
};
use lb::http::response::{
    ClientBody, ResponseHead, ResponsePlan, head_goes_as_received, parse_response,
    parse_response_limited, plan_response, write_response_head,
};
use lb::http::{Framing, HeadError, HeaderSpans, MAX_HEADERS, Span, Version, trim_ows};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::TestCaseError;
use std::fmt;
use std::net::IpAddr;

const MAX_HEAD: usize = 16 * 1024;

fn config() -> ProptestConfig {
    cases(512)
}

fn cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Bytes that print as an escaped byte string when a case fails, instead of a list of numbers.
#[derive(Clone)]
struct Wire(Vec<u8>);

impl fmt::Debug for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Bytes that look enough like HTTP to get deep into the parsers.
fn http_ish() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop::sample::select(vec![
        &b"GET / HTTP/1.1\r\n"[..],
        b"POST /x HTTP/1.0\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"Host: a\r\n",
        b"Content-Length: 5\r\n",
        b"Content-Length: 0\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Connection: close\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b" ",
        b":",
        b"5\r\nhello\r\n",
        b"0\r\n\r\n",
        b"\0",
        b"\x7f",
    ]);
    prop::collection::vec(
        prop_oneof![
            pieces.prop_map(|p| p.to_vec()),
            prop::collection::vec(any::<u8>(), 0..8)
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

// ---------------------------------------------------------------------------------------------------
// Valid heads and their mutations
// ---------------------------------------------------------------------------------------------------

fn eol() -> impl Strategy<Value = &'static str> {
    prop_oneof![3 => Just("\r\n"), 1 => Just("\n")]
}

/// Bytes a field value may hold: HTAB, visible ASCII, space, obs-text.
fn value_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![8 => 0x20u8..=0x7e, 1 => Just(b'\t'), 1 => 0x80u8..=0xff],
        0..max,
    )
}

/// Framing and connection-management fields, the ones whose duplication or combination matters.
const TOUCHY_FIELDS: &[&str] = &[
    "Content-Length: 5",
    "Content-Length: 0",
    "Content-Length: 6",
    "Content-Length: 5, 5",
    "Content-Length: 007",
    "content-length:5",
    "Transfer-Encoding: chunked",
    "Transfer-Encoding: gzip",
    "Transfer-Encoding: gzip, chunked",
    "Transfer-Encoding: chunked, chunked",
    "transfer-encoding:CHUNKED",
    "Transfer_Encoding: chunked",
    "Host: a",
    "Host: b.test:8080",
    "Host: [::1]:80",
    "Host: ",
    "Connection: close",
    "Connection: keep-alive",
    "Connection: upgrade",
    "Connection: Upgrade, keep-alive",
    "Connection: x-private",
    "Connection: host",
    "Connection: expect",
    "Connection: content-length",
    "Connection: transfer-encoding",
    "X-Private: 1",
    "Upgrade: websocket",
    "Expect: 100-continue",
    "X-Forwarded-For: 10.0.0.1",
    "X-Forwarded-Proto: https",
    "Keep-Alive: timeout=5",
];

fn touchy_field() -> impl Strategy<Value = Vec<u8>> {
    (select(TOUCHY_FIELDS), eol()).prop_map(|(f, e)| [f, e].concat().into_bytes())
}

/// `X-…: value` with arbitrary legal value bytes, or one of the touchy fields.
fn field_line() -> impl Strategy<Value = Vec<u8>> {
    let plain = ("X-[A-Za-z0-9_-]{1,8}", value_bytes(24), eol())
        .prop_map(|(name, value, eol)| [name.as_bytes(), b": ", &value, eol.as_bytes()].concat());
    prop_oneof![4 => plain, 1 => touchy_field()]
}

fn request_target() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "/[a-zA-Z0-9/._%~-]{0,16}(\\?[a-z0-9=&/?%]{0,8})?",
        2 => "(http|HTTP|https)://[a-z0-9.-]{1,10}(:[0-9]{1,5})?(/[a-z0-9/._-]{0,10})?(\\?[a-z0-9=&]{0,6})?",
        1 => Just("*".to_string()),
    ]
}

/// A request head that always parses: a generated method, origin-form target and extra fields.
fn simple_request() -> impl Strategy<Value = String> {
    let method = prop::sample::select(vec![
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH",
    ]);
    let target = "/[a-z0-9/._-]{0,20}(\\?[a-z0-9=&]{0,10})?";
    let field =
        ("X-[A-Za-z]{1,10}", "[ -~]{0,30}").prop_map(|(n, v)| format!("{n}: {}\r\n", v.trim()));
    let framing = prop_oneof![
        Just(String::new()),
        (0u32..100_000).prop_map(|n| format!("Content-Length: {n}\r\n")),
        Just("Transfer-Encoding: chunked\r\n".to_string()),
    ];
    (method, target, prop::collection::vec(field, 0..6), framing).prop_map(
        |(m, t, fields, framing)| {
            format!(
                "{m} {t} HTTP/1.1\r\nHost: example.test\r\n{}{framing}\r\n",
                fields.concat()
            )
        },
    )
}

/// `Connection`, `Upgrade` and `Expect` as clients send them, each present or not.
fn connection_fields() -> impl Strategy<Value = String> {
    let connection = prop::option::of(select(vec![
        "close",
        "keep-alive",
        "Keep-Alive",
        "upgrade",
        "Upgrade, keep-alive",
        "x-private",
        "close, x-private",
    ]));
    let upgrade = prop::option::weighted(0.4, select(vec!["websocket", "h2c"]));
    let expect = prop::option::weighted(0.3, select(vec!["100-continue", "100-Continue"]));
    (connection, upgrade, expect, any::<bool>()).prop_map(
        |(connection, upgrade, expect, private)| {
            let mut fields = String::new();
            if let Some(tokens) = connection {
                fields.push_str(&format!("Connection: {tokens}\n"));
            }
            if let Some(protocol) = upgrade {
                fields.push_str(&format!("Upgrade: {protocol}\n"));
            }
            if let Some(expectation) = expect {
                fields.push_str(&format!("Expect: {expectation}\n"));
            }
            if private {
                fields.push_str("X-Private: secret\n");
            }
            fields
        },
    )
}

/// A request head as a client might send it, valid more often than not: the method, target, version, line ends,
/// connection management and a few other fields vary; HTTP/1.1 heads nearly always carry `Host`.
fn client_head() -> impl Strategy<Value = Vec<u8>> {
    let method = select(vec![
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "X-CUSTOM",
    ]);
    let lead = select(vec!["", "", "", "\r\n", "\n"]);
    let version = select(vec!["1.0", "1.1", "1.1"]);
    let host = prop::option::weighted(0.95, "[a-z0-9.-]{0,12}(:[0-9]{1,5})?");
    let framing = prop_oneof![
        Just(String::new()),
        (0u32..100_000).prop_map(|n| format!("Content-Length: {n}\n")),
        Just("Transfer-Encoding: chunked\n".to_string()),
    ];
    let fields = prop::collection::vec(field_line(), 0..4);
    (
        (lead, method, request_target(), version),
        (host, framing, connection_fields()),
        fields,
        eol(),
    )
        .prop_map(
            |((lead, method, target, version), (host, framing, connection), fields, eol)| {
                let mut head = format!("{lead}{method} {target} HTTP/{version}\n");
                if let Some(host) = host.filter(|_| version == "1.1") {
                    head.push_str(&format!("Host: {host}\n"));
                }
                if version == "1.0" && framing.starts_with("Transfer-Encoding") {
                    // Refused in HTTP/1.0; the mutations add it back often enough.
                } else {
                    head.push_str(&framing);
                }
                head.push_str(&connection);
                let mut head = head.replace('\n', eol).into_bytes();
                head.extend(fields.concat());
                head.extend_from_slice(eol.as_bytes());
                head
            },
        )
}

/// A response head as a backend might send it, with the odd status lines backends send: no reason (not even the space), an empty
/// reason, obs-text or UTF-8 reasons, tabs, 2- and 4-digit or out-of-range codes, leading empty lines.
fn backend_head() -> impl Strategy<Value = Vec<u8>> {
    let lead = select(vec!["", "", "", "\r\n", "\n", "\r\n\r\n"]);
    let version = select(vec!["HTTP/1.0", "HTTP/1.1", "HTTP/1.1"]);
    let status = prop_oneof![
        6 => select(vec!["100", "101", "103", "200", "204", "206", "304", "404", "500", "999"])
            .prop_map(str::to_string),
        3 => (100u16..1000).prop_map(|n| n.to_string()),
        1 => select(vec!["20", "2000", "099", "000", "2x0", ""]).prop_map(str::to_string),
    ];
    let reason: BoxedStrategy<Option<Vec<u8>>> = prop_oneof![
        2 => Just(None),
        1 => Just(Some(Vec::new())),
        3 => select(vec!["OK", "Not Found", "No Content", " OK", "OK ", "Not\tFound"])
            .prop_map(|r| Some(r.as_bytes().to_vec())),
        2 => Just(Some(b"\x80\xff".to_vec())),
        1 => Just(Some("Ça va".as_bytes().to_vec())),
        2 => value_bytes(16).prop_map(Some),
    ]
    .boxed();
    let framing = select(vec![
        "",
        "Content-Length: 5",
        "Content-Length: 0",
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: gzip, chunked",
        "Transfer-Encoding: gzip",
    ]);
    let fields = prop::collection::vec(field_line(), 0..6);
    ((lead, version, status, reason), framing, fields, eol()).prop_map(
        |((lead, version, status, reason), framing, fields, eol)| {
            let mut head = format!("{lead}{version} {status}").into_bytes();
            if let Some(reason) = reason {
                head.push(b' ');
                head.extend(reason);
            }
            head.extend_from_slice(eol.as_bytes());
            if !framing.is_empty() {
                head.extend_from_slice(format!("{framing}{eol}").as_bytes());
            }
            head.extend(fields.concat());
            head.extend_from_slice(eol.as_bytes());
            head
        },
    )
}

/// One edit of a message.
#[derive(Debug, Clone)]
enum Mutation {
    Insert(Index, u8),
    Replace(Index, u8),
    Delete(Index),
    /// A whole field line inserted at the start of some line (a duplicated or conflicting field).
    Field(Index, Wire),
    Truncate(Index),
}

/// The bytes that break HTTP framing when they appear in the wrong place, plus any byte at all.
fn odd_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(b'\r'),
        Just(b'\n'),
        Just(0u8),
        0x80u8..=0xff,
        Just(b' '),
        Just(b'\t'),
        Just(b':'),
        Just(b','),
        Just(b';'),
        any::<u8>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), odd_byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<Index>(), odd_byte()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        1 => any::<Index>().prop_map(Mutation::Delete),
        3 => (any::<Index>(), touchy_field()).prop_map(|(i, f)| Mutation::Field(i, Wire(f))),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn apply(buf: &mut Vec<u8>, mutation: &Mutation) {
    match mutation {
        Mutation::Insert(i, b) => buf.insert(i.index(buf.len() + 1), *b),
        Mutation::Replace(i, b) if !buf.is_empty() => {
            let at = i.index(buf.len());
            buf[at] = *b;
        }
        Mutation::Delete(i) if !buf.is_empty() => {
            buf.remove(i.index(buf.len()));
        }
        Mutation::Field(i, line) => {
            let line_starts: Vec<usize> = (1..buf.len()).filter(|&p| buf[p - 1] == b'\n').collect();
            let at = if line_starts.is_empty() {
                buf.len()
            } else {
                line_starts[i.index(line_starts.len())]
            };
            buf.splice(at..at, line.0.iter().copied());
        }
        Mutation::Truncate(i) => buf.truncate(i.index(buf.len() + 1)),
        Mutation::Replace(..) | Mutation::Delete(_) => {}
    }
}

/// `base`, then up to three mutations.
fn mutated(base: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Wire> {
    (base, prop::collection::vec(mutation(), 0..4)).prop_map(|(mut bytes, mutations)| {
        for m in &mutations {
            apply(&mut bytes, m);
        }
        Wire(bytes)
    })
}

/// What may follow a head in the buffer: nothing, a body, the next pipelined message.
fn tail() -> impl Strategy<Value = &'static [u8]> {
    select(vec![
        &b""[..],
        b"",
        b"hello",
        b"5\r\nhello\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"\r\n",
    ])
}

/// Every kind of input a head parser should survive: soup, a head, a mutated head, each perhaps
/// followed by more bytes.
fn any_head_input<S: Strategy<Value = Vec<u8>>>(head: fn() -> S) -> impl Strategy<Value = Wire> {
    let input = prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(Wire),
        1 => http_ish().prop_map(Wire),
        2 => head().prop_map(Wire),
        6 => mutated(head()),
    ];
    (input, tail()).prop_map(|(Wire(mut bytes), tail)| {
        bytes.extend_from_slice(tail);
        Wire(bytes)
    })
}

// ---------------------------------------------------------------------------------------------------
// Checks on accepted heads
// ---------------------------------------------------------------------------------------------------

fn spans_inside(spans: &[(&str, Span)], head_len: usize, buf: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(
        head_len <= buf.len(),
        "head_len {} beyond the buffer of {}",
        head_len,
        buf.len()
    );
    for (what, span) in spans {
        prop_assert!(
            span.start <= span.end && span.end as usize <= head_len,
            "{} {:?} outside the head of {} bytes in {}",
            what,
            span,
            head_len,
            show(buf)
        );
    }
    Ok(())
}

fn header_spans(buf: &[u8], headers: &HeaderSpans, spans: &mut Vec<(&str, Span)>) {
    for h in headers.iter(buf) {
        spans.push(("header name", h.name));
        spans.push(("header value", h.value));
    }
}

/// Where the spans sit, checked without lb's help: fields in order, each name followed by a colon before
/// its value, and nothing but line ends before the start line.
fn layout_holds(buf: &[u8], headers: &HeaderSpans, start: usize) -> Result<(), TestCaseError> {
    prop_assert!(
        buf[..start].iter().all(|&b| b == b'\r' || b == b'\n'),
        "start line at {} in {}",
        start,
        show(buf)
    );
    let mut previous = start;
    for h in headers.iter(buf) {
        let (name, value) = (h.name.start as usize, h.value.start as usize);
        prop_assert!(
            previous < name && !h.name.is_empty() && h.name.end < h.value.start,
            "field {:?} out of order in {}",
            h,
            show(buf)
        );
        prop_assert_eq!(buf.get(h.name.end as usize), Some(&b':'), "{}", show(buf));
        prop_assert!(buf[name - 1] == b'\n' && value > name, "{}", show(buf));
        previous = h.value.end as usize;
    }
    Ok(())
}

fn request_spans_inside(buf: &[u8], head: &RequestHead) -> Result<(), TestCaseError> {
    let mut spans = vec![("method", head.method), ("target", head.target)];
    if let Some(authority) = head.authority {
        spans.push(("authority", authority));
    }
    header_spans(buf, &head.headers, &mut spans);
    spans_inside(&spans, head.head_len, buf)?;
    // `method SP target SP HTTP/1.x`, the target possibly `scheme://authority` then the path.
    let (method, target) = (head.method, head.target);
    prop_assert_eq!(buf.get(method.end as usize), Some(&b' '), "{}", show(buf));
    prop_assert!(
        buf[target.end as usize..].starts_with(b" HTTP/1."),
        "{}",
        show(buf)
    );
    match head.authority {
        Some(authority) => {
            prop_assert!(authority.end == target.start && authority.start > method.end);
            prop_assert!(
                buf[..authority.start as usize].ends_with(b"://"),
                "{}",
                show(buf)
            );
        }
        None => prop_assert_eq!(target.start, method.end + 1, "{}", show(buf)),
    }
    layout_holds(buf, &head.headers, method.start as usize)
}

fn response_spans_inside(buf: &[u8], head: &ResponseHead) -> Result<(), TestCaseError> {
    let mut spans = vec![("reason", head.reason)];
    header_spans(buf, &head.headers, &mut spans);
    spans_inside(&spans, head.head_len, buf)?;
    // `HTTP/1.x NNN SP reason` up to CR LF or LF, or `HTTP/1.x NNN` and the line end.
    let reason = head.reason.get(buf);
    let after = &buf[head.reason.end as usize..];
    prop_assert!(!reason.contains(&b'\r') && !reason.contains(&b'\n'));
    prop_assert!(
        after.starts_with(b"\r\n") || after.starts_with(b"\n"),
        "{}",
        show(buf)
    );
    let before = &buf[..head.reason.start as usize];
    let status = format!(" {} ", head.status);
    let line_start = if before.ends_with(status.as_bytes()) {
        before.len().checked_sub(13)
    } else {
        // Only a reason-less line may end right after the code.
        prop_assert!(reason.is_empty() && before.ends_with(status.trim_end().as_bytes()));
        before.len().checked_sub(12)
    };
    let line_start = line_start.unwrap_or(usize::MAX);
    prop_assert!(
        buf.get(line_start..)
            .is_some_and(|line| line.starts_with(b"HTTP/1.")),
        "reason {:?} is not after `HTTP/1.x {}` in {}",
        head.reason,
        head.status,
        show(buf)
    );
    layout_holds(buf, &head.headers, line_start)
}

/// The values of every field called `name`, in order.
fn field_values<'a>(buf: &'a [u8], headers: &HeaderSpans, name: &[u8]) -> Vec<&'a [u8]> {
    headers
        .iter(buf)
        .filter(|h| h.name.get(buf).eq_ignore_ascii_case(name))
        .map(|h| h.value.get(buf))
        .collect()
}

fn describe<T>(result: &Result<Option<T>, HeadError>) -> String {
    match result {
        Ok(Some(_)) => "a head".to_string(),
        Ok(None) => "incomplete".to_string(),
        Err(e) => format!("an error: {e}"),
    }
}

/// A head that is accepted whole must look incomplete at every shorter length: whether a head parses
/// cannot depend on how TCP cut it.
fn prefixes_are_incomplete<T>(
    buf: &[u8],
    head_len: usize,
    parse: impl Fn(&[u8]) -> Result<Option<T>, HeadError>,
) -> Result<(), TestCaseError> {
    for cut in 0..head_len {
        let result = parse(&buf[..cut]);
        prop_assert!(
            matches!(result, Ok(None)),
            "prefix of {} bytes of {} is {}",
            cut,
            show(&buf[..head_len]),
            describe(&result)
        );
    }
    Ok(())
}

const DEFAULT_HOST: &[u8] = b"10.0.0.1:8001";

/// What RFC 9112 3.2.1 lets the backend receive for a target: `*`, or an absolute path with a query.
fn origin_form(target: &[u8]) -> Vec<u8> {
    if target == b"*" || target.starts_with(b"/") {
        target.to_vec()
    } else {
        [b"/", target].concat()
    }
}

/// Property 3 for requests: the head written for the backend is one valid head that means the same.
fn request_rewrite_agrees(
    buf: &[u8],
    head: &RequestHead,
    client_ip: IpAddr,
) -> Result<(), TestCaseError> {
    let info = ForwardInfo {
        client_ip,
        secure: false,
        default_host: DEFAULT_HOST,
        strip_prefix: 0,
    };
    let mut out = vec![0u8; 2 * buf.len() + 512];
    let n = write_request_head(buf, head, &info, &mut out)
        .expect("the rewrite of a head fits in twice its size plus 512 bytes");
    let out = &out[..n];
    let context = format!("{} rewritten as {}", show(&buf[..head.head_len]), show(out));
    // The next hop is held to the format's field limit, not to the headroom lb keeps for its rewrite.
    let again = match parse_request_limited(out, out.len() + 1, MAX_HEADERS) {
        Ok(Some(again)) => again,
        other => {
            return Err(TestCaseError::fail(format!(
                "{context}: the rewrite parses as {}",
                describe(&other)
            )));
        }
    };
    request_spans_inside(out, &again)?;
    prop_assert_eq!(again.head_len, n, "{}", context);
    prop_assert_eq!(again.method(out), head.method(buf), "{}", context);
    let target = origin_form(head.target.get(buf));
    prop_assert_eq!(again.target.get(out), &target[..], "{}", context);
    prop_assert!(again.authority.is_none(), "{}", context);
    prop_assert_eq!(again.version, Version::Http11, "{}", context);
    prop_assert_eq!(again.framing, head.framing, "{}", context);
    // `Connection` is hop-by-hop: the backend hop is persistent whatever the client asked for.
    prop_assert!(again.keep_alive, "{}", context);
    prop_assert_eq!(again.upgrade, head.upgrade, "{}", context);
    prop_assert_eq!(again.expect_continue, head.expect_continue, "{}", context);
    prop_assert_eq!(again.is_head, head.is_head, "{}", context);
    let host = match head.authority {
        Some(authority) => authority.get(buf),
        None => field_values(buf, &head.headers, b"host")
            .first()
            .copied()
            .unwrap_or(DEFAULT_HOST),
    };
    prop_assert_eq!(
        field_values(out, &again.headers, b"host"),
        vec![host],
        "{}",
        context
    );
    let mut forwarded_for: Vec<u8> = field_values(buf, &head.headers, b"x-forwarded-for")
        .into_iter()
        .map(trim_ows)
        .filter(|v| !v.is_empty())
        .flat_map(|v| [v, b", "].concat())
        .collect();
    forwarded_for.extend_from_slice(client_ip.to_string().as_bytes());
    prop_assert_eq!(
        field_values(out, &again.headers, b"x-forwarded-for"),
        vec![&forwarded_for[..]],
        "{}",
        context
    );
    Ok(())
}

/// The framing a client must see for a response written with `plan` (`None`: an interim response).
fn promised_framing(head: &ResponseHead, plan: Option<&ResponsePlan>, is_head: bool) -> Framing {
    if is_head || head.is_informational() || head.status == 204 || head.status == 304 {
        return Framing::Empty;
    }
    match plan.map(|p| p.body) {
        None | Some(ClientBody::Empty | ClientBody::Length(0) | ClientBody::Tunnel) => {
            Framing::Empty
        }
        Some(ClientBody::Length(n)) => Framing::Length(n),
        Some(ClientBody::Chunked) => Framing::Chunked,
        Some(ClientBody::Dechunked | ClientBody::UntilClose) => Framing::UntilClose,
    }
}

/// Property 3 for responses: for every plan, the head written for the client parses again with the
/// same status and reason and the promised framing and persistence; one said to go as received is
/// the backend's head byte for byte.
fn response_rewrites_agree(
    buf: &[u8],
    head: &ResponseHead,
    is_head: bool,
) -> Result<(), TestCaseError> {
    let interim = head.is_informational() && head.status != 101;
    for client in [Version::Http11, Version::Http10] {
        for keep_alive in [true, false] {
            let plan = if interim {
                None
            } else {
                match plan_response(head, client, keep_alive, head.status == 101) {
                    Ok(plan) => Some(plan),
                    // gzip-then-chunked to an HTTP/1.0 client: refused, nothing to write.
                    Err(HeadError::UnsupportedTransferEncoding) if client == Version::Http10 => {
                        continue;
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("no plan: {e}"))),
                }
            };
            let mut out = vec![0u8; 2 * buf.len() + 256];
            let n = write_response_head(buf, head, plan.as_ref(), client, &mut out)
                .expect("the rewrite of a head fits in twice its size plus 256 bytes");
            let out = &out[..n];
            let context = format!(
                "{} (HEAD: {is_head}) with {plan:?} for {client:?} rewritten as {}",
                show(&buf[..head.head_len]),
                show(out)
            );
            // A head said to go as received is exactly the head written.
            if let Some(plan) = &plan
                && head_goes_as_received(buf, head, plan, client, b"")
            {
                prop_assert_eq!(out, &buf[..head.head_len], "{}", context);
            }
            let again = match parse_response_limited(out, is_head, out.len() + 1, MAX_HEADERS) {
                Ok(Some(again)) => again,
                other => {
                    return Err(TestCaseError::fail(format!(
                        "{context}: the rewrite parses as {}",
                        describe(&other)
                    )));
                }
            };
            response_spans_inside(out, &again)?;
            prop_assert_eq!(again.head_len, n, "{}", context);
            prop_assert_eq!(again.status, head.status, "{}", context);
            prop_assert_eq!(again.reason.get(out), head.reason.get(buf), "{}", context);
            let framing = promised_framing(head, plan.as_ref(), is_head);
            prop_assert_eq!(again.framing, framing, "{}", context);
            if let Some(plan) = plan.filter(|p| p.body != ClientBody::Tunnel) {
                prop_assert_eq!(again.reusable, !plan.close_client, "{}", context);
            }
        }
    }
    Ok(())
}

/// The head limit is exact: a head of `head_len` bytes fits `max_head == head_len`, not one byte less.
fn limit_is_exact<T>(
    head_len: usize,
    parse: impl Fn(usize) -> Result<Option<T>, HeadError>,
) -> Result<(), TestCaseError> {
    prop_assert!(matches!(parse(head_len), Ok(Some(_))));
    let smaller = parse(head_len - 1);
    prop_assert!(
        matches!(smaller, Err(HeadError::TooLarge)),
        "{} with a limit of one byte less",
        describe(&smaller)
    );
    Ok(())
}

fn check_request(buf: &[u8], client_ip: IpAddr) -> Result<(), TestCaseError> {
    let Ok(Some(head)) = parse_request(buf, MAX_HEAD) else {
        return Ok(());
    };
    request_spans_inside(buf, &head)?;
    prefixes_are_incomplete(buf, head.head_len, |b| parse_request(b, MAX_HEAD))?;
    limit_is_exact(head.head_len, |max| parse_request(buf, max))?;
    {
        request_rewrite_agrees(buf, &head, client_ip)?;
    }
    Ok(())
}

fn check_response(buf: &[u8]) -> Result<(), TestCaseError> {
    for is_head in [false, true] {
        let Ok(Some(head)) = parse_response(buf, is_head, MAX_HEAD) else {
            continue;
        };
        response_spans_inside(buf, &head)?;
        prefixes_are_incomplete(buf, head.head_len, |b| parse_response(b, is_head, MAX_HEAD))?;
        limit_is_exact(head.head_len, |max| parse_response(buf, is_head, max))?;
        response_rewrites_agree(buf, &head, is_head)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Chunked bodies
// ---------------------------------------------------------------------------------------------------

fn chunk(body: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes
            .get(i)
            .copied()
            .unwrap_or(rest.len())
            .clamp(1, rest.len());
        out.extend_from_slice(format!("{n:X}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
        i += 1;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// How one chunk-size line is spelled: leading zeros, letter case, and optional extensions (which may
/// be preceded by whitespace, RFC 9112 7.1.1's BWS).
#[derive(Debug, Clone)]
struct SizeLine {
    zeros: usize,
    upper: bool,
    extension: Option<(&'static str, Wire)>,
}

impl SizeLine {
    fn write(&self, size: usize, out: &mut Vec<u8>) {
        out.extend(std::iter::repeat_n(b'0', self.zeros));
        let hex = if self.upper {
            format!("{size:X}")
        } else {
            format!("{size:x}")
        };
        out.extend_from_slice(hex.as_bytes());
        if let Some((space, extension)) = &self.extension {
            out.extend_from_slice(space.as_bytes());
            out.push(b';');
            out.extend_from_slice(&extension.0);
        }
        out.extend_from_slice(b"\r\n");
    }
}

fn size_line() -> impl Strategy<Value = SizeLine> {
    let extension = prop::option::of((
        select(vec!["", "", " ", "\t", " \t "]),
        value_bytes(12).prop_map(Wire),
    ));
    (0usize..3, any::<bool>(), extension).prop_map(|(zeros, upper, extension)| SizeLine {
        zeros,
        upper,
        extension,
    })
}

/// A body and one valid chunked spelling of it.
#[derive(Debug, Clone)]
struct Chunked {
    body: Wire,
    sizes: Vec<usize>,
    lines: Vec<SizeLine>,
    last: SizeLine,
    trailers: Vec<Wire>,
}

impl Chunked {
    /// The encoding, and the chunk sizes it used.
    fn encode(&self) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut used = Vec::new();
        let mut rest = &self.body.0[..];
        for i in 0.. {
            if rest.is_empty() {
                break;
            }
            let n = self
                .sizes
                .get(i)
                .copied()
                .unwrap_or(rest.len())
                .clamp(1, rest.len());
            self.lines[i % self.lines.len()].write(n, &mut out);
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            used.push(n);
            rest = &rest[n..];
        }
        self.last.write(0, &mut out);
        for trailer in &self.trailers {
            out.extend_from_slice(&trailer.0);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        (out, used)
    }
}

fn chunked_body() -> impl Strategy<Value = Chunked> {
    let trailer = ("[A-Za-z][A-Za-z0-9-]{0,8}", value_bytes(16))
        .prop_map(|(name, value)| Wire([name.as_bytes(), b": ", &value].concat()));
    (
        prop::collection::vec(any::<u8>(), 0..1024),
        prop::collection::vec(1usize..300, 0..12),
        prop::collection::vec(size_line(), 1..4),
        size_line(),
        prop::collection::vec(trailer, 0..3),
    )
        .prop_map(|(body, sizes, lines, last, trailers)| Chunked {
            body: Wire(body),
            sizes,
            lines,
            last,
            trailers,
        })
}

/// The canonical chunked form the proxy re-encodes to: lower-case hex without leading zeros, no
/// extensions, no trailers.
fn canonical_chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    for &n in sizes {
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Decodes `input` fed in pieces cut at `cuts`, returning (output, bytes used, done).
fn decode_in_pieces(
    input: &[u8],
    cuts: &[usize],
    reencode: bool,
) -> Result<(Vec<u8>, usize, bool), String> {
    let mut relay = Relay::Chunked(ChunkedDecoder::new(reencode));
    let mut out = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut used = 0;
    let mut fed = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    bounds.push(input.len());
    bounds.sort_unstable();
    for bound in bounds {
        if bound <= fed {
            continue;
        }
        pending.extend_from_slice(&input[fed..bound]);
        fed = bound;
        let n = relay_all(&mut relay, &pending, &mut out).map_err(|e| e.to_string())?;
        used += n;
        pending.drain(..n);
        if relay.is_done() {
            break;
        }
    }
    Ok((out, used, relay.is_done()))
}

/// Byte soup, HTTP-ish soup, and valid chunked bodies with a few mutations.
fn any_chunked_input() -> impl Strategy<Value = Wire> {
    let valid = chunked_body().prop_map(|c| c.encode().0);
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(Wire),
        1 => http_ish().prop_map(Wire),
        4 => mutated(valid),
    ]
}

// ---------------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------------

// Case counts: each case costs 10-30 µs at the test profile's opt-level 2, so the whole file runs in a
// few seconds on 2 cores; many cheap cases find more than a few expensive ones.

proptest! {
    #![proptest_config(cases(40_000))]

    #[test]
    fn request_heads_never_panic_and_keep_their_spans_inside(
        input in any_head_input(client_head),
        v6 in any::<bool>(),
    ) {
        let client_ip: IpAddr = if v6 { "2001:db8::7".parse() } else { "192.0.2.7".parse() }
            .expect("a literal address");
        check_request(&input.0, client_ip)?;
    }

    #[test]
    fn response_heads_never_panic_and_keep_their_spans_inside(
        input in any_head_input(backend_head),
    ) {
        check_response(&input.0)?;
    }

    #[test]
    fn chunked_decoder_is_bounded_and_indifferent_to_splits(
        input in any_chunked_input(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        for reencode in [false, true] {
            let whole = decode_in_pieces(&input.0, &[], reencode);
            let pieces = decode_in_pieces(&input.0, &cuts, reencode);
            prop_assert_eq!(&whole, &pieces, "whole and in pieces, re-encoding: {}", reencode);
            if let Ok((out, used, _)) = whole {
                prop_assert!(used <= input.0.len());
                prop_assert!(out.len() <= used, "{} bytes out of {} consumed", out.len(), used);
            }
        }
    }
}

proptest! {
    #![proptest_config(cases(20_000))]

    /// Valid heads only, so that every case exercises the rewrite (the test above mostly mutates).
    #[test]
    fn accepted_requests_rewrite_to_the_same_request(input in client_head()) {
        let client_ip: IpAddr = "192.0.2.7".parse().expect("a literal address");
        check_request(&input, client_ip)?;
    }

    #[test]
    fn accepted_responses_rewrite_to_the_promised_framing(input in backend_head()) {
        check_response(&input)?;
    }

    #[test]
    fn chunked_bodies_in_any_style_round_trip(
        chunked in chunked_body(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let body = &chunked.body.0;
        let (encoded, sizes) = chunked.encode();
        let mut trailing = encoded.clone();
        trailing.extend_from_slice(b"GET /next HTTP/1.1\r\n");
        let (payload, used, done) = decode_in_pieces(&trailing, &cuts, false).expect("valid");
        prop_assert!(done);
        prop_assert_eq!(&payload, body);
        prop_assert_eq!(used, encoded.len(), "stops exactly at the end of the body");
        // Re-encoded: the canonical form whatever the input spelling and splits, which decodes to the
        // body and re-encodes to itself.
        let (reencoded, used, done) = decode_in_pieces(&trailing, &cuts, true).expect("valid");
        prop_assert!(done);
        prop_assert_eq!(used, encoded.len());
        prop_assert_eq!(&reencoded, &canonical_chunked(body, &sizes));
        let (again, _, done) = decode_in_pieces(&reencoded, &cuts, false).expect("re-encoded");
        prop_assert!(done);
        prop_assert_eq!(&again, body);
        let (twice, _, _) = decode_in_pieces(&reencoded, &[], true).expect("re-encoded");
        prop_assert_eq!(twice, reencoded);
    }
}
proptest! {
    #![proptest_config(config())]

    #[test]
    fn parsers_never_panic(bytes in prop_oneof![http_ish(), prop::collection::vec(any::<u8>(), 0..512)]) {
        let _ = parse_request(&bytes, MAX_HEAD);
        let _ = parse_response(&bytes, false, MAX_HEAD);
        let _ = parse_response(&bytes, true, 64);
        let mut out = Vec::new();
        let mut relay = Relay::Chunked(ChunkedDecoder::new(true));
        let _ = relay_all(&mut relay, &bytes, &mut out);
    }

    #[test]
    fn a_request_split_anywhere_parses_like_the_whole(head in simple_request(), body in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut whole = head.clone().into_bytes();
        whole.extend_from_slice(&body);
        let parsed = parse_request(&whole, MAX_HEAD).expect("valid").expect("complete");
        prop_assert_eq!(parsed.head_len, head.len());
        for cut in 0..head.len() {
            // Every strict prefix of the head is incomplete, never an error.
            prop_assert!(matches!(parse_request(&whole[..cut], MAX_HEAD), Ok(None)), "prefix {}", cut);
        }
        for cut in head.len()..=whole.len() {
            let again = parse_request(&whole[..cut], MAX_HEAD).expect("valid").expect("complete");
            prop_assert_eq!(again.head_len, parsed.head_len);
            prop_assert_eq!(again.framing, parsed.framing);
            prop_assert_eq!(again.keep_alive, parsed.keep_alive);
        }
    }

    #[test]
    fn chunking_then_decoding_returns_the_body(
        body in prop::collection::vec(any::<u8>(), 0..2048),
        sizes in prop::collection::vec(1usize..300, 0..16),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let encoded = chunk(&body, &sizes);
        let mut trailing = encoded.clone();
        trailing.extend_from_slice(b"GET /next HTTP/1.1\r\n");
        // Decoded to the payload, whole and in pieces.
        let (payload, used, done) = decode_in_pieces(&trailing, &[], false).expect("a valid chunked body");
        prop_assert!(done);
        prop_assert_eq!(&payload, &body);
        prop_assert_eq!(used, encoded.len(), "stops exactly at the end of the body");
        let (pieces, used_pieces, _) = decode_in_pieces(&trailing, &cuts, false).expect("a valid chunked body in pieces");
        prop_assert_eq!(&pieces, &body);
        prop_assert_eq!(used_pieces, encoded.len());
        // Re-encoded, it decodes to the same body again.
        let (reencoded, _, _) = decode_in_pieces(&encoded, &cuts, true).expect("a valid chunked body, re-encoded");
        let (again, _, done) = decode_in_pieces(&reencoded, &[], false).expect("the re-encoded body");
        prop_assert!(done);
        prop_assert_eq!(again, body);
    }

    #[test]
    fn truncated_chunked_bodies_never_complete(
        body in prop::collection::vec(any::<u8>(), 1..512),
        sizes in prop::collection::vec(1usize..100, 0..8),
        cut in any::<usize>(),
    ) {
        let encoded = chunk(&body, &sizes);
        let cut = cut % encoded.len(); // strictly shorter
        let mut relay = Relay::Chunked(ChunkedDecoder::new(false));
        let mut out = Vec::new();
        let used = relay_all(&mut relay, &encoded[..cut], &mut out).expect("a prefix of a valid body");
        prop_assert!(!relay.is_done());
        prop_assert_eq!(used, cut);
        prop_assert_eq!(relay.step(&[]).expect("no input is no error"), Step::NeedInput);
    }

    #[test]
    fn request_framing_matches_the_reference_model(
        version in prop::sample::select(vec!["1.0", "1.1"]),
        lengths in prop::collection::vec(prop::sample::select(vec!["0", "5", "7", "+5", "5x", "5, 5", "5, 6", "", "99999999999999999999"]), 0..3),
        codings in prop::collection::vec(prop::sample::select(vec!["chunked", "gzip", "gzip, chunked", "chunked, gzip", "identity", "CHUNKED", "\"chunked\""]), 0..3),
    ) {
        let mut head = format!("POST / HTTP/{version}\r\nHost: h\r\n");
        for l in &lengths {
            head.push_str(&format!("Content-Length: {l}\r\n"));
        }
        for c in &codings {
            head.push_str(&format!("Transfer-Encoding: {c}\r\n"));
        }
        head.push_str("\r\n");
        let got = parse_request(head.as_bytes(), MAX_HEAD).map(|h| h.map(|h| h.framing));
        prop_assert_eq!(got, reference_framing(version, &lengths, &codings), "{}", head);
    }
}

/// RFC 9112 6.1-6.3 as the proxy applies it to requests, written as plainly as possible.
fn reference_framing(
    version: &str,
    lengths: &[&str],
    codings: &[&str],
) -> Result<Option<Framing>, HeadError> {
    // Content-Length: every field (and every list member) the same run of digits, no overflow.
    let mut length: Option<u64> = None;
    for field in lengths {
        for member in field.split(',') {
            let member = member.trim();
            if member.is_empty() || member.len() > 19 || !member.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(HeadError::BadContentLength);
            }
            let n: u64 = member.parse().map_err(|_| HeadError::BadContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::BadContentLength);
            }
            length = Some(n);
        }
    }
    if !codings.is_empty() {
        if version == "1.0" {
            return Err(HeadError::TransferEncodingInHttp10);
        }
        if length.is_some() {
            return Err(HeadError::ContentLengthWithTransferEncoding);
        }
        let all: Vec<String> = codings
            .iter()
            .flat_map(|c| c.split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        let chunked_count = all.iter().filter(|c| *c == "chunked").count();
        let valid_tokens = all.iter().all(|c| !c.contains('"'));
        if !valid_tokens || chunked_count != 1 || all.last().map(String::as_str) != Some("chunked")
        {
            return Err(HeadError::BadTransferEncoding);
        }
        if all.len() > 1 {
            return Err(HeadError::UnsupportedTransferEncoding);
        }
        return Ok(Some(Framing::Chunked));
    }
    Ok(Some(match length {
        None | Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
    }))
}

// ---------------------------------------------------------------------------------------------------
// Regression cases: bugs the properties found, each with its minimal input.
// ---------------------------------------------------------------------------------------------------

fn assert_request_rewrite_agrees(raw: &[u8]) {
    let head = parse_request(raw, MAX_HEAD)
        .expect("the client's head is valid")
        .expect("the client's head is complete");
    let client_ip: IpAddr = "192.0.2.7".parse().expect("a literal address");
    if let Err(e) = request_rewrite_agrees(raw, &head, client_ip) {
        panic!("{e}");
    }
}

/// `GET http://a?x` reaches the backend as `GET ?x HTTP/1.1`, which is not a valid origin-form target
/// (RFC 9112 3.2.1 requires `/?x`) and which lb itself rejects as a bad target.
#[test]
fn regression_absolute_form_with_query_and_no_path() {
    assert_request_rewrite_agrees(b"GET http://0? HTTP/1.0\r\n\r\n");
    assert_request_rewrite_agrees(b"GET http://a?x HTTP/1.1\r\nHost: b\r\n\r\n");
}

/// `Connection: host` makes the client's `Host` hop-by-hop, so the rewrite drops it, and the backend
/// receives an HTTP/1.1 request with no `Host` at all (lb itself answers that with 400).
#[test]
fn regression_connection_naming_host() {
    assert_request_rewrite_agrees(b"GET / HTTP/1.1\r\nHost: \r\nConnection: host\r\n\r\n");
}

/// `Connection: expect` drops `Expect: 100-continue` from the forwarded head while the proxy still
/// believes it was sent (`expect_continue`): the threaded engine then waits for a `100 Continue` the
/// backend was never asked for, until the response timeout.
#[test]
fn regression_connection_naming_expect() {
    assert_request_rewrite_agrees(
        b"GET / HTTP/1.1\r\nHost: \r\nExpect: 100-continue\r\nConnection: expect\r\n\r\n",
    );
}

/// A head with `MAX_HEADERS` fields used to be accepted although its rewrite adds `X-Forwarded-For` and
/// `X-Forwarded-Proto`, which a backend with the same limit as lb (lb itself) refused. Requests now may
/// carry `MAX_REQUEST_FIELDS`, and their rewrite stays within the limit.
#[test]
fn regression_request_rewrite_exceeds_the_field_limit() {
    let fields = |n: usize| -> String { (0..n).map(|i| format!("X-{i}: v\r\n")).collect() };
    let at_limit = format!(
        "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
        fields(lb::http::MAX_REQUEST_FIELDS - 1)
    );
    assert_request_rewrite_agrees(at_limit.as_bytes());
    let over = format!(
        "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
        fields(lb::http::MAX_REQUEST_FIELDS)
    );
    assert!(matches!(
        parse_request(over.as_bytes(), MAX_HEAD),
        Err(HeadError::TooManyHeaders)
    ));
}

/// The same for responses: 99 fields and `Content-Length` were accepted from a backend, but an HTTP/1.0
/// keep-alive client got `Content-Length` and `Connection: keep-alive` on top of the 99. Responses now
/// may carry `MAX_RESPONSE_FIELDS`.
#[test]
fn regression_response_rewrite_exceeds_the_field_limit() {
    let fields = |n: usize| -> String { (0..n).map(|i| format!("X-{i}: v\r\n")).collect() };
    let at_limit = format!(
        "HTTP/1.1 200 OK\r\n{}Content-Length: 5\r\n\r\n",
        fields(lb::http::MAX_RESPONSE_FIELDS - 1)
    );
    let head = parse_response(at_limit.as_bytes(), false, MAX_HEAD)
        .expect("the backend's head is valid")
        .expect("the backend's head is complete");
    if let Err(e) = response_rewrites_agree(at_limit.as_bytes(), &head, false) {
        panic!("{e}");
    }
    let over = format!(
        "HTTP/1.1 200 OK\r\n{}Content-Length: 5\r\n\r\n",
        fields(lb::http::MAX_RESPONSE_FIELDS)
    );
    assert!(matches!(
        parse_response(over.as_bytes(), false, MAX_HEAD),
        Err(HeadError::TooManyHeaders)
    ));
}
