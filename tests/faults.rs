//! Faults and abuse: backends that close pooled connections at random, clients that vanish mid-upload
//! and mid-download, slowloris, a connection flood beyond `max_connections`, and running out of file
//! descriptors. After each, nothing leaks: no open connection, registered socket or live timer remains.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// `workers2`: the event loop with two workers.
const ENGINES: [&str; 3] = ["event_loop", "workers2", "threaded"];

/// Short timeouts so that lazily cancelled timer entries drain within a test.
const SHORT: &str =
    "[timeouts]\nidle = \"300ms\"\nrequest_head = \"1s\"\nresponse = \"2s\"\nconnect = \"1s\"\n";

/// Waits until no connection is open and, for the event loop, until the only registered sockets are pooled
/// backend connections and the only timer entries are each worker's once-a-second tick and one per
/// prober.
fn assert_no_leaks(lb: &Lb, engine: &str, backends: usize) {
    lb.wait_released();
    if engine != "threaded" {
        wait_until("sockets and timers to drain", || {
            let s = lb.snapshot();
            s.open_connections == 0
                && s.registered_sockets == s.pooled_connections
                && s.timers <= backends + workers_of(engine)
        });
    }
}

#[test]
fn backend_closing_pooled_connections_at_random_loses_nothing() {
    for engine in ENGINES {
        // Each backend connection serves 1 to 4 requests, then closes without warning.
        let backend = Backend::start(|mut peer| {
            let port = peer.stream.peer_addr().map(|a| a.port()).unwrap_or(1);
            let serve = 1 + (port as usize * 7919) % 4;
            for _ in 0..serve {
                if peer.read_request().is_none() || !peer.ok("fine") {
                    return;
                }
            }
        });
        let lb = Lb::start(
            &format!("{}\n{SHORT}", engine_line(engine)),
            &[backend.addr],
        );
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let addr = lb.addr;
                std::thread::spawn(move || {
                    let mut client = Client::connect(addr);
                    (0..75)
                        .map(|_| {
                            client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
                            client.response(false).status
                        })
                        .filter(|s| *s != 200)
                        .count()
                })
            })
            .collect();
        let failures: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(failures, 0, "{engine}");
        assert!(
            backend.connection_count() > 300 / 4,
            "{engine}: connections really were closed"
        );
        assert_no_leaks(&lb, engine, 1);
    }
}

#[test]
fn client_vanishing_mid_download_releases_everything() {
    for engine in ENGINES {
        // A 64 MiB response, written as fast as the balancer takes it.
        let backend = Backend::start(|mut peer| {
            if peer.read_request().is_some() {
                peer.write(
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 64 << 20).as_bytes(),
                );
                let chunk = vec![b'z'; 1 << 16];
                for _ in 0..1024 {
                    if !peer.write(&chunk) {
                        return;
                    }
                }
            }
        });
        let lb = Lb::start(
            &format!("{}\n{SHORT}", engine_line(engine)),
            &[backend.addr],
        );
        {
            let mut client = TcpStream::connect(lb.addr).unwrap();
            client
                .write_all(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
                .unwrap();
            let mut got = 0;
            let mut buf = [0u8; 65536];
            while got < 200_000 {
                got += client.read(&mut buf).unwrap();
            }
        } // the client closes with most of the body unread
        wait_until("the backend connection to be closed", || {
            backend.finished.load(std::sync::atomic::Ordering::SeqCst) == 1
        });
        assert_no_leaks(&lb, engine, 1);
    }
}

#[test]
fn client_vanishing_mid_upload_releases_everything() {
    for engine in ENGINES {
        let backend = Backend::named("never");
        let lb = Lb::start(
            &format!("{}\n{SHORT}", engine_line(engine)),
            &[backend.addr],
        );
        {
            let mut client = TcpStream::connect(lb.addr).unwrap();
            client
                .write_all(b"PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: 10000000\r\n\r\n")
                .unwrap();
            client.write_all(&[b'u'; 300_000]).unwrap();
            wait_until("the upload to reach the backend", || {
                backend.connection_count() == 1
            });
        }
        wait_until("the backend connection to be closed", || {
            backend.finished.load(std::sync::atomic::Ordering::SeqCst) == 1
        });
        assert_eq!(
            backend.request_count(),
            0,
            "{engine}: a partial upload is never a request"
        );
        assert_no_leaks(&lb, engine, 1);
    }
}

#[test]
fn slowloris_does_not_starve_normal_clients() {
    for engine in ENGINES {
        let backend = Backend::named("served");
        let lb = Lb::start(
            &format!("{}\n{SHORT}", engine_line(engine)),
            &[backend.addr],
        );
        // Hundreds of connections trickling a head, one byte at a time.
        // Each sends its first byte as it connects (a connection that stays silent for request_head is
        // closed without a word, which is not what this test is about).
        let head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: 1\r\n";
        let started = Instant::now();
        let mut slow: Vec<TcpStream> = (0..200)
            .map(|_| {
                let mut s = TcpStream::connect(lb.addr).unwrap();
                s.write_all(&head[..1]).unwrap();
                s
            })
            .collect();
        for (i, byte) in head.iter().enumerate().skip(1).take(5) {
            for s in &mut slow {
                let _ = s.write_all(&[*byte]);
            }
            if i == 2 {
                // A normal client in the middle of it is served at once.
                let t = Instant::now();
                assert_eq!(get(lb.addr, "/").text(), "served", "{engine}");
                assert!(
                    t.elapsed() < Duration::from_millis(500),
                    "{engine}: normal client waited {:?}",
                    t.elapsed()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // At request_head (1 s from their first byte) they are answered 408 and closed.
        for s in &mut slow {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            assert!(
                got.starts_with(b"HTTP/1.1 408 "),
                "{engine}: {:?}",
                String::from_utf8_lossy(&got)
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{engine}: closed at request_head"
        );
        assert_eq!(
            backend.connection_count(),
            1,
            "{engine}: only the normal client reached the backend"
        );
        assert_no_leaks(&lb, engine, 1);
    }
}

#[test]
fn connection_flood_beyond_max_connections() {
    for engine in ENGINES {
        let backend = Backend::named("ok");
        let lb = Lb::start(
            &format!("{}\nmax_connections = 20\n{SHORT}", engine_line(engine)),
            &[backend.addr],
        );
        // Twenty keep-alive clients hold every slot.
        let mut holders: Vec<Client> = (0..20)
            .map(|_| {
                let mut c = lb.client();
                c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
                assert_eq!(c.response(false).status, 200);
                c
            })
            .collect();
        // A flood of a hundred more.
        let flood: Vec<TcpStream> = (0..100)
            .filter_map(|_| TcpStream::connect(lb.addr).ok())
            .collect();
        let snapshot = lb.snapshot();
        assert!(
            snapshot.open_connections <= 20,
            "{engine}: {} open",
            snapshot.open_connections
        );
        // The flood goes away, and so do half of the holders (their idle timeout would do it too).
        drop(flood);
        holders.truncate(10);
        // Accepting resumes: a new client is served.
        let deadline = Instant::now() + WAIT;
        loop {
            let mut c = lb.client();
            c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
            if let Some(r) = c.try_response(false) {
                assert_eq!(r.status, 200, "{engine}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{engine}: accepting never resumed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(holders);
        assert_no_leaks(&lb, engine, 1);
    }
}

/// A panic inside the proxy (injected by the test build at two stages of an exchange) costs the
/// connection it happened on, and nothing else: other clients go on being served on their open
/// connections, the request's in-flight count is taken back, every socket, buffer and timer of the
/// connection is released, and the panic is counted in `lb_internal_errors_total`.
#[test]
fn a_panic_costs_one_connection_only() {
    for engine in ENGINES {
        let backend = Backend::named("fine");
        let admin = "[admin]\nlisten = \"127.0.0.1:0\"\n";
        let lb = Lb::start(
            &format!("{}\n{SHORT}{admin}", engine_line(engine)),
            &[backend.addr],
        );
        let mut bystander = lb.client();
        bystander.send(b"GET /before HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(bystander.response(false).status, 200, "{engine}");

        for stage in ["request", "response"] {
            let mut victim = lb.client();
            victim.send(
                format!("GET /__lb_fault/panic-at-{stage} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes(),
            );
            let answer = victim.read_all();
            assert!(
                answer.is_empty(),
                "{engine} {stage}: the connection that panicked is closed without an answer, got {:?}",
                String::from_utf8_lossy(&answer)
            );
        }
        lb.expected_internal_errors.set(2);

        bystander.send(b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n");
        let after = bystander.response(false);
        assert_eq!(
            (after.status, after.text().as_str()),
            (200, "fine"),
            "{engine}"
        );
        drop(bystander);

        assert_no_leaks(&lb, engine, 1);
        let s = lb.snapshot();
        assert_eq!(s.internal_errors, 2, "{engine}");
        let b = &s.backends[0];
        assert_eq!(
            b.active_connections, 0,
            "{engine}: in-flight count taken back"
        );
        assert_eq!(
            b.request_count,
            b.success_count + b.error_count,
            "{engine}: requests = successes + errors after the unwinds"
        );
        assert_eq!(b.success_count, 2, "{engine}");
        let metrics = get(lb.admin_addr.expect("admin"), "/metrics").text();
        assert!(
            metrics.contains("\nlb_internal_errors_total 2\n"),
            "{engine}: {metrics}"
        );
    }
}
