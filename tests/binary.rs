//! The `lb` binary as users run it: command line, config validation, and a 1 GiB body streamed each way
//! through a separate `lb` process whose peak memory is then read from /proc.

mod common;

use common::process::*;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};

#[test]
fn help_and_version() {
    let out = lb_command().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Usage: lb") && text.contains("--check") && text.contains("--engine"),
        "{text}"
    );
    let out = lb_command().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("lb {}", env!("CARGO_PKG_VERSION"))
    );
    let out = lb_command().arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option --bogus"));
}

#[test]
fn check_validates_the_shipped_config_and_rejects_bad_ones() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/lb.toml");
    let out = lb_command().args(["--check", shipped]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let cases = [
        (
            "rise.toml",
            "[health_check]\nrise = 0\n[[backends]]\nurl = \"http://127.0.0.1:1\"\n",
            "rise",
        ),
        ("url.toml", "[[backends]]\nurl = \"127.0.0.1:1\"\n", "url"),
        ("empty.toml", "listen = \"127.0.0.1:0\"\n", "backends"),
        (
            "unknown.toml",
            "colour = \"blue\"\n[[backends]]\nurl = \"http://127.0.0.1:1\"\n",
            "colour",
        ),
        (
            "duration.toml",
            "[timeouts]\nidle = \"forever\"\n[[backends]]\nurl = \"http://127.0.0.1:1\"\n",
            "idle",
        ),
    ];
    for (name, text, key) in cases {
        let path = temp_config(name, text);
        let out = lb_command().arg("--check").arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(key),
            "{name}: message names {key:?}: {stderr}"
        );
    }
    let out = lb_command()
        .args(["--check", "/nonexistent/lb.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/lb.toml"));
}

/// Settings HAProxy and nginx accept pass `--check` with a warning naming the keys and what lb does.
#[test]
fn check_accepts_a_probe_timeout_longer_than_the_interval_with_a_warning() {
    let path = temp_config(
        "probe-timeout.toml",
        "[health_check]\ninterval = \"500ms\"\ntimeout = \"1s\"\n\
         [[backends]]\nurl = \"http://127.0.0.1:1\"\nhealth_check_period = \"200ms\"\n",
    );
    let out = lb_command().arg("--check").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "warning: health_check.timeout (1s) is longer than health_check.interval (500ms)"
        ) && stderr.contains("backends[0].health_check_period (200ms)"),
        "{stderr}"
    );
}

/// A listener that cannot be opened is named with its address and its key, without the OS's error
/// number, and lb exits 1.
#[test]
fn a_busy_port_is_named_with_its_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let backend = "[[backends]]\nurl = \"http://127.0.0.1:1\"\n";
    let cases = [
        (
            format!("listen = \"{busy}\"\n{backend}"),
            format!("cannot listen on {busy} (listen): Address already in use"),
        ),
        (
            format!("listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"{busy}\"\n{backend}"),
            format!("cannot listen on {busy} ([admin] listen): Address already in use"),
        ),
    ];
    for engine in ["event_loop", "threaded"] {
        for (text, message) in &cases {
            let path = temp_config(&format!("busy-{}.toml", rand_suffix()), text);
            let out = lb_command()
                .args(["--engine", engine])
                .arg(&path)
                .env_remove("RUST_LOG")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{engine}: {stderr}");
            assert!(stderr.contains(message.as_str()), "{engine}: {stderr}");
            assert!(!stderr.contains("os error"), "{engine}: {stderr}");
        }
    }
}

const GIB: u64 = 1 << 30;
const BLOCK: usize = 1 << 16;

/// Block `i` of the test stream: distinct per block so that a dropped, repeated or reordered block changes
/// the digest.
fn block(i: u64, out: &mut [u8; BLOCK]) {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for word in out.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes());
    }
}

/// An order-sensitive digest over a byte stream fed in arbitrary pieces.
#[derive(Default)]
struct Digest {
    state: u64,
    count: u64,
    partial: Vec<u8>,
}

impl Digest {
    fn update(&mut self, mut bytes: &[u8]) {
        self.count += bytes.len() as u64;
        if !self.partial.is_empty() {
            let need = 8 - self.partial.len();
            let take = need.min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() == 8 {
                let w = u64::from_le_bytes(self.partial[..].try_into().unwrap());
                self.mix(w);
                self.partial.clear();
            }
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.mix(u64::from_le_bytes(w.try_into().unwrap()));
        }
        self.partial.extend_from_slice(words.remainder());
    }

    fn mix(&mut self, w: u64) {
        self.state = (self.state ^ w)
            .wrapping_mul(0x100_0000_01B3)
            .rotate_left(5);
    }

    fn finish(&self) -> (u64, u64) {
        (self.state, self.count)
    }
}

fn expected_digest(total: u64) -> (u64, u64) {
    let mut d = Digest::default();
    let mut buf = [0u8; BLOCK];
    for i in 0..total / BLOCK as u64 {
        block(i, &mut buf);
        d.update(&buf);
    }
    d.finish()
}

#[test]
fn one_gib_each_way_in_constant_memory() {
    // Upload: the backend digests the Content-Length body it receives and answers with the digest.
    // Download: the backend streams a chunked body of 1 GiB.
    let backend = Backend::start(|mut peer| {
        while let Some(head) = peer.read_head() {
            if head.starts_with("POST") {
                let mut d = Digest::default();
                let mut left = GIB;
                while left > 0 {
                    let n = left.min(BLOCK as u64) as usize;
                    let Some(bytes) = peer.read_exact_bytes(n) else {
                        return;
                    };
                    d.update(&bytes);
                    left -= n as u64;
                }
                let (state, count) = d.finish();
                peer.ok(&format!("{state:x}/{count}"));
            } else {
                peer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                let mut buf = [0u8; BLOCK];
                for i in 0..GIB / BLOCK as u64 {
                    block(i, &mut buf);
                    if !peer.write(format!("{BLOCK:x}\r\n").as_bytes())
                        || !peer.write(&buf)
                        || !peer.write(b"\r\n")
                    {
                        return;
                    }
                }
                peer.write(b"0\r\n\r\n");
            }
        }
    });
    let lb = LbProcess::start(&format!(
        "listen = \"127.0.0.1:0\"\naccess_log = false\n[health_check]\ninterval = \"1h\"\n\
         [[backends]]\nurl = \"http://{}\"\n",
        backend.addr
    ));
    let (state, count) = expected_digest(GIB);

    let mut stream = TcpStream::connect(lb.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    stream
        .write_all(
            format!("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {GIB}\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let mut buf = [0u8; BLOCK];
    for i in 0..GIB / BLOCK as u64 {
        block(i, &mut buf);
        stream.write_all(&buf).unwrap();
    }
    let mut client = Client::from_stream(stream);
    let r = client.response(false);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        format!("{state:x}/{count}"),
        "the upload arrived intact"
    );

    // Download on the same connection, digested as it streams.
    client.send(b"GET /download HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut reader = BufReader::with_capacity(1 << 16, client.stream.try_clone().unwrap());
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("Transfer-Encoding: chunked"),
        "{head}"
    );
    let mut d = Digest::default();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line).unwrap();
        let size = usize::from_str_radix(size_line.trim_end(), 16).unwrap();
        let mut chunk = vec![0u8; size + 2];
        reader.read_exact(&mut chunk).unwrap();
        d.update(&chunk[..size]);
        if size == 0 {
            break;
        }
    }
    assert_eq!(d.finish(), (state, count), "the download arrived intact");

    let peak = lb.peak_rss_kib();
    assert!(
        peak < 24 * 1024,
        "lb peak RSS {peak} KiB while moving 2 GiB: memory must not grow with body size"
    );
}

/// The engines the signal tests run on: `workers2` is the event loop with two workers.
const ENGINES: [&str; 3] = ["event_loop", "workers2", "threaded"];

fn backends_toml(backends: &[SocketAddr]) -> String {
    backends
        .iter()
        .map(|b| format!("[[backends]]\nurl = \"http://{b}\"\n"))
        .collect()
}

#[test]
fn sigterm_lets_in_flight_requests_finish_and_exits_zero() {
    for engine in ENGINES {
        sigterm_drain(engine);
    }
}

fn sigterm_drain(engine: &str) {
    const CLIENTS: usize = 8;
    let release = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let gate = release.clone();
    let backend = Backend::start(move |mut peer| {
        while peer.read_request().is_some() {
            let (lock, cvar) = &*gate;
            let mut released = lock.lock().unwrap();
            while !*released {
                released = cvar.wait(released).unwrap();
            }
            drop(released);
            peer.ok("finished");
        }
    });
    let mut lb = LbProcess::start(&format!(
        "listen = \"127.0.0.1:0\"\n{}\naccess_log = false\n[health_check]\ninterval = \"1h\"\n{}",
        engine_line(engine),
        backends_toml(&[backend.addr])
    ));
    let addr = lb.addr;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                client.send(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
                let r = client.response(false);
                (
                    r.status,
                    r.text(),
                    r.header("connection"),
                    client.is_closed(),
                )
            })
        })
        .collect();
    wait_until("every request to be in flight at the backend", || {
        backend.request_count() == CLIENTS
    });
    lb.signal(libc::SIGTERM);
    wait_until("the drain to start", || lb.logged("draining"));
    assert!(
        TcpStream::connect(addr).is_err(),
        "new connections are refused while draining"
    );
    {
        let (lock, cvar) = &*release;
        *lock.lock().unwrap() = true;
        cvar.notify_all();
    }
    for client in clients {
        let (status, body, connection, closed) = client.join().unwrap();
        assert_eq!((status, body.as_str()), (200, "finished"));
        assert_eq!(connection.as_deref(), Some("close"));
        assert!(closed);
    }
    assert_eq!(lb.wait_exit(), Some(0));
    // The log is collected by another thread: wait for it to catch up with the exited process.
    wait_until("the drained line in the log", || lb.logged("drained"));
}

#[test]
fn sighup_reloads_backends_under_a_live_keep_alive_connection() {
    for engine in ENGINES {
        sighup_reload(engine);
    }
}

fn sighup_reload(engine: &str) {
    let a = Backend::named("a");
    let b = Backend::named("b");
    let c = Backend::named("c");
    let head = format!(
        "listen = \"127.0.0.1:0\"\n{}\naccess_log = false\n[health_check]\ninterval = \"1h\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        engine_line(engine)
    );
    let lb = LbProcess::start(&format!("{head}{}", backends_toml(&[a.addr, b.addr])));
    let admin = lb.admin.unwrap();
    let mut client = Client::connect(lb.addr);
    let ask = |client: &mut Client| {
        client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let r = client.response(false);
        assert_eq!(r.status, 200);
        r.text()
    };
    let before: Vec<String> = (0..4).map(|_| ask(&mut client)).collect();
    if engine == "workers2" {
        // The connection's worker alternates on its own; the second starts one backend further on.
        let mut sorted = before.clone();
        sorted.sort();
        assert_eq!(sorted, ["a", "a", "b", "b"], "{before:?}");
        assert!(before.windows(2).all(|w| w[0] != w[1]), "{before:?}");
    } else {
        assert_eq!(before, ["a", "b", "a", "b"]);
    }

    std::fs::write(
        &lb.config,
        format!("{head}{}", backends_toml(&[a.addr, c.addr])),
    )
    .unwrap();
    lb.signal(libc::SIGHUP);
    wait_until("the reload", || lb.logged("configuration reloaded"));
    let after: Vec<String> = (0..4).map(|_| ask(&mut client)).collect();
    let mut sorted = after.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["a", "a", "c", "c"],
        "same connection, new backend set: {after:?}"
    );
    let stats: serde_json::Value = serde_json::from_slice(&get(admin, "/stats").body).unwrap();
    assert_eq!(
        stats["backends"][0]["request_count"], 4,
        "a kept its statistics across the reload"
    );
    assert_eq!(stats["backends"][1]["url"], format!("http://{}", c.addr));

    // A broken file: the running configuration stays, and the log says why.
    std::fs::write(
        &lb.config,
        format!("{head}[[backends]]\nurl = \"nowhere\"\n"),
    )
    .unwrap();
    lb.signal(libc::SIGHUP);
    wait_until("the failed reload to be logged", || {
        lb.logged("reload failed")
    });
    let still: Vec<String> = (0..2).map(|_| ask(&mut client)).collect();
    assert!(still.iter().all(|s| s == "a" || s == "c"), "{still:?}");
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn the_threaded_engine_says_it_ignores_workers() {
    let backend = Backend::named("ok");
    let lb = LbProcess::start(&format!(
        "listen = \"127.0.0.1:0\"\nengine = \"threaded\"\nworkers = 2\naccess_log = false\n\
         [health_check]\ninterval = \"1h\"\n{}",
        backends_toml(&[backend.addr])
    ));
    assert_eq!(get(lb.addr, "/").status, 200);
    wait_until("the warning", || {
        lb.logged("workers = 2 is ignored by the threaded engine")
    });
}

#[test]
fn running_out_of_descriptors_pauses_accepting_without_spinning_and_recovers() {
    for engine in ENGINES {
        let backend = Backend::named("ok");
        let lb = LbProcess::start_limited(
            &format!(
                "listen = \"127.0.0.1:0\"\n{}\naccess_log = false\n\
                 [health_check]\ninterval = \"1h\"\n{}",
                engine_line(engine),
                backends_toml(&[backend.addr])
            ),
            Some(40),
        );
        // More connections than descriptors: the kernel queues them, lb runs out accepting them.
        let flood: Vec<TcpStream> = (0..120)
            .filter_map(|_| TcpStream::connect(lb.addr).ok())
            .collect();
        wait_until("accept to fail for lack of descriptors", || {
            lb.logged("accept failed")
        });
        let before = cpu_ticks(lb.child.id());
        std::thread::sleep(std::time::Duration::from_secs(1));
        let spent = cpu_ticks(lb.child.id()) - before;
        assert!(
            spent < 20,
            "{engine}: {spent} ticks of CPU in one second with accept failing: a busy loop"
        );
        drop(flood);
        // Descriptors come back as the queued connections are seen closed; then service resumes.
        wait_until("service to resume", || {
            let Ok(mut stream) = TcpStream::connect(lb.addr) else {
                return false;
            };
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(500)));
            if stream
                .write_all(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
                .is_err()
            {
                return false;
            }
            let mut response = Vec::new();
            let _ = stream.read_to_end(&mut response);
            response.starts_with(b"HTTP/1.1 200 ")
        });
    }
}

#[test]
fn access_lines_come_in_the_configured_format() {
    let backend = Backend::named("ok");
    for (format, needles) in [
        (
            "combined",
            vec![
                "127.0.0.1 - - [".to_string(),
                "] \"GET /x?y=1 HTTP/1.1\" 200 ".to_string(),
                " \"https://ref.example/\" \"test-agent/1.0\"".to_string(),
            ],
        ),
        (
            "json",
            vec![
                "\"method\":\"GET\"".to_string(),
                "\"target\":\"/x?y=1\"".to_string(),
                "\"status\":200".to_string(),
                format!("\"backend\":\"http://{}\"", backend.addr),
                "\"user_agent\":\"test-agent/1.0\"".to_string(),
                "\"referer\":\"https://ref.example/\"".to_string(),
            ],
        ),
    ] {
        let lb = LbProcess::start(&format!(
            "listen = \"127.0.0.1:0\"\naccess_log_format = \"{format}\"\n[health_check]\ninterval = \"1h\"\n{}",
            backends_toml(&[backend.addr])
        ));
        let r = request(
            lb.addr,
            "GET /x?y=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: test-agent/1.0\r\nReferer: https://ref.example/\r\n\r\n",
        );
        assert_eq!(r.status, 200);
        wait_until("the access line", || needles.iter().all(|n| lb.logged(n)));
    }
}

/// A request's flight record is reused by the next one on the thread: the second request's access line
/// shows its own line and fields, not what the first one left (a longer target, a Referer it lacks),
/// also when its head is consumed before its body is relayed.
#[test]
fn an_access_line_shows_nothing_of_the_previous_request() {
    let backend = Backend::named("ok");
    let lb = LbProcess::start(&format!(
        "listen = \"127.0.0.1:0\"\naccess_log_format = \"json\"\n[health_check]\ninterval = \"1h\"\n{}",
        backends_toml(&[backend.addr])
    ));
    let mut client = Client::connect(lb.addr);
    client.send(
        b"GET /a/much/longer/first/target?x=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: first-agent/1.0\r\nReferer: https://ref.example/first\r\n\r\n",
    );
    assert_eq!(client.response(false).status, 200);
    client
        .send(b"POST /p HTTP/1.1\r\nHost: h\r\nUser-Agent: ua2\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(client.response(false).status, 200);
    let needles = [
        "\"method\":\"POST\"",
        "\"referer\":null",
        "\"target\":\"/p\"",
        "\"user_agent\":\"ua2\"",
    ];
    wait_until("the second access line", || {
        lb.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| needles.iter().all(|n| l.contains(n)))
    });
}

/// lb's own answer to a request it read (a backend refused, 502) shows that request, its fields and
/// the backend tried; one to bytes that never made a request (400) shows `-`.
#[test]
fn an_own_error_answer_logs_the_request_it_answers() {
    let refused = closed_port();
    for engine in ["event_loop", "threaded"] {
        let lb = LbProcess::start(&format!(
            "listen = \"127.0.0.1:0\"\nengine = \"{engine}\"\nretries = 0\n[health_check]\ninterval = \"1h\"\n{}",
            backends_toml(&[refused])
        ));
        let r = request(
            lb.addr,
            "GET /gone?q=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: ua-502\r\n\r\n",
        );
        assert_eq!(r.status, 502);
        assert_eq!(request(lb.addr, "GET / HTTP/1.1\r\n\r\n").status, 400);
        wait_until("both access lines", || {
            lb.logged("\"GET /gone?q=1 HTTP/1.1\" 502 ") && lb.logged("] \"-\" 400 ")
        });
        assert!(lb.logged("\"ua-502\""), "{}", lb.log_text());
    }
}

/// The test build of the binary has the fault-injection feature (Cargo unifies it in from the
/// dev-dependency, as it would for `cargo build --all-targets`), but the binary never arms it: the
/// fault paths are ordinary requests that reach the backend, and the process keeps serving.
#[test]
fn the_binary_never_injects_faults() {
    let backend = Backend::named("ok");
    let lb = LbProcess::start(&format!(
        "listen = \"127.0.0.1:0\"\naccess_log = false\n[health_check]\ninterval = \"1h\"\n{}",
        backends_toml(&[backend.addr])
    ));
    let mut client = Client::connect(lb.addr);
    for path in [
        "/__lb_fault/panic-at-request",
        "/__lb_fault/panic-at-response",
        "/__lb_fault/stall-at-request",
    ] {
        let start = std::time::Instant::now();
        client.send(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        let r = client.response(false);
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{path}");
        // A stall would hold the answer for fault::STALL_FOR (3 s).
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "{path}"
        );
    }
    assert_eq!(backend.request_count(), 3);
    assert!(!lb.logged("panic"), "a fault path panicked the binary");
}
