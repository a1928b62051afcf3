//! The sockets of DNS discovery, for both engines: for each nameserver a non-blocking UDP socket
//! connected to it (so the kernel drops datagrams from anywhere else), bound to a fresh random port
//! for each burst of lookups and closed when none is in flight, and registered with a `mio` registry —
//! the event loop's own, or the threaded engine's discovery thread's. What to ask and what answers
//! mean is [`crate::dns`]'s; applying a changed set is the engines' (through `crate::reload`).

use crate::config::Config;
use crate::dns::{Datagram, Report, Resolver};
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

/// The first nameserver's socket's token, in whichever `Poll` it is registered with; the others
/// follow (at most [`crate::config::MAX_NAMESERVERS`]).
pub const FIRST_TOKEN: usize = 5;
/// Room for a datagram: answers to queries without EDNS are at most 512 bytes; a longer one is cut
/// and then fails to parse, as a malformed answer should.
const DATAGRAM: usize = 1500;
/// Datagrams read per socket per step: a flood (spoofing the nameserver's address) cannot hold the
/// loop; the rest are read at the next step, due at once.
const READ_BUDGET: usize = 64;

/// Whether `token` is one of discovery's sockets.
pub fn owns(token: Token) -> bool {
    (FIRST_TOKEN..FIRST_TOKEN + crate::config::MAX_NAMESERVERS).contains(&token.0)
}

pub struct Discovery {
    resolver: Resolver,
    /// By nameserver, in the resolver's order: open while lookups are in flight.
    sockets: Vec<Option<UdpSocket>>,
    registry: Registry,
    outbox: Vec<Datagram>,
    /// A socket had more datagrams than one step reads.
    backlog: bool,
}

impl Discovery {
    /// Discovery for `config`'s `[dns]`, its sockets registered with `registry`.
    pub fn new(config: &Config, registry: Registry) -> Discovery {
        Discovery {
            resolver: Resolver::new(
                config.dns.servers.clone(),
                config.dns.timeout,
                crate::random::Rng::from_time(),
            ),
            sockets: Vec::new(),
            registry,
            outbox: Vec::new(),
            backlog: false,
        }
    }

    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// When [`Discovery::step`] is next due without a datagram.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        if self.backlog {
            return Some(now);
        }
        self.resolver.next_wakeup()
    }

    /// Takes the nameservers and names of `config` (at start and on reload). Names kept keep their
    /// last addresses; new ones are due at once.
    pub fn configure(&mut self, config: &Config, now: Instant) {
        let dns = &config.dns;
        if self
            .resolver
            .set_servers(dns.servers.clone(), dns.timeout, now)
        {
            // The sockets are connected to the old servers.
            self.close_sockets();
        }
        self.resolver.configure(crate::dns::targets(config), now);
    }

    /// Moves discovery along at `now`: the datagrams waiting on the socket behind `readable` (if
    /// any, and on every socket after a backlog) go to the resolver, then its timeouts and due names;
    /// what it asks to send is sent. The finished rounds are returned.
    pub fn step(&mut self, readable: Option<Token>, now: Instant) -> Vec<Report> {
        let mut reports = Vec::new();
        if std::mem::take(&mut self.backlog) {
            for server in 0..self.sockets.len() {
                self.receive(server, now, &mut reports);
            }
        } else if let Some(token) = readable.filter(|t| owns(*t)) {
            self.receive(token.0 - FIRST_TOKEN, now, &mut reports);
        }
        reports.extend(self.resolver.poll(now, &mut self.outbox));
        self.flush();
        if !self.resolver.in_flight() && !self.backlog {
            // The next burst of lookups goes out from new ports.
            self.close_sockets();
        }
        reports
    }

    /// Sends what the resolver asked for, opening a nameserver's socket on first use; a datagram
    /// that cannot be sent counts as unanswered (the timeout moves the lookup on).
    fn flush(&mut self) {
        for datagram in std::mem::take(&mut self.outbox) {
            let result = self
                .socket(datagram.server, datagram.to)
                .and_then(|socket| socket.send(&datagram.bytes));
            if let Err(e) = result {
                log::debug!("dns: sending to {}: {e}", datagram.to);
            }
        }
    }

    /// The socket connected to nameserver `server` (at `to`), opened and registered if need be.
    fn socket(&mut self, server: usize, to: SocketAddr) -> io::Result<&UdpSocket> {
        if server >= crate::config::MAX_NAMESERVERS {
            return Err(io::Error::other("too many nameservers"));
        }
        if self.sockets.len() <= server {
            self.sockets.resize_with(server + 1, || None);
        }
        if self.sockets[server].is_none() {
            let any: SocketAddr = if to.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let mut socket = UdpSocket::bind(any)?;
            socket.connect(to)?;
            self.registry
                .register(&mut socket, Token(FIRST_TOKEN + server), Interest::READABLE)?;
            self.sockets[server] = Some(socket);
        }
        self.sockets[server]
            .as_ref()
            .ok_or_else(|| io::Error::other("no socket"))
    }

    fn close_sockets(&mut self) {
        for mut socket in self.sockets.drain(..).flatten() {
            let _ = self.registry.deregister(&mut socket);
        }
    }

    /// Reads what nameserver `server`'s socket holds, up to the budget.
    fn receive(&mut self, server: usize, now: Instant, reports: &mut Vec<Report>) {
        let mut buf = [0u8; DATAGRAM];
        let Some(Some(socket)) = self.sockets.get(server) else {
            return;
        };
        let from = self.resolver.servers().get(server).copied();
        for _ in 0..READ_BUDGET {
            match socket.recv(&mut buf) {
                Ok(n) => {
                    if let Some(from) = from {
                        let report =
                            self.resolver
                                .on_datagram(from, &buf[..n], now, &mut self.outbox);
                        reports.extend(report);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // An ICMP error for an earlier send (port unreachable): that lookup times out.
                Err(e) => log::debug!("dns: receiving: {e}"),
            }
        }
        self.backlog = true;
    }
}
