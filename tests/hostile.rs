//! Hostile backends, as raw bytes: the counterpart of tests/adversarial.rs, which covers hostile
//! requests. Three parts, each run against both engines (`event_loop::...` and `threaded::...`, from
//! tests/cases/hostile.rs):
//! - odd but legal responses (no or empty reason phrase, obs-text, 1xx before the final response, chunk
//!   extensions and trailers, duplicate or zero-padded Content-Length, close-delimited bodies, stray
//!   bytes after a bodiless response, bare LF line endings) are relayed exactly: the test compares every
//!   byte the client receives, then checks that the next request on the same client connection gets the
//!   next real response, on the same backend connection or on a new one as the case demands;
//! - invalid responses get exactly lb's canned 502, or (once the client may have part of the response) a
//!   reset without a complete body, and the backend connection they came on is closed, never reused;
//!   the `lb` binary logs a warning naming the backend and the reason;
//! - a seeded randomized run of thousands of mutated and random responses, checked against what the
//!   pure parsing and framing functions say the client must get, and of thousands of mutated and random
//!   requests in front of a normal backend; afterwards lb still serves, nothing leaks, the statistics add
//!   up, and no panic was contained (the harness checks `internal_errors` when the balancer is dropped).
//!
//! Bugs this suite found are pinned by `regression_*` tests at the end, each stating the behaviour that
//! was wrong.

mod common;

use common::*;
use lb::http::body::{ChunkedDecoder, Relay, relay_all};
use lb::http::response::{self, ClientBody};
use lb::http::{ErrorResponse, Version};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

for_each_engine!("cases/hostile.rs");

/// One backend per case, no retry on another backend, and short timeouts so that nothing hangs.
const SETTINGS: &str = "retries = 0\n[timeouts]\nconnect = \"1s\"\nrequest_head = \"2s\"\n\
                        idle = \"2s\"\nresponse = \"2s\"\n";
/// The same for the randomized runs, where thousands of failures must not take the backend down.
const RANDOM_SETTINGS: &str = "retries = 0\n[timeouts]\nconnect = \"1s\"\nrequest_head = \"2s\"\n\
                               idle = \"2s\"\nresponse = \"2s\"\n\
                               [health_check]\ninterval = \"1h\"\nfall = 1000000\n";
/// lb's head limit (`BUFFER_SIZE`).
const HEAD_LIMIT: usize = 16 * 1024;

const ENGINES: [&str; 2] = ["event_loop", "threaded"];

const FIRST: &[u8] = b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n";
const NEXT_REQUEST: &[u8] = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n";
/// What every request but the hostile one gets.
const NEXT: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext";
/// What requests before the hostile one on the same connection get (pooled-connection cases).
const ONE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none";

fn bad_gateway() -> &'static [u8] {
    ErrorResponse::BadGateway.bytes()
}

/// `engine` is the module the cases run in: `event_loop`, `workers2` (the event loop with two
/// workers) or `threaded`.
fn start_lb(engine: &str, settings: &str, backends: &[SocketAddr]) -> Lb {
    Lb::start(&format!("{}\n{settings}", engine_line(engine)), backends)
}

/// Bytes shown escaped in assertion messages (obs-text, CR, LF and NUL stay visible).
#[derive(PartialEq, Eq)]
struct Shown<'a>(&'a [u8]);

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

/// Reads until `n` bytes have arrived or the connection ends (or the client's read timeout passes).
fn read_n(client: &mut Client, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        match client.stream.read(&mut got[filled..]) {
            // A read with a timeout is never restarted after a signal handler (signal(7)).
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(0) | Err(_) => break,
            Ok(k) => filled += k,
        }
    }
    got.truncate(filled);
    got
}

/// A scripted backend: on its first connection, request number `answer_at` gets `answer` (after which
/// the backend closes, with `then_close`), earlier ones get [`ONE`]; every other request gets [`NEXT`].
/// It counts requests per connection, so a test can tell whether lb reused a connection.
struct Hostile {
    backend: Backend,
    per_connection: Arc<Mutex<Vec<usize>>>,
}

impl Hostile {
    fn start(answer: Vec<u8>, then_close: bool, answer_at: usize) -> Hostile {
        let per_connection = Arc::new(Mutex::new(Vec::new()));
        let counts = per_connection.clone();
        let backend = Backend::start(move |mut peer| {
            let number = {
                let mut counts = counts.lock().unwrap();
                counts.push(0);
                counts.len() - 1
            };
            while peer.read_request().is_some() {
                let served = {
                    let mut counts = counts.lock().unwrap();
                    counts[number] += 1;
                    counts[number]
                };
                let reply = match (number, served) {
                    (0, n) if n == answer_at => &answer[..],
                    (0, n) if n < answer_at => ONE,
                    _ => NEXT,
                };
                if !peer.write(reply) || (number == 0 && served == answer_at && then_close) {
                    return;
                }
            }
        });
        Hostile {
            backend,
            per_connection,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.backend.addr
    }

    /// Requests received so far, per backend connection in the order they were opened.
    fn per_connection(&self) -> Vec<usize> {
        self.per_connection.lock().unwrap().clone()
    }

    fn closed_connections(&self) -> usize {
        self.backend.finished.load(Ordering::SeqCst)
    }
}

/// Waits until no client connection is open and, for the event loop, until the only registered sockets
/// are pooled backend connections and the only timer entries are each worker's tick and the prober.
fn assert_no_leaks(lb: &Lb, engine: &str) {
    lb.wait_released();
    if engine == "threaded" {
        return;
    }
    let workers = workers_of(engine);
    wait_until("sockets and timers to drain", || {
        let s = lb.snapshot();
        s.open_connections == 0
            && s.registered_sockets == s.pooled_connections
            && s.timers <= 1 + workers
    });
}

/// Every request counted on a backend ended as a success or an error (or was taken back out).
fn assert_stats_add_up(lb: &Lb, engine: &str) {
    let s = lb.snapshot();
    for b in &s.backends {
        assert_eq!(b.active_connections, 0, "{engine}: {}", b.url);
        assert_eq!(
            b.request_count,
            b.success_count + b.error_count,
            "{engine}: requests = successes + errors for {}",
            b.url
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// Odd but legal responses.

/// What happens after the response a case is about.
#[derive(Clone, Copy)]
enum After {
    /// The client connection stays open and its next request gets [`NEXT`], on the same backend
    /// connection (`reused`) or on a new one.
    KeepAlive { reused: bool },
    /// The client connection is closed cleanly (FIN) after the response.
    Closed,
}

struct Relayed {
    name: &'static str,
    request: &'static [u8],
    answer: Vec<u8>,
    then_close: bool,
    /// Every byte the client must receive for its request.
    expect: Vec<u8>,
    after: After,
}

fn relayed(
    name: &'static str,
    answer: impl AsRef<[u8]>,
    expect: impl AsRef<[u8]>,
    after: After,
) -> Relayed {
    Relayed {
        name,
        request: FIRST,
        answer: answer.as_ref().to_vec(),
        then_close: false,
        expect: expect.as_ref().to_vec(),
        after,
    }
}

impl Relayed {
    fn on(mut self, request: &'static [u8]) -> Relayed {
        self.request = request;
        self
    }

    fn closing(mut self) -> Relayed {
        self.then_close = true;
        self
    }
}

const REUSED: After = After::KeepAlive { reused: true };
const NOT_REUSED: After = After::KeepAlive { reused: false };
const HTTP10: &[u8] = b"GET /first HTTP/1.0\r\n\r\n";

fn relayed_cases() -> Vec<Relayed> {
    let mut cases = relayed_head_cases();
    cases.extend(relayed_body_cases());
    cases.extend(relayed_bodiless_cases());
    cases
}

/// Status lines, field values and interim responses.
fn relayed_head_cases() -> Vec<Relayed> {
    let long_reason = "r".repeat(4000);
    let hi = "Content-Length: 2\r\n\r\nhi";
    let early = "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n";
    vec![
        // Reason phrases: the status line is re-serialised as `HTTP/1.1 <code> <reason>`.
        relayed(
            "no reason phrase",
            format!("HTTP/1.1 200\r\n{hi}"),
            format!("HTTP/1.1 200 \r\n{hi}"),
            REUSED,
        ),
        relayed(
            "empty reason phrase",
            format!("HTTP/1.1 200 \r\n{hi}"),
            format!("HTTP/1.1 200 \r\n{hi}"),
            REUSED,
        ),
        relayed(
            "no reason on a 404 with Content-Length 0",
            "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n",
            REUSED,
        ),
        relayed(
            "obs-text reason (UTF-8)",
            [b"HTTP/1.1 200 \xc3\x87a va\r\n", hi.as_bytes()].concat(),
            [b"HTTP/1.1 200 \xc3\x87a va\r\n", hi.as_bytes()].concat(),
            REUSED,
        ),
        relayed(
            "obs-text reason (raw 0xff)",
            [b"HTTP/1.1 200 \xff\r\n", hi.as_bytes()].concat(),
            [b"HTTP/1.1 200 \xff\r\n", hi.as_bytes()].concat(),
            REUSED,
        ),
        relayed(
            "obs-text in a field value",
            [
                b"HTTP/1.1 200 OK\r\nX-Name: caf\xe9 \xff\xfe\r\n",
                hi.as_bytes(),
            ]
            .concat(),
            [
                b"HTTP/1.1 200 OK\r\nX-Name: caf\xe9 \xff\xfe\r\n",
                hi.as_bytes(),
            ]
            .concat(),
            REUSED,
        ),
        relayed(
            "HTAB in the reason phrase",
            "HTTP/1.1 404 Not\tFound\r\nContent-Length: 2\r\n\r\nno",
            "HTTP/1.1 404 Not\tFound\r\nContent-Length: 2\r\n\r\nno",
            REUSED,
        ),
        relayed(
            "a 4000-byte reason phrase",
            format!("HTTP/1.1 200 {long_reason}\r\n{hi}"),
            format!("HTTP/1.1 200 {long_reason}\r\n{hi}"),
            REUSED,
        ),
        // Interim responses.
        relayed(
            "103 Early Hints, then the response",
            format!("{early}HTTP/1.1 200 OK\r\n{hi}"),
            format!("{early}HTTP/1.1 200 OK\r\n{hi}"),
            REUSED,
        ),
        relayed(
            "100 Continue, then the response",
            format!("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n{hi}"),
            format!("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n{hi}"),
            REUSED,
        ),
        relayed(
            "100 and 103, then the response",
            format!("HTTP/1.1 100 Continue\r\n\r\n{early}HTTP/1.1 200 OK\r\n{hi}"),
            format!("HTTP/1.1 100 Continue\r\n\r\n{early}HTTP/1.1 200 OK\r\n{hi}"),
            REUSED,
        ),
        relayed(
            "no interim response for an HTTP/1.0 client",
            format!("{early}HTTP/1.1 200 OK\r\n{hi}"),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
            After::Closed,
        )
        .on(HTTP10),
    ]
}

/// Body framing: chunked, Content-Length forms, close-delimited.
fn relayed_body_cases() -> Vec<Relayed> {
    let hi = "Content-Length: 2\r\n\r\nhi";
    let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    vec![
        // Chunked bodies: framing normalised, extensions and trailer fields dropped.
        relayed(
            "chunk extensions and trailers are dropped",
            format!(
                "{chunked}3;name=\"v\"\r\nabc\r\n00A ; x=1\r\n0123456789\r\n0;last\r\nX-Trailer: t\r\nX-Other: o\r\n\r\n"
            ),
            format!("{chunked}3\r\nabc\r\na\r\n0123456789\r\n0\r\n\r\n"),
            REUSED,
        ),
        relayed(
            "chunked to an HTTP/1.0 client is decoded",
            format!("{chunked}3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabcde",
            After::Closed,
        )
        .on(HTTP10),
        // Content-Length forms that mean one length.
        relayed(
            "Content-Length: 02",
            "HTTP/1.1 200 OK\r\nContent-Length: 02\r\n\r\nhi",
            format!("HTTP/1.1 200 OK\r\n{hi}"),
            REUSED,
        ),
        relayed(
            "the same Content-Length twice",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
            format!("HTTP/1.1 200 OK\r\n{hi}"),
            REUSED,
        ),
        relayed(
            "a Content-Length list of one value",
            "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nhi",
            format!("HTTP/1.1 200 OK\r\n{hi}"),
            REUSED,
        ),
        // Close-delimited bodies.
        relayed(
            "close-delimited HTTP/1.0 response",
            "HTTP/1.0 200 OK\r\nX-A: b\r\n\r\nthe whole body",
            "HTTP/1.1 200 OK\r\nX-A: b\r\nConnection: close\r\n\r\nthe whole body",
            After::Closed,
        )
        .closing(),
        relayed(
            "close-delimited HTTP/1.1 response",
            "HTTP/1.1 200 OK\r\n\r\nuntil close",
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close",
            After::Closed,
        )
        .closing(),
    ]
}

/// Bodiless responses, bytes where no body belongs, line endings, framing and connection fields.
fn relayed_bodiless_cases() -> Vec<Relayed> {
    let hi = "Content-Length: 2\r\n\r\nhi";
    let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    vec![
        // Bodiless responses, and bytes where no body belongs.
        relayed(
            "204 with a Content-Length and stray bytes",
            "HTTP/1.1 204 No Content\r\nContent-Length: 38\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray",
            "HTTP/1.1 204 No Content\r\n\r\n",
            NOT_REUSED,
        ),
        relayed(
            "204 with a Content-Length and nothing after",
            "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
            REUSED,
        ),
        relayed(
            "304 keeps its Content-Length, has no body",
            "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 5\r\n\r\n",
            REUSED,
        ),
        relayed(
            "a body in answer to HEAD",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            NOT_REUSED,
        )
        .on(b"HEAD /first HTTP/1.1\r\nHost: h\r\n\r\n"),
        relayed(
            "bytes after a Content-Length body",
            format!("HTTP/1.1 200 OK\r\n{hi}HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"),
            format!("HTTP/1.1 200 OK\r\n{hi}"),
            NOT_REUSED,
        ),
        // Line endings.
        relayed(
            "bare LF line endings",
            "HTTP/1.1 200 OK\nContent-Length: 2\n\nhi",
            format!("HTTP/1.1 200 OK\r\n{hi}"),
            REUSED,
        ),
        relayed(
            "mixed CRLF and bare LF",
            "HTTP/1.1 200 OK\r\nServer: x\nContent-Length: 2\r\n\nhi",
            format!("HTTP/1.1 200 OK\r\nServer: x\r\n{hi}"),
            REUSED,
        ),
        relayed(
            "empty lines before the status line",
            format!("\r\n\r\nHTTP/1.1 200 OK\r\n{hi}"),
            format!("HTTP/1.1 200 OK\r\n{hi}"),
            REUSED,
        ),
        // Framing and connection fields.
        relayed(
            "Transfer-Encoding with Content-Length",
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            format!("{chunked}5\r\nhello\r\n0\r\n\r\n"),
            NOT_REUSED,
        ),
        relayed(
            "hop-by-hop fields are removed",
            format!(
                "HTTP/1.1 200 OK\r\nConnection: X-Private\r\nKeep-Alive: timeout=5\r\nX-Private: 1\r\nX-Kept: 2\r\n{hi}"
            ),
            format!("HTTP/1.1 200 OK\r\nX-Kept: 2\r\n{hi}"),
            REUSED,
        ),
        relayed(
            "Connection: close from the backend",
            format!("HTTP/1.1 200 OK\r\nConnection: close\r\n{hi}"),
            format!("HTTP/1.1 200 OK\r\n{hi}"),
            NOT_REUSED,
        ),
        relayed(
            "HTTP/1.0 keep-alive with Content-Length",
            format!("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n{hi}"),
            format!("HTTP/1.1 200 OK\r\n{hi}"),
            REUSED,
        ),
        relayed(
            "a 5xx of the backend's is relayed as it is",
            "HTTP/1.1 503 Busy\r\nRetry-After: 3\r\nContent-Length: 4\r\n\r\nbusy",
            "HTTP/1.1 503 Busy\r\nRetry-After: 3\r\nContent-Length: 4\r\n\r\nbusy",
            REUSED,
        ),
    ]
}

pub fn check_relayed(engine: &str) {
    let cases = relayed_cases();
    assert!(cases.len() >= 30, "the table keeps at least 30 cases");
    for case in &cases {
        check_relayed_case(engine, case);
    }
}

fn check_relayed_case(engine: &str, case: &Relayed) {
    let what = format!("{engine}: {}", case.name);
    let hostile = Hostile::start(case.answer.clone(), case.then_close, 1);
    let lb = start_lb(engine, SETTINGS, &[hostile.addr()]);
    let mut client = lb.client();
    client.send(case.request);
    let got = read_n(&mut client, case.expect.len());
    assert_eq!(Shown(&got), Shown(&case.expect), "{what}");
    match case.after {
        After::KeepAlive { reused } => {
            client.send(NEXT_REQUEST);
            let next = read_n(&mut client, NEXT.len());
            assert_eq!(
                Shown(&next),
                Shown(NEXT),
                "{what}: the next request's response"
            );
            let expected = if reused { vec![2] } else { vec![1, 1] };
            assert_eq!(
                hostile.per_connection(),
                expected,
                "{what}: requests per backend connection"
            );
        }
        After::Closed => {
            assert!(client.is_closed(), "{what}: the client connection closes");
            assert!(!client.reset, "{what}: with a FIN, not a reset");
            assert_eq!(hostile.per_connection(), vec![1], "{what}");
        }
    }
    drop(client);
    lb.wait_idle();
    assert_stats_add_up(&lb, engine);
}

// ---------------------------------------------------------------------------------------------------
// Invalid responses.

/// What the client gets for an invalid response.
enum Gets {
    /// Exactly lb's canned 502, then a clean close.
    BadGateway,
    /// A reset, after at most these bytes (a head and the valid part of the body may have gone out);
    /// or, when lb saw the fault before any byte of the final head went out, its canned 502.
    Reset { at_most: Vec<u8> },
    /// After an interim response went out: the interim response and the canned 502 (threaded engine),
    /// or a reset after at most the interim response (event loop).
    InterimThenBadGateway { interim: Vec<u8> },
}

impl Gets {
    fn check(&self, got: &[u8], reset: bool, what: &str) {
        match self {
            Gets::BadGateway => {
                assert_eq!(Shown(got), Shown(bad_gateway()), "{what}");
                assert!(!reset, "{what}: the 502 ends with a FIN");
            }
            Gets::Reset { at_most } => {
                if !reset && got == bad_gateway() {
                    return;
                }
                assert!(
                    at_most.starts_with(got),
                    "{what}: got {:?}, more than {:?}",
                    Shown(got),
                    Shown(at_most)
                );
                assert!(reset, "{what}: the client connection is reset");
            }
            Gets::InterimThenBadGateway { interim } => {
                let whole = [&interim[..], bad_gateway()].concat();
                assert!(
                    (got == whole && !reset) || (reset && interim.starts_with(got)),
                    "{what}: got {:?} (reset: {reset})",
                    Shown(got)
                );
            }
        }
    }
}

struct Invalid {
    name: &'static str,
    request: &'static [u8],
    answer: Vec<u8>,
    then_close: bool,
    gets: Gets,
}

fn invalid(name: &'static str, answer: impl AsRef<[u8]>) -> Invalid {
    Invalid {
        name,
        request: FIRST,
        answer: answer.as_ref().to_vec(),
        then_close: false,
        gets: Gets::BadGateway,
    }
}

impl Invalid {
    fn closing(mut self) -> Invalid {
        self.then_close = true;
        self
    }

    fn reset_after(mut self, at_most: impl AsRef<[u8]>) -> Invalid {
        self.gets = Gets::Reset {
            at_most: at_most.as_ref().to_vec(),
        };
        self
    }
}

/// Deterministic bytes that look like nothing.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.byte()).collect()
}

fn invalid_cases() -> Vec<Invalid> {
    let mut cases = invalid_head_cases();
    cases.extend(invalid_body_cases());
    cases
}

/// Status lines, framing fields and field syntax.
fn invalid_head_cases() -> Vec<Invalid> {
    let ok = "HTTP/1.1 200 OK\r\n";
    vec![
        // Status lines.
        invalid(
            "two-digit status",
            "HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nhi",
        ),
        invalid(
            "four-digit status",
            "HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nhi",
        ),
        invalid(
            "status below 100",
            "HTTP/1.1 099 Low\r\nContent-Length: 2\r\n\r\nhi",
        ),
        invalid(
            "status with a letter",
            "HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nhi",
        ),
        invalid(
            "wrong protocol name",
            "HTTZ/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        ),
        invalid(
            "lower-case protocol name",
            "http/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        ),
        invalid(
            "HTTP/2.0 status line",
            "HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        ),
        invalid(
            "no space after the version",
            "HTTP/1.1200 OK\r\nContent-Length: 2\r\n\r\nhi",
        ),
        // Framing fields.
        invalid(
            "differing Content-Length fields",
            format!("{ok}Content-Length: 2\r\nContent-Length: 3\r\n\r\nhi!"),
        ),
        invalid(
            "Content-Length list of different values",
            format!("{ok}Content-Length: 2, 3\r\n\r\nhi!"),
        ),
        invalid(
            "signed Content-Length",
            format!("{ok}Content-Length: +5\r\n\r\nhello"),
        ),
        invalid(
            "negative Content-Length",
            format!("{ok}Content-Length: -1\r\n\r\n"),
        ),
        invalid(
            "Content-Length with junk",
            format!("{ok}Content-Length: 2x\r\n\r\nhi"),
        ),
        invalid(
            "Content-Length overflow",
            format!("{ok}Content-Length: 99999999999999999999999\r\n\r\nhi"),
        ),
        // Field syntax.
        invalid(
            "NUL in a field value",
            format!("{ok}X-A: a\0b\r\nContent-Length: 2\r\n\r\nhi"),
        ),
        invalid(
            "CTL 0x01 in a field value",
            format!("{ok}X-A: a\x01b\r\nContent-Length: 2\r\n\r\nhi"),
        ),
        invalid(
            "bare CR in a field value",
            format!("{ok}X-A: a\rb\r\nContent-Length: 2\r\n\r\nhi"),
        ),
        invalid(
            "space in a field name",
            format!("{ok}Bad Header: x\r\nContent-Length: 2\r\n\r\nhi"),
        ),
        invalid(
            "space before the colon",
            format!("{ok}Content-Length : 2\r\n\r\nhi"),
        ),
        invalid(
            "obs-fold",
            format!("{ok}X-A: a\r\n b\r\nContent-Length: 2\r\n\r\nhi"),
        ),
        invalid(
            "empty field name",
            format!("{ok}: x\r\nContent-Length: 2\r\n\r\nhi"),
        ),
        invalid(
            "line without a colon",
            format!("{ok}NoColon\r\nContent-Length: 2\r\n\r\nhi"),
        ),
    ]
}

/// Truncation, silence, garbage, size, and bodies that go wrong.
fn invalid_body_cases() -> Vec<Invalid> {
    let ok = "HTTP/1.1 200 OK\r\n";
    let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    let big_fields: String = (0..10)
        .map(|i| format!("X-Filler-{i}: {}\r\n", "f".repeat(2000)))
        .collect();
    let many_fields: String = (0..120).map(|i| format!("X-{i}: v\r\n")).collect();
    vec![
        // Truncation, silence, garbage, size.
        invalid("head cut short", "HTTP/1.1 200 OK\r\nContent-Le").closing(),
        Invalid {
            gets: Gets::InterimThenBadGateway {
                interim: b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
            },
            ..invalid(
                "an interim response, then the backend closes",
                "HTTP/1.1 100 Continue\r\n\r\n",
            )
            .closing()
        },
        invalid("only a status line", ok).closing(),
        invalid("empty answer", "").closing(),
        invalid("binary garbage", garbage(7, 512)),
        invalid(
            "a TLS handshake",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\x5f\x9a",
        ),
        invalid(
            "head over 16 KiB",
            format!("{ok}{big_fields}Content-Length: 2\r\n\r\nhi"),
        ),
        invalid(
            "more than 100 fields",
            format!("{ok}{many_fields}Content-Length: 2\r\n\r\nhi"),
        ),
        invalid(
            "101 without an upgrade request",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        ),
        Invalid {
            request: HTTP10,
            ..invalid(
                "gzip then chunked to an HTTP/1.0 client",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
            )
        },
        // Bodies that go wrong after the head: the client may have the head, never a complete body.
        invalid(
            "body shorter than Content-Length",
            format!("{ok}Content-Length: 10\r\n\r\nhi"),
        )
        .closing()
        .reset_after(format!("{ok}Content-Length: 10\r\n\r\nhi")),
        invalid(
            "invalid chunk size",
            format!("{chunked}zz\r\nhi\r\n0\r\n\r\n"),
        )
        .reset_after(chunked),
        invalid(
            "invalid chunk size after a valid chunk",
            format!("{chunked}2\r\nhi\r\nxyz\r\n"),
        )
        .reset_after(format!("{chunked}2\r\nhi\r\n")),
        invalid(
            "chunk size overflow",
            format!("{chunked}fffffffffffffffff1\r\nhi\r\n"),
        )
        .reset_after(chunked),
        invalid(
            "chunk longer than its size",
            format!("{chunked}2\r\nhello\r\n0\r\n\r\n"),
        )
        .reset_after(format!("{chunked}2\r\nhe")),
        invalid("bare LF in chunk framing", format!("{chunked}2\nhi\n0\n\n")).reset_after(chunked),
        invalid(
            "chunk extension too long",
            format!("{chunked}2;{}\r\nhi\r\n0\r\n\r\n", "e".repeat(5000)),
        )
        .reset_after(chunked),
        invalid(
            "trailer section too large",
            format!("{chunked}0\r\nX-T: {}\r\n\r\n", "t".repeat(20_000)),
        )
        .reset_after(format!("{chunked}0\r\n")),
        invalid("chunked body cut short", format!("{chunked}5\r\nhe"))
            .closing()
            .reset_after(format!("{chunked}5\r\nhe")),
    ]
}

pub fn check_invalid(engine: &str) {
    let cases = invalid_cases();
    assert!(cases.len() >= 35, "the table keeps at least 35 cases");
    for case in &cases {
        let what = format!("{engine}: {}", case.name);
        let hostile = Hostile::start(case.answer.clone(), case.then_close, 1);
        let lb = start_lb(engine, SETTINGS, &[hostile.addr()]);
        let mut client = lb.client();
        client.send(case.request);
        let got = client.read_all();
        case.gets.check(&got, client.reset, &what);
        drop(client);
        wait_until(
            &format!("{what}: the backend to see its connection closed"),
            || hostile.closed_connections() == 1,
        );
        let next = get(lb.addr, "/next");
        assert_eq!((next.status, next.text().as_str()), (200, "next"), "{what}");
        assert_eq!(
            hostile.per_connection(),
            vec![1, 1],
            "{what}: the next request went to a new backend connection"
        );
        lb.wait_idle();
        let b = &lb.snapshot().backends[0];
        assert_eq!(
            (b.request_count, b.success_count, b.error_count),
            (2, 1, 1),
            "{what}: one failure, one success"
        );
    }
}

/// What the second request on a pooled connection gets when the connection answers it badly.
enum Second {
    /// The backend answered (badly), so the request is not sent again.
    Gets(Gets),
    /// Silence: the backend closed the pooled connection; the request is sent again on a new one.
    Resent,
}

struct Pooled {
    name: &'static str,
    request: &'static [u8],
    answer: &'static [u8],
    then_close: bool,
    second: Second,
}

fn pooled_cases() -> Vec<Pooled> {
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    let case = |name, answer, then_close, second| Pooled {
        name,
        request: NEXT_REQUEST,
        answer,
        then_close,
        second,
    };
    vec![
        case(
            "invalid status line",
            b"HTTZ/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
            false,
            Second::Gets(Gets::BadGateway),
        ),
        case(
            "head cut short",
            b"HTTP/1.1 200 OK\r\nContent-Le",
            true,
            Second::Gets(Gets::BadGateway),
        ),
        case(
            "invalid chunk size",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            false,
            Second::Gets(Gets::Reset {
                at_most: chunked.to_vec(),
            }),
        ),
        case("closed without an answer", b"", true, Second::Resent),
        Pooled {
            request: b"DELETE /thing HTTP/1.1\r\nHost: h\r\n\r\n",
            ..case(
                "invalid status line in answer to DELETE",
                b"HTTP/1.1 20 OK\r\n\r\n",
                false,
                Second::Gets(Gets::BadGateway),
            )
        },
    ]
}

/// Invalid answers on a pooled connection (the second request on it). Response bytes arrived, so the
/// request is not sent again: 502 (or a reset once the head is out) and the connection is closed.
/// Silence, a pooled connection the backend closed, is what the resend on a new connection is for.
pub fn check_pooled_invalid(engine: &str) {
    for case in pooled_cases() {
        let what = format!("{engine}: pooled connection, {}", case.name);
        let hostile = Hostile::start(case.answer.to_vec(), case.then_close, 2);
        let lb = start_lb(engine, SETTINGS, &[hostile.addr()]);
        let mut client = lb.client();
        client.send(FIRST);
        assert_eq!(Shown(&read_n(&mut client, ONE.len())), Shown(ONE), "{what}");
        client.send(case.request);
        let got = client.read_all();
        match &case.second {
            Second::Resent => {
                assert!(got.starts_with(NEXT), "{what}: got {:?}", Shown(&got));
                assert_eq!(hostile.per_connection(), vec![2, 1], "{what}: sent again");
            }
            Second::Gets(gets) => {
                gets.check(&got, client.reset, &what);
                assert_eq!(hostile.per_connection(), vec![2], "{what}: not sent again");
            }
        }
        drop(client);
        lb.wait_idle();
        assert_stats_add_up(&lb, engine);
    }
}

/// A 204 whose stray "body" arrives after lb has pooled the connection: the connection is dropped
/// (by the event loop as soon as the bytes arrive, by the threaded engine when it next looks), and the
/// next request gets a real response, never the stray bytes.
pub fn check_stray_bytes_later(engine: &str) {
    let (client_has_204, stray_sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (go, sent) = (client_has_204.clone(), stray_sent.clone());
    let connections = Arc::new(Mutex::new(0usize));
    let backend = Backend::start(move |mut peer| {
        let first = std::mem::replace(&mut *connections.lock().unwrap(), 1) == 0;
        while peer.read_request().is_some() {
            if first {
                peer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 38\r\n\r\n");
                wait_until("the client to have the 204", || go.load(Ordering::SeqCst));
                peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray");
                sent.store(true, Ordering::SeqCst);
            } else if !peer.write(NEXT) {
                return;
            }
        }
    });
    let lb = start_lb(engine, SETTINGS, &[backend.addr]);
    let mut client = lb.client();
    client.send(FIRST);
    let head = read_n(&mut client, b"HTTP/1.1 204 No Content\r\n\r\n".len());
    assert_eq!(
        Shown(&head),
        Shown(b"HTTP/1.1 204 No Content\r\n\r\n"),
        "{engine}"
    );
    client_has_204.store(true, Ordering::SeqCst);
    wait_until("the stray bytes to be sent", || {
        stray_sent.load(Ordering::SeqCst)
    });
    if engine == "event_loop" {
        // The loop watches pooled connections: stray bytes close one at once.
        wait_until("lb to close the pooled connection", || {
            backend.finished.load(Ordering::SeqCst) == 1
        });
    }
    client.send(NEXT_REQUEST);
    assert_eq!(
        Shown(&read_n(&mut client, NEXT.len())),
        Shown(NEXT),
        "{engine}"
    );
    assert_eq!(
        backend.connection_count(),
        2,
        "{engine}: a new backend connection"
    );
    drop(client);
    assert_no_leaks(&lb, engine);
    assert_stats_add_up(&lb, engine);
}

// ---------------------------------------------------------------------------------------------------
// The binary logs what went wrong.

/// A running `lb` process, killed on drop, its stderr collected line by line.
struct LbProcess {
    child: std::process::Child,
    log: Arc<Mutex<Vec<String>>>,
    config: std::path::PathBuf,
}

impl LbProcess {
    fn start(engine: &str, config: &str) -> (LbProcess, SocketAddr) {
        let (engine, config) = match engine {
            "workers2" => ("event_loop", format!("workers = 2\n{config}")),
            other => (other, config.to_string()),
        };
        let dir = std::env::temp_dir().join(format!("lb-hostile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{engine}.toml"));
        std::fs::write(&path, config).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lb"))
            .args(["--engine", engine])
            .arg(&path)
            .env_remove("RUST_LOG")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let process = LbProcess {
            child,
            log,
            config: path,
        };
        let mut addr = None;
        wait_until("lb to log where it listens", || {
            addr = process.find("listening on ").and_then(|line| {
                let rest = line.split("listening on ").nth(1)?;
                rest.split_whitespace().next()?.parse().ok()
            });
            addr.is_some()
        });
        (process, addr.unwrap())
    }

    fn find(&self, needle: &str) -> Option<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    }
}

impl Drop for LbProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

pub fn check_binary_logs_invalid_response(engine: &str) {
    let hostile = Hostile::start(
        b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nhi".to_vec(),
        false,
        1,
    );
    let config = format!(
        "listen = \"127.0.0.1:0\"\nretries = 0\naccess_log = false\n[health_check]\ninterval = \"1h\"\n\
         [[backends]]\nurl = \"http://{}\"\n",
        hostile.addr()
    );
    let (lb, addr) = LbProcess::start(engine, &config);
    let mut client = Client::connect(addr);
    client.send(FIRST);
    assert_eq!(Shown(&client.read_all()), Shown(bad_gateway()), "{engine}");
    let needle = format!("backend http://{}: invalid response", hostile.addr());
    let mut line = None;
    wait_until("the warning about the backend", || {
        line = lb.find(&needle);
        line.is_some()
    });
    let line = line.unwrap();
    assert!(
        line.contains("WARN"),
        "{engine}: logged as a warning: {line}"
    );
    assert!(
        line.contains("-> 502 for 127.0.0.1:"),
        "{engine}: says what the client got: {line}"
    );
    assert!(
        line.contains("\"GET /first\""),
        "{engine}: names the request: {line}"
    );
    if engine == "event_loop" {
        // The threaded engine logs only "invalid response", without the parser's reason (reported).
        assert!(
            line.contains("invalid response: malformed head: invalid status -> 502"),
            "{engine}: names the reason: {line}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// The randomized run.

/// xorshift64*: small, seeded, the same sequence on every run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng((seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn byte(&mut self) -> u8 {
        (self.next() >> 32) as u8
    }

    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }
}

const SEED: u64 = 0x1b8f_35bc_89eb_20d5;
const RESPONSES: usize = 3000;
const REQUESTS: usize = 3000;
const CLIENT_THREADS: usize = 4;

fn body_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Chunked framing for `body`, in up to three chunks, with the odd extension, upper-case or zero-padded
/// size and trailer field.
fn chunks(rng: &mut Rng, body: &[u8], out: &mut Vec<u8>) {
    let mut rest = body;
    while !rest.is_empty() {
        let n = 1 + rng.below(rest.len());
        let size = if rng.one_in(4) {
            format!("0{n:X}")
        } else {
            format!("{n:x}")
        };
        out.extend_from_slice(size.as_bytes());
        if rng.one_in(4) {
            out.extend_from_slice(b";ext=\"v\"");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n");
    if rng.one_in(3) {
        out.extend_from_slice(b"X-Trailer: t\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn valid_response(rng: &mut Rng) -> Vec<u8> {
    let kind = rng.below(6);
    let body = body_of(rng.below(48));
    let mut out = Vec::new();
    if rng.one_in(6) {
        out.extend_from_slice(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n");
    }
    out.extend_from_slice(if kind == 5 || rng.one_in(8) {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    let status = if kind == 4 {
        rng.pick(&["204", "304"])
    } else {
        rng.pick(&["200", "201", "206", "404", "410", "500", "503", "299"])
    };
    out.extend_from_slice(status.as_bytes());
    if !rng.one_in(8) {
        out.push(b' ');
        out.extend_from_slice(rng.pick::<[u8]>(&[
            b"OK",
            b"",
            b"Not Found",
            b"\xc3\x87a va",
            b"Gone\tAway",
        ]));
    }
    out.extend_from_slice(b"\r\n");
    for _ in 0..rng.below(3) {
        out.extend_from_slice(rng.pick::<[u8]>(&[
            b"Server: hostile\r\n",
            b"X-Obs: caf\xe9\r\n",
            b"Connection: close\r\n",
            b"Connection: keep-alive, X-Hop\r\n",
            b"X-Hop: 1\r\n",
            b"Keep-Alive: timeout=5\r\n",
            b"Content-Type: text/plain\r\n",
        ]));
    }
    match kind {
        2 => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            chunks(rng, &body, &mut out);
        }
        3 => {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&body);
        }
        4 if rng.one_in(2) => out.extend_from_slice(b"Content-Length: 7\r\n\r\n"),
        4 => out.extend_from_slice(b"\r\n"),
        _ => {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            out.extend_from_slice(&body);
        }
    }
    out
}

/// Applies one to three mutations: inserted CR, LF, NUL, obs-text, spaces, colons; deleted bytes;
/// truncation; flipped digits; duplicated or added framing fields; bare LF line endings.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(9) {
            0 => bytes.insert(
                at,
                *rng.pick(&[&b'\r', &b'\n', &0u8, &b' ', &b':', &b'\t', &b';']),
            ),
            1 => bytes.insert(at, 0x80 | rng.byte()),
            2 => bytes.truncate(at),
            3 => {
                let end = (at + 1 + rng.below(4)).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            4 => {
                let digits: Vec<usize> = (0..bytes.len())
                    .filter(|&i| bytes[i].is_ascii_hexdigit())
                    .collect();
                if !digits.is_empty() {
                    let i = digits[rng.below(digits.len())];
                    bytes[i] = b"0123456789aFx-+ "[rng.below(16)];
                }
            }
            5 => duplicate_framing_line(rng, bytes),
            6 => {
                let line: &[u8] = rng.pick::<[u8]>(&[
                    b"Content-Length: 3\r\n",
                    b"Transfer-Encoding: chunked\r\n",
                    b"Content-Length: +1\r\n",
                    b"Transfer-Encoding: gzip\r\n",
                    b"Content-Length: 99999999999999999999\r\n",
                ]);
                let after_first_line = find(bytes, b"\n").map_or(0, |i| i + 1);
                bytes.splice(after_first_line..after_first_line, line.iter().copied());
            }
            7 if at < bytes.len() => bytes[at] = rng.byte(),
            _ => {
                let head_end = find(bytes, b"\r\n\r\n").map_or(bytes.len(), |i| i + 4);
                let head: Vec<u8> = bytes[..head_end]
                    .iter()
                    .copied()
                    .filter(|&b| b != b'\r')
                    .collect();
                bytes.splice(..head_end, head);
            }
        }
    }
}

/// Duplicates a Content-Length or Transfer-Encoding line, sometimes with a different value.
fn duplicate_framing_line(rng: &mut Rng, bytes: &mut Vec<u8>) {
    let name: &[u8] = rng.pick::<[u8]>(&[b"Content-Length:", b"Transfer-Encoding:"]);
    let Some(start) = find(bytes, name) else {
        return;
    };
    let end = find(&bytes[start..], b"\n").map_or(bytes.len(), |i| start + i + 1);
    let mut line = bytes[start..end].to_vec();
    if rng.one_in(2)
        && let Some(d) = line.iter().position(u8::is_ascii_digit)
    {
        line[d] = b'0' + (line[d] - b'0' + 1) % 10;
    }
    bytes.splice(end..end, line);
}

/// Response number `i` of the randomized run: valid, mutated or plain random bytes.
fn random_response(i: usize) -> Vec<u8> {
    let mut rng = Rng::new(SEED ^ ((i as u64) << 1));
    match rng.below(10) {
        0 => valid_response(&mut rng),
        1 => {
            let mut bytes = if rng.one_in(2) {
                b"HTTP/1.1 ".to_vec()
            } else {
                Vec::new()
            };
            bytes.extend((0..rng.below(300)).map(|_| rng.byte()));
            bytes
        }
        _ => {
            let mut bytes = valid_response(&mut rng);
            mutate(&mut rng, &mut bytes);
            bytes
        }
    }
}

/// What the client must receive for a response, according to lb's pure parsing and framing functions.
enum Expect {
    /// Exactly these bytes, then a clean close.
    Exactly(Vec<u8>),
    /// The interim responses relayed so far, then the canned 502 (or, once an interim response went
    /// out, possibly a reset instead).
    BadGateway { interim: Vec<u8> },
    /// A reset after at most these bytes: the body cannot be completed. If lb saw the fault before
    /// any byte of the final head went out, the interim responses and its canned 502 instead.
    Reset { at_most: Vec<u8>, interim: Vec<u8> },
}

impl fmt::Debug for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Exactly(bytes) => write!(f, "exactly {:?}", Shown(bytes)),
            Expect::BadGateway { interim } => write!(f, "502 after {:?}", Shown(interim)),
            Expect::Reset { at_most, .. } => {
                write!(f, "a reset after at most {:?}", Shown(at_most))
            }
        }
    }
}

fn expected_relay(generated: &[u8], is_head: bool) -> Expect {
    let mut interim = Vec::new();
    let mut rest = generated;
    let mut out = vec![0u8; HEAD_LIMIT];
    let head = loop {
        let Ok(Some(head)) = response::parse_response(rest, is_head, HEAD_LIMIT) else {
            return Expect::BadGateway { interim };
        };
        if !head.is_informational() || head.status == 101 {
            break head;
        }
        let n = response::write_response_head(rest, &head, None, Version::Http11, &mut out)
            .expect("small interim head");
        interim.extend_from_slice(&out[..n]);
        rest = &rest[head.head_len..];
    };
    // The client asked for `Connection: close`.
    let Ok(plan) = response::plan_response(&head, Version::Http11, false, false) else {
        return Expect::BadGateway { interim };
    };
    let n = response::write_response_head(rest, &head, Some(&plan), Version::Http11, &mut out)
        .expect("small head");
    let mut full = interim.clone();
    full.extend_from_slice(&out[..n]);
    let body = &rest[head.head_len..];
    match plan.body {
        ClientBody::Empty => Expect::Exactly(full),
        ClientBody::Length(n) if body.len() as u64 >= n => {
            full.extend_from_slice(&body[..n as usize]);
            Expect::Exactly(full)
        }
        ClientBody::Length(_) => {
            full.extend_from_slice(body);
            Expect::Reset {
                at_most: full,
                interim,
            }
        }
        ClientBody::Chunked => {
            let mut relay = Relay::Chunked(ChunkedDecoder::new(true));
            let complete = relay_all(&mut relay, body, &mut full).is_ok() && relay.is_done();
            if complete {
                Expect::Exactly(full)
            } else {
                Expect::Reset {
                    at_most: full,
                    interim,
                }
            }
        }
        ClientBody::UntilClose => {
            full.extend_from_slice(body);
            Expect::Exactly(full)
        }
        ClientBody::Dechunked | ClientBody::Tunnel => unreachable!("HTTP/1.1 client, no upgrade"),
    }
}

/// How a randomized case ended, for the tally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ending {
    Relayed,
    BadGateway,
    Reset,
    /// A canned response of lb's other than 502, by status.
    Canned(u16),
    /// A request case: responses from the backend, then a clean close.
    Served(usize),
}

/// Requests response number `i` and compares what arrives with [`expected_relay`].
fn check_random_response(addr: SocketAddr, i: usize) -> Result<Ending, String> {
    let generated = random_response(i);
    let is_head = i % 8 == 7;
    let method = if is_head { "HEAD" } else { "GET" };
    let mut client = Client::connect(addr);
    client.send(
        format!("{method} /r/{i} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let got = client.read_all();
    let expect = expected_relay(&generated, is_head);
    let fail = |why: &str| {
        format!(
            "response {i} ({method}): {why}\n  backend sent {:?}\n  expected     {expect:?}\n  \
             client got   {:?} (reset: {})",
            Shown(&generated),
            Shown(&got),
            client.reset
        )
    };
    match &expect {
        Expect::Exactly(bytes) if got == *bytes && !client.reset => Ok(Ending::Relayed),
        Expect::BadGateway { interim }
            if got == [&interim[..], bad_gateway()].concat() && !client.reset =>
        {
            Ok(Ending::BadGateway)
        }
        Expect::BadGateway { interim }
            if !interim.is_empty() && client.reset && interim.starts_with(&got) =>
        {
            Ok(Ending::Reset)
        }
        Expect::Reset { at_most, .. } if client.reset && at_most.starts_with(&got) => {
            Ok(Ending::Reset)
        }
        Expect::Reset { interim, .. }
            if !client.reset && got == [&interim[..], bad_gateway()].concat() =>
        {
            Ok(Ending::BadGateway)
        }
        _ => Err(fail("unexpected answer")),
    }
}

/// Runs `check` for cases `0..count` on a few client threads, asserts that none failed, and returns
/// how they ended and how long the cases took.
fn run_cases(
    what: &str,
    count: usize,
    check: impl Fn(usize) -> Result<Ending, String> + Sync,
) -> (BTreeMap<Ending, usize>, Duration) {
    let started = Instant::now();
    let results: Vec<Result<Ending, String>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..CLIENT_THREADS)
            .map(|t| {
                let check = &check;
                s.spawn(move || {
                    (t..count)
                        .step_by(CLIENT_THREADS)
                        .map(check)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("client thread"))
            .collect()
    });
    let elapsed = started.elapsed();
    let mut tally = BTreeMap::new();
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(ending) => *tally.entry(ending).or_insert(0) += 1,
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {count} cases went wrong; the first:\n{}",
        failures.len(),
        failures[..failures.len().min(3)].join("\n")
    );
    (tally, elapsed)
}

/// The path's case number in a request head `GET /r/17 HTTP/1.1...`.
fn case_number(head: &str) -> Option<usize> {
    let target = head.split(' ').nth(1)?;
    target.strip_prefix("/r/")?.parse().ok()
}

pub fn random_responses(engine: &str) -> String {
    // Each connection answers one random response and closes; `/` is answered normally.
    let backend = Backend::start(|mut peer| {
        while let Some(request) = peer.read_request() {
            match case_number(&request.head) {
                Some(i) => {
                    peer.write(&random_response(i));
                    return;
                }
                None if !peer.ok("alive") => return,
                None => {}
            }
        }
    });
    let lb = start_lb(engine, RANDOM_SETTINGS, &[backend.addr]);
    let what = format!("{engine}: random responses");
    let (tally, elapsed) = run_cases(&what, RESPONSES, |i| check_random_response(lb.addr, i));
    for ending in [Ending::Relayed, Ending::BadGateway, Ending::Reset] {
        assert!(
            tally.get(&ending).copied().unwrap_or(0) >= RESPONSES / 50,
            "{engine}: {tally:?}: every ending is exercised"
        );
    }
    let plain = get(lb.addr, "/");
    assert_eq!(
        (plain.status, plain.text().as_str()),
        (200, "alive"),
        "{engine}: lb still serves"
    );
    assert_no_leaks(&lb, engine);
    assert_stats_add_up(&lb, engine);
    format!("cases in {:.1} s, {tally:?}", elapsed.as_secs_f64())
}

/// Requests the randomized run starts from, besides a `POST` and a chunked `PUT` with bodies and a
/// head over the limit.
const REQUEST_TEMPLATES: [&[u8]; 6] = [
    b"GET /q HTTP/1.1\r\nHost: h\r\n\r\n",
    b"HEAD /q HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
    b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET http://example.com/x?y=1 HTTP/1.1\r\nHost: other\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
];

fn valid_request(rng: &mut Rng, out: &mut Vec<u8>) {
    if rng.one_in(40) {
        let big = "b".repeat(17 * 1024);
        out.extend_from_slice(
            format!("GET /big HTTP/1.1\r\nHost: h\r\nX-Big: {big}\r\n\r\n").as_bytes(),
        );
        return;
    }
    let body = body_of(rng.below(20));
    match rng.below(REQUEST_TEMPLATES.len() + 2) {
        0 => {
            let head = format!(
                "POST /q HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(&body);
        }
        1 => {
            out.extend_from_slice(
                b"PUT /q HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            chunks(rng, &body, out);
        }
        n => out.extend_from_slice(REQUEST_TEMPLATES[n - 2]),
    }
}

/// Request number `i` of the randomized run: one to three requests in a row, valid, mutated or random.
fn random_request(i: usize) -> Vec<u8> {
    let mut rng = Rng::new(SEED.rotate_left(17) ^ i as u64);
    let mut out = Vec::new();
    for _ in 0..1 + rng.below(3) {
        valid_request(&mut rng, &mut out);
    }
    match rng.below(10) {
        0 => out,
        1 => (0..rng.below(300)).map(|_| rng.byte()).collect(),
        _ => {
            mutate(&mut rng, &mut out);
            out
        }
    }
}

/// Splits what a client received into responses: the backend's `200 OK` with body `ok` (none for
/// HEAD), or one of lb's canned responses, which ends the connection.
fn split_answers(mut got: &[u8]) -> Result<Ending, String> {
    let canned = [
        ErrorResponse::BadRequest,
        ErrorResponse::RequestTimeout,
        ErrorResponse::HeadTooLarge,
        ErrorResponse::NotImplemented,
        ErrorResponse::BadGateway,
        ErrorResponse::ServiceUnavailable,
        ErrorResponse::GatewayTimeout,
    ];
    let mut served = 0;
    while !got.is_empty() {
        if let Some(e) = canned.iter().find(|e| got.starts_with(e.bytes())) {
            if got.len() > e.bytes().len() {
                return Err(format!("bytes after a canned {}", e.status()));
            }
            return Ok(Ending::Canned(e.status()));
        }
        let end = find(got, b"\r\n\r\n").ok_or("an incomplete head")? + 4;
        let head = &got[..end];
        let fields = head
            .strip_prefix(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n")
            .ok_or_else(|| format!("an unexpected head {:?}", Shown(head)))?;
        if ![
            &b"\r\n"[..],
            b"Connection: close\r\n\r\n",
            b"Connection: keep-alive\r\n\r\n",
        ]
        .contains(&fields)
        {
            return Err(format!("unexpected fields {:?}", Shown(fields)));
        }
        got = &got[end..];
        got = got.strip_prefix(b"ok").unwrap_or(got);
        served += 1;
    }
    Ok(Ending::Served(served.min(1)))
}

/// Sends request number `i`, half-closes, reads to the end, and checks what came back.
fn check_random_request(addr: SocketAddr, i: usize) -> Result<Ending, String> {
    let sent = random_request(i);
    let mut client = Client::connect(addr);
    // lb may answer and close before reading everything: a failed write is not the question here.
    let _ = client.stream.write_all(&sent);
    let _ = client.stream.shutdown(Shutdown::Write);
    let got = client.read_all();
    let ending = split_answers(&got).map_err(|why| {
        format!(
            "request {i}: {why}\n  sent {:?}\n  got  {:?} (reset: {})",
            Shown(&sent),
            Shown(&got),
            client.reset
        )
    })?;
    // The first request's fate is known from lb's own parser: rejected with its status, or served.
    let first = match lb::http::request::parse_request(&sent, HEAD_LIMIT) {
        Err(e) => Some(lb::http::request::error_response(e).status()),
        Ok(_) => None,
    };
    match (ending, first) {
        // Rejected at once, with a canned status (which one can depend on how much of an oversized
        // head had arrived when lb looked).
        (Ending::Canned(400 | 431 | 501), Some(_)) => Ok(ending),
        // Served, and perhaps a later pipelined request rejected.
        (Ending::Served(_) | Ending::Canned(400 | 431 | 501), None) => Ok(ending),
        _ => Err(format!(
            "request {i}: {ending:?} from a healthy backend, expected {}\n  sent {:?}",
            first.map_or("responses from the backend".to_string(), |s| format!("{s}")),
            Shown(&sent)
        )),
    }
}

pub fn random_requests(engine: &str) -> String {
    // A normal keep-alive backend; a request it cannot parse would be lb's fault.
    let confused = Arc::new(AtomicBool::new(false));
    let flag = confused.clone();
    let backend = Backend::start(move |mut peer| {
        loop {
            match catch_unwind(AssertUnwindSafe(|| peer.read_request())) {
                Ok(Some(_)) if peer.ok("ok") => {}
                Ok(_) => return,
                Err(_) => {
                    flag.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
    });
    let lb = start_lb(engine, RANDOM_SETTINGS, &[backend.addr]);
    let what = format!("{engine}: random requests");
    let (tally, elapsed) = run_cases(&what, REQUESTS, |i| check_random_request(lb.addr, i));
    assert!(
        !confused.load(Ordering::SeqCst),
        "{engine}: lb forwarded a request the backend could not parse"
    );
    for received in backend.requests() {
        let raw = [received.head.as_bytes(), &received.raw_body].concat();
        assert!(
            matches!(
                lb::http::request::parse_request(&raw, HEAD_LIMIT),
                Ok(Some(_))
            ),
            "{engine}: lb forwarded a request it would reject itself: {:?}",
            Shown(&raw)
        );
    }
    assert!(
        tally.get(&Ending::Canned(400)).copied().unwrap_or(0) >= REQUESTS / 10,
        "{engine}: {tally:?}"
    );
    assert!(
        tally.get(&Ending::Served(1)).copied().unwrap_or(0) >= REQUESTS / 10,
        "{engine}: {tally:?}"
    );
    let plain = get(lb.addr, "/");
    assert_eq!(
        (plain.status, plain.text().as_str()),
        (200, "ok"),
        "{engine}: lb still serves"
    );
    assert_no_leaks(&lb, engine);
    assert_stats_add_up(&lb, engine);
    format!("cases in {:.1} s, {tally:?}", elapsed.as_secs_f64())
}

pub fn check_randomized(engine: &str) {
    let started = Instant::now();
    let responses = random_responses(engine);
    let requests = random_requests(engine);
    let elapsed = started.elapsed();
    eprintln!(
        "hostile random: {engine} {RESPONSES} responses + {REQUESTS} requests in {:.1} s \
         (leak checks included)\n  responses: {responses}\n  requests: {requests}",
        elapsed.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------------
// Regressions: bugs this suite found, each test stating the behaviour that was wrong.

#[test]
fn regression_an_abandoned_request_is_taken_back_once() {
    // The event loop used to take such a request out of the counts twice.
    for engine in ENGINES {
        let backend = Backend::named("ok");
        let lb = start_lb(engine, SETTINGS, &[backend.addr]);
        assert_eq!(get(lb.addr, "/").status, 200, "{engine}");
        // A client that sends half of its body, then leaves.
        let mut client = lb.client();
        client.send(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhello");
        client.half_close();
        assert!(
            client.read_all().is_empty() && client.reset,
            "{engine}: reset"
        );
        lb.wait_idle();
        let b = &lb.snapshot().backends[0];
        assert_eq!(
            (b.request_count, b.success_count, b.error_count),
            (1, 1, 0),
            "{engine}: the first request still counts, the abandoned one does not"
        );
    }
}

#[test]
fn regression_an_http10_response_with_transfer_encoding_closes_its_connection() {
    let case = relayed(
        "HTTP/1.0 keep-alive response with Transfer-Encoding",
        "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        NOT_REUSED,
    );
    for engine in ENGINES {
        check_relayed_case(engine, &case);
    }
}

#[test]
fn regression_absolute_form_with_a_query_and_no_path() {
    for engine in ENGINES {
        let backend = Backend::named("ok");
        let lb = start_lb(engine, SETTINGS, &[backend.addr]);
        let answer = request(
            lb.addr,
            "GET http://example.com?y=1 HTTP/1.1\r\nHost: other\r\n\r\n",
        );
        assert_eq!(answer.status, 200, "{engine}");
        // RFC 9112 3.2.1: an empty path is sent as "/" in origin-form.
        let head = &backend.requests()[0].head;
        assert!(
            head.starts_with("GET /?y=1 HTTP/1.1\r\nHost: example.com\r\n"),
            "{engine}: {head:?}"
        );
    }
}
