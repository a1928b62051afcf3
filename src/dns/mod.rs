//! DNS discovery: a backend with `resolve = "5s"` stands for every A and AAAA address its URL's host
//! name has, asked of the `[dns]` nameservers at that interval. This module owns what that means
//! without touching a socket: the messages ([`message`]), the lookups and what their answers come to
//! ([`resolver`]), and [`expand`], which turns the configured backends and the last good answers into
//! the list of backends the balancer serves — one per address, each with statistics of its own, named
//! by its pool, URL and address. The engines' drivers send and receive the datagrams, and apply a
//! changed set through the same path a reload takes (`crate::reload`), so a removed address finishes
//! its in-flight requests as a backend dropped by a reload does.

pub mod message;
pub mod resolver;

pub use resolver::{Datagram, Report, Resolver, Target};

use crate::config::{BackendConfig, Config, Pool};
use std::net::{IpAddr, SocketAddr};

/// The backends the balancer serves and their pools (whose ranges index them): each configured
/// backend as it is, and in place of each `resolve` backend one backend per address `answers` gives
/// for it (none before its first answer).
pub fn expand<'a>(
    backends: &[BackendConfig],
    pools: &[Pool],
    answers: impl Fn(&BackendConfig) -> &'a [IpAddr],
) -> (Vec<BackendConfig>, Vec<Pool>) {
    let mut served = Vec::with_capacity(backends.len());
    let mut served_pools = Vec::with_capacity(pools.len());
    for pool in pools {
        let start = served.len();
        for backend in backends.get(pool.backends.clone()).unwrap_or(&[]) {
            if backend.resolve.is_none() {
                served.push(backend.clone());
                continue;
            }
            for &ip in answers(backend) {
                served.push(BackendConfig {
                    addr: SocketAddr::new(ip, backend.addr.port()),
                    ..backend.clone()
                });
            }
        }
        served_pools.push(Pool {
            backends: start..served.len(),
            ..pool.clone()
        });
    }
    (served, served_pools)
}

/// The names `config` asks to resolve.
pub fn targets(config: &Config) -> Vec<Target> {
    config
        .backends
        .iter()
        .filter_map(|b| {
            b.resolve.as_ref().map(|r| Target {
                pool: b.pool.clone(),
                url: b.url.clone(),
                host: r.host.clone(),
                interval: r.interval,
            })
        })
        .collect()
}

/// The log line for a lookup round's report.
pub fn describe(report: &Report) -> (log::Level, String) {
    let list = |ips: &[IpAddr]| {
        ips.iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match report {
        Report::Changed {
            target,
            added,
            removed,
        } => {
            let mut line = format!(
                "dns: {} ({}, pool {}):",
                target.host, target.url, target.pool
            );
            if !added.is_empty() {
                line += &format!(" added {}", list(added));
            }
            if !removed.is_empty() {
                line += &format!(
                    "{} removed {} (their in-flight requests finish)",
                    if added.is_empty() { "" } else { ";" },
                    list(removed)
                );
            }
            (log::Level::Info, line)
        }
        Report::Failed { target, why, kept } => (
            log::Level::Warn,
            format!(
                "dns: lookup of {} ({}, pool {}) failed: {why}; keeping the last {kept} addresses",
                target.host, target.url, target.pool
            ),
        ),
    }
}

#[cfg(test)]
mod tests;
