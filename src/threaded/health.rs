//! The threaded engine's health checks: one thread probing every backend in turn, each probe a blocking
//! connection with the backend's probe timeout, the verdict fed to the backend's shared hysteresis.

use super::State;
use crate::balance::Backend;
use crate::health::{ProbeResult, next_probe_delay, probe_request, probe_verdict};
use crate::random::Rng;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

pub(super) fn run(state: &State) {
    let mut next_due: Vec<Instant> = Vec::new();
    let mut rng = Rng::from_time();
    while !state.stopping.load(Ordering::SeqCst) {
        let now = Instant::now();
        let backends: Vec<Arc<Backend>> = super::lock(&state.balancer).iter().cloned().collect();
        for backend in backends {
            let interval = backend.config.health_check_interval;
            if next_due.len() <= backend.slot {
                next_due.resize(backend.slot + 1, now + interval);
            }
            if now < next_due[backend.slot] {
                continue;
            }
            let c = &backend.config;
            let result = probe(
                c.addr,
                &probe_request(&c.health_check_path, &c.authority),
                c.health_check_timeout,
            );
            log::debug!("backend {}: health probe: {result}", c.url);
            backend.observe(result.is_success(), &format!("health probe: {result}"));
            next_due[backend.slot] = Instant::now() + next_probe_delay(interval, rng.next_u64());
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// One blocking probe.
fn probe(addr: SocketAddr, request: &[u8], timeout: Duration) -> ProbeResult {
    let deadline = Instant::now() + timeout;
    let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return ProbeResult::Refused,
        Err(e) if e.kind() == io::ErrorKind::TimedOut => return ProbeResult::TimedOut,
        Err(_) => return ProbeResult::ConnectionError,
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let _ = stream.set_write_timeout(Some(left));
    if stream.write_all(request).is_err() {
        return ProbeResult::ConnectionError;
    }
    let mut received = [0u8; 256];
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return ProbeResult::TimedOut;
        }
        match stream.read(&mut received[len..]) {
            Ok(0) => {
                return probe_verdict(&received[..len]).unwrap_or(ProbeResult::ConnectionError);
            }
            Ok(n) => {
                len += n;
                if let Some(result) = probe_verdict(&received[..len]) {
                    return result;
                }
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                return ProbeResult::TimedOut;
            }
            Err(_) => return ProbeResult::ConnectionError,
        }
    }
}
