//! The sockets of DNS discovery, for both engines: non-blocking UDP sockets (one per address family
//! the nameservers use, bound on first use to a random port) registered with a `mio` registry — the
//! event loop's own, or the threaded engine's discovery thread's — and the resolver they feed. What to
//! ask and what answers mean is [`crate::dns`]'s; applying a changed set is the engines' (through
//! `crate::reload`).

use crate::config::Config;
use crate::dns::{Datagram, Report, Resolver};
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

/// The sockets' tokens, in whichever `Poll` they are registered with.
pub const V4_TOKEN: Token = Token(5);
pub const V6_TOKEN: Token = Token(6);
/// Room for a datagram: answers to queries without EDNS are at most 512 bytes; a longer one is cut
/// and then fails to parse, as a malformed answer should.
const DATAGRAM: usize = 1500;

pub struct Discovery {
    resolver: Resolver,
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
    registry: Registry,
    outbox: Vec<Datagram>,
}

impl Discovery {
    /// Discovery for `config`'s `[dns]`, its sockets registered with `registry` when a first name is
    /// configured.
    pub fn new(config: &Config, registry: Registry) -> Discovery {
        Discovery {
            resolver: Resolver::new(
                config.dns.servers.clone(),
                config.dns.timeout,
                crate::random::Rng::from_time(),
            ),
            v4: None,
            v6: None,
            registry,
            outbox: Vec::new(),
        }
    }

    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// When [`Discovery::step`] is next due without a datagram.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.resolver.next_wakeup()
    }

    /// Takes the nameservers and names of `config` (at start and on reload). Names kept keep their
    /// last addresses; new ones are due at once.
    pub fn configure(&mut self, config: &Config, now: Instant) {
        self.resolver
            .set_servers(config.dns.servers.clone(), config.dns.timeout, now);
        self.resolver.configure(crate::dns::targets(config), now);
        if self.resolver.is_empty() {
            return;
        }
        for (v4, token) in [(true, V4_TOKEN), (false, V6_TOKEN)] {
            let socket = if v4 { &mut self.v4 } else { &mut self.v6 };
            if socket.is_some() || !config.dns.servers.iter().any(|s| s.is_ipv4() == v4) {
                continue;
            }
            let any: SocketAddr = if v4 {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let bound = UdpSocket::bind(any).and_then(|mut s| {
                self.registry.register(&mut s, token, Interest::READABLE)?;
                Ok(s)
            });
            match bound {
                Ok(s) => *socket = Some(s),
                Err(e) => log::error!("dns: cannot open a UDP socket for lookups: {e}"),
            }
        }
    }

    /// Moves discovery along at `now`: the datagrams waiting on the socket behind `readable` (if
    /// any) go to the resolver, then its timeouts and due names; what it asks to send is sent. The
    /// finished rounds are returned.
    pub fn step(&mut self, readable: Option<Token>, now: Instant) -> Vec<Report> {
        let mut reports = Vec::new();
        if let Some(token) = readable {
            self.receive(token, now, &mut reports);
        }
        reports.extend(self.resolver.poll(now, &mut self.outbox));
        self.flush();
        reports
    }

    /// Sends what the resolver asked for; a datagram that cannot be sent counts as unanswered (the
    /// timeout moves the lookup on).
    fn flush(&mut self) {
        for datagram in self.outbox.drain(..) {
            let socket = if datagram.to.is_ipv4() {
                &self.v4
            } else {
                &self.v6
            };
            if let Some(socket) = socket
                && let Err(e) = socket.send_to(&datagram.bytes, datagram.to)
            {
                log::debug!("dns: sending to {}: {e}", datagram.to);
            }
        }
    }

    fn receive(&mut self, token: Token, now: Instant, reports: &mut Vec<Report>) {
        let mut buf = [0u8; DATAGRAM];
        loop {
            let socket = if token == V4_TOKEN {
                &self.v4
            } else {
                &self.v6
            };
            let Some(socket) = socket else {
                return;
            };
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    reports.extend(self.resolver.on_datagram(
                        from,
                        &buf[..n],
                        now,
                        &mut self.outbox,
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // An ICMP error from an earlier send (port unreachable): that lookup times out.
                Err(e) => log::debug!("dns: receiving: {e}"),
            }
        }
    }
}
