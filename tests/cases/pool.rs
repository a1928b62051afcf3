// Cases shared by both engines; included by tests/pool.rs once per engine.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const FAST_HEALTH: &str =
    "[health_check]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 2\nfall = 2\n";

fn assert_stats_add_up(lb: &Lb) {
    lb.wait_idle();
    for b in lb.snapshot().backends {
        assert_eq!(
            b.request_count,
            b.success_count + b.error_count,
            "requests = successes + errors for {}: {b:?}",
            b.url
        );
    }
}

fn body_counts(lb: &Lb, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut client = lb.client();
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let r = client.response(false);
        assert_eq!(r.status, 200);
        *counts.entry(r.text()).or_default() += 1;
    }
    counts
}

#[test]
fn killing_a_backend_under_load_loses_no_request_and_it_rejoins() {
    let a = Backend::named("a");
    let mut b = Backend::named("b");
    let c = Backend::named("c");
    let b_addr = b.addr;
    let lb = lb(
        &format!("retries = 2\n{FAST_HEALTH}"),
        &[a.addr, b.addr, c.addr],
    );

    // Several keep-alive clients in parallel, each a steady stream of GETs.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, served, addr) = (stop.clone(), served.clone(), lb.addr);
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut failures = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
                    let r = client.response(false);
                    if r.status != 200 {
                        failures.push(r.status);
                    }
                    served.fetch_add(1, Ordering::SeqCst);
                }
                failures
            })
        })
        .collect();

    wait_until("traffic to flow", || served.load(Ordering::SeqCst) > 200);
    b.kill();
    let killed_at = served.load(Ordering::SeqCst);
    wait_until("b to be marked down", || !lb.snapshot().backends[1].healthy);
    wait_until("more traffic after the kill", || {
        served.load(Ordering::SeqCst) > killed_at + 300
    });

    // Bring b back on the same address: probes must see it and it must take traffic again.
    let b = Backend::start_at(b_addr, |mut peer| {
        while peer.read_request().is_some() {
            peer.ok("b");
        }
    });
    wait_until("b to be marked up again", || {
        lb.snapshot().backends[1].healthy
    });
    wait_until("b to serve again", || b.request_count() > 10);
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        let failures = client.join().unwrap();
        assert!(failures.is_empty(), "client-visible failures: {failures:?}");
    }
    assert_stats_add_up(&lb);
    let snapshot = lb.snapshot();
    assert!(
        snapshot.backends[1].error_count >= 1,
        "the kill was noticed: {:?}",
        snapshot.backends[1]
    );
}

#[test]
fn probes_take_a_backend_down_after_fall_and_up_after_rise() {
    let healthy = Arc::new(AtomicBool::new(true));
    let probes_ok = Arc::new(AtomicUsize::new(0));
    let probes_failed = Arc::new(AtomicUsize::new(0));
    let (h, ok, failed) = (healthy.clone(), probes_ok.clone(), probes_failed.clone());
    let flaky = Backend::start(move |mut peer| {
        while let Some(req) = peer.read_request() {
            if req.head.starts_with("GET /health ") {
                assert!(
                    req.head.contains("Connection: close"),
                    "probe head: {}",
                    req.head
                );
                if h.load(Ordering::SeqCst) {
                    ok.fetch_add(1, Ordering::SeqCst);
                    peer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK",
                    );
                } else {
                    failed.fetch_add(1, Ordering::SeqCst);
                    peer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                }
                return;
            }
            peer.ok("flaky");
        }
    });
    let steady = Backend::named("steady");
    let settings = "[health_check]\ninterval = \"50ms\"\ntimeout = \"50ms\"\nrise = 3\nfall = 2\n";
    let lb = lb(settings, &[flaky.addr, steady.addr]);
    wait_until("a few good probes", || {
        probes_ok.load(Ordering::SeqCst) >= 2
    });
    assert!(lb.snapshot().backends[0].healthy);

    healthy.store(false, Ordering::SeqCst);
    wait_until("the backend to go down", || {
        !lb.snapshot().backends[0].healthy
    });
    assert!(
        probes_failed.load(Ordering::SeqCst) >= 2,
        "down only after `fall` failed probes"
    );
    // While down, it gets no traffic.
    let counts = body_counts(&lb, 20);
    assert_eq!(counts.get("steady"), Some(&20), "{counts:?}");

    let failed_before_recovery = probes_failed.load(Ordering::SeqCst);
    let ok_before_recovery = probes_ok.load(Ordering::SeqCst);
    healthy.store(true, Ordering::SeqCst);
    wait_until("the backend to come back", || {
        lb.snapshot().backends[0].healthy
    });
    assert!(
        probes_ok.load(Ordering::SeqCst) - ok_before_recovery >= 3,
        "up only after `rise` good probes"
    );
    assert!(probes_failed.load(Ordering::SeqCst) >= failed_before_recovery);
    let counts = body_counts(&lb, 20);
    assert_eq!(
        counts.get("flaky"),
        Some(&10),
        "round robin again once up: {counts:?}"
    );
}

#[test]
fn probe_timeouts_and_refusals_count_as_failures() {
    // One backend accepts and never answers the probe; the other port is closed.
    let silent = Backend::start(|mut peer| {
        let _ = peer.read_request();
        std::thread::sleep(Duration::from_secs(3));
    });
    let settings = "[health_check]\ninterval = \"50ms\"\ntimeout = \"50ms\"\nfall = 1\n";
    let lb = lb(settings, &[silent.addr, closed_port()]);
    wait_until("both backends down", || {
        lb.snapshot().backends.iter().all(|b| !b.healthy)
    });
}

/// `timeout` longer than `interval` is accepted (as HAProxy and nginx do) and capped by the interval:
/// two probes that would each wait 30 s are over in a fraction of `WAIT`.
#[test]
fn a_probe_timeout_longer_than_the_interval_is_capped_by_it() {
    let silent = Backend::start(|mut peer| {
        let _ = peer.read_request();
        // Hold the probe open without answering until lb gives up on it.
        let mut byte = [0u8; 1];
        let _ = std::io::Read::read(&mut peer.stream, &mut byte);
    });
    let settings = "[health_check]\ninterval = \"100ms\"\ntimeout = \"30s\"\nfall = 2\n";
    let lb = lb(settings, &[silent.addr]);
    wait_until("the silent backend to go down on capped probe timeouts", || {
        !lb.snapshot().backends[0].healthy
    });
    assert!(silent.connection_count() >= 2);
}

#[test]
fn all_backends_down_gives_503_at_once() {
    let settings = "[health_check]\ninterval = \"50ms\"\ntimeout = \"50ms\"\nfall = 1\n";
    let lb = lb(settings, &[closed_port(), closed_port()]);
    wait_until("both backends down", || {
        lb.snapshot().backends.iter().all(|b| !b.healthy)
    });
    let started = Instant::now();
    let r = get(lb.addr, "/");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "503 at once, not after timeouts"
    );
}

#[test]
fn passive_failures_take_a_backend_out_before_any_probe() {
    let good = Backend::named("good");
    // Probes are an hour away: only real traffic can mark the dead backend down.
    let lb = lb(
        "retries = 1\n[health_check]\ninterval = \"1h\"\nfall = 2\n",
        &[closed_port(), good.addr],
    );
    for _ in 0..10 {
        assert_eq!(get(lb.addr, "/").text(), "good");
    }
    let dead = &lb.snapshot().backends[0];
    assert!(!dead.healthy, "{dead:?}");
    assert_eq!(
        dead.error_count, 2,
        "tried only until it went down: {dead:?}"
    );
}

#[test]
fn reset_before_response_is_retried_for_idempotent_requests_only() {
    // The first backend resets every request without answering.
    let broken = Backend::start(|mut peer| {
        if peer.read_request().is_some() {
            peer.reset();
        }
    });
    let good = Backend::named("good");
    let lb = lb(
        "retries = 1\n[health_check]\ninterval = \"1h\"\nfall = 100\n",
        &[broken.addr, good.addr],
    );
    for _ in 0..4 {
        assert_eq!(
            get(lb.addr, "/").text(),
            "good",
            "GET goes to the next backend"
        );
    }
    // A POST is never sent twice: whoever gets it, the answer is final.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            request(
                lb.addr,
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi",
            )
            .status,
        );
    }
    statuses.sort();
    if workers() == 1 {
        assert_eq!(statuses, [200, 200, 502, 502]);
    } else {
        // Which POSTs meet the broken backend depends on how the connections fall to the workers
        // (each alternates on its own); what holds is that none is sent twice.
        assert!(statuses.iter().all(|s| [200, 502].contains(s)), "{statuses:?}");
    }
    let answered = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(
        good.requests()
            .iter()
            .filter(|r| r.head.starts_with("POST"))
            .count(),
        answered
    );
    assert_stats_add_up(&lb);
}

#[test]
fn weighted_round_robin_end_to_end() {
    let a = Backend::named("a");
    let b = Backend::named("b");
    let text = format!(
        "listen = \"127.0.0.1:0\"\naccess_log = false\nalgorithm = \"weighted_round_robin\"\n\
         [health_check]\ninterval = \"1h\"\n\
         [[backends]]\nurl = \"http://{}\"\ncapacity = 3\n[[backends]]\nurl = \"http://{}\"\ncapacity = 1\n",
        a.addr, b.addr
    );
    let lb = lb_text(&text);
    let counts = body_counts(&lb, 400);
    assert_eq!(counts.get("a"), Some(&300));
    assert_eq!(counts.get("b"), Some(&100));
    assert_stats_add_up(&lb);
}

#[test]
fn least_connections_avoids_a_slow_backend() {
    let slow = Backend::start(|mut peer| {
        while peer.read_request().is_some() {
            std::thread::sleep(Duration::from_millis(200));
            peer.ok("slow");
        }
    });
    let fast = Backend::named("fast");
    let lb = lb("algorithm = \"least_connections\"", &[slow.addr, fast.addr]);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let addr = lb.addr;
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                (0..25)
                    .map(|_| {
                        client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
                        client.response(false).text()
                    })
                    .filter(|body| body == "slow")
                    .count()
            })
        })
        .collect();
    let slow_count: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(
        slow_count < 200 / 5,
        "the slow backend got {slow_count} of 200 requests"
    );
    assert_stats_add_up(&lb);
}

#[test]
fn ip_hash_keeps_a_client_on_one_backend() {
    let a = Backend::named("a");
    let b = Backend::named("b");
    let c = Backend::named("c");
    let lb = lb("algorithm = \"ip_hash\"", &[a.addr, b.addr, c.addr]);
    let counts = body_counts(&lb, 30);
    assert_eq!(
        counts.len(),
        1,
        "one client address, one backend: {counts:?}"
    );
    // Fresh connections from the same address stick too.
    let first = get(lb.addr, "/").text();
    for _ in 0..5 {
        assert_eq!(get(lb.addr, "/").text(), first);
    }
}

#[test]
fn every_algorithm_serves_and_counts() {
    for algorithm in [
        "round_robin",
        "weighted_round_robin",
        "least_connections",
        "least_latency",
        "power_of_two",
        "random",
        "ip_hash",
    ] {
        let a = Backend::named("a");
        let b = Backend::named("b");
        let lb = lb(&format!("algorithm = \"{algorithm}\""), &[a.addr, b.addr]);
        let counts = body_counts(&lb, 50);
        assert_eq!(counts.values().sum::<usize>(), 50, "{algorithm}");
        // The threaded engine updates statistics on the connection's thread after the last byte.
        lb.wait_idle();
        let snapshot = lb.snapshot();
        let total: u64 = snapshot.backends.iter().map(|b| b.success_count).sum();
        assert_eq!(total, 50, "{algorithm}: every request counted once");
        assert!(
            snapshot.backends.iter().all(|b| b.healthy && b.enabled),
            "{algorithm}"
        );
        assert_stats_add_up(&lb);
    }
}
