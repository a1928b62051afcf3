//! Active health checks inside the loop: one prober per backend, a timer entry that alternates between
//! "time for the next probe" and "this probe timed out", and a non-blocking probe socket registered in the
//! same slab as everything else. A probe never waits on anything but its own socket.

use super::pool::{Owner, Readiness, mark_ready};
use super::*;
use crate::config::BackendConfig;
use crate::health::{ProbeResult, next_probe_delay, probe_request, probe_verdict};
use crate::tls::TlsStream;
use crate::transport::Transport;
use std::io::{Read, Write};

/// Bytes of a probe response we look at: the status line.
const PROBE_READ: usize = 256;

pub(super) struct Probe {
    transport: Transport<TcpStream>,
    token: Token,
    ready: Readiness,
    connected: bool,
    written: usize,
    received: [u8; PROBE_READ],
    received_len: usize,
}

/// The health-check state of one backend slot.
pub(super) struct Prober {
    request: Vec<u8>,
    interval: Duration,
    deadline: Deadline,
    probe: Option<Probe>,
    /// Bumped when the prober is stopped or rebuilt by a reload, which invalidates its timer entries.
    generation: u64,
    stopped: bool,
}

impl Prober {
    pub(super) fn new(backend: &BackendConfig, generation: u64) -> Prober {
        Prober {
            request: probe_request(&backend.health_check_path, &backend.authority),
            interval: backend.health_check_interval,
            deadline: Deadline::default(),
            probe: None,
            generation,
            stopped: false,
        }
    }

    fn key(&self, slot: usize) -> TimerKey {
        TimerKey {
            owner: TimerOwner::Prober(slot),
            generation: self.generation,
        }
    }
}

impl Shared {
    /// Schedules the first probe of every backend one interval (with jitter) after start. Until then
    /// backends count as healthy, and passive observations of real traffic already apply.
    pub(super) fn start_probers(&mut self, now: Instant) {
        for index in 0..self.probers.len() {
            self.schedule_next_probe(index, now);
        }
    }

    /// Stops probing a backend that a reload removed.
    pub(super) fn stop_prober(&mut self, slot: usize) {
        let prober = &mut self.probers[slot];
        prober.generation += 1;
        prober.stopped = true;
        prober.deadline = Deadline::default();
        if let Some(mut probe) = prober.probe.take() {
            self.close_stream(probe.transport.socket_mut(), probe.token);
        }
    }

    /// (Re)creates the prober of a slot from its current configuration and schedules its first probe.
    pub(super) fn restart_prober(&mut self, slot: usize, now: Instant) {
        let generation = if slot < self.probers.len() {
            self.stop_prober(slot);
            self.probers[slot].generation
        } else {
            0
        };
        let Some(backend) = self.upstream.balancer.get(slot) else {
            return;
        };
        let prober = Prober::new(&backend.config, generation);
        if slot < self.probers.len() {
            self.probers[slot] = prober;
        } else {
            self.probers.push(prober);
        }
        self.schedule_next_probe(slot, now);
    }

    /// A prober's timer entry popped.
    pub(super) fn on_prober_timer(
        &mut self,
        index: usize,
        generation: u64,
        at: Instant,
        now: Instant,
    ) {
        let Some(prober) = self.probers.get_mut(index) else {
            return;
        };
        let key = prober.key(index);
        if prober.stopped
            || generation != prober.generation
            || prober.deadline.on_pop(at, now, &mut self.timers, key) != Expiry::Fire
        {
            return;
        }
        if prober.probe.is_some() {
            self.finish_probe(index, ProbeResult::TimedOut, now);
        } else {
            self.start_probe(index, now);
        }
    }

    fn start_probe(&mut self, index: usize, now: Instant) {
        let Some(backend) = self.upstream.balancer.get(index) else {
            return;
        };
        let (addr, timeout) = (backend.config.addr, backend.config.health_check_timeout);
        let session = match &backend.config.tls {
            Some(tls) => {
                crate::tls::client_session(tls.client.clone(), tls.server_name.clone()).map(Some)
            }
            None => Ok(None),
        };
        match session.and_then(|session| Ok((TcpStream::connect(addr)?, session))) {
            Ok((stream, session)) => {
                let interest = Interest::READABLE | Interest::WRITABLE;
                let Some((stream, token)) = self.register(stream, Owner::Probe(index), interest)
                else {
                    self.schedule_next_probe(index, now);
                    return;
                };
                let transport = match session {
                    Some(session) => Transport::tls(TlsStream::new(session, stream, false)),
                    None => Transport::plain(stream),
                };
                let prober = &mut self.probers[index];
                let key = prober.key(index);
                prober.probe = Some(Probe {
                    transport,
                    token,
                    ready: Readiness::default(),
                    connected: false,
                    written: 0,
                    received: [0; PROBE_READ],
                    received_len: 0,
                });
                prober.deadline.set(now + timeout, &mut self.timers, key);
            }
            Err(e) => {
                let result = if e.kind() == io::ErrorKind::ConnectionRefused {
                    ProbeResult::Refused
                } else {
                    ProbeResult::ConnectionError
                };
                self.record_probe(index, result);
                self.schedule_next_probe(index, now);
            }
        }
    }

    /// Readiness on a probe socket.
    pub(super) fn on_probe_event(&mut self, index: usize, event: &Event, now: Instant) {
        let Some(Prober {
            probe: Some(probe),
            request,
            ..
        }) = self.probers.get_mut(index)
        else {
            return;
        };
        mark_ready(&mut probe.ready, event);
        if let Some(result) = advance_probe(probe, request) {
            self.finish_probe(index, result, now);
        }
    }

    /// A panic while probing backend `index` was caught: drop the probe in flight (it counts as a
    /// failed probe) and schedule the next one, so the backend keeps being watched.
    pub(super) fn contain_probe_panic(&mut self, index: usize, cause: &str, now: Instant) {
        self.count_internal_error();
        log::error!("internal error in the health probe of backend slot {index}: {cause}");
        if self.probers.get(index).is_some_and(|p| !p.stopped) {
            self.finish_probe(index, ProbeResult::ConnectionError, now);
        }
    }

    fn finish_probe(&mut self, index: usize, result: ProbeResult, now: Instant) {
        if let Some(mut probe) = self.probers[index].probe.take() {
            self.close_stream(probe.transport.socket_mut(), probe.token);
        }
        self.record_probe(index, result);
        self.schedule_next_probe(index, now);
    }

    fn record_probe(&mut self, index: usize, result: ProbeResult) {
        let Some(backend) = self.upstream.balancer.get(index) else {
            return;
        };
        log::debug!("backend {}: health probe: {result}", backend.name);
        backend.observe(result.is_success(), &format!("health probe: {result}"));
    }

    fn schedule_next_probe(&mut self, index: usize, now: Instant) {
        let random = self.upstream.balancer.random();
        let prober = &mut self.probers[index];
        let at = now + next_probe_delay(prober.interval, random);
        let key = prober.key(index);
        prober.deadline.set(at, &mut self.timers, key);
    }
}

/// Moves a probe along: finish connecting (and the TLS handshake of an `https://` backend), send the
/// request, read the status line. `Some` when done.
fn advance_probe(probe: &mut Probe, request: &[u8]) -> Option<ProbeResult> {
    if !probe.connected {
        if !probe.ready.writable && !probe.ready.readable {
            return None;
        }
        let stream = probe.transport.socket_mut();
        match stream.take_error() {
            Ok(Some(e)) | Err(e) => {
                return Some(if e.kind() == io::ErrorKind::ConnectionRefused {
                    ProbeResult::Refused
                } else {
                    ProbeResult::ConnectionError
                });
            }
            Ok(None) => {}
        }
        match stream.peer_addr() {
            Ok(_) => probe.connected = true,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                probe.ready.writable = false;
                probe.ready.readable = false;
                return None;
            }
            Err(_) => return Some(ProbeResult::ConnectionError),
        }
    }
    if probe.ready.writable || probe.ready.readable {
        match probe.transport.handshake() {
            Ok(true) => {}
            Ok(false) => {
                probe.ready.writable = false;
                probe.ready.readable = false;
                return None;
            }
            Err(e) => {
                log::debug!("health probe: TLS handshake: {e}");
                return Some(ProbeResult::TlsHandshake);
            }
        }
    }
    while probe.written < request.len() && probe.ready.writable {
        match probe.transport.write(&request[probe.written..]) {
            Ok(n) => probe.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => probe.ready.writable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Some(ProbeResult::ConnectionError),
        }
    }
    if probe.transport.wants_flush() && probe.ready.writable {
        match probe.transport.flush_pending() {
            Ok(true) => {}
            Ok(false) => probe.ready.writable = false,
            Err(_) => return Some(ProbeResult::ConnectionError),
        }
    }
    while probe.ready.readable {
        let space = &mut probe.received[probe.received_len..];
        if space.is_empty() {
            return Some(ProbeResult::InvalidResponse);
        }
        match probe.transport.read(space) {
            Ok(0) => {
                return Some(
                    probe_verdict(&probe.received[..probe.received_len])
                        .unwrap_or(ProbeResult::ConnectionError),
                );
            }
            Ok(n) => {
                probe.received_len += n;
                if let Some(result) = probe_verdict(&probe.received[..probe.received_len]) {
                    return Some(result);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => probe.ready.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Some(ProbeResult::ConnectionError),
        }
    }
    None
}
