// HTTPS cases, included once per engine by tests/tls.rs (see `for_each_engine!`).

/// A balancer with an HTTPS listener for `leaves` in front of `backend`; `extra` goes into `[tls]`,
/// `settings` at the top level.
fn lb_tls(settings: &str, leaves: &[&Leaf], extra: &str, backend: std::net::SocketAddr) -> Lb {
    lb_text(&format!(
        "listen = \"127.0.0.1:0\"\naccess_log = false\n{settings}\n[health_check]\ninterval = \"1h\"\n{}[[backends]]\nurl = \"http://{backend}\"\n",
        tls_section(leaves, extra)
    ))
}

fn tls_client(lb: &Lb, pki: &Pki, name: &str) -> Client {
    Client::connect_tls(lb.tls_addr.expect("an HTTPS listener"), pki.client(), name)
}

#[test]
fn certificates_are_chosen_by_sni() {
    let pki = Pki::new("sni");
    let a = pki.leaf("a", &["a.example", "www.a.example"]);
    let b = pki.leaf("b", &["*.b.example"]);
    let backend = proto_echo();
    let lb = lb_tls("", &[&a, &b], "", backend.addr);
    let tls_addr = lb.tls_addr.unwrap();
    let cases = [
        ("a.example", &a),
        ("www.a.example", &a),
        ("x.b.example", &b),
        // Names no certificate covers, and clients that send none (an IP address), get the first.
        ("unknown.example", &a),
        ("127.0.0.1", &a),
    ];
    for (name, leaf) in cases {
        let mut client = Client::connect_tls(tls_addr, trusting_client(), name);
        client.handshake().expect("handshake");
        assert_eq!(presented(&client), leaf.chain[0].to_vec(), "SNI {name}");
    }
    // A verifying client for a wildcard name gets through, and the backend hears it was HTTPS.
    let mut client = tls_client(&lb, &pki, "api.b.example");
    client.send(b"GET / HTTP/1.1\r\nHost: api.b.example\r\n\r\n");
    let r = client.response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "https"));
    let tls = client.tls.as_ref().unwrap();
    assert_eq!(tls.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(lb.snapshot().tls_handshake_failures, 0);
}

#[test]
fn keep_alive_and_pipelining_over_tls() {
    let pki = Pki::new("keepalive");
    let leaf = pki.leaf("site", &["site.test"]);
    let backend = proto_echo();
    let lb = lb_tls("", &[&leaf], "", backend.addr);
    let mut client = tls_client(&lb, &pki, "site.test");
    for i in 0..3 {
        let body = format!("n{i}");
        client.send(
            format!(
                "POST /{i} HTTP/1.1\r\nHost: site.test\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        let r = client.response(false);
        assert_eq!((r.status, r.text()), (200, format!("https{body}")));
    }
    // Three requests in one write.
    client.send(
        b"GET /p1 HTTP/1.1\r\nHost: site.test\r\n\r\nGET /p2 HTTP/1.1\r\nHost: site.test\r\n\r\nGET /p3 HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
    );
    for _ in 0..3 {
        assert_eq!(client.response(false).text(), "https");
    }
    assert!(client.is_closed(), "Connection: close ends the TLS connection");
    let targets: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.head.split(' ').nth(1).unwrap_or_default().to_string())
        .collect();
    assert_eq!(targets, ["/0", "/1", "/2", "/p1", "/p2", "/p3"]);
    // Plain HTTP on `listen` still works, and says so.
    assert_eq!(get(lb.addr, "/").text(), "http");
    lb.wait_released();
}

#[test]
fn megabytes_both_ways_over_tls_to_a_tls_backend() {
    let pki = Pki::new("bulk");
    let front = pki.leaf("front", &["front.test"]);
    let back = pki.leaf("back", &["back.test"]);
    // The backend echoes the body and appends 3 MiB of its own.
    let backend = Backend::start_tls(pki.server(&back), |mut peer| {
        while let Some(req) = peer.read_request() {
            let extra = vec![b'z'; 3 << 20];
            let len = req.raw_body.len() + extra.len();
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
            if !peer.write(head.as_bytes()) || !peer.write(&req.raw_body) || !peer.write(&extra) {
                return;
            }
        }
    });
    let lb = lb_text(&format!(
        "listen = \"127.0.0.1:0\"\naccess_log = false\n[health_check]\ninterval = \"1h\"\n{}[[backends]]\nurl = \"https://{}\"\ntls_ca = \"{}\"\ntls_server_name = \"back.test\"\n",
        tls_section(&[&front], ""),
        backend.addr,
        pki.ca_file.display()
    ));
    let upload: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 251) as u8).collect();
    let mut client = tls_client(&lb, &pki, "front.test");
    for _ in 0..2 {
        client.send(
            format!(
                "POST /bulk HTTP/1.1\r\nHost: front.test\r\nContent-Length: {}\r\n\r\n",
                upload.len()
            )
            .as_bytes(),
        );
        client.send(&upload);
        let r = client.response(false);
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), upload.len() + (3 << 20));
        assert!(r.body[..upload.len()] == upload[..], "the upload came back intact");
        assert!(r.body[upload.len()..].iter().all(|&b| b == b'z'));
    }
    // One backend session served both requests: the TLS connection was pooled and reused.
    assert_eq!(backend.connection_count(), 1);
}

#[test]
fn expect_100_continue_over_tls() {
    let pki = Pki::new("continue");
    let leaf = pki.leaf("site", &["site.test"]);
    let backend = Backend::start(|mut peer| {
        let Some(head) = peer.read_head() else {
            return;
        };
        assert!(head.to_ascii_lowercase().contains("expect: 100-continue"));
        peer.write(b"HTTP/1.1 100 Continue\r\n\r\n");
        let body = peer.read_exact_bytes(5).unwrap_or_default();
        peer.ok(&String::from_utf8_lossy(&body));
    });
    let lb = lb_tls("", &[&leaf], "", backend.addr);
    let mut client = tls_client(&lb, &pki, "site.test");
    client.send(
        b"PUT /up HTTP/1.1\r\nHost: site.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    let interim = client.response(false);
    assert_eq!(interim.status, 100);
    client.send(b"hello");
    let r = client.response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
}

#[test]
fn websocket_over_tls() {
    let pki = Pki::new("wss");
    let leaf = pki.leaf("site", &["site.test"]);
    let backend = Backend::start(|mut peer| {
        if peer.read_request().is_none() {
            return;
        }
        peer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhello");
        while let Some(bytes) = peer.read_exact_bytes(4) {
            peer.write(&bytes.to_ascii_uppercase());
        }
    });
    let lb = lb_tls("", &[&leaf], "", backend.addr);
    let mut client = tls_client(&lb, &pki, "site.test");
    client.send(b"GET /ws HTTP/1.1\r\nHost: site.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: k\r\n\r\n");
    let r = client.response(true);
    assert_eq!(r.status, 101);
    client.send(b"ping");
    client.send(b"pong");
    client.half_close();
    let rest = client.read_all();
    assert_eq!(String::from_utf8_lossy(&rest), "helloPINGPONG");
    assert!(!client.reset, "the tunnel ends with close_notify and a FIN");
    lb.wait_released();
}

#[test]
fn a_reload_gives_new_connections_the_new_certificate() {
    let pki = Pki::new("reload");
    let first = pki.leaf("site", &["site.test"]);
    let first_der = first.chain[0].to_vec();
    let backend = proto_echo();
    let text = format!(
        "listen = \"127.0.0.1:0\"\naccess_log = false\n[health_check]\ninterval = \"1h\"\n{}[[backends]]\nurl = \"http://{}\"\n",
        tls_section(&[&first], ""),
        backend.addr
    );
    let lb = lb_text(&text);
    let mut open = tls_client(&lb, &pki, "site.test");
    open.handshake().expect("handshake");
    assert_eq!(presented(&open), first_der);
    // The same files, now holding a new certificate and key.
    let second = pki.leaf("site", &["site.test"]);
    assert_ne!(second.chain[0].to_vec(), first_der);
    let config = lb::config::Config::parse(&format!("engine = \"{}\"\n{text}", engine_name()))
        .expect("the new configuration loads");
    lb.control.reload(config);
    wait_until("the new certificate to be served", || {
        let mut fresh = tls_client(&lb, &pki, "site.test");
        fresh.handshake().is_ok() && presented(&fresh) == second.chain[0].to_vec()
    });
    // The connection opened before keeps its session and is served.
    open.send(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n");
    assert_eq!(open.response(false).text(), "https");
    assert_eq!(presented(&open), first_der);
}

#[test]
fn min_version_refuses_older_clients() {
    let pki = Pki::new("version");
    let leaf = pki.leaf("site", &["site.test"]);
    let backend = proto_echo();
    let lb = lb_tls("", &[&leaf], "min_version = \"1.3\"", backend.addr);
    let tls_addr = lb.tls_addr.unwrap();
    let mut old = Client::connect_tls(tls_addr, pki.client_for(&[&rustls::version::TLS12]), "site.test");
    assert!(old.handshake().is_err(), "a TLS 1.2 client is refused");
    wait_until("the failed handshake to be counted", || {
        lb.snapshot().tls_handshake_failures == 1
    });
    let mut new = Client::connect_tls(tls_addr, pki.client_for(&[&rustls::version::TLS13]), "site.test");
    new.send(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n");
    assert_eq!(new.response(false).text(), "https");
    assert_eq!(
        new.tls.as_ref().unwrap().protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    // Without min_version, TLS 1.2 is served.
    let lb12 = lb_tls("", &[&leaf], "", backend.addr);
    let mut client = Client::connect_tls(
        lb12.tls_addr.unwrap(),
        pki.client_for(&[&rustls::version::TLS12]),
        "site.test",
    );
    client.send(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n");
    assert_eq!(client.response(false).text(), "https");
}

#[test]
fn redirect_http_sends_plain_requests_to_https() {
    let pki = Pki::new("redirect");
    let leaf = pki.leaf("site", &["site.test"]);
    let backend = proto_echo();
    let lb = lb_tls("", &[&leaf], "redirect_http = true", backend.addr);
    let port = lb.tls_addr.unwrap().port();
    let r = request(lb.addr, "GET /a/b?c=1 HTTP/1.1\r\nHost: site.test:8080\r\n\r\n");
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://site.test:{port}/a/b?c=1"))
    );
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert_eq!(r.body, b"");
    // An absolute-form target names the host itself.
    let r = request(lb.addr, "POST http://other.test/x HTTP/1.1\r\nHost: site.test\r\nContent-Length: 2\r\n\r\nhi");
    assert_eq!(r.header("location"), Some(format!("https://other.test:{port}/x")));
    assert_eq!(backend.request_count(), 0, "nothing plain reaches the backend");
    // HTTPS is served as usual.
    let mut client = tls_client(&lb, &pki, "site.test");
    client.send(b"GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n");
    assert_eq!(client.response(false).text(), "https");
    lb.wait_released();
}

/// A balancer whose one backend is the TLS server `backend`, with `keys` for it.
fn lb_to_tls_backend(backend: &Backend, keys: &str) -> Lb {
    lb_text(&format!(
        "listen = \"127.0.0.1:0\"\naccess_log = false\nretries = 0\n[health_check]\ninterval = \"1h\"\n[[backends]]\nurl = \"https://{}\"\n{keys}\n",
        backend.addr
    ))
}

#[test]
fn backends_over_tls_with_a_private_ca() {
    let pki = Pki::new("backend-ca");
    let leaf = pki.leaf("backend", &["backend.test"]);
    let backend = Backend::start_tls(pki.server(&leaf), |mut peer| {
        while let Some(req) = peer.read_request() {
            let host = req.header("host").unwrap_or_default();
            if !peer.ok(&format!("tls backend saw {host}")) {
                return;
            }
        }
    });
    let lb = lb_to_tls_backend(
        &backend,
        &format!(
            "tls_ca = \"{}\"\ntls_server_name = \"backend.test\"",
            pki.ca_file.display()
        ),
    );
    for _ in 0..3 {
        let r = get(lb.addr, "/");
        assert_eq!((r.status, r.text().as_str()), (200, "tls backend saw test"));
        // The client may have the whole response before the engine has pooled the connection (the
        // threaded engine pools after its last write): the next request waits for the pool.
        wait_until("the backend connection to be pooled", || {
            lb.snapshot().pooled_connections >= 1
        });
    }
    // Each worker keeps its own pool.
    assert!(
        (1..=workers()).contains(&backend.connection_count()),
        "the TLS connection is pooled"
    );
    lb.wait_released();
}

#[test]
fn a_backend_certificate_from_another_ca_gets_502() {
    let pki = Pki::new("backend-good");
    let other = Pki::new("backend-other");
    let leaf = pki.leaf("backend", &["backend.test"]);
    let backend = Backend::start_tls(pki.server(&leaf), |mut peer| {
        while peer.read_request().is_some() {
            if !peer.ok("should not be reached") {
                return;
            }
        }
    });
    let lb = lb_to_tls_backend(
        &backend,
        &format!(
            "tls_ca = \"{}\"\ntls_server_name = \"backend.test\"",
            other.ca_file.display()
        ),
    );
    let r = get(lb.addr, "/");
    assert_eq!(r.status, 502);
    assert_eq!(backend.request_count(), 0, "no request goes to an unverified backend");
    // The wrong name, with the right CA, fails the same way.
    let lb = lb_to_tls_backend(
        &backend,
        &format!(
            "tls_ca = \"{}\"\ntls_server_name = \"elsewhere.test\"",
            pki.ca_file.display()
        ),
    );
    assert_eq!(get(lb.addr, "/").status, 502);
    assert_eq!(backend.request_count(), 0);
    lb.wait_released();
}

#[test]
fn tls_verify_false_accepts_any_backend_certificate() {
    let pki = Pki::new("noverify");
    let leaf = pki.leaf("backend", &["backend.test"]);
    let backend = Backend::start_tls(pki.server(&leaf), |mut peer| {
        while peer.read_request().is_some() {
            if !peer.ok("unverified") {
                return;
            }
        }
    });
    let lb = lb_to_tls_backend(&backend, "tls_verify = false");
    let r = get(lb.addr, "/");
    assert_eq!((r.status, r.text().as_str()), (200, "unverified"));
}

#[test]
fn health_probes_speak_tls_to_tls_backends() {
    let pki = Pki::new("probe");
    let other = Pki::new("probe-other");
    let leaf = pki.leaf("backend", &["backend.test"]);
    let backend = Backend::start_tls(pki.server(&leaf), |mut peer| {
        while let Some(req) = peer.read_request() {
            let status = if req.head.starts_with("GET /health ") {
                "204 No Content"
            } else {
                "200 OK"
            };
            let reply = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            if !peer.write(reply.as_bytes()) {
                return;
            }
        }
    });
    let text = |ca: &Pki| {
        format!(
            "listen = \"127.0.0.1:0\"\naccess_log = false\n[health_check]\ninterval = \"50ms\"\nrise = 1\nfall = 1\n[[backends]]\nurl = \"https://{}\"\ntls_ca = \"{}\"\ntls_server_name = \"backend.test\"\n",
            backend.addr,
            ca.ca_file.display()
        )
    };
    let lb = lb_text(&text(&pki));
    // Probes of a backend follow one another: by the second, the first one's verdict is in (and with
    // fall = 1, one failed probe would have marked the backend down).
    wait_until("two TLS health probes to reach the backend", || {
        backend
            .requests()
            .iter()
            .filter(|r| r.head.starts_with("GET /health "))
            .count()
            >= 2
    });
    assert!(lb.snapshot().backends[0].healthy);
    // Probes that cannot verify the backend mark it down.
    let lb = lb_text(&text(&other));
    wait_until("the unverifiable backend to be marked down", || {
        !lb.snapshot().backends[0].healthy
    });
}

#[test]
fn a_client_that_never_speaks_is_closed_at_request_head() {
    let pki = Pki::new("silent");
    let leaf = pki.leaf("site", &["site.test"]);
    let backend = proto_echo();
    let lb = lb_tls("[timeouts]\nrequest_head = \"300ms\"", &[&leaf], "", backend.addr);
    let mut silent = Client::connect(lb.tls_addr.unwrap());
    assert_eq!(silent.read_all(), b"", "closed without a byte (no 408 in plaintext)");
    wait_until("the unfinished handshake to be counted", || {
        lb.snapshot().tls_handshake_failures == 1
    });
    // A client that connects and leaves without a byte is a port probe, not a failure.
    drop(Client::connect(lb.tls_addr.unwrap()));
    let mut client = tls_client(&lb, &pki, "site.test");
    client.send(b"GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n");
    assert_eq!(client.response(false).text(), "https");
    lb.wait_released();
    assert_eq!(lb.snapshot().tls_handshake_failures, 1);
}

#[test]
fn a_thousand_garbage_connections_then_tls_still_works() {
    let pki = Pki::new("garbage");
    let leaf = pki.leaf("site", &["site.test"]);
    let backend = proto_echo();
    let lb = lb_tls("", &[&leaf], "", backend.addr);
    let tls_addr = lb.tls_addr.unwrap();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut seed = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(t + 1);
                for i in 0..250u64 {
                    let mut client = Client::connect(tls_addr);
                    let bytes: Vec<u8> = match i % 4 {
                        // Plain HTTP to the TLS port.
                        0 => b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n".to_vec(),
                        // A record header claiming a handshake, then junk.
                        1 => b"\x16\x03\x01\x00\x10garbage-garbage!".to_vec(),
                        // An SSLv2-style hello.
                        2 => b"\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10".to_vec(),
                        _ => (0..64)
                            .map(|_| {
                                seed ^= seed << 13;
                                seed ^= seed >> 7;
                                seed ^= seed << 17;
                                seed as u8
                            })
                            .collect(),
                    };
                    client.send(&bytes);
                    // lb answers with an alert at most, then closes.
                    let answer = client.read_all();
                    assert!(
                        !answer.windows(4).any(|w| w == b"HTTP"),
                        "no HTTP answer on the TLS port"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("garbage client");
    }
    wait_until("a thousand failed handshakes to be counted", || {
        lb.snapshot().tls_handshake_failures == 1000
    });
    let mut client = tls_client(&lb, &pki, "site.test");
    client.send(b"GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n");
    assert_eq!(client.response(false).text(), "https");
    lb.wait_released();
    assert_eq!(backend.request_count(), 1);
}
