//! Several event-loop workers in one process: figures that stay exact when the workers count at once,
//! one health prober for the process, least-connections seeing every worker's requests, reloads under
//! connection churn with no client error, and a drain that waits for requests in flight on every
//! worker. (The proxy, pool, admin, hostile and TLS cases also run with two workers: `workers2::...`.)

mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

fn workers_lb(workers: usize, extra: &str, backends: &[SocketAddr]) -> Lb {
    Lb::start(&format!("workers = {workers}\n{extra}"), backends)
}

/// A backend that holds every request until `release` opens, then answers with `name`.
fn gated(name: &'static str, gate: Arc<(Mutex<bool>, Condvar)>) -> Backend {
    Backend::start(move |mut peer| {
        while peer.read_request().is_some() {
            let (open, cvar) = &*gate;
            let mut released = open.lock().unwrap();
            while !*released {
                released = cvar.wait(released).unwrap();
            }
            drop(released);
            if !peer.ok(name) {
                return;
            }
        }
    })
}

fn open(gate: &(Mutex<bool>, Condvar)) {
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
}

#[test]
fn totals_stay_exact_when_workers_count_at_once() {
    const THREADS: usize = 8;
    const EACH: usize = 50;
    let a = Backend::named("a");
    let b = Backend::named("b");
    // reuse_port: the kernel hashes the connections across both workers, so both do some of the work.
    for extra in ["", "reuse_port = true\n"] {
        let lb = workers_lb(2, extra, &[a.addr, b.addr]);
        let addr = lb.addr;
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut ok = 0;
                    for i in 0..EACH {
                        // Half the requests on new connections, half on one keep-alive connection.
                        if (t + i) % 2 == 0 {
                            ok += usize::from(get(addr, "/").status == 200);
                        } else {
                            let mut client = Client::connect(addr);
                            for _ in 0..2 {
                                client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
                                ok += usize::from(client.response(false).status == 200);
                            }
                        }
                    }
                    ok
                })
            })
            .collect();
        let ok: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let expected = THREADS * EACH * 3 / 2;
        assert_eq!(ok, expected, "{extra}");
        lb.wait_idle();
        let s = lb.snapshot();
        let counted: u64 = s.backends.iter().map(|b| b.request_count).sum();
        assert_eq!(counted, expected as u64, "{extra}");
        for b in &s.backends {
            assert_eq!(b.request_count, b.success_count + b.error_count, "{extra}");
        }
        assert_eq!(s.workers.len(), 2);
        let per_worker: Vec<u64> = s.workers.iter().map(|w| w.requests).collect();
        assert_eq!(per_worker.iter().sum::<u64>(), expected as u64, "{extra}");
        if !extra.is_empty() {
            assert!(per_worker.iter().all(|&n| n > 0), "{per_worker:?}");
        }
        assert!(s.workers.iter().all(|w| w.open == 0));
    }
}

#[test]
fn the_process_probes_each_backend_once_per_interval() {
    let backend = Backend::named("ok");
    let lb = workers_lb(4, "[health_check]\ninterval = \"100ms\"\n", &[backend.addr]);
    let probes = || {
        backend
            .requests()
            .iter()
            .filter(|r| r.head.starts_with("GET /health"))
            .count()
    };
    wait_until("a first probe", || probes() >= 1);
    let start = Instant::now();
    let first = probes();
    wait_until("ten more probes", || probes() >= first + 10);
    // One prober: ten intervals of 100 ms (less their jitter) at the least. Four would take a quarter.
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(800),
        "10 probes in {took:?}: more than one prober"
    );
    drop(lb);
}

#[test]
fn least_connections_sees_every_workers_requests() {
    // 16 connections hashed across two workers: all on one has odds of 1 in 32768.
    const CLIENTS: usize = 16;
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let a = gated("a", gate.clone());
    let b = gated("b", gate.clone());
    let lb = workers_lb(
        2,
        "reuse_port = true\nalgorithm = \"least_connections\"\n",
        &[a.addr, b.addr],
    );
    let mut clients = Vec::new();
    for n in 1..=CLIENTS {
        let mut client = lb.client();
        client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        wait_until("the request to reach a backend", || {
            a.request_count() + b.request_count() == n
        });
        clients.push(client);
    }
    // Every pick saw the requests in flight on both workers: the load is even. Per-worker counts
    // would have let a worker that had not yet sent anything pick a busy backend.
    assert_eq!((a.request_count(), b.request_count()), (8, 8));
    let s = lb.snapshot();
    assert!(
        s.workers.iter().all(|w| w.open > 0),
        "both workers hold requests: {:?}",
        s.workers
    );
    open(&gate);
    for mut client in clients {
        assert_eq!(client.response(false).status, 200);
    }
}

#[test]
fn reloads_under_connection_churn_cost_no_client_a_request() {
    const THREADS: usize = 6;
    let a = Backend::named("a");
    let b = Backend::named("b");
    let c = Backend::named("c");
    let lb = workers_lb(2, "", &[a.addr, b.addr]);
    let addr = lb.addr;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    match std::panic::catch_unwind(|| get(addr, "/").status) {
                        Ok(200) => ok += 1,
                        Ok(status) => failed.push(status.to_string()),
                        Err(_) => failed.push("connection error".to_string()),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let base = "listen = \"127.0.0.1:0\"\naccess_log = false\nworkers = 2\n\
                [health_check]\ninterval = \"1h\"\n"
        .to_string();
    let sets = [
        vec![a.addr, c.addr],
        vec![b.addr],
        vec![a.addr, b.addr, c.addr],
    ];
    for round in 0..6 {
        let served = a.request_count() + b.request_count() + c.request_count();
        let mut text = base.clone();
        for addr in &sets[round % sets.len()] {
            text.push_str(&format!("[[backends]]\nurl = \"http://{addr}\"\n"));
        }
        lb.control
            .reload(lb::config::Config::parse(&text).expect("reload config"));
        // Requests keep flowing between reloads.
        wait_until("requests after the reload", || {
            a.request_count() + b.request_count() + c.request_count() >= served + 50
        });
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut total = 0;
    for t in threads {
        let (ok, failed) = t.join().unwrap();
        assert!(failed.is_empty(), "{failed:?}");
        total += ok;
    }
    assert!(total >= 300, "{total}");
    // Every worker took the last set: a, b and c all get requests on new connections.
    let before = c.request_count();
    for _ in 0..30 {
        assert_eq!(get(addr, "/").status, 200);
    }
    assert!(c.request_count() > before);
    assert_eq!(lb.snapshot().backends.len(), 3);
}

#[test]
fn a_drain_waits_for_requests_in_flight_on_every_worker() {
    const CLIENTS: usize = 16;
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let slow = gated("done", gate.clone());
    let lb = workers_lb(2, "reuse_port = true\n", &[slow.addr]);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = lb.client();
        client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        clients.push(client);
    }
    wait_until("every request in flight", || {
        slow.request_count() == CLIENTS
    });
    let s = lb.snapshot();
    assert!(
        s.workers.iter().all(|w| w.open > 0),
        "both workers hold requests: {:?}",
        s.workers
    );
    lb.control.drain();
    wait_until("every listener to close", || {
        std::net::TcpStream::connect(lb.addr).is_err()
    });
    open(&gate);
    for mut client in clients {
        let r = client.response(false);
        assert_eq!((r.status, r.text().as_str()), (200, "done"));
        assert_eq!(r.header("connection").as_deref(), Some("close"));
    }
    // Every worker finished its drain, and the process's loop returned.
    wait_until("the engine to stop", || lb.control.snapshot().is_none());
}

#[test]
fn a_stalled_worker_holds_up_no_new_connection() {
    const CLIENTS: usize = 20;
    let backend = Backend::named("ok");
    // The shared listener: a new connection wakes a worker waiting for events, never a busy one.
    let lb = workers_lb(2, "", &[backend.addr]);
    let mut stalled = lb.client();
    stalled.send(b"GET /__lb_fault/stall-at-response HTTP/1.1\r\nHost: h\r\n\r\n");
    // The backend answers at once; the worker serving this client then stops for 3 s.
    wait_until("the stalling request to reach the backend", || {
        backend.request_count() == 1
    });
    let start = Instant::now();
    for _ in 0..CLIENTS {
        assert_eq!(get(lb.addr, "/").status, 200);
    }
    let took = start.elapsed();
    assert!(
        took < lb::fault::STALL_FOR / 2,
        "{CLIENTS} new connections took {took:?} while one worker was stalled"
    );
    assert_eq!(backend.request_count(), 1 + CLIENTS);
    // The stalled worker's own client is answered once it wakes.
    let r = stalled.response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert!(start.elapsed() >= lb::fault::STALL_FOR / 2);
}
