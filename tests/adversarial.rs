//! Adversarial requests, as raw bytes: smuggling attempts, header syntax abuse, Host rules, oversized
//! heads, odd targets. For each, the exact status the client gets (RFC 9112/9110 and DESIGN.md) and what
//! the backend received: nothing, or a normalised request — never the ambiguous bytes.

mod common;

use common::*;

/// What the backend must have seen for a case.
enum Backend {
    /// Not one byte.
    Nothing,
    /// A request whose head contains every `contains` and no `lacks`, with exactly this body as
    /// received (chunk framing included).
    Normalised {
        contains: &'static [&'static str],
        lacks: &'static [&'static str],
        body: &'static [u8],
    },
    /// Our 400 cut the body off: at most the normalised head and the valid part of the body went
    /// out, and never the bytes in `never`.
    HeadOnly { never: &'static [&'static str] },
}

struct Case {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
    backend: Backend,
}

fn case(name: &'static str, request: impl AsRef<[u8]>, status: u16, backend: Backend) -> Case {
    Case {
        name,
        request: request.as_ref().to_vec(),
        status,
        backend,
    }
}

fn ok(
    contains: &'static [&'static str],
    lacks: &'static [&'static str],
    body: &'static [u8],
) -> Backend {
    Backend::Normalised {
        contains,
        lacks,
        body,
    }
}

fn cases() -> Vec<Case> {
    use Backend::{HeadOnly, Nothing};
    let post =
        |headers: &str, body: &str| format!("POST /p HTTP/1.1\r\nHost: h\r\n{headers}\r\n{body}");
    vec![
        // Request smuggling: framing that two parsers could read differently.
        case(
            "CL then TE",
            post(
                "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\nX",
            ),
            400,
            Nothing,
        ),
        case(
            "TE then CL",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 6\r\n",
                "0\r\n\r\nX",
            ),
            400,
            Nothing,
        ),
        case(
            "two different CL",
            post("Content-Length: 3\r\nContent-Length: 4\r\n", "abcd"),
            400,
            Nothing,
        ),
        case(
            "CL list of different values",
            post("Content-Length: 3, 4\r\n", "abcd"),
            400,
            Nothing,
        ),
        case(
            "signed CL",
            post("Content-Length: +3\r\n", "abc"),
            400,
            Nothing,
        ),
        case(
            "negative CL",
            post("Content-Length: -1\r\n", ""),
            400,
            Nothing,
        ),
        case(
            "CL with junk",
            post("Content-Length: 3x\r\n", "abc"),
            400,
            Nothing,
        ),
        case(
            "CL hex",
            post("Content-Length: 0x3\r\n", "abc"),
            400,
            Nothing,
        ),
        case(
            "CL overflow",
            post("Content-Length: 99999999999999999999999\r\n", "abc"),
            400,
            Nothing,
        ),
        case(
            "same CL twice is one CL",
            post("Content-Length: 3\r\nContent-Length: 3\r\n", "abc"),
            200,
            ok(
                &["Content-Length: 3\r\n"],
                &["Content-Length: 3\r\nContent-Length"],
                b"abc",
            ),
        ),
        case(
            "CL list of one value",
            post("Content-Length: 3, 3\r\n", "abc"),
            200,
            ok(&["Content-Length: 3\r\n"], &["3, 3"], b"abc"),
        ),
        case(
            "TE chunked not last",
            post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"),
            400,
            Nothing,
        ),
        case(
            "TE chunked twice",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            400,
            Nothing,
        ),
        case(
            "TE look-alike",
            post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
            400,
            Nothing,
        ),
        case(
            "TE quoted",
            post("Transfer-Encoding: \"chunked\"\r\n", "0\r\n\r\n"),
            400,
            Nothing,
        ),
        case(
            "TE with parameters",
            post("Transfer-Encoding: chunked;q=1\r\n", "0\r\n\r\n"),
            400,
            Nothing,
        ),
        case(
            "TE gzip then chunked",
            post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"),
            501,
            Nothing,
        ),
        case(
            "TE space before colon",
            post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"),
            400,
            Nothing,
        ),
        case(
            "TE with surrounding whitespace is chunked",
            post(
                "Transfer-Encoding: \t chunked \t\r\n",
                "3\r\nabc\r\n0\r\n\r\n",
            ),
            200,
            ok(
                &["Transfer-Encoding: chunked\r\n"],
                &["\t"],
                b"3\r\nabc\r\n0\r\n\r\n",
            ),
        ),
        case(
            "underscore look-alike of TE is dropped",
            post("Transfer_Encoding: chunked\r\n", ""),
            200,
            ok(
                &["POST /p HTTP/1.1\r\n"],
                &["Transfer_Encoding", "Transfer-Encoding"],
                b"",
            ),
        ),
        case(
            "HTTP/1.0 with chunked",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            Nothing,
        ),
        // Chunk framing: the head has gone out; the bad bytes must not follow it.
        case(
            "chunk size overflow",
            post(
                "Transfer-Encoding: chunked\r\n",
                "fffffffffffffffff1\r\nab\r\n0\r\n\r\n",
            ),
            400,
            HeadOnly {
                never: &["fffffffffffffffff1"],
            },
        ),
        case(
            "chunk size with 0x",
            post("Transfer-Encoding: chunked\r\n", "0x3\r\nabc\r\n0\r\n\r\n"),
            400,
            HeadOnly { never: &["0x3"] },
        ),
        case(
            "chunk longer than its size",
            post(
                "Transfer-Encoding: chunked\r\n",
                "3\r\nabcGET /smuggled HTTP/1.1\r\n\r\n",
            ),
            400,
            HeadOnly {
                never: &["smuggled"],
            },
        ),
        case(
            "bare LF in chunk framing",
            post("Transfer-Encoding: chunked\r\n", "3\nabc\n0\n\n"),
            400,
            HeadOnly { never: &["abc"] },
        ),
        case(
            "chunk extension too long",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("3;{}\r\nabc\r\n0\r\n\r\n", "e".repeat(5000)),
            ),
            400,
            HeadOnly { never: &["eeee"] },
        ),
        case(
            "chunk extensions and trailers are dropped",
            post(
                "Transfer-Encoding: chunked\r\n",
                "3;name=\"v\"\r\nabc\r\n0\r\nX-Trailer: evil\r\n\r\n",
            ),
            200,
            ok(
                &["Transfer-Encoding: chunked\r\n"],
                &["name=", "X-Trailer"],
                b"3\r\nabc\r\n0\r\n\r\n",
            ),
        ),
        // Header syntax.
        case(
            "whitespace before colon",
            "GET / HTTP/1.1\r\nHost : h\r\n\r\n",
            400,
            Nothing,
        ),
        case(
            "obs-fold",
            "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n 2\r\n\r\n",
            400,
            Nothing,
        ),
        case(
            "bare CR in a value",
            "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r2\r\n\r\n",
            400,
            Nothing,
        ),
        case(
            "NUL in a value",
            "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\x002\r\n\r\n",
            400,
            Nothing,
        ),
        case(
            "invalid character in a name",
            "GET / HTTP/1.1\r\nHost: h\r\nX(A): 1\r\n\r\n",
            400,
            Nothing,
        ),
        case(
            "empty name",
            "GET / HTTP/1.1\r\nHost: h\r\n: 1\r\n\r\n",
            400,
            Nothing,
        ),
        case(
            "line without a colon",
            "GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n",
            400,
            Nothing,
        ),
        case(
            "two spaces in the request line",
            "GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
            400,
            Nothing,
        ),
        case(
            "unknown HTTP version",
            "GET / HTTP/2.0\r\nHost: h\r\n\r\n",
            400,
            Nothing,
        ),
        case(
            "bare LF line endings are normalised",
            "GET /lf HTTP/1.1\nHost: h\nX-A: 1\n\n",
            200,
            ok(&["GET /lf HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n"], &[], b""),
        ),
        // Host rules.
        case(
            "HTTP/1.1 without Host",
            "GET / HTTP/1.1\r\n\r\n",
            400,
            Nothing,
        ),
        case(
            "two Hosts",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
            Nothing,
        ),
        case(
            "Host with a space",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            400,
            Nothing,
        ),
        case(
            "Host with user info",
            "GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
            400,
            Nothing,
        ),
        case(
            "HTTP/1.0 without Host gets the backend's",
            "GET /old HTTP/1.0\r\n\r\n",
            200,
            ok(&["GET /old HTTP/1.1\r\nHost: 127.0.0.1:"], &[], b""),
        ),
        // Targets.
        case(
            "absolute form overrides Host",
            "GET http://target.example:8080/x?y=1 HTTP/1.1\r\nHost: other\r\n\r\n",
            200,
            ok(
                &["GET /x?y=1 HTTP/1.1\r\n", "Host: target.example:8080\r\n"],
                &["other"],
                b"",
            ),
        ),
        case(
            "asterisk outside OPTIONS",
            "GET * HTTP/1.1\r\nHost: h\r\n\r\n",
            400,
            Nothing,
        ),
        case(
            "relative target",
            "GET x/y HTTP/1.1\r\nHost: h\r\n\r\n",
            400,
            Nothing,
        ),
        case(
            "CONNECT",
            "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
            501,
            Nothing,
        ),
        // Size limits.
        case(
            "head over 16 KiB",
            format!(
                "GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
                "b".repeat(17 * 1024)
            ),
            431,
            Nothing,
        ),
        case(
            "more than 100 fields",
            format!(
                "GET / HTTP/1.1\r\nHost: h\r\n{}\r\n",
                (0..120)
                    .map(|i| format!("X-{i}: v\r\n"))
                    .collect::<String>()
            ),
            431,
            Nothing,
        ),
        // Hop-by-hop fields named in Connection never reach the backend.
        case(
            "Connection-named fields are removed",
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\nKeep-Alive: 5\r\n\r\n",
            200,
            ok(
                &["GET / HTTP/1.1\r\n"],
                &["X-Secret", "Keep-Alive", "Connection"],
                b"",
            ),
        ),
    ]
}

#[test]
fn adversarial_requests_get_the_right_status_and_never_reach_a_backend_ambiguous() {
    let cases = cases();
    assert!(cases.len() >= 30, "the suite keeps at least 30 cases");
    for engine in ["event_loop", "threaded"] {
        for case in &cases {
            // A fresh backend and balancer per case, so that what the backend saw is this case's alone.
            let backend = common::Backend::start(|mut peer| {
                while peer.read_request().is_some() {
                    if !peer.ok("ok") {
                        return;
                    }
                }
            });
            let lb = Lb::start(&format!("engine = \"{engine}\""), &[backend.addr]);
            let mut client = lb.client();
            client.send(&case.request);
            let response = client.response(false);
            assert_eq!(response.status, case.status, "{engine}: {}", case.name);
            if case.status != 200 {
                assert_eq!(
                    response.header("connection").as_deref(),
                    Some("close"),
                    "{engine}: {}",
                    case.name
                );
                assert!(
                    client.is_closed(),
                    "{engine}: {}: closes after the error",
                    case.name
                );
            }
            drop(client);
            lb.wait_idle();
            let raw = backend.raw_received();
            let text = String::from_utf8_lossy(&raw);
            match &case.backend {
                Backend::Nothing => {
                    assert!(
                        raw.is_empty(),
                        "{engine}: {}: the backend got {text:?}",
                        case.name
                    );
                    assert_eq!(
                        backend.connection_count(),
                        0,
                        "{engine}: {}: no backend connection",
                        case.name
                    );
                }
                Backend::Normalised {
                    contains,
                    lacks,
                    body,
                } => {
                    let requests = backend.requests();
                    assert_eq!(
                        requests.len(),
                        1,
                        "{engine}: {}: one request, got {text:?}",
                        case.name
                    );
                    for needle in *contains {
                        assert!(
                            requests[0].head.contains(needle),
                            "{engine}: {}: head lacks {needle:?}: {:?}",
                            case.name,
                            requests[0].head
                        );
                    }
                    for needle in *lacks {
                        assert!(
                            !requests[0].head.contains(needle),
                            "{engine}: {}: head has {needle:?}: {:?}",
                            case.name,
                            requests[0].head
                        );
                    }
                    assert_eq!(requests[0].raw_body, *body, "{engine}: {}", case.name);
                }
                Backend::HeadOnly { never } => {
                    assert!(
                        backend.requests().is_empty(),
                        "{engine}: {}: no complete request",
                        case.name
                    );
                    assert!(
                        text.is_empty() || text.starts_with("POST /p HTTP/1.1\r\n"),
                        "{engine}: {}: {text:?}",
                        case.name
                    );
                    for needle in *never {
                        assert!(
                            !text.contains(needle),
                            "{engine}: {}: the backend got {needle:?}",
                            case.name
                        );
                    }
                }
            }
        }
    }
}
