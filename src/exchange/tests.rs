//! Scenarios of the exchange core with no sockets: bytes in, events in, and the exact bytes and actions
//! that come out, with the backends' counts checked after each.

use super::*;
use crate::balance::Balancer;
use crate::random::Rng;
use std::net::IpAddr;

struct Fake {
    config: Config,
    balancer: Balancer,
    draining: bool,
    answered: u64,
}

impl Context for Fake {
    fn config(&self) -> &Config {
        &self.config
    }
    fn pick(
        &mut self,
        pool: usize,
        client: IpAddr,
        tried: Tried,
        prefer: Option<u64>,
    ) -> crate::balance::Pick {
        self.balancer.pick(pool, client, tried, prefer)
    }

    fn enqueue(&mut self, pool: usize) -> Option<crate::balance::QueueSpot> {
        self.balancer.enqueue(pool, self.config.queue.size)
    }
    fn admit_request(&mut self, _client: IpAddr, _now: Instant) -> bool {
        true
    }
    fn draining(&self) -> bool {
        self.draining
    }
    fn count_request(&mut self) {
        self.answered += 1;
    }
    fn https_redirect_port(&self) -> Option<u16> {
        None
    }
}

fn fake(settings: &str, backends: usize) -> Fake {
    let mut text = format!("access_log = false\n{settings}\n");
    for i in 0..backends {
        text.push_str(&format!(
            "[[backends]]\nurl = \"http://127.0.0.1:{}\"\n",
            9100 + i
        ));
    }
    let config = Config::parse(&text).expect("config");
    let balancer = Balancer::with_rng(&config.backends, config.algorithm, 2, 3, Rng::with_seed(1));
    Fake {
        config,
        balancer,
        draining: false,
        answered: 0,
    }
}

const CLIENT: &str = "192.0.2.7:50000";

/// An exchange plus what its driver would see: actions taken, bytes "written" to each peer.
struct Run {
    ex: Exchange,
    ctx: Fake,
    now: Instant,
    actions: Vec<Action>,
    to_backend: Vec<u8>,
    to_client: Vec<u8>,
}

impl Run {
    fn new(settings: &str, backends: usize) -> Run {
        let now = Instant::now();
        Run {
            ex: Exchange::new(1, CLIENT.parse().unwrap(), false, now),
            ctx: fake(settings, backends),
            now,
            actions: Vec::new(),
            to_backend: Vec::new(),
            to_client: Vec::new(),
        }
    }

    fn take(&mut self, actions: Actions) {
        self.actions.extend(actions);
        self.flush();
    }

    /// Writes everything the exchange offers, as a driver with always-writable sockets would.
    fn flush(&mut self) {
        for _ in 0..1000 {
            let out = self.ex.backend_output();
            if !out.is_empty() {
                let n = out.len();
                self.to_backend.extend_from_slice(out.first);
                self.to_backend.extend_from_slice(out.second);
                let a = self.ex.on_backend_sent(n, &mut self.ctx, self.now);
                self.actions.extend(a);
                continue;
            }
            let out = self.ex.client_output();
            if !out.is_empty() {
                let n = out.len();
                self.to_client.extend_from_slice(out.first);
                self.to_client.extend_from_slice(out.second);
                let a = self.ex.on_client_sent(n, &mut self.ctx, self.now);
                self.actions.extend(a);
                continue;
            }
            return;
        }
        panic!("output never ran dry");
    }

    fn client_sends(&mut self, bytes: &[u8]) {
        assert!(self.ex.client_buffer().append(bytes));
        let a = self.ex.on_client_input(&mut self.ctx, self.now);
        self.take(a);
    }

    fn backend_sends(&mut self, bytes: &[u8]) {
        assert!(self.ex.backend_buffer().append(bytes));
        let a = self.ex.on_backend_input(&mut self.ctx, self.now);
        self.take(a);
    }

    fn connected(&mut self, reused: bool) {
        let a = self.ex.on_connected(reused, &mut self.ctx, self.now);
        self.take(a);
    }

    fn backend_eof(&mut self) {
        let a = self.ex.on_backend_eof(&mut self.ctx, self.now);
        self.take(a);
    }

    fn client_eof(&mut self) {
        let a = self.ex.on_client_eof(&mut self.ctx, self.now);
        self.take(a);
    }

    fn timeout(&mut self) {
        self.now = self.ex.deadline(&self.ctx.config);
        let a = self.ex.on_timeout(&mut self.ctx, self.now);
        self.take(a);
    }

    /// The actions so far, as short names (`connect 0 any`, `release reuse`, ...), then forgets them.
    fn said(&mut self) -> Vec<String> {
        self.actions
            .drain(..)
            .map(|a| match a {
                // The backend of the attempt under way when the actions are taken, as a driver
                // sees it (tests take them after each event).
                Action::Connect { pooled } => match self.ex.attempt_backend() {
                    Some(backend) => format!("connect {} {pooled:?}", backend.slot).to_lowercase(),
                    None => format!("connect none {pooled:?}").to_lowercase(),
                },
                Action::ReleaseBackend { reuse: true } => "release reuse".into(),
                Action::ReleaseBackend { reuse: false } => "release close".into(),
                Action::ShutdownBackend => "shutdown backend".into(),
                Action::ShutdownClient => "shutdown client".into(),
                Action::Close(how) => format!("close {how:?}").to_lowercase(),
                Action::Enqueue { pool } => format!("enqueue {pool}"),
            })
            .collect()
    }

    fn client_text(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.to_client)).into_owned()
    }

    fn backend_text(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.to_backend)).into_owned()
    }

    /// (requests, successes, errors, active) of backend `slot`.
    fn counts(&self, slot: usize) -> (u64, u64, u64, u32) {
        let b = self.ctx.balancer.get(slot).unwrap();
        let s = b.stats();
        (s.requests, s.successes, s.errors, b.active())
    }
}

const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
const FORWARDED_GET: &str =
    "GET /a HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";

#[test]
fn a_get_is_forwarded_answered_and_its_connection_pooled() {
    let mut r = Run::new("", 1);
    r.client_sends(GET);
    assert_eq!(r.said(), ["connect 0 any"]);
    assert_eq!(r.ex.phase_name(), "connecting");
    r.connected(false);
    assert_eq!(r.backend_text(), FORWARDED_GET);
    r.backend_sends(OK);
    assert_eq!(
        r.client_text(),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    );
    assert_eq!(r.said(), ["release reuse"]);
    assert_eq!(r.ex.phase_name(), "reading a head");
    assert!(r.ex.is_idle());
    assert_eq!(r.counts(0), (1, 1, 0, 0));
    assert_eq!(r.ctx.answered, 1);
}

/// Writes at most `n` bytes of what the exchange offers the backend; returns them.
fn write_backend_part(r: &mut Run, n: usize) -> Vec<u8> {
    let out = r.ex.backend_output();
    let bytes = [out.first, out.second].concat();
    let n = n.min(bytes.len());
    let a = r.ex.on_backend_sent(n, &mut r.ctx, r.now);
    r.actions.extend(a);
    bytes[..n].to_vec()
}

/// A bodiless head alone in the client's input goes from there, lb's fields written after it: one
/// part, no output block, the same bytes as a head written anew. A retry starts it again from its
/// first byte, and a backend that answers before reading it all still gets the rest.
#[test]
fn a_bodiless_head_goes_from_the_client_input() {
    let mut r = Run::new("", 2);
    r.client_sends(GET);
    r.said();
    let a = r.ex.on_connected(false, &mut r.ctx, r.now);
    r.actions.extend(a);
    assert!(!r.ex.to_backend.has_storage(), "no block for the head");
    let out = r.ex.backend_output();
    assert_eq!(
        (out.first, out.second),
        (FORWARDED_GET.as_bytes(), &b""[..])
    );
    let mut got = Vec::new();
    for _ in 0..4 {
        got.extend(write_backend_part(&mut r, 7));
    }
    assert_eq!(got, FORWARDED_GET.as_bytes()[..28]);
    // The backend resets the connection part-way: the head goes whole to the other one.
    let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    let a = r.ex.on_backend_error("write", &reset, &mut r.ctx, r.now);
    r.actions.extend(a);
    assert_eq!(r.said(), ["release close", "connect 1 any"]);
    r.connected(false);
    assert_eq!(r.backend_text(), FORWARDED_GET);
    r.backend_sends(OK);
    assert_eq!(r.client_text(), String::from_utf8_lossy(OK));
    assert_eq!(r.said(), ["release reuse"]);

    // An answer after 10 bytes of the head: the rest still goes, then the next request.
    let mut r = Run::new("", 1);
    r.client_sends(GET);
    r.said();
    let a = r.ex.on_connected(false, &mut r.ctx, r.now);
    r.actions.extend(a);
    let mut got = write_backend_part(&mut r, 10);
    assert!(r.ex.backend_buffer().append(OK));
    let a = r.ex.on_backend_input(&mut r.ctx, r.now);
    r.take(a);
    got.extend(std::mem::take(&mut r.to_backend));
    assert_eq!(got, FORWARDED_GET.as_bytes());
    assert_eq!(r.client_text(), String::from_utf8_lossy(OK));
    assert_eq!(r.said(), ["release reuse"]);
    r.client_sends(GET);
    assert_eq!(r.said(), ["connect 0 any"]);
    r.connected(true);
    assert_eq!(r.backend_text(), FORWARDED_GET);
}

/// The events that skip `settle` do so only where it has nothing to do: waiting for the response with
/// the request body stepped out, no response byte and no EOF from the backend. Where the check holds,
/// `settle` itself answers nothing and changes nothing.
#[test]
fn settle_is_skipped_only_where_it_has_nothing_to_do() {
    // (request, response bytes already buffered, backend EOF, nothing to settle)
    let cases: &[(&[u8], &[u8], bool, bool)] = &[
        (GET, b"", false, true),
        (
            b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
            b"",
            false,
            true,
        ),
        (
            b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab",
            b"",
            false,
            false,
        ),
        (
            b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"",
            false,
            false,
        ),
        (GET, b"HTTP/1.1 200", false, false),
        (GET, b"", true, false),
    ];
    for &(request, buffered, eof, expected) in cases {
        let name = String::from_utf8_lossy(request).into_owned();
        let mut r = Run::new("", 1);
        r.client_sends(request);
        r.connected(false);
        assert_eq!(r.ex.phase_name(), "awaiting a response", "{name}");
        assert!(r.ex.backend_buffer().append(buffered));
        if let Phase::Serving(f) = &mut r.ex.phase {
            f.attempt.backend_eof = eof;
        }
        assert_eq!(r.ex.awaiting_with_nothing_to_settle(), expected, "{name}");
        if expected {
            let actions = r.ex.settle(&mut r.ctx, r.now);
            assert!(actions.is_empty(), "{name}");
            assert_eq!(r.ex.phase_name(), "awaiting a response", "{name}");
            assert!(r.ex.backend_output().is_empty(), "{name}");
            assert!(r.ex.client_output().is_empty(), "{name}");
        }
    }
}

/// Each side gets one write per message when the bytes are there: head and body together (one
/// `writev`, or one `send` of the two joined when small), not a system call for each.
#[test]
fn heads_and_bodies_leave_in_one_write() {
    let mut r = Run::new("", 1);
    assert!(
        r.ex.client_buffer()
            .append(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
    );
    let a = r.ex.on_client_input(&mut r.ctx, r.now);
    r.actions.extend(a);
    let a = r.ex.on_connected(false, &mut r.ctx, r.now);
    r.actions.extend(a);
    let out = r.ex.backend_output();
    assert!(out.first.starts_with(b"POST /p HTTP/1.1\r\n"));
    assert_eq!(out.second, b"abc");
    let n = out.len();
    let a = r.ex.on_backend_sent(n, &mut r.ctx, r.now);
    r.actions.extend(a);
    assert!(r.ex.backend_buffer().append(OK));
    let a = r.ex.on_backend_input(&mut r.ctx, r.now);
    r.actions.extend(a);
    // A head that needs no rewriting goes as it was received, with its body, from where it was read.
    let out = r.ex.client_output();
    assert_eq!(out.first, b"");
    assert_eq!(
        out.second,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    );
    let n = out.len();
    let a = r.ex.on_client_sent(n, &mut r.ctx, r.now);
    r.actions.extend(a);
    // One that does is written, and leaves with the body in one vectored write.
    r.client_sends(b"GET /q HTTP/1.1\r\nHost: h\r\n\r\n");
    r.connected(true);
    let n = r.ex.backend_output().len();
    let a = r.ex.on_backend_sent(n, &mut r.ctx, r.now);
    r.actions.extend(a);
    assert!(
        r.ex.backend_buffer()
            .append(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi")
    );
    let a = r.ex.on_backend_input(&mut r.ctx, r.now);
    r.actions.extend(a);
    let out = r.ex.client_output();
    assert_eq!(out.first, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
    assert_eq!(out.second, b"hi");
}

/// A body refused within the event that brought its head (a chunk size that overflows) leaves the
/// Connect asked for before it without an attempt: the driver connects nothing, and the 400 goes out.
#[test]
fn a_body_refused_with_its_head_leaves_nothing_to_connect() {
    let mut r = Run::new("", 1);
    r.client_sends(
        b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\n",
    );
    assert_eq!(
        r.said(),
        ["connect none verified", "release close", "shutdown client"]
    );
    assert!(r.ex.attempt_backend().is_none());
    assert!(r.to_backend.is_empty());
    assert!(r.to_client.starts_with(b"HTTP/1.1 400 "));
}

#[test]
fn pipelined_requests_are_answered_in_order_without_a_new_event() {
    let mut r = Run::new("", 1);
    r.client_sends(&[GET, b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n"].concat());
    assert_eq!(r.said(), ["connect 0 any"]);
    r.connected(false);
    assert_eq!(r.backend_text(), FORWARDED_GET, "one request at a time");
    r.backend_sends(OK);
    assert_eq!(
        r.said(),
        ["release reuse", "connect 0 any"],
        "the next head starts at once"
    );
    r.connected(true);
    assert!(r.backend_text().starts_with("GET /b HTTP/1.1\r\n"));
    r.backend_sends(b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(
        r.client_text(),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 204 No Content\r\n\r\n"
    );
    assert_eq!(r.counts(0), (2, 2, 0, 0));
}

#[test]
fn a_failed_connect_moves_to_the_next_backend_then_gives_502() {
    let mut r = Run::new("retries = 1", 3);
    r.client_sends(GET);
    assert_eq!(r.said(), ["connect 0 any"]);
    let a = r.ex.on_connect_failed("refused", false, &mut r.ctx, r.now);
    r.take(a);
    assert_eq!(r.said(), ["release close", "connect 1 any"]);
    let a = r.ex.on_connect_failed("refused", false, &mut r.ctx, r.now);
    r.take(a);
    assert_eq!(r.said(), ["release close", "shutdown client"]);
    assert!(r.client_text().starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
    assert_eq!(r.ex.phase_name(), "closing");
    assert_eq!(r.counts(0), (1, 0, 1, 0));
    assert_eq!(r.counts(1), (1, 0, 1, 0));
    assert_eq!(r.counts(2), (0, 0, 0, 0));
}

#[test]
fn a_connect_timeout_everywhere_gives_504() {
    let mut r = Run::new("retries = 0", 2);
    r.client_sends(GET);
    r.said();
    r.timeout();
    assert_eq!(r.said(), ["release close", "shutdown client"]);
    assert!(
        r.client_text()
            .starts_with("HTTP/1.1 504 Gateway Timeout\r\n")
    );
}

#[test]
fn a_stale_pooled_connection_is_replaced_and_not_counted_as_a_failure() {
    let mut r = Run::new("", 2);
    r.client_sends(GET);
    r.said();
    r.connected(true);
    r.backend_text();
    r.backend_eof();
    assert_eq!(r.said(), ["release close", "connect 0 never"]);
    assert_eq!(r.counts(0), (1, 0, 0, 1), "counted once, still in flight");
    r.connected(false);
    assert_eq!(r.backend_text(), FORWARDED_GET, "the same head again");
    r.backend_sends(OK);
    assert_eq!(r.counts(0), (1, 1, 0, 0));
}

#[test]
fn an_idempotent_request_is_retried_elsewhere_a_post_is_not() {
    let mut r = Run::new("", 2);
    r.client_sends(GET);
    r.said();
    r.connected(false);
    let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    let a = r.ex.on_backend_error("read", &reset, &mut r.ctx, r.now);
    r.take(a);
    assert_eq!(r.said(), ["release close", "connect 1 any"]);
    assert_eq!(r.counts(0), (1, 0, 1, 0));

    let mut r = Run::new("", 2);
    r.client_sends(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(r.said(), ["connect 0 verified"]);
    r.connected(false);
    assert!(r.backend_text().ends_with("\r\n\r\nabc"));
    let a = r.ex.on_backend_error("read", &reset, &mut r.ctx, r.now);
    r.take(a);
    assert_eq!(r.said(), ["release close", "shutdown client"]);
    assert!(r.client_text().starts_with("HTTP/1.1 502 "));
}

#[test]
fn invalid_responses_get_502_and_the_connection_is_closed() {
    // (response bytes, what the client gets first)
    let cases: &[(&[u8], &str)] = &[
        (b"HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 502 "),
        (b"HTTZ/1.1 200 OK\r\n\r\n", "HTTP/1.1 502 "),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 502 ",
        ),
        (b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", "HTTP/1.1 502 "),
        (b"\x00\x01\x02garbage\r\n\r\n", "HTTP/1.1 502 "),
    ];
    for (response, expected) in cases {
        let mut r = Run::new("retries = 0", 1);
        r.client_sends(GET);
        r.connected(false);
        r.said();
        r.backend_sends(response);
        assert_eq!(
            r.said(),
            ["release close", "shutdown client"],
            "{response:?}"
        );
        assert!(r.client_text().starts_with(expected), "{response:?}");
        assert_eq!(r.counts(0), (1, 0, 1, 0));
    }
}

#[test]
fn a_broken_body_after_the_head_resets_the_client() {
    let mut r = Run::new("", 1);
    r.client_sends(GET);
    r.connected(false);
    r.said();
    r.backend_sends(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n");
    assert_eq!(r.said(), ["close abort"]);
    assert!(r.client_text().starts_with("HTTP/1.1 200 OK\r\n"));
    assert_eq!(r.counts(0), (1, 0, 1, 0));
    assert!(r.ex.is_closed());
}

#[test]
fn response_timeouts_give_504_or_reset_mid_response() {
    let mut r = Run::new("", 1);
    r.client_sends(GET);
    r.connected(false);
    r.said();
    r.timeout();
    assert_eq!(r.said(), ["release close", "shutdown client"]);
    assert!(r.client_text().starts_with("HTTP/1.1 504 "));

    let mut r = Run::new("", 1);
    r.client_sends(GET);
    r.connected(false);
    r.backend_sends(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhal");
    r.said();
    r.timeout();
    assert_eq!(r.said(), ["close abort"]);
    assert_eq!(r.counts(0), (1, 0, 1, 0));
}

#[test]
fn an_early_final_response_cuts_the_request_and_closes_the_client() {
    let mut r = Run::new("", 1);
    r.client_sends(b"PUT /u HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc");
    r.connected(false);
    r.backend_text();
    r.said();
    r.backend_sends(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        r.client_text(),
        "HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(r.said(), ["release close", "shutdown client"]);
    r.client_sends(b"defghij");
    assert_eq!(r.backend_text(), "", "the rest of the body never goes out");
    r.client_eof();
    assert_eq!(r.said(), ["close graceful"]);
    assert_eq!(r.counts(0), (1, 1, 0, 0));
}

#[test]
fn a_client_leaving_mid_body_is_aborted_and_not_counted() {
    let mut r = Run::new("", 1);
    r.client_sends(b"POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc");
    r.connected(false);
    r.said();
    r.client_eof();
    assert_eq!(r.said(), ["close abort"]);
    assert_eq!(r.counts(0), (0, 0, 0, 0));
}

#[test]
fn interim_responses_pass_to_http11_clients_only() {
    let mut r = Run::new("", 1);
    r.client_sends(
        b"PUT /u HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n",
    );
    r.connected(false);
    let continue_until = r.now + CONTINUE_WAIT;
    assert_eq!(
        r.ex.blocking_read_side(r.now),
        Some((Side::Backend, Some(continue_until))),
        "waits for 100 Continue"
    );
    assert_eq!(
        r.ex.blocking_read_side(continue_until),
        Some((Side::Client, None)),
        "but not for ever"
    );
    r.backend_sends(b"HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(r.client_text(), "HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(
        r.ex.blocking_read_side(r.now),
        Some((Side::Client, None)),
        "now the body"
    );
    r.client_sends(b"x");
    r.backend_sends(b"HTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n");
    r.backend_sends(OK);
    assert_eq!(
        r.client_text(),
        "HTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    );

    let mut r = Run::new("", 1);
    r.client_sends(b"GET / HTTP/1.0\r\n\r\n");
    r.connected(false);
    r.backend_sends(b"HTTP/1.1 103 Early Hints\r\n\r\n");
    assert_eq!(r.client_text(), "");
    r.backend_sends(OK);
    assert_eq!(
        r.client_text(),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    );
}

#[test]
fn a_tunnel_relays_both_ways_and_closes_after_both_half_closes() {
    let mut r = Run::new("", 1);
    r.client_sends(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    r.connected(false);
    r.backend_text();
    r.said();
    r.backend_sends(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhello");
    assert!(r.ex.is_tunnel());
    assert_eq!(
        r.client_text(),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nhello"
    );
    assert_eq!(
        r.counts(0),
        (1, 1, 0, 0),
        "a switch counts as a success at once"
    );
    r.client_sends(b"ping");
    assert_eq!(r.backend_text(), "ping");
    r.client_eof();
    assert_eq!(r.said(), ["shutdown backend"]);
    r.backend_sends(b"bye");
    r.backend_eof();
    assert_eq!(r.client_text(), "bye");
    assert_eq!(r.said(), ["shutdown client", "close graceful"]);
}

#[test]
fn heads_time_out_with_408_and_idle_connections_close_quietly() {
    let mut r = Run::new("", 1);
    r.client_sends(b"GET / HT");
    r.timeout();
    assert!(r.client_text().starts_with("HTTP/1.1 408 "));
    assert_eq!(r.said(), ["shutdown client"]);
    r.timeout();
    assert_eq!(r.said(), ["close graceful"]);

    let mut r = Run::new("", 1);
    r.timeout();
    assert_eq!(r.said(), ["close graceful"]);
    assert_eq!(r.client_text(), "");
}

#[test]
fn bad_requests_and_no_backend_are_answered_by_lb() {
    // (request, status line, backends)
    let cases: &[(&[u8], &str, usize)] = &[
        (b"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 400 ", 1),
        (b"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n", "HTTP/1.1 501 ", 1),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.1 400 ", 1),
        (GET, "HTTP/1.1 503 ", 0),
    ];
    for (request, status, backends) in cases {
        let mut r = Run::new("", (*backends).max(1));
        if *backends == 0 {
            r.ctx.balancer.set_enabled(0, false);
        }
        r.client_sends(request);
        assert!(r.client_text().starts_with(status), "{request:?}");
        assert_eq!(r.said(), ["shutdown client"], "{request:?}");
        assert_eq!(r.ctx.answered, 1);
    }
}

#[test]
fn a_client_that_closes_right_after_a_bad_request_still_gets_its_400() {
    let mut r = Run::new("", 1);
    assert!(r.ex.client_buffer().append(b"GET / HTTP/1.1\r\n\r\n"));
    let a = r.ex.on_client_input(&mut r.ctx, r.now);
    r.actions.extend(a);
    let a = r.ex.on_client_eof(&mut r.ctx, r.now);
    r.actions.extend(a);
    assert!(r.said().is_empty(), "not closed before the 400 is out");
    r.flush();
    assert!(r.client_text().starts_with("HTTP/1.1 400 "));
    assert_eq!(r.said(), ["shutdown client", "close graceful"]);
}

#[test]
fn a_bad_chunked_request_body_gets_400_and_is_not_counted() {
    let mut r = Run::new("", 1);
    r.client_sends(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    r.connected(false);
    r.said();
    r.client_sends(b"zz\r\n");
    assert_eq!(r.said(), ["release close", "shutdown client"]);
    assert!(r.client_text().starts_with("HTTP/1.1 400 "));
    assert_eq!(r.counts(0), (0, 0, 0, 0));
}

#[test]
fn draining_closes_after_the_response_and_close_delimited_bodies_end_at_eof() {
    let mut r = Run::new("", 1);
    r.ctx.draining = true;
    r.client_sends(GET);
    r.connected(false);
    r.backend_sends(b"HTTP/1.1 200 OK\r\n\r\npart one ");
    r.backend_sends(b"part two");
    assert_eq!(r.said(), ["connect 0 any"]);
    r.backend_eof();
    assert_eq!(
        r.client_text(),
        "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart one part two"
    );
    assert_eq!(r.said(), ["release close", "shutdown client"]);
    assert_eq!(r.counts(0), (1, 1, 0, 0));
}

#[test]
fn deadlines_follow_the_phase() {
    let mut r = Run::new(
        "[timeouts]\nrequest_head = \"3s\"\nidle = \"7s\"\nconnect = \"1s\"\nresponse = \"5s\"\n",
        1,
    );
    let start = r.now;
    let s = Duration::from_secs;
    assert_eq!(r.ex.deadline(&r.ctx.config), start + s(3));
    r.client_sends(GET);
    assert_eq!(r.ex.deadline(&r.ctx.config), start + s(1));
    r.connected(false);
    assert_eq!(r.ex.deadline(&r.ctx.config), start + s(5));
    r.backend_sends(OK);
    assert_eq!(
        r.ex.deadline(&r.ctx.config),
        start + s(7),
        "idle between requests"
    );
    r.client_sends(b"G");
    assert_eq!(r.ex.deadline(&r.ctx.config), start + s(3));
}

/// One backend that serves one request at once.
fn bounded_run() -> Run {
    let mut r = Run::new("", 1);
    let text = "access_log = false\n[queue]\nsize = 1\ntimeout = \"2s\"\n\
                [[backends]]\nurl = \"http://127.0.0.1:9100\"\nmax_connections = 1\n";
    let config = Config::parse(text).expect("config");
    r.ctx.balancer =
        Balancer::with_rng(&config.backends, config.algorithm, 2, 3, Rng::with_seed(1));
    r.ctx.config = config;
    r
}

/// Takes the bounded backend's one slot, as another request would.
fn hold_the_slot(r: &mut Run) -> crate::balance::InFlight {
    match r
        .ctx
        .balancer
        .pick(0, r.ex.client_addr().ip(), Tried::default(), None)
    {
        crate::balance::Pick::Started(inflight) => inflight,
        _ => panic!("the one slot"),
    }
}

#[test]
fn a_request_waits_in_the_queue_for_room_then_goes() {
    let mut r = bounded_run();
    let held = hold_the_slot(&mut r);
    r.client_sends(GET);
    assert_eq!(r.said(), ["enqueue 0"]);
    assert_eq!(r.ex.phase_name(), "queued");
    assert!(
        !r.ex.wants_client_input(),
        "a queued request reads nothing more"
    );
    assert_eq!(r.ex.deadline(&r.ctx.config), r.now + Duration::from_secs(2));
    assert_eq!(r.ctx.balancer.queues(), [("default".to_string(), 1)]);
    // Still full: nothing happens, it keeps its place.
    let a = r.ex.retry_queued(&mut r.ctx, r.now);
    r.take(a);
    assert!(r.said().is_empty());
    assert!(r.ex.is_queued());
    // The slot frees: the request goes, and leaves the queue.
    drop(held);
    let a = r.ex.retry_queued(&mut r.ctx, r.now);
    r.take(a);
    assert_eq!(r.said(), ["connect 0 any"]);
    assert_eq!(r.ctx.balancer.queues(), [("default".to_string(), 0)]);
    r.connected(false);
    assert_eq!(r.backend_text(), FORWARDED_GET);
}

#[test]
fn a_full_queue_or_its_timeout_answers_503() {
    let unavailable =
        String::from_utf8_lossy(ErrorResponse::ServiceUnavailable.bytes()).into_owned();
    let mut r = bounded_run();
    let _held = hold_the_slot(&mut r);
    r.client_sends(GET);
    assert_eq!(r.said(), ["enqueue 0"]);
    // The queue (size 1) is full now: another client's request is answered at once.
    let mut other = Exchange::new(2, CLIENT.parse().unwrap(), false, r.now);
    assert!(other.client_buffer().append(GET));
    let a = other.on_client_input(&mut r.ctx, r.now);
    assert!(a.into_iter().all(|a| !matches!(a, Action::Enqueue { .. })));
    assert_eq!(
        String::from_utf8_lossy(other.client_output().first),
        unavailable
    );
    // The first waits out its timeout.
    r.now += Duration::from_secs(2);
    r.timeout();
    assert_eq!(r.client_text(), unavailable);
    assert_eq!(r.ctx.balancer.queues(), [("default".to_string(), 0)]);
}
