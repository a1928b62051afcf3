//! The `lb.toml` configuration: serde structures and every validation rule (the value syntaxes are in
//! `values.rs`), with error messages that name the offending key (and its line, where the TOML parser
//! knows it). Backend host names are resolved here, once, so that the event loop never performs a DNS
//! lookup.

mod backend;
mod dns;
mod limits;
mod routing;
mod tls;
mod values;

pub use crate::route::Router;
pub use backend::BackendConfig;
use backend::{RawBackend, backend_config};
pub use dns::{Dns, MAX_NAMESERVERS, Resolve};
pub use routing::{DEFAULT_POOL, Pool};
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;
pub use tls::{BackendTls, TlsListener};
pub use values::{BackendUrl, parse_backend_url, parse_duration};
use values::{at_least_one, positive_duration, positive_usize, socket_addr, url_path, workers};

/// How a backend is chosen for each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    LeastLatency,
    PowerOfTwo,
    Random,
    IpHash,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::WeightedRoundRobin => "weighted_round_robin",
            Algorithm::LeastConnections => "least_connections",
            Algorithm::LeastLatency => "least_latency",
            Algorithm::PowerOfTwo => "power_of_two",
            Algorithm::Random => "random",
            Algorithm::IpHash => "ip_hash",
        }
    }
}

/// Which proxy engine runs the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    EventLoop,
    Threaded,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::EventLoop => "event_loop",
            Engine::Threaded => "threaded",
        }
    }
}

impl FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "event_loop" => Ok(Engine::EventLoop),
            "threaded" => Ok(Engine::Threaded),
            other => Err(format!(
                "unknown engine {other:?}, expected \"event_loop\" or \"threaded\""
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn to_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub algorithm: Algorithm,
    pub engine: Engine,
    /// Event loops serving clients (`"auto"` resolved to the CPU count); the threaded engine has none.
    pub workers: usize,
    /// With several workers: a SO_REUSEPORT listener per worker instead of one shared listener.
    pub reuse_port: bool,
    /// Every client connection starts with a PROXY protocol header (v1 or v2) naming the client.
    pub proxy_protocol: bool,
    pub max_connections: usize,
    pub retries: u32,
    pub log_level: LogLevel,
    pub access_log: bool,
    pub access_log_format: AccessLogFormat,
    pub timeouts: Timeouts,
    pub health_check: HealthCheck,
    pub admin: Option<Admin>,
    /// The HTTPS listener, when `[tls]` is present.
    pub tls: Option<TlsListener>,
    /// Every backend of every pool: the default pool's first, then each `[[pools]]` entry's, in
    /// configuration order. Their positions are the admin API's indexes.
    pub backends: Vec<BackendConfig>,
    /// The pools, the default (the top-level `[[backends]]`) first when there is one.
    pub pools: Vec<Pool>,
    /// Which pool serves a request.
    pub router: Router,
    /// Per-client limits (`[limits]`); zeros are no limit.
    pub limits: crate::limit::Settings,
    /// Where requests wait when every backend of their pool is at its `max_connections`.
    pub queue: Queue,
    /// How `resolve` backends' names are looked up.
    pub dns: Dns,
    /// Settings that work but probably not as the operator meant, each naming its keys: logged at
    /// start and on reload, printed by `--check`.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    #[serde(deserialize_with = "positive_duration")]
    pub connect: Duration,
    #[serde(deserialize_with = "positive_duration")]
    pub request_head: Duration,
    #[serde(deserialize_with = "positive_duration")]
    pub idle: Duration,
    #[serde(deserialize_with = "positive_duration")]
    pub response: Duration,
    #[serde(deserialize_with = "positive_duration")]
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(2),
            request_head: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            response: Duration::from_secs(30),
            drain: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    #[serde(deserialize_with = "url_path")]
    pub path: String,
    #[serde(deserialize_with = "positive_duration")]
    pub interval: Duration,
    #[serde(deserialize_with = "positive_duration")]
    pub timeout: Duration,
    #[serde(deserialize_with = "at_least_one")]
    pub rise: u32,
    #[serde(deserialize_with = "at_least_one")]
    pub fall: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: "/health".to_string(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        }
    }
}

/// How access log lines are written (`access_log_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// Apache's and nginx's "combined" format.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}

/// `[queue]`: per pool, how many requests may wait for a backend with room, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Queue {
    #[serde(deserialize_with = "positive_usize")]
    pub size: usize,
    #[serde(deserialize_with = "positive_duration")]
    pub timeout: Duration,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            size: 1000,
            timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_listen", deserialize_with = "socket_addr")]
    listen: SocketAddr,
    #[serde(default = "default_algorithm")]
    algorithm: Algorithm,
    #[serde(default = "default_engine")]
    engine: Engine,
    #[serde(default = "default_workers", deserialize_with = "workers")]
    workers: usize,
    #[serde(default)]
    reuse_port: bool,
    #[serde(default)]
    proxy_protocol: bool,
    #[serde(
        default = "default_max_connections",
        deserialize_with = "positive_usize"
    )]
    max_connections: usize,
    #[serde(default = "default_retries")]
    retries: u32,
    #[serde(default = "default_log_level")]
    log_level: LogLevel,
    #[serde(default = "default_true")]
    access_log: bool,
    #[serde(default)]
    access_log_format: AccessLogFormat,
    #[serde(default)]
    timeouts: Timeouts,
    #[serde(default)]
    health_check: HealthCheck,
    #[serde(default)]
    admin: Option<Admin>,
    #[serde(default)]
    tls: Option<tls::RawTls>,
    #[serde(default)]
    backends: Vec<RawBackend>,
    #[serde(default)]
    limits: Option<limits::RawLimits>,
    #[serde(default)]
    queue: Queue,
    #[serde(default)]
    pools: Vec<routing::RawPool>,
    #[serde(default)]
    routes: Vec<routing::RawRoute>,
    #[serde(default)]
    dns: Option<dns::RawDns>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_algorithm() -> Algorithm {
    Algorithm::RoundRobin
}
fn default_engine() -> Engine {
    Engine::EventLoop
}
fn default_workers() -> usize {
    1
}
fn default_max_connections() -> usize {
    10_000
}
fn default_retries() -> u32 {
    2
}
fn default_log_level() -> LogLevel {
    LogLevel::Info
}
fn default_true() -> bool {
    true
}
fn default_capacity() -> u32 {
    1
}

/// A configuration that could not be loaded. The message always names the key (or the file) at fault.
#[derive(Debug)]
pub enum ConfigError {
    Read {
        path: String,
        error: std::io::Error,
    },
    /// TOML syntax or a value rejected while deserializing; the parser's message carries line and column.
    Parse {
        path: String,
        message: String,
    },
    /// A rule that spans keys, or a lookup done after parsing.
    Invalid {
        key: String,
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, error } => {
                write!(f, "cannot read config file {path}: {error}")
            }
            ConfigError::Parse { path, message } => {
                write!(f, "invalid config file {path}: {}", message.trim_end())
            }
            ConfigError::Invalid { key, message } => write!(f, "invalid config: {key}: {message}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads, parses, validates and resolves a configuration file. Relative paths in it (certificates,
    /// keys, CAs) are taken from the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: display.clone(),
            error,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse_named(&text, &display, base)
    }

    /// Logs each of [`Config::warnings`] at warn level.
    pub fn log_warnings(&self) {
        for warning in &self.warnings {
            log::warn!("config: {warning}");
        }
    }

    /// Parses configuration text; relative paths are taken from the current folder.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_named(text, "<config>", Path::new("."))
    }

    fn parse_named(text: &str, name: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: name.to_string(),
            message: e.to_string(),
        })?;
        let mut warnings = Vec::new();
        if raw.health_check.timeout > raw.health_check.interval {
            warnings.push(format!(
                "health_check.timeout ({:?}) is longer than health_check.interval ({:?}): probes time out after {:?}",
                raw.health_check.timeout, raw.health_check.interval, raw.health_check.interval
            ));
        }
        check_listeners(&raw)?;
        let tls = match raw.tls {
            Some(raw_tls) => Some(tls::listener(raw_tls, base)?),
            None => None,
        };
        let limits = limits::settings(raw.limits)?;
        let mut system_roots = None;
        let routing = routing::routing(
            raw.backends,
            raw.algorithm,
            &raw.health_check,
            raw.pools,
            raw.routes,
            |key, b, health, pool_so_far| {
                backend_config(
                    key,
                    b,
                    health,
                    pool_so_far,
                    base,
                    &mut system_roots,
                    &mut warnings,
                )
            },
        )?;
        let resolving = routing.backends.iter().any(|b| b.resolve.is_some());
        let dns = dns::settings(raw.dns, resolving, dns::resolv_conf())?;
        Ok(Config {
            listen: raw.listen,
            algorithm: raw.algorithm,
            engine: raw.engine,
            workers: raw.workers,
            reuse_port: raw.reuse_port,
            proxy_protocol: raw.proxy_protocol,
            max_connections: raw.max_connections,
            retries: raw.retries,
            log_level: raw.log_level,
            access_log: raw.access_log,
            access_log_format: raw.access_log_format,
            timeouts: raw.timeouts,
            health_check: raw.health_check,
            admin: raw.admin,
            tls,
            backends: routing.backends,
            pools: routing.pools,
            router: routing.router,
            limits,
            queue: raw.queue,
            dns,
            warnings,
        })
    }
}

/// The listeners need addresses of their own.
fn check_listeners(raw: &RawConfig) -> Result<(), ConfigError> {
    let admin = raw.admin.as_ref().map(|a| a.listen);
    let tls = raw.tls.as_ref().map(|t| t.listen());
    let clashes = [
        ("admin.listen", admin, Some(raw.listen), "`listen`"),
        ("tls.listen", tls, Some(raw.listen), "`listen`"),
        ("tls.listen", tls, admin, "`admin.listen`"),
    ];
    for (key, addr, other, other_name) in clashes {
        if let (Some(addr), Some(other)) = (addr, other)
            && addr == other
            && addr.port() != 0
        {
            return Err(ConfigError::Invalid {
                key: key.into(),
                message: format!("{addr} is also {other_name}: the two need different addresses"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[[backends]]\nurl = \"http://127.0.0.1:8001\"\n";

    #[test]
    fn durations() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("250ms", Some(Duration::from_millis(250))),
            ("5s", Some(Duration::from_secs(5))),
            ("1m", Some(Duration::from_secs(60))),
            ("2h", Some(Duration::from_secs(7200))),
            ("3", Some(Duration::from_secs(3))),
            ("1.5", Some(Duration::from_millis(1500))),
            ("0.5s", Some(Duration::from_millis(500))),
            (" 7s ", Some(Duration::from_secs(7))),
            ("0", Some(Duration::ZERO)),
            ("", None),
            ("s", None),
            ("5x", None),
            ("-5s", None),
            ("1.s", None),
            (".5s", None),
            ("1..2s", None),
            ("5 s", Some(Duration::from_secs(5))),
            ("99999999999h", None),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse_duration(text).ok(),
                *expected,
                "parse_duration({text:?})"
            );
        }
    }

    #[test]
    fn backend_urls() {
        let ok: &[(&str, &str, u16)] = &[
            ("http://127.0.0.1:8001", "127.0.0.1", 8001),
            ("http://127.0.0.1:8001/", "127.0.0.1", 8001),
            ("http://localhost", "localhost", 80),
            ("http://[::1]:9000", "::1", 9000),
            ("http://[::1]", "::1", 80),
            ("http://app.internal:81/", "app.internal", 81),
            ("https://127.0.0.1:8001", "127.0.0.1", 8001),
            ("https://app.internal", "app.internal", 443),
        ];
        for (text, host, port) in ok {
            let url = parse_backend_url(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((url.host.as_str(), url.port), (*host, *port), "{text}");
        }
        let bad = [
            "127.0.0.1:8001",
            "https://",
            "https://host:80/api",
            "http://",
            "http://:80",
            "http://host:0",
            "http://host:99999",
            "http://host:8a",
            "http://host:+80",
            "http://host:80/api",
            "http://host:80?x",
            "http://user@host:80",
            "http://[::1:80",
            "http://[::1]x",
            "ftp://host:21",
        ];
        for text in bad {
            assert!(
                parse_backend_url(text).is_err(),
                "{text} should be rejected"
            );
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = Config::parse(MINIMAL).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.algorithm, Algorithm::RoundRobin);
        assert_eq!(config.engine, Engine::EventLoop);
        assert_eq!(config.max_connections, 10_000);
        assert_eq!(config.workers, 1);
        assert_eq!(config.retries, 2);
        assert!(config.access_log);
        assert_eq!(config.timeouts, Timeouts::default());
        assert_eq!(config.health_check, HealthCheck::default());
        assert!(config.admin.is_none());
        assert_eq!(config.backends.len(), 1);
        let backend = &config.backends[0];
        assert_eq!(backend.capacity, 1);
        assert_eq!(backend.health_check_path, "/health");
        assert_eq!(backend.health_check_interval, Duration::from_secs(2));
        assert_eq!(backend.addr, "127.0.0.1:8001".parse().unwrap());
    }

    #[test]
    fn auto_workers_is_one_per_cpu() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let config = Config::parse(&format!("workers = \"auto\"\n{MINIMAL}")).unwrap();
        assert_eq!(config.workers, cpus.min(crate::workers::MAX_WORKERS));
    }

    #[test]
    fn shipped_config_parses() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/lb.toml")).unwrap();
        let config = Config::parse(&text).unwrap();
        assert_eq!(config.backends.len(), 2);
        assert!(config.admin.is_some());
    }

    #[test]
    fn full_config() {
        let text = r#"
listen = "0.0.0.0:80"
algorithm = "least_connections"
engine = "threaded"
workers = 3
max_connections = 500
retries = 0
log_level = "debug"
access_log = false
[timeouts]
connect = "250ms"
request_head = 3
idle = "1m"
response = 2.5
drain = "10s"
[health_check]
path = "/ping"
interval = "5s"
timeout = "1s"
rise = 1
fall = 5
[admin]
listen = "127.0.0.1:9999"
token = "s3cret"
[[backends]]
url = "http://127.0.0.1:8001"
capacity = 5
health_check_url = "/status"
health_check_period = "10s"
[[backends]]
url = "http://localhost:8002/"
"#;
        let config = Config::parse(text).unwrap();
        assert_eq!(config.algorithm, Algorithm::LeastConnections);
        assert_eq!(config.engine, Engine::Threaded);
        assert_eq!(config.max_connections, 500);
        assert_eq!(config.workers, 3);
        assert_eq!(config.retries, 0);
        assert_eq!(config.log_level, LogLevel::Debug);
        assert!(!config.access_log);
        assert_eq!(config.timeouts.connect, Duration::from_millis(250));
        assert_eq!(config.timeouts.request_head, Duration::from_secs(3));
        assert_eq!(config.timeouts.response, Duration::from_millis(2500));
        assert_eq!(config.health_check.fall, 5);
        assert_eq!(
            config.admin.as_ref().unwrap().token.as_deref(),
            Some("s3cret")
        );
        assert_eq!(config.backends[0].capacity, 5);
        assert_eq!(config.backends[0].health_check_path, "/status");
        assert_eq!(
            config.backends[0].health_check_interval,
            Duration::from_secs(10)
        );
        assert_eq!(config.backends[1].health_check_path, "/ping");
        assert_eq!(
            config.backends[1].health_check_interval,
            Duration::from_secs(5)
        );
        assert!(config.backends[1].addr.ip().is_loopback());
        assert_eq!(config.backends[1].authority, "localhost:8002");
    }

    #[test]
    fn settings_other_proxies_accept_are_accepted_with_a_warning() {
        let text = "[health_check]\ninterval = \"500ms\"\ntimeout = \"1s\"\n\
            [[backends]]\nurl = \"http://127.0.0.1:8001\"\n\
            [[backends]]\nurl = \"http://localhost:8001\"\nhealth_check_period = \"200ms\"\n\
            [[backends]]\nurl = \"http://127.0.0.1:8003\"\nhealth_check_period = \"5s\"\n";
        let config = Config::parse(text).unwrap_or_else(|e| panic!("{e}"));
        let timeouts: Vec<Duration> = config
            .backends
            .iter()
            .map(|b| b.health_check_timeout)
            .collect();
        assert_eq!(
            timeouts,
            [
                Duration::from_millis(500),
                Duration::from_millis(200),
                Duration::from_secs(1)
            ]
        );
        let warnings = config.warnings.join("\n");
        for needle in [
            "health_check.timeout (1s) is longer than health_check.interval (500ms): probes time out after 500ms",
            "backends[1].health_check_period (200ms) is shorter than health_check.timeout (1s)",
            "backends[1].url (http://localhost:8001) resolves to 127.0.0.1:8001, as backends[0] does",
        ] {
            assert!(warnings.contains(needle), "{needle:?} not in:\n{warnings}");
        }
        assert_eq!(config.warnings.len(), 3, "{warnings}");
        let quiet = Config::parse(MINIMAL).unwrap();
        assert!(quiet.warnings.is_empty());
        // Port 0 asks for any free port: the same spelling for both listeners is fine.
        let both_any =
            format!("listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{MINIMAL}");
        assert!(Config::parse(&both_any).is_ok());
    }

    #[test]
    fn errors_name_the_key() {
        let b = MINIMAL;
        // (config text, substrings the message must contain)
        let cases: Vec<(String, Vec<&str>)> = vec![
            ("listen = \"127.0.0.1:8080\"\n".to_string(), vec!["backends", "at least one"]),
            (format!("bogus = 1\n{b}"), vec!["bogus", "line 1"]),
            (format!("listen = \"nowhere\"\n{b}"), vec!["listen", "invalid address", "line 1"]),
            (format!("listen = \"127.0.0.1\"\n{b}"), vec!["listen", "IP:PORT"]),
            (format!("algorithm = \"fastest\"\n{b}"), vec!["algorithm", "fastest", "round_robin"]),
            (format!("engine = \"async\"\n{b}"), vec!["engine", "async"]),
            (format!("max_connections = 0\n{b}"), vec!["max_connections", "at least 1"]),
            (format!("workers = 0\n{b}"), vec!["workers", "out of range", "auto"]),
            (format!("workers = 1000\n{b}"), vec!["workers", "1 to 256"]),
            (format!("workers = \"all\"\n{b}"), vec!["workers", "all", "auto"]),
            (format!("workers = 1.5\n{b}"), vec!["workers"]),
            (format!("retries = -1\n{b}"), vec!["retries"]),
            (format!("log_level = \"loud\"\n{b}"), vec!["log_level", "loud"]),
            (format!("access_log = \"yes\"\n{b}"), vec!["access_log"]),
            (format!("access_log_format = \"apache\"\n{b}"), vec!["access_log_format", "apache", "combined"]),
            (format!("[timeouts]\nconnect = \"5x\"\n{b}"), vec!["connect", "5x", "line 2"]),
            (format!("[timeouts]\nidle = 0\n{b}"), vec!["idle", "greater than zero"]),
            (format!("[timeouts]\nrespons = \"1s\"\n{b}"), vec!["respons", "line 2"]),
            (format!("[health_check]\nrise = 0\n{b}"), vec!["rise", "line 2", "1"]),
            (format!("[health_check]\nfall = 0\n{b}"), vec!["fall"]),
            (format!("[health_check]\npath = \"health\"\n{b}"), vec!["path", "must start with '/'"]),
            (
                format!("listen = \"127.0.0.1:9000\"\n[admin]\nlisten = \"127.0.0.1:9000\"\n{b}"),
                vec!["admin.listen", "127.0.0.1:9000", "different"],
            ),
            ("[admin]\ntoken = \"x\"\n[[backends]]\nurl = \"http://127.0.0.1:1\"\n".to_string(), vec!["listen"]),
            ("[[backends]]\nurl = \"127.0.0.1:8001\"\n".to_string(), vec!["url", "http://host:port", "line 2"]),
            ("[[backends]]\nurl = \"http://127.0.0.1:8001/api\"\n".to_string(), vec!["url", "no path"]),
            ("[[backends]]\nurl = \"http://127.0.0.1:8001\"\ncapacity = 0\n".to_string(), vec!["capacity", "line 3"]),
            ("[[backends]]\nurl = \"http://127.0.0.1:8001\"\nweight = 2\n".to_string(), vec!["weight", "line 3"]),
            ("[[backends]]\ncapacity = 2\n".to_string(), vec!["url"]),
            (
                "[[backends]]\nurl = \"http://127.0.0.1:8001\"\nhealth_check_period = \"soon\"\n".to_string(),
                vec!["health_check_period", "soon"],
            ),
            (
                "[[backends]]\nurl = \"http://no-such-host.invalid:80\"\n".to_string(),
                vec!["backends[0].url", "cannot resolve"],
            ),
            (
                "[[backends]]\nurl = \"http://127.0.0.1:8001\"\n[[backends]]\nurl = \"http://127.0.0.1:8001/\"\n"
                    .to_string(),
                vec!["backends[1].url", "already backends[0]", "once"],
            ),
            ("listen = \n".to_string(), vec!["line 1"]),
        ];
        for (text, needles) in cases {
            let message = match Config::parse(&text) {
                Ok(_) => panic!("config should be rejected:\n{text}"),
                Err(e) => e.to_string(),
            };
            for needle in needles {
                assert!(
                    message.contains(needle),
                    "message for\n{text}\nlacks {needle:?}:\n{message}"
                );
            }
        }
    }
}
