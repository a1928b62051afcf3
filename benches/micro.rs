//! Micro-benchmarks of the per-request pure work: parsing and rewriting a request head, parsing and
//! rewriting a response head, decoding a chunked body, and every balancing algorithm's pick (with the
//! start/finish bookkeeping a request does), over 8 backends of mixed capacity, and route matching
//! over 50 routes.
//! `cargo bench --bench micro`.
//!
//! Each result is asserted so that nothing is optimised away; times are per operation, medians of
//! several runs, and meant to be compared with each other on one machine, not across machines.

use lb::balance::{Balancer, Outcome, Pick, Tried};
use lb::config::{Algorithm, Config};
use lb::http::Version;
use lb::http::body::{ChunkedDecoder, Relay, relay_all};
use lb::http::request::{ForwardInfo, parse_request, write_request_head};
use lb::http::response::{parse_response, plan_response, write_response_head};
use lb::random::Rng;
use std::hint::black_box;
use std::time::{Duration, Instant};

const REQUEST: &[u8] = b"GET /api/v1/users/12345?fields=name,email HTTP/1.1\r\nHost: api.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n\
Accept: application/json\r\nAccept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n\
Cookie: session=abcdef0123456789; theme=dark\r\nConnection: keep-alive\r\n\r\n";

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1234\r\n\
Date: Tue, 24 Nov 2026 12:00:00 GMT\r\nServer: backend\r\nCache-Control: no-cache\r\n\r\n";

/// Runs `op` in batches and returns the median time per call.
fn measure(mut op: impl FnMut() -> usize) -> Duration {
    let batch = 20_000;
    let mut samples = Vec::new();
    for _ in 0..15 {
        let start = Instant::now();
        let mut check = 0usize;
        for _ in 0..batch {
            check = check.wrapping_add(black_box(op()));
        }
        black_box(check);
        samples.push(start.elapsed() / batch);
    }
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let info = ForwardInfo {
        client_ip: "192.0.2.10".parse().unwrap(),
        secure: false,
        default_host: b"10.0.0.1:8001",
        strip_prefix: 0,
    };
    let mut out = vec![0u8; 16 * 1024];

    let head = parse_request(REQUEST, 16 * 1024).unwrap().unwrap();
    assert_eq!(head.head_len, REQUEST.len());
    let n = write_request_head(REQUEST, &head, &info, &mut out).unwrap();
    assert!(out[..n].starts_with(b"GET /api/v1/users/12345"));

    let parse = measure(|| {
        parse_request(black_box(REQUEST), 16 * 1024)
            .unwrap()
            .unwrap()
            .head_len
    });
    let parse_and_rewrite = measure(|| {
        let head = parse_request(black_box(REQUEST), 16 * 1024)
            .unwrap()
            .unwrap();
        write_request_head(REQUEST, &head, &info, &mut out).unwrap()
    });
    let response = measure(|| {
        let head = parse_response(black_box(RESPONSE), false, 16 * 1024)
            .unwrap()
            .unwrap();
        let plan = plan_response(&head, Version::Http11, true, false).unwrap();
        write_response_head(RESPONSE, &head, Some(&plan), Version::Http11, &mut out).unwrap()
    });

    let mut chunked = Vec::new();
    for _ in 0..16 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b'x'; 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let mut sink = Vec::with_capacity(chunked.len());
    let decode = measure(|| {
        sink.clear();
        let mut relay = Relay::Chunked(ChunkedDecoder::new(true));
        let used = relay_all(&mut relay, black_box(&chunked), &mut sink).unwrap();
        assert!(relay.is_done());
        used
    });

    // Every algorithm over 8 backends of mixed capacity; each pick is followed by the start/finish
    // bookkeeping of a request, as in the proxy.
    let text: String = (0..8)
        .map(|i| {
            format!(
                "[[backends]]\nurl = \"http://127.0.0.1:{}\"\ncapacity = {}\n",
                9000 + i,
                1 + i % 3
            )
        })
        .collect();
    let config = Config::parse(&text).unwrap();
    let algorithms = [
        Algorithm::RoundRobin,
        Algorithm::WeightedRoundRobin,
        Algorithm::LeastConnections,
        Algorithm::LeastLatency,
        Algorithm::PowerOfTwo,
        Algorithm::Random,
        Algorithm::IpHash,
    ];
    let mut picks = Vec::new();
    for algorithm in algorithms {
        let mut balancer = Balancer::with_rng(&config.backends, algorithm, 2, 3, Rng::with_seed(7));
        let mut client = 0u32;
        let time = measure(|| {
            client = client.wrapping_add(1);
            let ip =
                std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 | (client & 0xffff)));
            let Pick::Started(mut inflight) =
                balancer.pick(0, black_box(ip), Tried::default(), None)
            else {
                panic!("no backend")
            };
            let slot = inflight.backend().slot;
            let latency = Duration::from_micros(200 + slot as u64);
            inflight.finish(Outcome::Success { latency }, "response");
            slot
        });
        let total: u64 = balancer.snapshot().iter().map(|b| b.success_count).sum();
        assert!(
            total > 0
                && balancer
                    .snapshot()
                    .iter()
                    .all(|b| b.active_connections == 0)
        );
        picks.push((algorithm.name(), time));
    }

    let routing = route_matching();

    println!("{:<44} {:>10}", "benchmark", "ns/op");
    println!(
        "{:<44} {:>10}",
        "parse request head (8 fields)",
        parse.as_nanos()
    );
    println!(
        "{:<44} {:>10}",
        "parse + rewrite request head",
        parse_and_rewrite.as_nanos()
    );
    println!(
        "{:<44} {:>10}",
        "parse + plan + rewrite response head",
        response.as_nanos()
    );
    println!(
        "{:<44} {:>10}",
        "decode + re-encode 16 KiB chunked body",
        decode.as_nanos()
    );
    for (name, time) in picks {
        let label = format!("pick, start, finish: {name}");
        println!("{label:<44} {:>10}", time.as_nanos());
    }
    for (name, time) in routing {
        println!(
            "{:<44} {:>10}",
            format!("route, 50 routes: {name}"),
            time.as_nanos()
        );
    }
}

/// 50 routes as a site might have them: 25 exact hosts, 10 wildcard hosts, 15 path prefixes (one pool
/// each), then requests that match the first, the last, and none (the default pool).
fn route_matching() -> Vec<(&'static str, Duration)> {
    let mut text = String::from("[[backends]]\nurl = \"http://127.0.0.1:9000\"\n");
    let mut routes = String::new();
    for i in 0..50 {
        text.push_str(&format!(
            "[[pools]]\nname = \"p{i}\"\nbackends = [{{ url = \"http://127.0.0.1:{}\" }}]\n",
            9001 + i
        ));
        let matcher = match i {
            0..25 => format!("host = \"service{i}.example.com\"\n"),
            25..35 => format!("host = \"*.tenant{i}.example.com\"\n"),
            _ => format!("path_prefix = \"/section{i}/\"\n"),
        };
        routes.push_str(&format!("[[routes]]\n{matcher}pool = \"p{i}\"\n"));
    }
    let config = Config::parse(&format!("{text}{routes}")).unwrap();
    let router = &config.router;
    assert_eq!(router.routes.len(), 50);
    let cases: [(&str, &[u8], &[u8], usize); 3] = [
        (
            "first matches",
            b"service0.example.com",
            b"/api/v1/users/12345?fields=name",
            1,
        ),
        (
            "last matches",
            b"www.example.com:8080",
            b"/section49/app.js?v=3",
            50,
        ),
        (
            "none (default pool)",
            b"www.example.com",
            b"/api/v1/users/12345?fields=name",
            0,
        ),
    ];
    cases
        .iter()
        .map(|&(name, host, target, pool)| {
            let routed = router.route(Some(host), target).unwrap();
            assert_eq!(routed.pool, pool, "{name}");
            let time = measure(|| {
                router
                    .route(Some(black_box(host)), black_box(target))
                    .unwrap()
                    .pool
            });
            (name, time)
        })
        .collect()
}
