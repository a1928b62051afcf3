// DNS discovery cases, included once per engine by tests/dns.rs (see `for_each_engine!`).

/// A balancer whose one backend is `api.test` on `port`, resolved by `dns` every 100 ms.
fn discovering(dns: &DnsServer, port: u16) -> Lb {
    lb_text(&discovering_config(dns, port, true))
}

fn discovering_config(dns: &DnsServer, port: u16, with_api: bool) -> String {
    probing_config(dns, port, with_api, "1h")
}

/// As `discovering_config`, with health probes every `probe_interval`.
fn probing_config(dns: &DnsServer, port: u16, with_api: bool, probe_interval: &str) -> String {
    let api = if with_api {
        format!("[[backends]]\nurl = \"http://api.test:{port}\"\nresolve = \"100ms\"\n")
    } else {
        String::new()
    };
    format!(
        "listen = \"127.0.0.1:0\"\naccess_log = false\n\
         [health_check]\ninterval = \"{probe_interval}\"\ntimeout = \"100ms\"\nfall = 2\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [dns]\nservers = [\"{}\"]\ntimeout = \"200ms\"\n\
         [[pools]]\nname = \"fixed\"\nbackends = [{{ url = \"http://{}\" }}]\n{api}",
        dns.addr,
        closed_port()
    )
}

/// The addresses the balancer serves `api.test` at, in order.
fn served(lb: &Lb) -> Vec<String> {
    lb.snapshot()
        .backends
        .iter()
        .filter(|b| b.discovered)
        .map(|b| b.address.clone())
        .collect()
}

fn wait_served(lb: &Lb, expected: &[String]) {
    wait_until(&format!("api.test to be served at {expected:?}"), || {
        served(lb) == expected
    });
}

fn at(host: u8, port: u16) -> String {
    format!("127.0.0.{host}:{port}")
}

#[test]
fn every_address_of_the_name_is_a_backend_with_its_own_figures() {
    let dns = DnsServer::start();
    let (port, backends) = backends_on_one_port(vec![answering("a"), answering("b")]);
    dns.set("api.test", &["127.0.0.3", "127.0.0.2"]);
    let lb = discovering(&dns, port);
    wait_served(&lb, &[at(2, port), at(3, port)]);
    let mut bodies: Vec<String> = (0..4).map(|_| get(lb.addr, "/").text()).collect();
    bodies.sort();
    assert_eq!(bodies, ["a", "a", "b", "b"]);
    assert_eq!(backends[0].request_count(), 2);
    assert_eq!(backends[1].request_count(), 2);
    let admin = lb.admin_addr.expect("admin");
    let stats: serde_json::Value =
        serde_json::from_str(&get(admin, "/stats").text()).expect("stats JSON");
    let api: Vec<&serde_json::Value> = stats["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .filter(|b| b["pool"] == "default")
        .collect();
    assert_eq!(api.len(), 2);
    for (b, host) in api.iter().zip([2, 3]) {
        assert_eq!(b["url"], format!("http://api.test:{port}"));
        assert_eq!(b["address"], at(host, port));
        assert_eq!(b["discovered"], true);
        assert_eq!(b["request_count"], 2);
    }
    let metrics = get(admin, "/metrics").text();
    let line = format!(
        "lb_backend_requests_total{{backend=\"http://api.test:{port}\",pool=\"default\",address=\"{}\"}} 2",
        at(3, port)
    );
    assert!(metrics.contains(&line), "{line} in:\n{metrics}");
}

#[test]
fn addresses_come_and_go_with_the_answers() {
    let dns = DnsServer::start();
    let (port, backends) = backends_on_one_port(vec![answering("a"), answering("b")]);
    dns.set("api.test", &["127.0.0.2"]);
    let lb = discovering(&dns, port);
    wait_served(&lb, &[at(2, port)]);
    assert_eq!(get(lb.addr, "/").text(), "a");
    dns.set("api.test", &["127.0.0.2", "127.0.0.3"]);
    wait_served(&lb, &[at(2, port), at(3, port)]);
    dns.set("api.test", &["127.0.0.3"]);
    wait_served(&lb, &[at(3, port)]);
    for _ in 0..3 {
        assert_eq!(get(lb.addr, "/").text(), "b");
    }
    assert_eq!(backends[0].request_count(), 1, "the removed address gets nothing more");
    // The kept address kept its figures through the changes.
    let b = lb.snapshot().backends.into_iter().find(|b| b.discovered);
    assert_eq!(b.map(|b| b.request_count), Some(3));
}

#[test]
fn a_removed_address_finishes_its_in_flight_request() {
    let dns = DnsServer::start();
    let release = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let held = release.clone();
    let slow: Box<dyn Fn(Peer) + Send + Sync> = Box::new(move |mut peer: Peer| {
        if peer.read_request().is_some() {
            wait_until("the test to release the response", || {
                held.load(std::sync::atomic::Ordering::SeqCst)
            });
            peer.ok("slow a");
        }
    });
    let (port, backends) = backends_on_one_port(vec![slow, answering("b")]);
    dns.set("api.test", &["127.0.0.2"]);
    let lb = discovering(&dns, port);
    wait_served(&lb, &[at(2, port)]);
    let mut client = lb.client();
    client.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n");
    wait_until("the request to reach 127.0.0.2", || {
        backends[0].request_count() == 1
    });
    dns.set("api.test", &["127.0.0.3"]);
    wait_served(&lb, &[at(3, port)]);
    assert_eq!(get(lb.addr, "/").text(), "b", "new requests go to the new address");
    release.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = client.response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "slow a"));
}

#[test]
fn a_failed_lookup_of_any_kind_keeps_the_last_set() {
    let dns = DnsServer::start();
    let (port, _backends) = backends_on_one_port(vec![answering("a"), answering("b")]);
    dns.set("api.test", &["127.0.0.2"]);
    let lb = discovering(&dns, port);
    wait_served(&lb, &[at(2, port)]);
    let failures = [
        Answer::Silent,
        Answer::Rcode(simple_dns::RCODE::ServerFailure),
        Answer::Rcode(simple_dns::RCODE::NameError),
        Answer::Truncated,
        Answer::Addresses(vec![]),
    ];
    for failure in failures {
        dns.answer("api.test", failure.clone());
        // Two more rounds (an A and an AAAA query each) under the failure.
        let asked = dns.queries("api.test");
        wait_until(&format!("two lookups answered with {failure:?}"), || {
            dns.queries("api.test") >= asked + 4
        });
        assert_eq!(served(&lb), [at(2, port)], "{failure:?}");
        assert_eq!(get(lb.addr, "/").text(), "a", "{failure:?}");
    }
    // A good answer again is taken at once.
    dns.set("api.test", &["127.0.0.3"]);
    wait_served(&lb, &[at(3, port)]);
}

#[test]
fn a_reload_adds_and_drops_resolved_names() {
    let dns = DnsServer::start();
    let (port, _backends) = backends_on_one_port(vec![answering("a")]);
    dns.set("api.test", &["127.0.0.2"]);
    let lb = lb_text(&discovering_config(&dns, port, false));
    assert!(served(&lb).is_empty());
    let reload = |with_api| {
        let text = engine_config(&discovering_config(&dns, port, with_api));
        lb.control
            .reload(lb::config::Config::parse(&text).expect("valid config"));
    };
    reload(true);
    wait_served(&lb, &[at(2, port)]);
    assert_eq!(get(lb.addr, "/").text(), "a");
    // A reload that keeps the name keeps its address (no second lookup needed to serve).
    reload(true);
    assert_eq!(get(lb.addr, "/").text(), "a");
    reload(false);
    wait_served(&lb, &[]);
    assert_eq!(get(lb.addr, "/").status, 404, "no route and no default pool");
}

#[test]
fn each_address_is_probed_on_its_own() {
    let dns = DnsServer::start();
    // 127.0.0.2 fails every request, probes included; 127.0.0.3 is fine.
    let failing: Box<dyn Fn(Peer) + Send + Sync> = Box::new(|mut peer: Peer| {
        while peer.read_request().is_some() {
            let unavailable = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
            if !peer.write(unavailable.as_bytes()) {
                return;
            }
        }
    });
    let (port, _backends) = backends_on_one_port(vec![failing, answering("b")]);
    dns.set("api.test", &["127.0.0.2", "127.0.0.3"]);
    let lb = lb_text(&probing_config(&dns, port, true, "50ms"));
    wait_until("127.0.0.2 to be marked down by its probes", || {
        let backends = lb.snapshot().backends;
        let health = |address: String| {
            backends
                .iter()
                .find(|b| b.discovered && b.address == address)
                .map(|b| b.healthy)
        };
        health(at(2, port)) == Some(false) && health(at(3, port)) == Some(true)
    });
    for _ in 0..4 {
        assert_eq!(get(lb.addr, "/").text(), "b");
    }
}
