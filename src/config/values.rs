//! The value syntaxes of `lb.toml`: durations (`"250ms"`, `"5s"`, a number of seconds), backend URLs,
//! addresses, paths and bounded integers, each as a parser with an error message saying what was
//! expected, and the serde adapters the configuration structures name.

use serde::Deserialize;
use serde::de::{self, Deserializer};
use std::net::SocketAddr;
use std::time::Duration;

/// Parses a duration: `"250ms"`, `"5s"`, `"1m"`, `"1h"`, or a bare number of seconds (`"1.5"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(format!(
            "invalid duration {text:?}: expected e.g. \"250ms\", \"5s\", \"1m\" or a number of seconds"
        ));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: {number:?} is not a number"))?;
    let seconds_per_unit = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {other:?} (use ms, s, m or h)"
            ));
        }
    };
    seconds_to_duration(value * seconds_per_unit)
        .ok_or_else(|| format!("invalid duration {text:?}: out of range"))
}

fn seconds_to_duration(seconds: f64) -> Option<Duration> {
    // A year is far beyond any sensible timeout and keeps `Instant + Duration` from overflowing.
    if seconds.is_finite() && (0.0..=31_536_000.0).contains(&seconds) {
        Some(Duration::from_secs_f64(seconds))
    } else {
        None
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationInput {
    Text(String),
    Integer(i64),
    Float(f64),
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match DurationInput::deserialize(d)? {
        DurationInput::Text(s) => parse_duration(&s).map_err(de::Error::custom),
        DurationInput::Integer(n) => seconds_to_duration(n as f64)
            .ok_or_else(|| de::Error::custom(format!("invalid duration {n}: out of range"))),
        DurationInput::Float(x) => seconds_to_duration(x)
            .ok_or_else(|| de::Error::custom(format!("invalid duration {x}: out of range"))),
    }
}

pub(super) fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let value = duration(d)?;
    if value.is_zero() {
        return Err(de::Error::custom("duration must be greater than zero"));
    }
    Ok(value)
}

pub(super) fn optional_positive_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    positive_duration(d).map(Some)
}

pub(super) fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let value = i64::deserialize(d)?;
    if value < 1 || value > i64::from(u32::MAX) {
        return Err(de::Error::custom(format!(
            "{value} is out of range: must be an integer from 1 to {}",
            u32::MAX
        )));
    }
    Ok(value as u32)
}

pub(super) fn optional_at_least_one<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<u32>, D::Error> {
    at_least_one(d).map(Some)
}

pub(super) fn positive_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let value = i64::deserialize(d)?;
    if value < 1 {
        return Err(de::Error::custom(format!(
            "{value} is out of range: must be at least 1"
        )));
    }
    usize::try_from(value).map_err(|_| de::Error::custom(format!("{value} is too large")))
}

/// `workers`: a count from 1 to [`crate::workers::MAX_WORKERS`], or `"auto"` for one per CPU this
/// process may run on.
pub(super) fn workers<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Setting {
        Count(i64),
        Name(String),
    }
    let max = crate::workers::MAX_WORKERS;
    match Setting::deserialize(d)? {
        Setting::Count(n) if (1..=max as i64).contains(&n) => Ok(n as usize),
        Setting::Count(n) => Err(de::Error::custom(format!(
            "{n} is out of range: expected 1 to {max}, or \"auto\""
        ))),
        Setting::Name(name) if name == "auto" => Ok(std::thread::available_parallelism()
            .map(|n| n.get().min(max))
            .unwrap_or(1)),
        Setting::Name(name) => Err(de::Error::custom(format!(
            "invalid workers {name:?}: expected a number from 1 to {max}, or \"auto\""
        ))),
    }
}

pub(super) fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        de::Error::custom(format!(
            "invalid address {text:?}: expected IP:PORT, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""
        ))
    })
}

fn check_url_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("invalid path {path:?}: must start with '/'"));
    }
    if let Some(bad) = path.bytes().find(|b| !(0x21..0x7f).contains(b)) {
        return Err(format!("invalid path {path:?}: contains byte 0x{bad:02x}"));
    }
    Ok(())
}

pub(super) fn url_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    check_url_path(&text).map_err(de::Error::custom)?;
    Ok(text)
}

pub(super) fn optional_url_path<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    url_path(d).map(Some)
}

/// A parsed `http://host[:port][/]` or `https://host[:port][/]` backend URL, not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrl {
    pub text: String,
    pub host: String,
    pub port: u16,
    pub authority: String,
    /// `https://`: the backend is reached over TLS.
    pub tls: bool,
}

/// Parses a backend URL. No path is accepted: the balancer forwards the client's request target
/// unchanged, so a path prefix in the backend URL would be silently ignored.
pub fn parse_backend_url(text: &str) -> Result<BackendUrl, String> {
    let expected = "expected http://host:port or https://host:port, e.g. \"http://127.0.0.1:8001\"";
    let (rest, tls) = if let Some(rest) = text.strip_prefix("http://") {
        (rest, false)
    } else if let Some(rest) = text.strip_prefix("https://") {
        (rest, true)
    } else {
        return Err(format!("invalid backend URL {text:?}: {expected}"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "invalid backend URL {text:?}: {expected} (no path, query or user info)"
        ));
    }
    let (host, port_text) = if let Some(bracketed) = authority.strip_prefix('[') {
        let end = bracketed
            .find(']')
            .ok_or_else(|| format!("invalid backend URL {text:?}: unterminated IPv6 address"))?;
        let after = &bracketed[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("invalid backend URL {text:?}: {expected}")),
        };
        (&bracketed[..end], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!(
            "invalid backend URL {text:?}: missing host; {expected}"
        ));
    }
    let port = match port_text {
        None if tls => 443,
        None => 80,
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port > 0 && p.bytes().all(|b| b.is_ascii_digit()) => port,
            _ => return Err(format!("invalid backend URL {text:?}: bad port {p:?}")),
        },
    };
    Ok(BackendUrl {
        text: text.to_string(),
        host: host.to_string(),
        port,
        authority: authority.to_string(),
        tls,
    })
}

pub(super) fn backend_url<'de, D: Deserializer<'de>>(d: D) -> Result<BackendUrl, D::Error> {
    let text = String::deserialize(d)?;
    parse_backend_url(&text).map_err(de::Error::custom)
}
