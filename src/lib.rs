//! `lb`: an HTTP/1.1 load balancer built as edge-triggered `mio` event loops — one per worker thread,
//! `workers` of them in one process — with a thread-per-connection engine built from the same parts
//! for comparison.
//!
//! The layers, from pure to socket-owning (dependencies point one way, down this list):
//! - [`config`]: `lb.toml`, validated, with backend addresses resolved once at load time;
//! - [`http`]: request/response head parsing, validation and rewriting, body framing, canned errors;
//! - [`buffer`]: pooled byte buffers (bounded memory per connection, blocks returned by ownership);
//! - [`random`], [`timer`]: the one random generator; deadlines with lazy cancellation;
//! - [`health`]: rise/fall hysteresis, probe request and verdict;
//! - [`dns`]: DNS discovery — the A/AAAA lookups of `resolve` backends as a state machine without
//!   I/O, and the backends their answers stand for;
//! - [`counter`], [`histogram`]: counters and response-time histograms in atomics, written with a
//!   plain load and store where one thread owns them (an event-loop worker's tally);
//! - [`balance`]: backends (configuration plus live state in atomics, request figures in one tally
//!   per worker), the algorithms, reloads;
//! - [`exchange`]: the policy of one client connection as a state machine without I/O — events in
//!   (bytes arrived or written, EOF, connected, timeout), actions out (connect, pool, close) —
//!   with the retry, reuse and close policies ([`exchange::policy`]) and the access log;
//! - [`tls`]: certificates, keys and rustls configurations built at load time, certificate choice by
//!   SNI, and the TLS session drivers read and write through;
//! - [`discovery`]: DNS discovery's UDP sockets, for both engines;
//! - [`transport`], [`io`]: the byte streams drivers move data over (plain TCP or TLS), and the
//!   read/write primitives;
//! - [`admin`]: the admin API (stats JSON, Prometheus metrics, dashboard, runtime changes) as a pure
//!   function of a request and the balancer's state;
//! - [`reload`], [`listen`], [`control`], [`fault`]: what both engines share around the exchange —
//!   applying a new configuration, binding listeners, being steered from other threads, containing
//!   panics;
//! - [`workers`]: what the event-loop workers share besides the backends (the process's client count,
//!   each worker's figures), in atomics;
//! - [`server`]: the event-loop driver (one `mio::Poll` per worker, owning that worker's sockets);
//! - [`threaded`]: the thread-per-connection driver.
//!
//! The flow of one request: accept → read head (httparse) → validate → pick backend → pooled idle
//! connection or connect → write the rewritten head and stream the body → read the response head →
//! relay the body (Content-Length, chunked or until close) → keep-alive: the client goes back to reading
//! a head (a pipelined request first), the backend connection back to its pool.

pub mod admin;
pub mod balance;
pub mod buffer;
pub mod config;
pub mod control;
pub mod counter;
pub mod discovery;
pub mod dns;
pub mod exchange;
pub mod fault;
pub mod health;
pub mod histogram;
pub mod history;
pub mod http;
pub mod io;
pub mod limit;
pub mod listen;
pub mod proxy_protocol;
pub mod random;
pub mod reload;
pub mod route;
pub mod server;
pub mod sticky;
pub mod threaded;
pub mod timer;
pub mod tls;
pub mod transport;
pub mod workers;

use config::{Config, Engine};
use std::path::Path;

/// Runs the configured engine until it is stopped by SIGTERM/SIGINT (after draining). SIGHUP reloads
/// `config_path`.
pub fn run(config: Config, config_path: &Path) -> std::io::Result<()> {
    match config.engine {
        Engine::EventLoop => {
            let mut server = server::Server::bind(config.clone())?;
            server.handle_signals(config_path.to_path_buf())?;
            log_start(
                &config,
                server.local_addr(),
                server.tls_addr(),
                server.admin_addr(),
            );
            server.run()
        }
        Engine::Threaded => {
            if config.workers > 1 {
                log::warn!(
                    "workers = {} is ignored by the threaded engine (a thread per connection)",
                    config.workers
                );
            }
            let mut engine = threaded::Threaded::bind(config.clone())?;
            engine.handle_signals(config_path.to_path_buf())?;
            log_start(
                &config,
                engine.local_addr(),
                engine.tls_addr(),
                engine.admin_addr(),
            );
            engine.run()
        }
    }
}

fn log_start(
    config: &Config,
    listen: std::net::SocketAddr,
    tls: Option<std::net::SocketAddr>,
    admin: Option<std::net::SocketAddr>,
) {
    config.log_warnings();
    let urls: Vec<&str> = config.backends.iter().map(|b| b.url.as_str()).collect();
    let workers = match config.engine {
        Engine::EventLoop if config.workers > 1 => format!(
            ", {} workers on {}",
            config.workers,
            if config.reuse_port {
                "a SO_REUSEPORT listener each"
            } else {
                "one shared listener"
            }
        ),
        _ => String::new(),
    };
    log::info!(
        "lb {} listening on {listen} (engine {}{workers}, algorithm {}, {} backends: {})",
        env!("CARGO_PKG_VERSION"),
        config.engine.name(),
        config.algorithm.name(),
        urls.len(),
        urls.join(", ")
    );
    if config.pools.len() > 1 || !config.router.routes.is_empty() {
        let pools: Vec<String> = config
            .pools
            .iter()
            .map(|p| {
                format!(
                    "{} ({} backends, {})",
                    p.name,
                    p.backends.len(),
                    p.algorithm.name()
                )
            })
            .collect();
        log::info!(
            "pools: {}; {} routes{}",
            pools.join(", "),
            config.router.routes.len(),
            if config.router.default_pool.is_none() {
                "; no default pool: unrouted requests get 404"
            } else {
                ""
            }
        );
    }
    if let (Some(addr), Some(settings)) = (tls, &config.tls) {
        log::info!(
            "HTTPS on {addr} (TLS {}+, plain HTTP {})",
            settings.min_version.name(),
            if settings.redirect_http {
                "redirected to HTTPS"
            } else {
                "served too"
            }
        );
        for line in settings.describe() {
            log::info!("TLS {line}");
        }
    }
    if let Some(admin) = admin {
        log::info!("admin API and dashboard on http://{admin}/");
    }
}
