//! Per-client limits (`[limits]`): a token bucket of requests and a count of open connections for
//! each client, shared by every worker and thread without a lock. A client is its IPv4 address, or
//! the /64 network of its IPv6 address (one host commonly holds a whole /64, and could otherwise
//! rotate addresses to escape its limit).
//!
//! The state lives in a fixed table of [`SLOTS`] entries, allocated once, so memory stays bounded
//! whatever the number of clients: a client's entry is found among [`WAYS`] neighbouring slots; a new
//! client takes a free one, or else the one seen longest ago that has no open connection. A client
//! that finds all its slots held by others with open connections is not tracked for that request or
//! connection (it is let through and counted in [`Limits::untracked`]): the limits fail open rather than
//! refuse clients because of their neighbours. Time is passed in.

use crate::random::{fnv1a, mix64};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Entries in the table: about 1.5 MiB, allocated when `[limits]` is configured.
pub const SLOTS: usize = 1 << 16;
/// Slots a client's entry may occupy, from the one its key hashes to.
pub const WAYS: usize = 4;
/// Thousandths of a token: a bucket's fill is kept in these.
const MILLI: u64 = 1000;
/// How far ahead of a thread's `now` another thread's stamp may be.
const AHEAD_TOLERANCE_MS: u32 = 60_000;
/// The largest rate or burst: a bucket's fill, in thousandths, must fit in 32 bits.
pub const MAX_RATE: u32 = 1_000_000;

/// The configured limits; zero turns one off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    pub requests_per_second: u32,
    pub burst: u32,
    pub connections_per_client: u32,
}

#[derive(Debug, Default)]
#[repr(align(32))]
struct Slot {
    /// The client's key (never 0); 0 is an empty slot.
    key: AtomicU64,
    /// The bucket: fill in thousandths of a token (high 32 bits), and when it was last topped up, in
    /// milliseconds since the table's origin, wrapping (low 32 bits).
    bucket: AtomicU64,
    connections: AtomicU32,
    /// When the client was last seen, in seconds since the origin (for eviction).
    seen: AtomicU32,
}

/// Why a request or a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request rate is above `requests_per_second` (beyond `burst`): 429.
    Rate,
    /// The client holds `connections_per_client` connections already: the new one is closed.
    Connections,
}

/// A connection counted against its client, to give back when it closes (4 bytes, and 4 as an
/// `Option`: the event loop keeps one in every connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The slot, plus one.
    slot: std::num::NonZeroU32,
}

pub struct Limits {
    /// Allocated by the first request or connection that a limit applies to.
    table: OnceLock<Box<[Slot]>>,
    origin: Instant,
    rate: AtomicU32,
    burst: AtomicU32,
    max_connections: AtomicU32,
    refused_rate: AtomicU64,
    refused_connections: AtomicU64,
    untracked: AtomicU64,
}

impl Limits {
    pub fn new(settings: Settings, now: Instant) -> Limits {
        let limits = Limits {
            table: OnceLock::new(),
            origin: now,
            rate: AtomicU32::new(0),
            burst: AtomicU32::new(0),
            max_connections: AtomicU32::new(0),
            refused_rate: AtomicU64::new(0),
            refused_connections: AtomicU64::new(0),
            untracked: AtomicU64::new(0),
        };
        limits.configure(settings);
        limits
    }

    /// New settings (a reload): clients keep their entries.
    pub fn configure(&self, settings: Settings) {
        self.rate
            .store(settings.requests_per_second, Ordering::Relaxed);
        self.burst.store(settings.burst, Ordering::Relaxed);
        self.max_connections
            .store(settings.connections_per_client, Ordering::Relaxed);
    }

    /// Takes a token for a request from `client`; `Err(Refusal::Rate)` when its bucket is empty.
    pub fn request(&self, client: IpAddr, now: Instant) -> Result<(), Refusal> {
        let rate = u64::from(self.rate.load(Ordering::Relaxed));
        if rate == 0 {
            return Ok(());
        }
        let burst = u64::from(self.burst.load(Ordering::Relaxed).max(1)) * MILLI;
        let Some(slot) = self.entry(client, now) else {
            return Ok(());
        };
        let now_ms = self.millis(now);
        let bucket = &self.slots()[slot].bucket;
        let mut current = bucket.load(Ordering::Acquire);
        loop {
            let (fill, stamp) = ((current >> 32), (current & 0xffff_ffff) as u32);
            // Another thread may have stamped it with a later `now` than ours (by a batch's time, well
            // under a minute): no time passed then, and the stamp does not go back. Anything else is
            // time passed, however long (the stamp wraps after 49 days; the bucket is full by then).
            let ahead = now_ms.wrapping_sub(stamp) > u32::MAX - AHEAD_TOLERANCE_MS;
            let (fill, stamp) = if current == 0 {
                // A fresh entry starts full.
                (burst, now_ms)
            } else if ahead {
                (fill, stamp)
            } else {
                let elapsed = u64::from(now_ms.wrapping_sub(stamp));
                ((fill + elapsed.saturating_mul(rate)).min(burst), now_ms)
            };
            if fill < MILLI {
                self.refused_rate.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::Rate);
            }
            let next = ((fill - MILLI) << 32) | u64::from(stamp);
            match bucket.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(seen) => current = seen,
            }
        }
    }

    /// Counts a new connection from `client`; `Err` when it already holds `connections_per_client`.
    /// `Ok(None)`: nothing to give back (no limit, or the client is not tracked).
    pub fn connect(&self, client: IpAddr, now: Instant) -> Result<Option<Held>, Refusal> {
        let max = self.max_connections.load(Ordering::Relaxed);
        if max == 0 {
            return Ok(None);
        }
        let Some(slot) = self.entry(client, now) else {
            return Ok(None);
        };
        let counted =
            self.slots()[slot]
                .connections
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                });
        match counted {
            Ok(_) => Ok(std::num::NonZeroU32::new(slot as u32 + 1).map(|slot| Held { slot })),
            Err(_) => {
                self.refused_connections.fetch_add(1, Ordering::Relaxed);
                Err(Refusal::Connections)
            }
        }
    }

    /// A counted connection closed.
    pub fn disconnect(&self, held: Held) {
        let index = held.slot.get() as usize - 1;
        if let Some(slot) = self.table.get().and_then(|t| t.get(index)) {
            let _ = slot
                .connections
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    /// Requests refused for their rate, connections refused for their count, since start.
    pub fn refused(&self) -> (u64, u64) {
        (
            self.refused_rate.load(Ordering::Relaxed),
            self.refused_connections.load(Ordering::Relaxed),
        )
    }

    /// Requests and connections let through untracked because their client found no slot.
    pub fn untracked(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }

    fn slots(&self) -> &[Slot] {
        self.table
            .get_or_init(|| (0..SLOTS).map(|_| Slot::default()).collect())
    }

    /// The slot of `client`'s entry, made if need be.
    fn entry(&self, client: IpAddr, now: Instant) -> Option<usize> {
        let slots = self.slots();
        let key = client_key(client);
        let seen = self.seconds(now);
        let home = (key as usize) & (SLOTS - 1);
        let ways = (0..WAYS).map(|w| (home + w) & (SLOTS - 1));
        for i in ways.clone() {
            if slots[i].key.load(Ordering::Acquire) == key {
                slots[i].seen.store(seen, Ordering::Relaxed);
                return Some(i);
            }
        }
        // Not there: a free slot, else the one seen longest ago without connections.
        let mut victim: Option<(usize, u64, u32)> = None;
        for i in ways {
            let slot = &slots[i];
            let old = slot.key.load(Ordering::Acquire);
            if old == 0 {
                victim = Some((i, 0, 0));
                break;
            }
            if slot.connections.load(Ordering::Acquire) > 0 {
                continue;
            }
            let age = seen.wrapping_sub(slot.seen.load(Ordering::Relaxed));
            if victim.is_none_or(|(_, _, oldest)| age > oldest) {
                victim = Some((i, old, age));
            }
        }
        let Some((i, old, _)) = victim else {
            self.untracked.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let slot = &slots[i];
        // Another thread may have taken the slot meanwhile; then this client goes untracked once.
        if slot
            .key
            .compare_exchange(old, key, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            self.untracked.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        slot.bucket.store(0, Ordering::Release);
        slot.seen.store(seen, Ordering::Relaxed);
        Some(i)
    }

    /// Milliseconds since the origin, plus one (so that a bucket word is never 0 once used), wrapping.
    fn millis(&self, now: Instant) -> u32 {
        (now.saturating_duration_since(self.origin).as_millis() as u32).wrapping_add(1)
    }

    fn seconds(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.origin).as_secs() as u32
    }
}

/// Counts a connection of `client` against its limit for as long as the guard lives.
pub fn hold(
    limits: &Arc<Limits>,
    client: IpAddr,
    now: Instant,
) -> Result<Option<Connection>, Refusal> {
    Ok(limits.connect(client, now)?.map(|held| Connection {
        limits: limits.clone(),
        held,
    }))
}

/// A client connection counted against its client's `connections_per_client`: given back when
/// dropped, whichever way the connection ends.
pub struct Connection {
    limits: Arc<Limits>,
    held: Held,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.limits.disconnect(self.held);
    }
}

/// A client's key: its IPv4 address (an IPv4-mapped IPv6 one too), or its IPv6 /64. Never 0.
fn client_key(ip: IpAddr) -> u64 {
    let hashed = match ip {
        IpAddr::V4(v4) => fnv1a(&v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => fnv1a(&v4.octets()),
            None => fnv1a(&v6.octets()[..8]) ^ 0x6,
        },
    };
    mix64(hashed).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_stamp_from_a_later_now_does_not_refill_the_bucket() {
        let t0 = Instant::now();
        let limits = Limits::new(
            Settings {
                requests_per_second: 10,
                burst: 1,
                connections_per_client: 0,
            },
            t0,
        );
        let a = ip("192.0.2.3");
        let later = t0 + Duration::from_millis(500);
        assert!(limits.request(a, later).is_ok());
        // Another worker's batch began a little earlier: its `now` is behind the stamp.
        assert!(limits.request(a, t0 + Duration::from_millis(450)).is_err());
        assert!(
            limits
                .request(a, later + Duration::from_millis(100))
                .is_ok()
        );
    }

    #[test]
    fn a_client_back_after_weeks_finds_a_full_bucket() {
        let t0 = Instant::now();
        let limits = Limits::new(
            Settings {
                requests_per_second: 10,
                burst: 2,
                connections_per_client: 0,
            },
            t0,
        );
        let a = ip("192.0.2.4");
        assert!(limits.request(a, t0).is_ok() && limits.request(a, t0).is_ok());
        assert!(limits.request(a, t0).is_err());
        for days in [1, 20, 25, 30, 40, 49] {
            let later = t0 + Duration::from_secs(days * 86_400);
            assert!(limits.request(a, later).is_ok(), "after {days} days");
        }
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let limits = Limits::new(
            Settings {
                requests_per_second: 10,
                burst: 3,
                connections_per_client: 0,
            },
            t0,
        );
        let a = ip("192.0.2.1");
        let ms = |n| t0 + Duration::from_millis(n);
        // (milliseconds after start, allowed)
        let cases: &[(u64, bool)] = &[
            (0, true),
            (0, true),
            (0, true),
            (0, false), // the burst is spent
            (50, false),
            (100, true), // one token per 100 ms at 10/s
            (150, false),
            (200, true),
            (10_000, true), // long idle: full again, but no more than the burst
            (10_000, true),
            (10_000, true),
            (10_000, false),
        ];
        for (i, &(at, allowed)) in cases.iter().enumerate() {
            assert_eq!(
                limits.request(a, ms(at)).is_ok(),
                allowed,
                "case {i} at {at} ms"
            );
        }
        // Another client has a bucket of its own.
        assert!(limits.request(ip("192.0.2.2"), ms(10_000)).is_ok());
        assert_eq!(limits.refused(), (4, 0));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let t0 = Instant::now();
        let limits = Limits::new(
            Settings {
                requests_per_second: 1,
                burst: 1,
                connections_per_client: 0,
            },
            t0,
        );
        assert!(limits.request(ip("2001:db8:1:2::1"), t0).is_ok());
        assert!(
            limits.request(ip("2001:db8:1:2::ffff"), t0).is_err(),
            "same /64"
        );
        assert!(
            limits.request(ip("2001:db8:1:3::1"), t0).is_ok(),
            "another /64"
        );
        assert!(limits.request(ip("::ffff:192.0.2.9"), t0).is_ok());
        assert!(
            limits.request(ip("192.0.2.9"), t0).is_err(),
            "mapped is the IPv4"
        );
    }

    #[test]
    fn connections_are_counted_and_given_back() {
        let t0 = Instant::now();
        let limits = Limits::new(
            Settings {
                requests_per_second: 0,
                burst: 0,
                connections_per_client: 2,
            },
            t0,
        );
        let a = ip("198.51.100.7");
        let first = limits.connect(a, t0).unwrap().unwrap();
        let second = limits.connect(a, t0).unwrap().unwrap();
        assert_eq!(limits.connect(a, t0), Err(Refusal::Connections));
        limits.disconnect(first);
        let third = limits.connect(a, t0).unwrap().unwrap();
        assert_eq!(limits.connect(a, t0), Err(Refusal::Connections));
        limits.disconnect(second);
        limits.disconnect(third);
        assert!(limits.connect(a, t0).unwrap().is_some());
        assert_eq!(limits.refused(), (0, 2));
        // Off: nothing counted, nothing refused.
        limits.configure(Settings::default());
        for _ in 0..10 {
            assert_eq!(limits.connect(a, t0), Ok(None));
            assert_eq!(limits.request(a, t0), Ok(()));
        }
    }

    #[test]
    fn the_table_stays_bounded_and_never_evicts_a_connected_client() {
        let t0 = Instant::now();
        let limits = Limits::new(
            Settings {
                requests_per_second: 1,
                burst: 1,
                connections_per_client: 1,
            },
            t0,
        );
        let held = ip("203.0.113.1");
        let token = limits.connect(held, t0).unwrap().unwrap();
        assert!(limits.request(held, t0).is_ok());
        // Far more clients than slots pass through.
        for n in 0..(SLOTS as u32 * 2) {
            let client = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            let _ = limits.request(client, t0 + Duration::from_secs(1 + u64::from(n) / 1000));
        }
        // The connected client kept its entry: its connection still counts, and its bucket is spent.
        let later = t0 + Duration::from_millis(500);
        assert_eq!(limits.connect(held, later), Err(Refusal::Connections));
        limits.disconnect(token);
        assert!(limits.connect(held, later).unwrap().is_some());
        assert_eq!(limits.slots().len(), SLOTS);
    }

    #[test]
    fn concurrent_takers_never_overdraw_a_bucket() {
        let t0 = Instant::now();
        let limits = Limits::new(
            Settings {
                requests_per_second: 1,
                burst: 100,
                connections_per_client: 0,
            },
            t0,
        );
        let allowed = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..100 {
                        if limits.request(ip("192.0.2.50"), t0).is_ok() {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(allowed.load(Ordering::Relaxed), 100);
    }
}
