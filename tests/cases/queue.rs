// Queue cases, included once per engine by tests/queue.rs (see `for_each_engine!`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// A backend that holds each request until the gate opens, counting how many it holds at once.
struct Gated {
    backend: Backend,
    gate: Arc<(Mutex<bool>, Condvar)>,
    most_at_once: Arc<AtomicUsize>,
}

impl Gated {
    fn start() -> Gated {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let most_at_once = Arc::new(AtomicUsize::new(0));
        let now = Arc::new(AtomicUsize::new(0));
        let (g, most, current) = (gate.clone(), most_at_once.clone(), now.clone());
        let backend = Backend::start(move |mut peer| {
            while let Some(request) = peer.read_request() {
                let n = current.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                let (open, cvar) = &*g;
                let mut opened = open.lock().unwrap();
                while !*opened {
                    opened = cvar.wait(opened).unwrap();
                }
                drop(opened);
                current.fetch_sub(1, Ordering::SeqCst);
                let path = request.head.split(' ').nth(1).unwrap_or("").to_string();
                if !peer.ok(&path) {
                    return;
                }
            }
        });
        Gated {
            backend,
            gate,
            most_at_once,
        }
    }

    fn open(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }
}

fn config(gated: &Gated, queue: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\naccess_log = false\n[health_check]\ninterval = \"1h\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n{queue}\
         [[backends]]\nurl = \"http://{}\"\nmax_connections = 1\n",
        gated.backend.addr
    )
}

fn queue_length(lb: &Lb) -> u64 {
    let stats: serde_json::Value =
        serde_json::from_slice(&get(lb.admin_addr.unwrap(), "/stats").body).unwrap();
    stats["pools"][0]["queue_length"].as_u64().unwrap()
}

fn send(lb: &Lb, path: &str) -> Client {
    let mut client = lb.client();
    client.send(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    client
}

#[test]
fn a_full_backend_queues_requests_and_serves_them_in_turn() {
    let gated = Gated::start();
    let lb = lb_text(&config(&gated, "[queue]\nsize = 10\ntimeout = \"10s\"\n"));
    let mut first = send(&lb, "/1");
    wait_until("the first request at the backend", || {
        gated.backend.request_count() == 1
    });
    let mut waiting = Vec::new();
    for (n, path) in ["/2", "/3"].iter().enumerate() {
        waiting.push(send(&lb, path));
        wait_until("the request to queue", || queue_length(&lb) == n as u64 + 1);
    }
    assert_eq!(gated.backend.request_count(), 1, "queued requests hold no backend");
    // While requests wait, every batch of events (each snapshot is one) offers them room again: the
    // look-again timer stays one entry, not one more per batch.
    let before = lb.snapshot().timers;
    for _ in 0..50 {
        lb.snapshot();
    }
    let after = lb.snapshot().timers;
    assert!(after <= before + 2, "timer entries grew from {before} to {after} while queued");
    gated.open();
    assert_eq!(first.response(false).text(), "/1");
    for (client, path) in waiting.iter_mut().zip(["/2", "/3"]) {
        let r = client.response(false);
        assert_eq!((r.status, r.text().as_str()), (200, path));
    }
    assert_eq!(gated.most_at_once.load(Ordering::SeqCst), 1, "never past max_connections");
    let order: Vec<String> = gated
        .backend
        .requests()
        .iter()
        .map(|r| r.head.split(' ').nth(1).unwrap_or("").to_string())
        .collect();
    if workers() == 1 {
        // One worker's queue is first in, first out (each worker keeps its own line).
        assert_eq!(order, ["/1", "/2", "/3"]);
    }
    assert_eq!(queue_length(&lb), 0);
    drop((first, waiting));
    lb.wait_idle();
}

#[test]
fn a_full_queue_and_a_queue_timeout_answer_503() {
    let gated = Gated::start();
    let lb = lb_text(&config(&gated, "[queue]\nsize = 1\ntimeout = \"300ms\"\n"));
    let mut first = send(&lb, "/1");
    wait_until("the first request at the backend", || {
        gated.backend.request_count() == 1
    });
    let mut queued = send(&lb, "/2");
    wait_until("the second request to queue", || queue_length(&lb) == 1);
    // The queue holds one: the third is answered at once.
    let mut refused = send(&lb, "/3");
    let unavailable = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 24\r\nConnection: close\r\nRetry-After: 1\r\n\r\n503 Service Unavailable\n";
    assert_eq!(String::from_utf8_lossy(&refused.read_all()), unavailable);
    // The second waits its 300 ms, then gets the same.
    assert_eq!(String::from_utf8_lossy(&queued.read_all()), unavailable);
    assert_eq!(queue_length(&lb), 0);
    gated.open();
    assert_eq!(first.response(false).text(), "/1");
    assert_eq!(gated.backend.request_count(), 1, "neither refused request reached it");
    drop(first);
    lb.wait_idle();
}
