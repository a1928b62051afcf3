//! The lookups of DNS discovery as a state machine without I/O: which `resolve` backend's name is due,
//! the A and AAAA queries each lookup sends to which nameserver, what the answers (or their absence by
//! the timeout) mean, and the last good set of addresses of every name. Drivers send the datagrams it
//! asks for, hand it what arrives and call it again at [`Resolver::next_wakeup`]; `now` is always
//! passed in.
//!
//! One lookup round asks the first nameserver; an error code other than NXDOMAIN, a malformed answer
//! or the timeout moves it to the next one. A round that ends without addresses — every server failed,
//! NXDOMAIN, a truncated answer, or no A and no AAAA record — keeps the last good set: a backend is
//! never dropped because DNS had a bad moment.

use super::message::{self, AnswerError, Family};
use crate::random::Rng;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How soon a name that has never resolved is asked again after a failed round (its interval, when
/// shorter): its pool has no address to serve with until then.
const FIRST_ANSWER_RETRY: Duration = Duration::from_secs(1);

/// One `resolve` backend: what names it, the host to ask for, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pool: String,
    pub url: String,
    pub host: String,
    pub interval: Duration,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The nameserver's position in the resolver's list, and its address.
    pub server: usize,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// What a finished lookup round came to, for the driver to apply and log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The set of addresses changed (the first answer included).
    Changed {
        target: Target,
        added: Vec<IpAddr>,
        removed: Vec<IpAddr>,
    },
    /// The round gave no addresses; `kept` is the size of the set kept.
    Failed {
        target: Target,
        why: String,
        kept: usize,
    },
}

#[derive(Debug)]
enum Query {
    Waiting(u16),
    Answered(Vec<IpAddr>),
}

#[derive(Debug)]
struct Attempt {
    /// The server asked (an index into the servers), and how many this round has asked.
    server: usize,
    asked: usize,
    deadline: Instant,
    /// The A query, then the AAAA query.
    queries: [Query; 2],
}

#[derive(Debug)]
struct Lookup {
    target: Target,
    due: Instant,
    attempt: Option<Attempt>,
    /// The last good set, sorted.
    addresses: Vec<IpAddr>,
}

pub struct Resolver {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    lookups: Vec<Lookup>,
    rng: Rng,
}

const FAMILIES: [Family; 2] = [Family::V4, Family::V6];

impl Resolver {
    /// A resolver asking `servers` in order, each for at most `timeout` per round.
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration, rng: Rng) -> Resolver {
        Resolver {
            servers,
            timeout,
            lookups: Vec::new(),
            rng,
        }
    }

    /// Changes the nameservers and their timeout (on reload). Rounds in flight start again with the
    /// new servers; the last good sets stay. True when the servers changed.
    pub fn set_servers(
        &mut self,
        servers: Vec<SocketAddr>,
        timeout: Duration,
        now: Instant,
    ) -> bool {
        self.timeout = timeout;
        if servers == self.servers {
            return false;
        }
        for lookup in &mut self.lookups {
            if lookup.attempt.take().is_some() {
                lookup.due = now;
            }
        }
        self.servers = servers;
        true
    }

    /// Sets the names to resolve (at start and on reload): a target kept from before keeps its last
    /// set and schedule (its new interval applies from its next round); a new one is due at once.
    pub fn configure(&mut self, targets: Vec<Target>, now: Instant) {
        let mut old = std::mem::take(&mut self.lookups);
        for target in targets {
            let kept = old.iter().position(|l| {
                l.target.pool == target.pool
                    && l.target.url == target.url
                    && l.target.host == target.host
            });
            let lookup = match kept {
                Some(at) => {
                    let mut lookup = old.swap_remove(at);
                    lookup.target = target;
                    lookup
                }
                None => Lookup {
                    target,
                    due: now,
                    attempt: None,
                    addresses: Vec::new(),
                },
            };
            self.lookups.push(lookup);
        }
    }

    /// The last good addresses of the backend `url` of `pool` (none before its first answer).
    pub fn addresses(&self, pool: &str, url: &str) -> &[IpAddr] {
        self.lookups
            .iter()
            .find(|l| l.target.pool == pool && l.target.url == url)
            .map_or(&[], |l| &l.addresses)
    }

    /// Whether any name is configured.
    pub fn is_empty(&self) -> bool {
        self.lookups.is_empty()
    }

    /// The nameservers, in the order they are asked.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Whether any lookup waits for an answer.
    pub fn in_flight(&self) -> bool {
        self.lookups.iter().any(|l| l.attempt.is_some())
    }

    /// When the resolver next has something to do.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.lookups
            .iter()
            .map(|l| l.attempt.as_ref().map_or(l.due, |a| a.deadline))
            .min()
    }

    /// Moves every lookup whose time came: rounds whose server timed out go to the next server (or
    /// fail), due names start a round. Datagrams to send are appended to `out`.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Datagram>) -> Vec<Report> {
        let mut reports = Vec::new();
        for i in 0..self.lookups.len() {
            let lookup = &self.lookups[i];
            match &lookup.attempt {
                Some(attempt) if now >= attempt.deadline => {
                    let asked = attempt.asked;
                    if let Some(report) = self.next_server(i, asked, "timed out", now, out) {
                        reports.push(report);
                    }
                }
                None if now >= lookup.due => {
                    if self.servers.is_empty() {
                        reports.push(self.fail(i, "no nameserver configured".into(), now));
                    } else {
                        // Every round starts with the first server, as resolv.conf's order means.
                        self.ask(i, 0, 1, now, out);
                    }
                }
                _ => {}
            }
        }
        reports
    }

    /// A datagram arrived from `from`.
    pub fn on_datagram(
        &mut self,
        from: SocketAddr,
        bytes: &[u8],
        now: Instant,
        out: &mut Vec<Datagram>,
    ) -> Option<Report> {
        let id = message::id_of(bytes)?;
        // Every query waiting for this id from this server is a candidate (ids are random, so two
        // lookups' may meet); the answer belongs to the one whose question it repeats.
        for i in 0..self.lookups.len() {
            let lookup = &self.lookups[i];
            let Some(attempt) = &lookup.attempt else {
                continue;
            };
            if self.servers.get(attempt.server) != Some(&from) {
                continue;
            }
            for (which, family) in FAMILIES.into_iter().enumerate() {
                if !matches!(attempt.queries[which], Query::Waiting(waiting) if waiting == id) {
                    continue;
                }
                let asked = attempt.asked;
                return match message::addresses(bytes, id, &lookup.target.host, family) {
                    Err(AnswerError::NotOurs) => continue,
                    Ok(found) => self.answered(i, which, found, now),
                    Err(e @ (AnswerError::Truncated | AnswerError::NoSuchName)) => {
                        Some(self.fail(i, format!("{} query: {e}", family.name()), now))
                    }
                    Err(e @ (AnswerError::Malformed | AnswerError::Rcode(_))) => {
                        let why = format!("{} query: {e}", family.name());
                        self.next_server(i, asked, &why, now, out)
                    }
                };
            }
        }
        None
    }

    /// Sends lookup `i`'s queries to server `server`, the `asked`th of its round.
    fn ask(
        &mut self,
        i: usize,
        server: usize,
        asked: usize,
        now: Instant,
        out: &mut Vec<Datagram>,
    ) {
        let to = self.servers[server];
        let mut queries = [Query::Waiting(0), Query::Waiting(0)];
        let mut previous = None;
        for (slot, family) in queries.iter_mut().zip(FAMILIES) {
            // The two queries of a round never share an id, so that each answer finds its query.
            let id = loop {
                let id = self.rng.next_u64() as u16;
                if previous != Some(id) {
                    break id;
                }
            };
            previous = Some(id);
            if let Some(bytes) = message::query(id, &self.lookups[i].target.host, family) {
                out.push(Datagram { server, to, bytes });
            }
            *slot = Query::Waiting(id);
        }
        self.lookups[i].attempt = Some(Attempt {
            server,
            asked,
            deadline: now + self.timeout,
            queries,
        });
    }

    /// Lookup `i`'s current server failed with `why`: the next server is asked, or the round fails
    /// when every server has been.
    fn next_server(
        &mut self,
        i: usize,
        asked: usize,
        why: &str,
        now: Instant,
        out: &mut Vec<Datagram>,
    ) -> Option<Report> {
        let Some(attempt) = &self.lookups[i].attempt else {
            return None;
        };
        if asked >= self.servers.len() {
            let why = if self.servers.len() == 1 {
                format!("{why} ({})", self.servers[attempt.server])
            } else {
                format!(
                    "every nameserver failed, the last ({}): {why}",
                    self.servers[attempt.server]
                )
            };
            return Some(self.fail(i, why, now));
        }
        let next = (attempt.server + 1) % self.servers.len();
        self.ask(i, next, asked + 1, now, out);
        None
    }

    /// One of lookup `i`'s queries (`which`) was answered with `found`; once both are, the round ends.
    fn answered(
        &mut self,
        i: usize,
        which: usize,
        found: Vec<IpAddr>,
        now: Instant,
    ) -> Option<Report> {
        let attempt = self.lookups[i].attempt.as_mut()?;
        attempt.queries[which] = Query::Answered(found);
        let mut all = Vec::new();
        for query in &attempt.queries {
            match query {
                Query::Waiting(_) => return None,
                Query::Answered(found) => all.extend_from_slice(found),
            }
        }
        if all.is_empty() {
            return Some(self.fail(i, "no A or AAAA record".into(), now));
        }
        all.sort_unstable();
        all.dedup();
        let lookup = &mut self.lookups[i];
        lookup.attempt = None;
        lookup.due = now + lookup.target.interval;
        if all == lookup.addresses {
            return None;
        }
        let added = all
            .iter()
            .filter(|a| !lookup.addresses.contains(a))
            .copied()
            .collect();
        let removed = lookup
            .addresses
            .iter()
            .filter(|a| !all.contains(a))
            .copied()
            .collect();
        lookup.addresses = all;
        Some(Report::Changed {
            target: lookup.target.clone(),
            added,
            removed,
        })
    }

    /// Ends lookup `i`'s round without addresses: the last set stays.
    fn fail(&mut self, i: usize, why: String, now: Instant) -> Report {
        let lookup = &mut self.lookups[i];
        lookup.attempt = None;
        let interval = lookup.target.interval;
        lookup.due = now
            + if lookup.addresses.is_empty() {
                interval.min(FIRST_ANSWER_RETRY)
            } else {
                interval
            };
        Report::Failed {
            target: lookup.target.clone(),
            why,
            kept: lookup.addresses.len(),
        }
    }
}

#[cfg(test)]
mod tests;
