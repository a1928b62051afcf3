//! One backend in `lb.toml`: its keys as written (`RawBackend`), checked into a [`BackendConfig`] —
//! its address resolved once by the system's resolver, or left to DNS discovery when it has
//! `resolve` — and what names it across reloads, DNS answers, logs and sticky cookies.

use super::dns::{self, Resolve};
use super::routing;
use super::tls::{self, BackendTls};
use super::values::{
    BackendUrl, at_least_one, backend_url, optional_at_least_one, optional_positive_duration,
    optional_url_path,
};
use super::{ConfigError, HealthCheck, default_capacity};
use serde::Deserialize;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One backend as configured, with its address already resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// The pool it belongs to: with its URL, what names it across reloads.
    pub pool: String,
    /// The URL as written, for logs and the admin API.
    pub url: String,
    /// `host:port` as written, used as the `Host` header when a client sent none (HTTP/1.0).
    pub authority: String,
    pub addr: SocketAddr,
    pub capacity: u32,
    /// Requests this backend may serve at once (retries included); 0: no bound. Beyond it, requests
    /// wait in their pool's queue.
    pub max_connections: u32,
    pub health_check_path: String,
    pub health_check_interval: Duration,
    /// `[health_check] timeout`, capped at this backend's interval: a probe never outlives the period
    /// it belongs to.
    pub health_check_timeout: Duration,
    /// `https://` backends: how they are reached over TLS.
    pub tls: Option<BackendTls>,
    /// `resolve`: the backend stands for every address DNS gives for its host name, re-asked at this
    /// interval. In [`Config::backends`] such a backend's `addr` has no IP (it is unspecified, with the
    /// port); the balancer serves one copy per address (`crate::dns::expand`), each named by its
    /// pool, URL and `addr`.
    pub resolve: Option<Resolve>,
}

/// Its URL, and for one address of a `resolve` backend the address: `http://api:80 [10.0.0.1:80]`.
impl fmt::Display for BackendConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.resolve {
            None => f.write_str(&self.url),
            Some(_) => write!(f, "{} [{}]", self.url, self.addr),
        }
    }
}

impl BackendConfig {
    /// What names this backend across reloads and DNS answers: its pool and URL, and for a
    /// `resolve` backend its address.
    pub fn same_backend(&self, other: &BackendConfig) -> bool {
        self.pool == other.pool
            && self.url == other.url
            && (self.resolve.is_none() || self.addr == other.addr)
    }

    /// What the sticky cookie's value hashes, besides the pool: the URL, and for one address of a
    /// `resolve` backend the address too (each is a backend of its own).
    pub fn sticky_name(&self) -> std::borrow::Cow<'_, str> {
        match self.resolve {
            None => self.url.as_str().into(),
            Some(_) => format!("{} {}", self.url, self.addr).into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    #[serde(deserialize_with = "backend_url")]
    url: BackendUrl,
    #[serde(default = "default_capacity", deserialize_with = "at_least_one")]
    capacity: u32,
    #[serde(default, deserialize_with = "optional_at_least_one")]
    max_connections: Option<u32>,
    #[serde(default, deserialize_with = "optional_url_path")]
    health_check_url: Option<String>,
    #[serde(default, deserialize_with = "optional_positive_duration")]
    health_check_period: Option<Duration>,
    #[serde(default)]
    tls_ca: Option<PathBuf>,
    #[serde(default)]
    tls_server_name: Option<String>,
    #[serde(default)]
    tls_verify: Option<bool>,
    #[serde(default, deserialize_with = "optional_positive_duration")]
    resolve: Option<Duration>,
}

/// The backend at `key` (`backends[2]`, `pools[0].backends[1]`) as configured, checked against the
/// ones before it in its pool (`earlier`).
pub(super) fn backend_config(
    key: &str,
    b: RawBackend,
    health_check: &HealthCheck,
    earlier: &[BackendConfig],
    base: &Path,
    system_roots: &mut Option<rustls::RootCertStore>,
    warnings: &mut Vec<String>,
) -> Result<BackendConfig, ConfigError> {
    let invalid = |suffix: &str, message| ConfigError::Invalid {
        key: format!("{key}.{suffix}"),
        message,
    };
    // A `resolve` backend's addresses come from DNS in the loop, not from the system resolver now.
    let (addr, resolve) = match b.resolve {
        Some(interval) => (
            SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), b.url.port),
            Some(dns::resolve(&b.url.host, interval).map_err(|m| invalid("resolve", m))?),
        ),
        None => (
            resolve(&b.url.host, b.url.port).map_err(|m| invalid("url", m))?,
            None,
        ),
    };
    let url = b.url.text.trim_end_matches('/').to_string();
    // `backends[3]` -> `backends`: the list the earlier entries are named in.
    let list = key.rsplit_once('[').map_or(key, |(list, _)| list);
    if let Some(first) = earlier.iter().position(|o| o.url == url) {
        // A backend is known by its pool and URL (statistics, reloads, the admin API's changes).
        return Err(ConfigError::Invalid {
            key: format!("{key}.url"),
            message: format!(
                "{url} is already {list}[{first}]: list it once, with the combined capacity"
            ),
        });
    }
    if let Some(first) = earlier
        .iter()
        .position(|o| o.addr == addr && resolve.is_none() && o.resolve.is_none())
    {
        warnings.push(format!(
            "{key}.url ({url}) resolves to {addr}, as {list}[{first}] does: that server gets both shares"
        ));
    }
    let interval = b.health_check_period.unwrap_or(health_check.interval);
    if b.health_check_period.is_some() && health_check.timeout > interval {
        warnings.push(format!(
            "{key}.health_check_period ({interval:?}) is shorter than health_check.timeout ({:?}): its probes time out after {interval:?}",
            health_check.timeout
        ));
    }
    let tls_keys = tls::BackendTlsKeys {
        ca: b.tls_ca,
        server_name: b.tls_server_name,
        verify: b.tls_verify,
    };
    let tls = tls::backend(key, &b.url, tls_keys, base, system_roots, warnings)?;
    Ok(BackendConfig {
        pool: routing::DEFAULT_POOL.to_string(),
        url,
        authority: b.url.authority,
        addr,
        capacity: b.capacity,
        max_connections: b.max_connections.unwrap_or(0),
        health_check_path: b
            .health_check_url
            .unwrap_or_else(|| health_check.path.clone()),
        health_check_interval: interval,
        health_check_timeout: health_check.timeout.min(interval),
        tls,
        resolve,
    })
}

/// Resolves a host once; IPv4 answers are preferred because backends are usually dual-stack names
/// like `localhost` whose services listen on IPv4.
fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host {host:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("host {host:?} resolved to no address"))
}
