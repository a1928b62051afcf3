//! `[dns]` and backends' `resolve`: which nameservers DNS discovery asks (by default those of
//! /etc/resolv.conf), how long it waits for each, and what a `resolve` backend's URL must be.

use super::ConfigError;
use super::values::optional_positive_duration;
use crate::dns::message::{resolv_conf_servers, valid_name};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// Where the default nameservers come from.
const RESOLV_CONF: &str = "/etc/resolv.conf";
/// Nameservers lookups may go to (the C library uses the first 3 of resolv.conf's).
pub const MAX_NAMESERVERS: usize = 8;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    #[serde(default)]
    servers: Option<Vec<String>>,
    #[serde(default, deserialize_with = "optional_positive_duration")]
    timeout: Option<Duration>,
}

/// How DNS discovery asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    /// Asked in order: the next one when one fails or times out.
    pub servers: Vec<SocketAddr>,
    /// How long one nameserver has to answer a lookup.
    pub timeout: Duration,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            servers: Vec::new(),
            timeout: Duration::from_secs(2),
        }
    }
}

/// A `resolve` backend's name and interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolve {
    pub host: String,
    pub interval: Duration,
}

/// The `[dns]` settings; the nameservers are looked up (in `resolv_conf`) only when some backend
/// resolves and `servers` is not given.
pub(super) fn settings(
    raw: Option<RawDns>,
    resolving: bool,
    resolv_conf: &Path,
) -> Result<Dns, ConfigError> {
    let raw = raw.unwrap_or_default();
    let mut dns = Dns::default();
    if let Some(timeout) = raw.timeout {
        dns.timeout = timeout;
    }
    match raw.servers {
        Some(servers) => {
            for (i, text) in servers.iter().enumerate() {
                dns.servers
                    .push(server(text).map_err(|message| ConfigError::Invalid {
                        key: format!("dns.servers[{i}]"),
                        message,
                    })?);
            }
            if dns.servers.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "dns.servers".into(),
                    message: "an empty list: name at least one nameserver, or leave the key out \
                              to use those of /etc/resolv.conf"
                        .into(),
                });
            }
            if dns.servers.len() > MAX_NAMESERVERS {
                return Err(ConfigError::Invalid {
                    key: "dns.servers".into(),
                    message: format!(
                        "{} nameservers: at most {MAX_NAMESERVERS} are asked",
                        dns.servers.len()
                    ),
                });
            }
        }
        None if resolving => {
            let text = std::fs::read_to_string(resolv_conf).unwrap_or_default();
            dns.servers = resolv_conf_servers(&text);
            dns.servers.truncate(MAX_NAMESERVERS);
            if dns.servers.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "dns.servers".into(),
                    message: format!(
                        "not given, and {} names no nameserver: a backend with `resolve` needs one",
                        resolv_conf.display()
                    ),
                });
            }
        }
        None => {}
    }
    Ok(dns)
}

/// A nameserver: `ip:port`, or an IP alone for port 53.
fn server(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| {
            format!(
                "{text:?} is not a nameserver address: expected \"10.0.0.53\" or \"127.0.0.1:5353\""
            )
        })
}

/// The default nameserver source.
pub(super) fn resolv_conf() -> &'static Path {
    Path::new(RESOLV_CONF)
}

/// Checks a `resolve` backend's host: a name to ask for, not an address.
pub(super) fn resolve(host: &str, interval: Duration) -> Result<Resolve, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "the URL's host {host} is an address: `resolve` needs a host name to look up"
        ));
    }
    if !valid_name(host) {
        return Err(format!(
            "the URL's host {host:?} is not a name DNS can look up"
        ));
    }
    Ok(Resolve {
        host: host.to_string(),
        interval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(servers: Option<&[&str]>, timeout: Option<Duration>) -> Option<RawDns> {
        Some(RawDns {
            servers: servers.map(|s| s.iter().map(|t| t.to_string()).collect()),
            timeout,
        })
    }

    #[test]
    fn servers_come_from_the_key_or_resolv_conf() {
        let dir = std::env::temp_dir().join(format!("lb-dns-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let conf = dir.join("resolv.conf");
        std::fs::write(&conf, "nameserver 10.0.0.53\nnameserver 10.0.0.54\n").expect("write");
        let empty = dir.join("empty.conf");
        std::fs::write(&empty, "search x\n").expect("write");
        let missing = dir.join("missing.conf");
        let addr = |t: &str| t.parse::<SocketAddr>().expect("addr");
        // ([dns] as written, whether a backend resolves, the resolv.conf, the servers or the key at fault)
        type Case<'a> = (
            Option<RawDns>,
            bool,
            &'a Path,
            Result<Vec<SocketAddr>, &'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                raw(Some(&["127.0.0.1:5353"]), None),
                true,
                &conf,
                Ok(vec![addr("127.0.0.1:5353")]),
            ),
            (
                raw(Some(&["10.1.1.1", "[::1]:53"]), None),
                true,
                &conf,
                Ok(vec![addr("10.1.1.1:53"), addr("[::1]:53")]),
            ),
            (
                None,
                true,
                &conf,
                Ok(vec![addr("10.0.0.53:53"), addr("10.0.0.54:53")]),
            ),
            (None, false, &missing, Ok(vec![])),
            (None, true, &empty, Err("dns.servers")),
            (None, true, &missing, Err("dns.servers")),
            (raw(Some(&[]), None), true, &conf, Err("dns.servers")),
            (
                raw(Some(&["ns.example"]), None),
                true,
                &conf,
                Err("dns.servers[0]"),
            ),
            (
                raw(Some(&["10.0.0.1"; 9]), None),
                true,
                &conf,
                Err("dns.servers"),
            ),
        ];
        for (i, (raw, resolving, path, expected)) in cases.into_iter().enumerate() {
            match (settings(raw, resolving, path), expected) {
                (Ok(dns), Ok(servers)) => assert_eq!(dns.servers, servers, "case {i}"),
                (Err(ConfigError::Invalid { key, .. }), Err(k)) => assert_eq!(key, k, "case {i}"),
                (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
            }
        }
        let dns = settings(
            raw(Some(&["10.1.1.1"]), Some(Duration::from_millis(300))),
            true,
            &conf,
        )
        .expect("valid");
        assert_eq!(dns.timeout, Duration::from_millis(300));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn resolve_needs_a_name() {
        let five = Duration::from_secs(5);
        assert!(resolve("api.internal", five).is_ok());
        assert!(resolve("localhost", five).is_ok());
        for host in ["10.0.0.1", "[::1]", "a..b", ""] {
            assert!(resolve(host, five).is_err(), "{host}");
        }
    }
}
