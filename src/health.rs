//! Backend health: the rise/fall hysteresis shared by active probes and passive observations, the bytes
//! of a probe request, and the verdict on a probe response. The probe's socket is driven by the event
//! loop; nothing here does I/O.

use std::fmt;
use std::time::Duration;

/// Consecutive-result counters with hysteresis: `fall` failures in a row take a healthy backend down,
/// `rise` successes in a row bring an unhealthy one back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    pub healthy: bool,
    successes: u32,
    failures: u32,
}

/// A change of health state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Hysteresis::new()
    }
}

impl Hysteresis {
    /// Backends start healthy: traffic flows at once, and a dead one is found by the first failures.
    pub const fn new() -> Hysteresis {
        Hysteresis {
            healthy: true,
            successes: 0,
            failures: 0,
        }
    }

    pub fn record(&mut self, success: bool, rise: u32, fall: u32) -> Option<Transition> {
        if success {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.healthy && self.successes >= rise {
                self.healthy = true;
                return Some(Transition::Up);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.healthy && self.failures >= fall {
                self.healthy = false;
                return Some(Transition::Down);
            }
        }
        None
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// The whole state in one word, so that threads can update it with one compare-and-swap:
    /// bit 63 healthy, bits 32-62 failures (saturating at 2^31 - 1), bits 0-31 successes.
    pub fn pack(self) -> u64 {
        (u64::from(self.healthy) << 63)
            | (u64::from(self.failures.min(u32::MAX >> 1)) << 32)
            | u64::from(self.successes)
    }

    pub fn unpack(bits: u64) -> Hysteresis {
        Hysteresis {
            healthy: bits >> 63 == 1,
            failures: ((bits >> 32) as u32) & (u32::MAX >> 1),
            successes: bits as u32,
        }
    }
}

/// Why a probe (or a real request) counted as a failure or success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    Status(u16),
    TimedOut,
    Refused,
    ConnectionError,
    /// The TLS handshake with an `https://` backend failed (its certificate, most often).
    TlsHandshake,
    InvalidResponse,
}

impl ProbeResult {
    /// 2xx and 3xx are healthy.
    pub fn is_success(self) -> bool {
        matches!(self, ProbeResult::Status(200..=399))
    }
}

impl fmt::Display for ProbeResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeResult::Status(s) => write!(f, "status {s}"),
            ProbeResult::TimedOut => f.write_str("timed out"),
            ProbeResult::Refused => f.write_str("connection refused"),
            ProbeResult::ConnectionError => f.write_str("connection error"),
            ProbeResult::TlsHandshake => f.write_str("TLS handshake failed"),
            ProbeResult::InvalidResponse => f.write_str("invalid response"),
        }
    }
}

/// The probe request: `GET <path>` with `Host` and `Connection: close`.
pub fn probe_request(path: &str, authority: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: lb-health-check\r\n\r\n")
        .into_bytes()
}

/// Judges the bytes a probe has received so far: `Some` once the status line is complete (or clearly
/// not HTTP), `None` while more is needed. The rest of the response is not read.
pub fn probe_verdict(received: &[u8]) -> Option<ProbeResult> {
    let Some(line_end) = received.iter().position(|&b| b == b'\n') else {
        // A status line longer than the probe buffer is not a response we want.
        return (received.len() >= 256).then_some(ProbeResult::InvalidResponse);
    };
    let line = &received[..line_end];
    let rest = line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| line.strip_prefix(b"HTTP/1.0 "));
    let status = rest.and_then(|r| r.get(..3)).and_then(|digits| {
        if digits.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(digits).ok()?.parse::<u16>().ok()
        } else {
            None
        }
    });
    Some(match status {
        Some(s) if (100..=999).contains(&s) => ProbeResult::Status(s),
        _ => ProbeResult::InvalidResponse,
    })
}

/// The delay before the next probe: `interval` with up to ±10% jitter from `random`, so that probes to
/// many backends (and from many balancers) do not synchronise.
pub fn next_probe_delay(interval: Duration, random: u64) -> Duration {
    let spread = interval / 5; // 20% wide, centred on the interval
    let offset = if spread.is_zero() {
        Duration::ZERO
    } else {
        Duration::from_nanos(random % (spread.as_nanos() as u64).max(1))
    };
    interval - interval / 10 + offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_table() {
        // (results in order, rise, fall, health after each, transitions)
        let cases: &[(&[bool], u32, u32, &[bool])] = &[
            (&[false, false, false], 2, 3, &[true, true, false]),
            (
                &[false, false, true, false, false, false],
                2,
                3,
                &[true, true, true, true, true, false],
            ),
            (&[false, true, true], 2, 1, &[false, false, true]),
            (
                &[false, true, false, true, true],
                2,
                1,
                &[false, false, false, false, true],
            ),
            (&[false, true], 1, 1, &[false, true]),
            (&[true, true, true], 2, 3, &[true, true, true]),
        ];
        for (results, rise, fall, expected) in cases {
            let mut h = Hysteresis::new();
            let seen: Vec<bool> = results
                .iter()
                .map(|&ok| {
                    h.record(ok, *rise, *fall);
                    h.healthy
                })
                .collect();
            assert_eq!(seen, *expected, "{results:?} rise={rise} fall={fall}");
        }
    }

    #[test]
    fn packing_round_trips() {
        let mut h = Hysteresis::new();
        for ok in [false, false, true, false, false, false, true] {
            h.record(ok, 2, 3);
            assert_eq!(Hysteresis::unpack(h.pack()), h);
        }
        let saturated = Hysteresis {
            healthy: false,
            successes: u32::MAX,
            failures: u32::MAX,
        };
        let back = Hysteresis::unpack(saturated.pack());
        assert_eq!((back.healthy, back.successes), (false, u32::MAX));
        assert_eq!(back.failures, u32::MAX >> 1);
    }

    #[test]
    fn transitions_are_reported_once() {
        let mut h = Hysteresis::new();
        assert_eq!(h.record(false, 2, 2), None);
        assert_eq!(h.record(false, 2, 2), Some(Transition::Down));
        assert_eq!(h.record(false, 2, 2), None);
        assert_eq!(h.record(true, 2, 2), None);
        assert_eq!(h.record(true, 2, 2), Some(Transition::Up));
        assert_eq!(h.record(true, 2, 2), None);
    }

    #[test]
    fn probe_verdicts() {
        let cases: &[(&[u8], Option<ProbeResult>)] = &[
            (b"HTTP/1.1 200 OK\r\n", Some(ProbeResult::Status(200))),
            (
                b"HTTP/1.0 301 Moved\r\nLocation: /\r\n",
                Some(ProbeResult::Status(301)),
            ),
            (
                b"HTTP/1.1 503 Service Unavailable\r\n",
                Some(ProbeResult::Status(503)),
            ),
            (b"HTTP/1.1 404 Not Found\n", Some(ProbeResult::Status(404))),
            (b"HTTP/1.1 20", None),
            (b"", None),
            (b"SSH-2.0-OpenSSH\r\n", Some(ProbeResult::InvalidResponse)),
            (b"HTTP/1.1 2x0 OK\r\n", Some(ProbeResult::InvalidResponse)),
            (b"HTTP/1.1 099 Low\r\n", Some(ProbeResult::InvalidResponse)),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                probe_verdict(bytes),
                *expected,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert_eq!(
            probe_verdict(&[b'x'; 300]),
            Some(ProbeResult::InvalidResponse)
        );
        assert!(ProbeResult::Status(204).is_success());
        assert!(ProbeResult::Status(302).is_success());
        assert!(!ProbeResult::Status(404).is_success());
        assert!(!ProbeResult::TimedOut.is_success());
    }

    #[test]
    fn probe_request_bytes() {
        assert_eq!(
            probe_request("/health", "10.0.0.1:8001"),
            b"GET /health HTTP/1.1\r\nHost: 10.0.0.1:8001\r\nConnection: close\r\nUser-Agent: lb-health-check\r\n\r\n"
        );
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let interval = Duration::from_secs(2);
        for random in [0, 1, 12345, u64::MAX, 399_999_999, 400_000_000] {
            let d = next_probe_delay(interval, random);
            assert!(
                d >= Duration::from_millis(1800) && d < Duration::from_millis(2200),
                "{d:?}"
            );
        }
        assert_eq!(
            next_probe_delay(Duration::from_nanos(3), 7),
            Duration::from_nanos(3)
        );
    }
}
