//! A minimal, fast HTTP/1.1 backend for benchmarks (`benches/compare.sh` uses it): one `mio` thread per
//! port answering every request with a small fixed response.
//!
//! ```text
//! cargo run --release --example fast_backend -- 9101 9102
//! ```

#[path = "../benches/support/fast_backend.rs"]
mod fast_backend;

fn main() {
    let ports: Vec<u16> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let ports = if ports.is_empty() {
        vec![9101, 9102]
    } else {
        ports
    };
    let mut threads = Vec::new();
    for port in ports {
        let (addr, thread) =
            fast_backend::spawn(port).unwrap_or_else(|e| panic!("port {port}: {e}"));
        println!("fast backend on http://{addr}");
        threads.push(thread);
    }
    for t in threads {
        let _ = t.join();
    }
}
