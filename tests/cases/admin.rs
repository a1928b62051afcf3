// Cases shared by both engines; included by tests/admin.rs once per engine.
use std::net::SocketAddr;

fn start_with_admin(token: Option<&str>, backends: &[SocketAddr]) -> (Lb, SocketAddr) {
    let token_line = token
        .map(|t| format!("token = \"{t}\"\n"))
        .unwrap_or_default();
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\naccess_log = false\n[health_check]\ninterval = \"1h\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n{token_line}"
    );
    for b in backends {
        text.push_str(&format!("[[backends]]\nurl = \"http://{b}\"\n"));
    }
    let lb = lb_text(&text);
    let admin = lb.admin_addr.expect("admin listener");
    (lb, admin)
}

fn admin_request(
    admin: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Response {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    request(
        admin,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn stats(admin: SocketAddr, token: Option<&str>) -> serde_json::Value {
    let r = admin_request(admin, "GET", "/stats", "", token);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    serde_json::from_slice(&r.body).expect("stats is JSON")
}

#[test]
fn stats_reflect_traffic() {
    let a = Backend::named("a");
    let b = Backend::named("b");
    let (lb, admin) = start_with_admin(None, &[a.addr, b.addr]);
    for _ in 0..6 {
        assert_eq!(get(lb.addr, "/").status, 200);
    }
    lb.wait_idle();
    let s = stats(admin, None);
    let backends = s["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    for (i, backend) in backends.iter().enumerate() {
        assert_eq!(backend["index"], i);
        assert_eq!(backend["request_count"], 3);
        assert_eq!(backend["success_count"], 3);
        assert_eq!(backend["error_count"], 0);
        assert_eq!(backend["healthy"], true);
        assert_eq!(backend["enabled"], true);
        assert_eq!(backend["capacity"], 1);
        assert!(backend["average_latency_ms"].as_f64().unwrap() >= 0.0);
    }
    assert_eq!(backends[0]["url"], format!("http://{}", a.addr));
    assert_eq!(s["total_requests"], 6);
    assert!(s["uptime_seconds"].as_f64().unwrap() >= 0.0);
    assert!(s["open_connections"].as_u64().is_some());
    assert!(s["requests_per_second"].as_f64().is_some());
    assert_eq!(s["workers"], workers());
}

#[test]
fn metrics_parse_with_a_prometheus_parser() {
    let a = Backend::named("a");
    let (lb, admin) = start_with_admin(None, &[a.addr]);
    for _ in 0..4 {
        get(lb.addr, "/");
    }
    lb.wait_idle();
    let r = admin_request(admin, "GET", "/metrics", "", None);
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let find = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
    };
    let requests = find("lb_backend_requests_total");
    assert_eq!(
        requests.labels.get("backend"),
        Some(format!("http://{}", a.addr).as_str())
    );
    assert!(
        matches!(requests.value, prometheus_parse::Value::Counter(v) if v == 4.0),
        "{:?}",
        requests.value
    );
    assert!(
        matches!(find("lb_backend_healthy").value, prometheus_parse::Value::Gauge(v) if v == 1.0)
    );
    assert!(
        matches!(find("lb_requests_total").value, prometheus_parse::Value::Counter(v) if v == 4.0)
    );
    // One series per worker, adding up to the process's requests.
    let per_worker: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "lb_worker_requests_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => f64::NAN,
        })
        .collect();
    assert_eq!(per_worker.len(), workers(), "{text}");
    assert_eq!(per_worker.iter().sum::<f64>(), 4.0, "{text}");
    let open = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "lb_worker_open_connections")
        .count();
    assert_eq!(open, workers(), "{text}");
    for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(text.contains(&format!("# HELP {name} ")), "HELP for {name}");
        if line.ends_with("counter") {
            assert!(name.ends_with("_total"), "counter {name} ends in _total");
        }
    }
}

#[test]
fn dashboard_is_one_self_contained_page() {
    let a = Backend::named("a");
    let (_lb, admin) = start_with_admin(None, &[a.addr]);
    let r = admin_request(admin, "GET", "/", "", None);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let page = r.text();
    assert!(
        page.contains("fetch(") && page.contains("/stats"),
        "polls /stats"
    );
    assert!(
        !page.contains("src=\"http") && !page.contains("href=\"http"),
        "no external assets"
    );
}

#[test]
fn capacity_changes_the_weighting_and_disabling_drains() {
    let a = Backend::named("a");
    let b = Backend::named("b");
    let text = format!(
        "listen = \"127.0.0.1:0\"\naccess_log = false\nalgorithm = \"weighted_round_robin\"\n\
         [health_check]\ninterval = \"1h\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[backends]]\nurl = \"http://{}\"\n[[backends]]\nurl = \"http://{}\"\n",
        a.addr, b.addr
    );
    let lb = lb_text(&text);
    let admin = lb.admin_addr.unwrap();
    let r = admin_request(admin, "PUT", "/backends/0/capacity", "3", None);
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "{\"index\":0,\"capacity\":3}")
    );
    let mut counts = std::collections::HashMap::new();
    for _ in 0..40 {
        *counts.entry(get(lb.addr, "/").text()).or_insert(0_usize) += 1;
    }
    if workers() == 1 {
        assert_eq!((counts["a"], counts["b"]), (30, 10));
    } else {
        // Each worker's smooth weights follow the capacities to within one pick of any prefix, so
        // the process's split is within one pick per worker of 3:1.
        assert_eq!(counts["a"] + counts["b"], 40);
        assert!(counts["a"].abs_diff(30) <= workers(), "{counts:?}");
    }

    // Disabling b while a request is in flight on it: that request finishes, new ones avoid b.
    let r = admin_request(admin, "PUT", "/backends/1/enabled", "false", None);
    assert_eq!(r.status, 200);
    assert_eq!(stats(admin, None)["backends"][1]["enabled"], false);
    for _ in 0..10 {
        assert_eq!(get(lb.addr, "/").text(), "a");
    }
    let r = admin_request(admin, "PUT", "/backends/1/enabled", "true", None);
    assert_eq!(r.status, 200);
    let seen: Vec<String> = (0..8).map(|_| get(lb.addr, "/").text()).collect();
    assert!(seen.contains(&"b".to_string()), "{seen:?}");
}

#[test]
fn disabling_a_backend_lets_its_in_flight_request_finish() {
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    let slow = Backend::start(move |mut peer| {
        while peer.read_request().is_some() {
            let _ = release_rx.lock().unwrap().recv();
            peer.ok("slow");
        }
    });
    let (lb, admin) = start_with_admin(None, &[slow.addr]);
    let mut client = lb.client();
    client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    wait_until("the request to reach the backend", || {
        slow.request_count() == 1
    });
    assert_eq!(
        admin_request(admin, "PUT", "/backends/0/enabled", "false", None).status,
        200
    );
    release_tx.send(()).unwrap();
    let r = client.response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "slow"));
    // Nothing else is available now.
    assert_eq!(get(lb.addr, "/").status, 503);
}

#[test]
fn bad_admin_input_gets_clear_errors() {
    let a = Backend::named("a");
    let (_lb, admin) = start_with_admin(None, &[a.addr]);
    let cases = [
        ("PUT", "/backends/0/capacity", "0", 400, "greater than 0"),
        ("PUT", "/backends/0/capacity", "ten", 400, "integer"),
        ("PUT", "/backends/0/enabled", "yes", 400, "true or false"),
        ("PUT", "/backends/7/capacity", "2", 404, "no backend"),
        ("GET", "/backends/0/capacity", "", 405, "not allowed"),
        ("DELETE", "/stats", "", 405, "not allowed"),
        ("GET", "/secrets", "", 404, "no such"),
    ];
    for (method, path, body, status, message) in cases {
        let r = admin_request(admin, method, path, body, None);
        assert_eq!(r.status, status, "{method} {path} {body:?}");
        assert!(r.text().contains(message), "{method} {path}: {}", r.text());
    }
    let r = request(
        admin,
        "GET /stats HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 400);
    let r = request(admin, "GARBAGE\r\n\r\n");
    assert_eq!(r.status, 400);
}

#[test]
fn token_is_required_when_configured() {
    let a = Backend::named("a");
    let (_lb, admin) = start_with_admin(Some("s3cret"), &[a.addr]);
    for path in ["/", "/stats", "/metrics"] {
        let r = admin_request(admin, "GET", path, "", None);
        assert_eq!(r.status, 401, "{path}");
        assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
        assert_eq!(
            admin_request(admin, "GET", path, "", Some("wrong")).status,
            401,
            "{path}"
        );
        assert_eq!(
            admin_request(admin, "GET", path, "", Some("s3cret")).status,
            200,
            "{path}"
        );
    }
    assert_eq!(
        admin_request(admin, "PUT", "/backends/0/capacity", "4", None).status,
        401
    );
    assert_eq!(
        stats(admin, Some("s3cret"))["backends"][0]["capacity"],
        1,
        "refused change not applied"
    );
    assert_eq!(
        admin_request(admin, "PUT", "/backends/0/capacity", "4", Some("s3cret")).status,
        200
    );
    assert_eq!(stats(admin, Some("s3cret"))["backends"][0]["capacity"], 4);
}

#[test]
fn admin_keep_alive_serves_several_requests() {
    let a = Backend::named("a");
    let (_lb, admin) = start_with_admin(None, &[a.addr]);
    let mut client = Client::connect(admin);
    for _ in 0..3 {
        client.send(b"GET /stats HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(client.response(false).status, 200);
    }
    client.send(b"PUT /backends/0/capacity HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n2");
    assert_eq!(client.response(false).status, 200);
    client.send(b"HEAD /stats HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let r = client.response(true);
    assert_eq!(r.status, 200);
    assert!(client.is_closed());
}

#[test]
fn reload_adds_and_removes_backends_keeping_statistics_and_connections() {
    let a = Backend::named("a");
    let b = Backend::named("b");
    let c = Backend::named("c");
    let config = |backends: &[SocketAddr]| {
        let mut text =
            "listen = \"127.0.0.1:0\"\naccess_log = false\n[health_check]\ninterval = \"1h\"\n"
                .to_string();
        for addr in backends {
            text.push_str(&format!("[[backends]]\nurl = \"http://{addr}\"\n"));
        }
        text
    };
    let lb = lb_text(&config(&[a.addr, b.addr]));
    let mut client = lb.client();
    for _ in 0..4 {
        client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(client.response(false).status, 200);
    }
    lb.control
        .reload(lb::config::Config::parse(&config(&[a.addr, c.addr])).unwrap());
    wait_until("the reload", || {
        lb.snapshot()
            .backends
            .iter()
            .any(|s| s.url.ends_with(&c.addr.to_string()))
    });
    // The same client connection goes on, now over a and c.
    let mut seen = Vec::new();
    for _ in 0..6 {
        client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        seen.push(client.response(false).text());
    }
    assert!(
        seen.contains(&"a".to_string()) && seen.contains(&"c".to_string()),
        "{seen:?}"
    );
    assert!(!seen.contains(&"b".to_string()), "{seen:?}");
    let snapshot = lb.snapshot();
    assert_eq!(snapshot.backends.len(), 2);
    assert_eq!(
        snapshot.backends[0].request_count,
        2 + 3,
        "a kept its statistics"
    );
    assert_eq!(snapshot.backends[1].request_count, 3, "c starts afresh");
}

#[test]
fn drain_finishes_in_flight_requests_and_closes_idle_ones() {
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    let slow = Backend::start(move |mut peer| {
        while let Some(req) = peer.read_request() {
            if req.head.starts_with("GET /slow") {
                let _ = release_rx.lock().unwrap().recv();
            }
            peer.ok("done");
        }
    });
    let lb = lb("", &[slow.addr]);
    let mut idle = lb.client();
    idle.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(idle.response(false).status, 200);
    let mut busy = lb.client();
    busy.send(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    wait_until("the slow request to arrive", || slow.request_count() == 2);
    lb.control.drain();
    assert!(idle.is_closed(), "the idle keep-alive connection is closed");
    assert!(
        std::net::TcpStream::connect(lb.addr).is_err(),
        "no longer accepting"
    );
    release_tx.send(()).unwrap();
    let r = busy.response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "done"));
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(busy.is_closed());
}

#[test]
fn response_times_are_a_histogram_merged_over_workers() {
    let slow = Backend::start(|mut peer| {
        while peer.read_request().is_some() {
            std::thread::sleep(std::time::Duration::from_millis(25));
            if !peer.ok("slow") {
                return;
            }
        }
    });
    let (lb, admin) = start_with_admin(None, &[slow.addr]);
    for _ in 0..6 {
        assert_eq!(get(lb.addr, "/").status, 200);
    }
    lb.wait_idle();
    let s = stats(admin, None);
    let p50 = s["backends"][0]["latency_ms"]["p50"].as_f64().unwrap();
    let p99 = s["backends"][0]["latency_ms"]["p99"].as_f64().unwrap();
    // Every sample took 25 ms at least: none is in the buckets up to 20 ms.
    assert!(p50 >= 20.0 && p99 >= p50, "{s}");
    let metrics = admin_request(admin, "GET", "/metrics", "", None).text();
    let labels = format!("backend=\"http://{}\",pool=\"default\"", slow.addr);
    for (line, value) in [
        (format!("lb_backend_response_seconds_bucket{{{labels},le=\"0.02\"}}"), "0"),
        (format!("lb_backend_response_seconds_bucket{{{labels},le=\"+Inf\"}}"), "6"),
        (format!("lb_backend_response_seconds_count{{{labels}}}"), "6"),
    ] {
        assert!(metrics.contains(&format!("{line} {value}\n")), "{line} {value} in\n{metrics}");
    }
}

#[test]
fn stats_carry_ten_minutes_of_history_and_the_health_transitions() {
    let dead = closed_port();
    let alive = Backend::named("ok");
    let lb = lb_text(&format!(
        "listen = \"127.0.0.1:0\"\naccess_log = false\n[health_check]\ninterval = \"100ms\"\ntimeout = \"100ms\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [[backends]]\nurl = \"http://{dead}\"\n[[backends]]\nurl = \"http://{}\"\n",
        alive.addr
    ));
    let admin = lb.admin_addr.unwrap();
    wait_until("the dead backend's transition", || {
        stats(admin, None)["health_events"]
            .as_array()
            .is_some_and(|events| {
                events.iter().any(|e| {
                    e["state"] == "down" && e["backend"] == format!("http://{dead}") && e["pool"] == "default"
                })
            })
    });
    // A sample a second: a few seconds in, requests made meanwhile are in it.
    for _ in 0..5 {
        assert_eq!(get(lb.addr, "/").status, 200);
    }
    wait_until("two seconds of history with the requests", || {
        let s = stats(admin, None);
        let history = s["history"].as_array().cloned().unwrap_or_default();
        history.len() >= 2
            && history.iter().map(|h| h["requests"].as_u64().unwrap_or(0)).sum::<u64>() >= 5
    });
}
