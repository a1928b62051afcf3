// Cases shared by both engines; included by tests/proxy.rs once per engine.
use std::io::Write;
use std::time::Duration;

#[test]
fn get_is_forwarded_with_a_normalised_head() {
    let backend = Backend::named("hello");
    let lb = lb("", &[backend.addr]);
    let mut client = lb.client();
    client.send(
        b"GET /path?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\nConnection: keep-alive, X-Hop\r\n\
          X-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
          X-Forwarded-For: 203.0.113.9\r\n\r\n",
    );
    let response = client.response(false);
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "hello");
    assert_eq!(
        response.head, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        "exact head the client receives"
    );
    let received = backend.requests();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].head,
        "GET /path?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\
         X-Forwarded-For: 203.0.113.9, 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n"
    );
}

#[test]
fn requests_alternate_between_backends() {
    let a = Backend::named("a");
    let b = Backend::named("b");
    let lb = lb("", &[a.addr, b.addr]);
    let bodies: Vec<String> = (0..6).map(|_| get(lb.addr, "/").text()).collect();
    if workers() == 1 {
        assert_eq!(bodies, ["a", "b", "a", "b", "a", "b"]);
    } else {
        // Each worker alternates on its own, the second starting one backend further along: however
        // the connections fall to the two, the process's split stays even.
        assert_eq!(bodies.iter().filter(|b| *b == "a").count(), 3, "{bodies:?}");
    }
    // Balancing is per request, also on one keep-alive client connection.
    let mut client = lb.client();
    let mut seen = Vec::new();
    for _ in 0..4 {
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        seen.push(client.response(false).text());
    }
    if workers() == 1 {
        assert_eq!(seen, ["a", "b", "a", "b"]);
    } else {
        assert!(seen.windows(2).all(|w| w[0] != w[1]), "{seen:?}");
    }
}

#[test]
fn content_length_body_is_forwarded_exactly() {
    let backend = Backend::named("ok");
    let lb = lb("", &[backend.addr]);
    let response = request(
        lb.addr,
        "POST /submit HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 007\r\n\r\n{\"a\":1}",
    );
    assert_eq!(response.status, 200);
    let received = backend.requests();
    assert_eq!(received[0].raw_body, b"{\"a\":1}");
    assert_eq!(received[0].header("content-length").as_deref(), Some("7"));
}

#[test]
fn chunked_request_is_normalised() {
    let backend = Backend::named("ok");
    let lb = lb("", &[backend.addr]);
    let mut client = lb.client();
    client.send(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;ext=\"x\"\r\nhello\r\n0006\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    assert_eq!(client.response(false).status, 200);
    let received = backend.requests();
    assert_eq!(
        received[0].header("transfer-encoding").as_deref(),
        Some("chunked")
    );
    assert_eq!(
        received[0].raw_body,
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    );
}

#[test]
fn chunked_response_is_relayed_or_decoded_for_http10() {
    let backend = Backend::start(|mut peer| {
        while peer.read_request().is_some() {
            peer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n");
        }
    });
    let lb = lb("", &[backend.addr]);
    let mut client = lb.client();
    client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = client.response(false);
    assert_eq!(r.header("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(r.body, b"abcde");
    // Still usable afterwards.
    client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(client.response(false).body, b"abcde");

    // An HTTP/1.0 client never gets chunked: the payload, delimited by close.
    let mut old = lb.client();
    old.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let raw = String::from_utf8(old.read_all()).unwrap();
    assert_eq!(raw, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabcde");
}

#[test]
fn close_delimited_response_closes_the_client_and_is_not_pooled() {
    let backend = Backend::start(|mut peer| {
        if peer.read_request().is_some() {
            peer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end");
        }
    });
    let lb = lb("", &[backend.addr]);
    for _ in 0..2 {
        let mut client = lb.client();
        client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let raw = String::from_utf8(client.read_all()).unwrap();
        assert_eq!(
            raw,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil the end"
        );
    }
    assert_eq!(
        backend.connection_count(),
        2,
        "a close-delimited connection is never reused"
    );
}

#[test]
fn bodiless_responses_keep_the_connection_in_sync() {
    // The backend lies in its framing headers where the status or method says there is no body.
    let backend = Backend::start(|mut peer| {
        while let Some(req) = peer.read_request() {
            let reply: &[u8] = if req.head.starts_with("HEAD") {
                b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
            } else if req.head.starts_with("GET /204") {
                b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"
            } else if req.head.starts_with("GET /304") {
                b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\nETag: \"v1\"\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"
            };
            peer.write(reply);
        }
    });
    let lb = lb("", &[backend.addr]);
    let mut client = lb.client();
    client.send(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = client.response(true);
    assert_eq!(r.head, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    client.send(b"GET /204 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(
        client.response(false).head,
        "HTTP/1.1 204 No Content\r\n\r\n"
    );
    client.send(b"GET /304 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(
        client.response(false).head,
        "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n"
    );
    client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = client.response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "body"));
    assert_eq!(backend.connection_count(), 1);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let backend = Backend::start(|mut peer| {
        while let Some(req) = peer.read_request() {
            let path = req.head.split(' ').nth(1).unwrap_or("").to_string();
            peer.ok(&path);
        }
    });
    let lb = lb("", &[backend.addr]);
    let mut client = lb.client();
    client.send(
        b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc\
          GET /3 HTTP/1.1\r\nHost: h\r\n\r\nHEAD /4 HTTP/1.1\r\nHost: h\r\n\r\nGET /5 HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    let mut bodies = Vec::new();
    for i in 1..=5 {
        let r = client.response(i == 4);
        bodies.push(r.text());
    }
    assert_eq!(bodies, ["/1", "/2", "/3", "", "/5"]);
    let received = backend.requests();
    assert_eq!(received[1].raw_body, b"abc");
    assert_eq!(received.len(), 5);
}

#[test]
fn keep_alive_requests_reuse_one_backend_connection() {
    let backend = Backend::named("pooled");
    let lb = lb("", &[backend.addr]);
    let mut client = lb.client();
    for _ in 0..20 {
        client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(client.response(false).text(), "pooled");
    }
    // Separate client connections share the pool too. (The threaded engine pools the backend connection
    // on the previous client's thread just after its response, so wait for it to be back.)
    // With several workers each keeps its own pool: one backend connection per worker at most.
    for _ in 0..5 {
        wait_until("the backend connection back in the pool", || {
            lb.snapshot().pooled_connections >= 1
        });
        assert_eq!(get(lb.addr, "/").text(), "pooled");
    }
    assert!(
        (1..=workers()).contains(&backend.connection_count()),
        "{} backend connections",
        backend.connection_count()
    );
    assert_eq!(backend.request_count(), 25);
}

#[test]
fn stale_pooled_connection_is_replaced_transparently() {
    // Each backend connection serves one request, then closes without saying so in the response.
    let backend = Backend::start(|mut peer| {
        if peer.read_request().is_some() {
            peer.ok("once");
        }
        // Dropping the peer closes the connection after a short while, as a backend's keep-alive timeout would.
    });
    let lb = lb("", &[backend.addr]);
    let mut client = lb.client();
    for i in 0..5 {
        client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let r = client.response(false);
        assert_eq!((r.status, r.text().as_str()), (200, "once"), "request {i}");
    }
    assert_eq!(backend.connection_count(), 5);
}

#[test]
fn stale_pooled_connection_that_resets_on_write_is_retried() {
    // Each backend connection answers one request and resets when it is reused for a second one.
    let backend = Backend::start(|mut peer| {
        if peer.read_request().is_some() {
            peer.ok("fresh");
            if peer.read_head().is_some() {
                peer.reset();
            }
        }
    });
    let lb = lb("", &[backend.addr]);
    let mut client = lb.client();
    for i in 0..10 {
        client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let r = client.response(false);
        assert_eq!((r.status, r.text().as_str()), (200, "fresh"), "request {i}");
    }
}

#[test]
fn http10_clients() {
    let backend = Backend::named("old");
    let lb = lb("", &[backend.addr]);
    // Without keep-alive: the response, then close.
    let mut client = lb.client();
    client.send(b"GET / HTTP/1.0\r\n\r\n");
    let r = client.response(false);
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(client.is_closed());
    // The backend speaks HTTP/1.1 and gets a Host.
    let head = &backend.requests()[0].head;
    assert!(
        head.starts_with("GET / HTTP/1.1\r\nHost: 127.0.0.1:"),
        "{head}"
    );
    // With keep-alive: the connection persists.
    let mut client = lb.client();
    for _ in 0..3 {
        client.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = client.response(false);
        assert_eq!(r.header("connection").as_deref(), Some("keep-alive"));
        assert_eq!(r.text(), "old");
    }
}

#[test]
fn expect_100_continue_is_relayed() {
    let backend = Backend::start(|mut peer| {
        let Some(head) = peer.read_head() else { return };
        assert!(head.contains("Expect: 100-continue"));
        peer.write(b"HTTP/1.1 100 Continue\r\n\r\n");
        let body = peer.read_exact_bytes(5).unwrap();
        peer.ok(&format!("got {}", String::from_utf8_lossy(&body)));
    });
    let lb = lb("", &[backend.addr]);
    let mut client = lb.client();
    client.send(b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let interim = client.response(false);
    assert_eq!(interim.head, "HTTP/1.1 100 Continue\r\n\r\n");
    client.send(b"hello");
    let r = client.response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "got hello"));
}

#[test]
fn final_answer_to_expect_closes_instead_of_reading_the_body_as_a_request() {
    let backend = Backend::start(|mut peer| {
        if peer.read_head().is_some() {
            peer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nnope");
            // Keep the connection open and serve anything else that arrives.
            while peer.read_request().is_some() {
                peer.ok("should not happen");
            }
        }
    });
    let lb = lb("", &[backend.addr]);
    let mut client = lb.client();
    client
        .send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 38\r\nExpect: 100-continue\r\n\r\n");
    let r = client.response(false);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    // The client sends the body anyway; it looks like a request but must never be parsed as one.
    let _ = client
        .stream
        .write_all(b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(client.is_closed());
    assert!(
        backend
            .requests()
            .iter()
            .all(|r| !r.head.contains("/smuggled"))
    );
}

#[test]
fn malformed_requests_are_rejected_before_any_backend() {
    let backend = Backend::named("never");
    let lb = lb("", &[backend.addr]);
    let long = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX-Long: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let many: String = (0..150).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n");
    let cases: Vec<(&str, String, u16)> = vec![
        ("CL+TE", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(), 400),
        ("TE+CL", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n".into(), 400),
        ("differing CL", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".into(), 400),
        ("signed CL", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\na".into(), 400),
        ("TE not chunked last", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n".into(), 400),
        ("TE chunked twice", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n".into(), 400),
        ("TE gzip", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".into(), 501),
        ("TE in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(), 400),
        ("no Host", "GET / HTTP/1.1\r\n\r\n".into(), 400),
        ("two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(), 400),
        ("space before colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n".into(), 400),
        ("obs-fold", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n  b\r\n\r\n".into(), 400),
        ("bare CR", "GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n".into(), 400),
        ("NUL in value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n".into(), 400),
        ("bad target", "GET nope HTTP/1.1\r\nHost: h\r\n\r\n".into(), 400),
        ("CONNECT", "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n".into(), 501),
        ("head too large", long, 431),
        ("too many headers", many, 431),
    ];
    for (name, raw, status) in cases {
        let mut client = lb.client();
        client.send(raw.as_bytes());
        let r = client.response(false);
        assert_eq!(r.status, status, "{name}");
        assert_eq!(r.header("connection").as_deref(), Some("close"), "{name}");
        assert!(
            client.is_closed(),
            "{name}: connection closes after the error"
        );
    }
    assert_eq!(backend.connection_count(), 0, "nothing reached the backend");
}

#[test]
fn bad_chunk_framing_in_a_request_gets_400_and_closes() {
    let backend = Backend::start(|mut peer| {
        let _ = peer.read_head();
        // Read whatever arrives until the balancer closes the connection.
        let _ = peer.read_exact_bytes(usize::MAX);
    });
    let lb = lb("", &[backend.addr]);
    let mut client = lb.client();
    client.send(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n");
    let r = client.response(false);
    assert_eq!(r.status, 400);
    assert!(client.is_closed());
    lb.wait_released();
}

#[test]
fn absolute_form_target_becomes_origin_form() {
    let backend = Backend::named("ok");
    let lb = lb("", &[backend.addr]);
    let r = request(
        lb.addr,
        "GET http://example.org:8080/a/b?c HTTP/1.1\r\nHost: wrong\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let head = &backend.requests()[0].head;
    assert!(
        head.starts_with("GET /a/b?c HTTP/1.1\r\nHost: example.org:8080\r\n"),
        "{head}"
    );
    assert!(!head.contains("wrong"));
}

#[test]
fn websocket_upgrade_becomes_a_tunnel() {
    let backend = Backend::start(|mut peer| {
        let Some(req) = peer.read_request() else {
            return;
        };
        assert_eq!(req.header("upgrade").as_deref(), Some("websocket"));
        assert_eq!(req.header("connection").as_deref(), Some("upgrade"));
        peer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nserver-hello");
        // Echo everything back, upper-cased, until the client closes.
        while let Some(bytes) = peer.read_exact_bytes(4) {
            peer.write(&bytes.to_ascii_uppercase());
        }
    });
    let lb = lb("", &[backend.addr]);
    let mut client = lb.client();
    client.send(b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: k\r\n\r\n");
    let r = client.response(true);
    assert_eq!(r.status, 101);
    assert_eq!(r.header("upgrade").as_deref(), Some("websocket"));
    assert_eq!(r.header("connection").as_deref(), Some("upgrade"));
    client.send(b"ping");
    client.send(b"pong");
    client.half_close();
    let rest = client.read_all();
    assert_eq!(String::from_utf8_lossy(&rest), "server-helloPINGPONG");
}

#[test]
fn connect_refused_gives_502() {
    let lb = lb("retries = 0", &[closed_port()]);
    let r = get(lb.addr, "/");
    assert_eq!(r.status, 502);
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    lb.wait_released();
}

#[test]
fn connect_failure_is_retried_on_another_backend() {
    let good = Backend::named("good");
    let lb = lb("retries = 1", &[closed_port(), good.addr]);
    for _ in 0..4 {
        let r = get(lb.addr, "/");
        assert_eq!((r.status, r.text().as_str()), (200, "good"));
    }
}

#[test]
fn garbage_from_the_backend_gives_502() {
    let backend = Backend::start(|mut peer| {
        if peer.read_request().is_some() {
            peer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
        }
    });
    let lb = lb("", &[backend.addr]);
    assert_eq!(get(lb.addr, "/").status, 502);
    lb.wait_released();
}

#[test]
fn backend_reset_before_responding_gives_502() {
    let backend = Backend::start(|mut peer| {
        if peer.read_request().is_some() {
            peer.reset();
        }
    });
    let lb = lb("", &[backend.addr]);
    assert_eq!(get(lb.addr, "/").status, 502);
    lb.wait_released();
}

#[test]
fn silent_backend_gives_504() {
    let backend = Backend::start(|mut peer| {
        if peer.read_request().is_some() {
            std::thread::sleep(Duration::from_secs(5));
        }
    });
    let lb = lb("[timeouts]\nresponse = \"300ms\"", &[backend.addr]);
    let started = std::time::Instant::now();
    let r = get(lb.addr, "/");
    assert_eq!(r.status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered at the response timeout"
    );
    lb.wait_released();
}

#[test]
fn slow_request_head_gets_408() {
    let backend = Backend::named("never");
    let lb = lb("[timeouts]\nrequest_head = \"300ms\"", &[backend.addr]);
    let mut client = lb.client();
    client.send(b"GET / HTTP/1.1\r\nHo");
    let r = client.response(false);
    assert_eq!(r.status, 408);
    assert!(client.is_closed());
    assert_eq!(backend.connection_count(), 0);
}

#[test]
fn idle_keep_alive_connection_is_closed_silently() {
    let backend = Backend::named("x");
    let lb = lb("[timeouts]\nidle = \"300ms\"", &[backend.addr]);
    let mut client = lb.client();
    client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(client.response(false).status, 200);
    assert!(client.is_closed(), "closed after idle, with no bytes");
}

#[test]
fn backend_dying_mid_body_never_looks_complete() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    for framing in ["length", "chunked"] {
        // The backend dies once the client has seen the response head, so the body is cut for certain.
        let client_has_head = Arc::new(AtomicBool::new(false));
        let signal = client_has_head.clone();
        let backend = Backend::start(move |mut peer| {
            if peer.read_request().is_some() {
                if framing == "length" {
                    peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
                } else {
                    peer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n186a0\r\n");
                }
                peer.write(&[b'x'; 5000]);
                wait_until("the client to see the head", || {
                    signal.swap(false, Ordering::SeqCst)
                });
                peer.reset();
            }
        });
        let lb = lb("", &[backend.addr]);
        // HTTP/1.1 and HTTP/1.0 clients: for the latter a chunked body is relayed close-delimited, so only
        // a reset can tell it apart from a complete body.
        for version in ["1.1", "1.0"] {
            let mut client = lb.client();
            client.send(format!("GET / HTTP/{version}\r\nHost: h\r\n\r\n").as_bytes());
            assert!(client.wait_for_head(), "{framing}/{version}: head");
            client_has_head.store(true, Ordering::SeqCst);
            let outcome = client.try_response(false);
            assert!(
                outcome.is_none(),
                "{framing}/{version}: a truncated body must not parse as a complete response: {outcome:?}"
            );
        }
        lb.wait_released();
    }
}

#[test]
fn client_closing_mid_upload_releases_the_backend() {
    let backend = Backend::named("still-up");
    let lb = lb("", &[backend.addr]);
    {
        let mut client = lb.client();
        client.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\npartial");
        wait_until("the backend connection", || backend.connection_count() == 1);
    }
    wait_until(
        "the balancer to close the half-sent request's backend connection",
        || backend.finished.load(std::sync::atomic::Ordering::SeqCst) == 1,
    );
    assert_eq!(backend.request_count(), 0);
    // The balancer is still serving.
    assert_eq!(get(lb.addr, "/").text(), "still-up");
}

#[test]
fn extra_bytes_after_a_bodiless_response_retire_the_connection() {
    let backend = Backend::start(|mut peer| {
        while peer.read_request().is_some() {
            peer.write(b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled");
        }
    });
    let lb = lb("", &[backend.addr]);
    let mut client = lb.client();
    for _ in 0..2 {
        client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let r = client.response(false);
        assert_eq!(r.status, 204);
    }
    assert_eq!(
        backend.connection_count(),
        2,
        "a connection with leftover bytes is never reused"
    );
}

#[test]
fn connect_timeout_gives_504() {
    // A listener with a full accept queue: further SYNs are dropped, so connecting hangs.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        fillers.push(s);
    }
    let lb = lb("retries = 0\n[timeouts]\nconnect = \"300ms\"", &[addr]);
    let started = std::time::Instant::now();
    let r = get(lb.addr, "/");
    assert_eq!(r.status, 504);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250),
        "waited for the connect timeout: {elapsed:?}"
    );
}
