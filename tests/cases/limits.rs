// Limits cases, included once per engine by tests/limits.rs (see `for_each_engine!`).

const HEAD: &str = "listen = \"127.0.0.1:0\"\naccess_log = false\n[health_check]\ninterval = \"1h\"\n\
                    [admin]\nlisten = \"127.0.0.1:0\"\n";

fn limited(limits: &str, backend: &Backend) -> String {
    format!("{HEAD}[limits]\n{limits}[[backends]]\nurl = \"http://{}\"\n", backend.addr)
}

fn rejections(lb: &Lb, reason: &str) -> u64 {
    let metrics = String::from_utf8(get(lb.admin_addr.unwrap(), "/metrics").body).unwrap();
    let needle = format!("lb_limit_rejections_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(needle.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{needle} in\n{metrics}"))
}

#[test]
fn a_client_over_its_rate_gets_429_with_retry_after() {
    let backend = Backend::named("ok");
    let lb = lb_text(&limited("requests_per_second = 1\nburst = 3\n", &backend));
    let start = std::time::Instant::now();
    for i in 0..3 {
        assert_eq!(get(lb.addr, "/").status, 200, "request {i}: within the burst");
    }
    let mut client = lb.client();
    client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let answer = client.read_all();
    // One token comes back per second: only a machine stalled for a second could refill the bucket.
    if start.elapsed() < std::time::Duration::from_millis(900) {
        assert_eq!(
            String::from_utf8_lossy(&answer),
            "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: 22\r\nRetry-After: 1\r\nConnection: close\r\n\r\n429 Too Many Requests\n"
        );
        assert_eq!(backend.request_count(), 3, "the refused request never reached a backend");
        assert_eq!(rejections(&lb, "rate"), 1);
    }
    // The bucket refills at the configured rate.
    wait_until("a token to come back", || get(lb.addr, "/").status == 200);
}

#[test]
fn a_client_over_its_connection_count_has_the_new_one_closed() {
    let backend = Backend::named("ok");
    let text = limited("connections_per_client = 2\n", &backend);
    let lb = lb_text(&text);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = lb.client();
        c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(c.response(false).status, 200);
        held.push(c);
    }
    let mut third = lb.client();
    third.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(third.read_all(), b"", "closed without an answer");
    assert_eq!(rejections(&lb, "connections"), 1);
    // One of the two closes: a new connection is served once lb has seen it go.
    held.pop();
    wait_until("the freed place", || {
        let mut c = lb.client();
        c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        c.try_response(false).is_some_and(|r| r.status == 200)
    });
    // A reload raises the count: a second connection beside the held one is served too.
    lb.control.reload(
        lb::config::Config::parse(&engine_config(&limited("connections_per_client = 3\n", &backend)))
            .unwrap(),
    );
    assert!(lb.control.sync(WAIT));
    let mut extra = Vec::new();
    for _ in 0..2 {
        let mut c = lb.client();
        c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(c.response(false).status, 200);
        extra.push(c);
    }
}
