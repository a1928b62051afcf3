//! The threaded engine's health checks: one thread probing every backend in turn, each probe a blocking
//! connection (a TLS session for an `https://` backend) with the backend's probe timeout, the verdict
//! fed to the backend's shared hysteresis.

use super::State;
use crate::balance::Backend;
use crate::config::BackendConfig;
use crate::health::{ProbeResult, next_probe_delay, probe_request, probe_verdict};
use crate::random::Rng;
use crate::tls::TlsStream;
use crate::transport::Transport;
use std::io::{self, Read, Write};
use std::net::TcpStream;
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
            let result = probe(c, &probe_request(&c.health_check_path, &c.authority));
            log::debug!("backend {c}: health probe: {result}");
            backend.observe(result.is_success(), &format!("health probe: {result}"));
            next_due[backend.slot] = Instant::now() + next_probe_delay(interval, rng.next_u64());
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// One blocking probe.
fn probe(backend: &BackendConfig, request: &[u8]) -> ProbeResult {
    let timeout = backend.health_check_timeout;
    let deadline = Instant::now() + timeout;
    let stream = match TcpStream::connect_timeout(&backend.addr, timeout) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return ProbeResult::Refused,
        Err(e) if e.kind() == io::ErrorKind::TimedOut => return ProbeResult::TimedOut,
        Err(_) => return ProbeResult::ConnectionError,
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let _ = stream.set_write_timeout(Some(left));
    let _ = stream.set_read_timeout(Some(left));
    let mut transport = match &backend.tls {
        None => Transport::plain(stream),
        Some(tls) => {
            match crate::tls::client_session(tls.client.clone(), tls.server_name.clone()) {
                Ok(session) => Transport::tls(TlsStream::new(session, stream, true)),
                Err(_) => return ProbeResult::TlsHandshake,
            }
        }
    };
    match transport.handshake() {
        Ok(true) => {}
        Ok(false) => return ProbeResult::TimedOut,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {
            return ProbeResult::TimedOut;
        }
        Err(e) => {
            log::debug!("backend {backend}: health probe: TLS handshake: {e}");
            return ProbeResult::TlsHandshake;
        }
    }
    if transport.write_all(request).is_err() || transport.flush().is_err() {
        return ProbeResult::ConnectionError;
    }
    let mut received = [0u8; 256];
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || transport.socket().set_read_timeout(Some(left)).is_err() {
            return ProbeResult::TimedOut;
        }
        match transport.read(&mut received[len..]) {
            // A signal landing on this thread: a read with a timeout is never restarted.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
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
