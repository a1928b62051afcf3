//! Pools and routes in `lb.toml`: `[[pools]]` (a name, an algorithm, backends, a health-check default)
//! and `[[routes]]` (host and path prefix to a pool), validated into the flat backend list every other
//! part of lb indexes (the default pool's backends first, then each pool's in configuration order) and
//! a [`Router`].

use super::values::{optional_positive_duration, optional_url_path};
use super::{Algorithm, BackendConfig, ConfigError, HealthCheck, RawBackend};
use crate::route::{HostPattern, Route, Router};
use serde::Deserialize;
use std::ops::Range;
use std::time::Duration;

/// The name of the pool the top-level `[[backends]]` form.
pub const DEFAULT_POOL: &str = "default";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    name: String,
    #[serde(default)]
    algorithm: Option<Algorithm>,
    #[serde(default)]
    backends: Vec<RawBackend>,
    #[serde(default)]
    health_check: RawPoolHealth,
    #[serde(default)]
    sticky_cookie: Option<String>,
}

/// A pool's defaults for its backends' probes; the rest of `[health_check]` is process-wide.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPoolHealth {
    #[serde(default, deserialize_with = "optional_url_path")]
    path: Option<String>,
    #[serde(default, deserialize_with = "optional_positive_duration")]
    interval: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    path_prefix: Option<String>,
    pool: String,
    #[serde(default)]
    strip_path_prefix: bool,
}

/// One pool: its name, algorithm, and its backends' positions in `Config::backends`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub algorithm: Algorithm,
    pub backends: Range<usize>,
    /// The cookie that keeps a client on one backend of this pool (`sticky_cookie`).
    pub sticky_cookie: Option<String>,
}

/// What the pools and routes of a file come to.
pub(super) struct Routing {
    pub pools: Vec<Pool>,
    pub backends: Vec<BackendConfig>,
    pub router: Router,
}

/// The pools (the top-level backends as "default", then `[[pools]]`) with their backends built by
/// `build` (given the key to name in errors, the raw backend, its health-check defaults and the
/// backends of its pool so far), and the routes that lead to them.
/// A pool as configured, before its backends are built.
struct PoolSpec {
    name: String,
    /// The key its backends are named under in errors: `backends`, `pools[1].backends`.
    key: String,
    algorithm: Algorithm,
    /// Its backends' health-check defaults.
    health: HealthCheck,
    sticky_cookie: Option<String>,
    backends: Vec<RawBackend>,
}

pub(super) fn routing(
    top: Vec<RawBackend>,
    algorithm: Algorithm,
    health_check: &HealthCheck,
    raw_pools: Vec<RawPool>,
    raw_routes: Vec<RawRoute>,
    mut build: impl FnMut(
        &str,
        RawBackend,
        &HealthCheck,
        &[BackendConfig],
    ) -> Result<BackendConfig, ConfigError>,
) -> Result<Routing, ConfigError> {
    let mut specs = Vec::with_capacity(raw_pools.len() + 1);
    if !top.is_empty() {
        specs.push(PoolSpec {
            name: DEFAULT_POOL.to_string(),
            key: "backends".to_string(),
            algorithm,
            health: health_check.clone(),
            sticky_cookie: None,
            backends: top,
        });
    }
    for (i, raw) in raw_pools.into_iter().enumerate() {
        let spec = pool_spec(i, raw, algorithm, health_check, &specs)?;
        specs.push(spec);
    }
    // A [[pools]] entry named "default" (with no top-level backends) is the default pool, listed first.
    if let Some(at) = specs.iter().position(|s| s.name == DEFAULT_POOL) {
        let spec = specs.remove(at);
        specs.insert(0, spec);
    }
    let mut pools = Vec::with_capacity(specs.len());
    let mut backends: Vec<BackendConfig> = Vec::new();
    for spec in specs {
        let start = backends.len();
        for (i, b) in spec.backends.into_iter().enumerate() {
            let key = format!("{}[{i}]", spec.key);
            let backend = build(&key, b, &spec.health, &backends[start..])?;
            backends.push(BackendConfig {
                pool: spec.name.clone(),
                ..backend
            });
        }
        pools.push(Pool {
            name: spec.name,
            algorithm: spec.algorithm,
            backends: start..backends.len(),
            sticky_cookie: spec.sticky_cookie,
        });
    }
    if backends.is_empty() {
        return Err(ConfigError::Invalid {
            key: "backends".into(),
            message:
                "at least one backend is required: [[backends]] entries, or [[pools]] with backends"
                    .into(),
        });
    }
    let routes = raw_routes
        .into_iter()
        .enumerate()
        .map(|(i, r)| route(i, r, &pools))
        .collect::<Result<Vec<_>, _>>()?;
    let default_pool = pools.iter().position(|p| p.name == DEFAULT_POOL);
    Ok(Routing {
        pools,
        backends,
        router: Router {
            routes,
            default_pool,
        },
    })
}

/// The `[[pools]]` entry at `index`, checked against the pools before it (`earlier`).
fn pool_spec(
    index: usize,
    p: RawPool,
    algorithm: Algorithm,
    health_check: &HealthCheck,
    earlier: &[PoolSpec],
) -> Result<PoolSpec, ConfigError> {
    let key = format!("pools[{index}]");
    let invalid = |field: &str, message: String| ConfigError::Invalid {
        key: format!("{key}.{field}"),
        message,
    };
    if p.name.is_empty() {
        return Err(invalid("name", "a pool needs a name".into()));
    }
    if earlier.iter().any(|s| s.name == p.name) {
        let message = if p.name == DEFAULT_POOL {
            "\"default\" is the pool of the top-level [[backends]]: name this pool otherwise, or move its backends to the top level".to_string()
        } else {
            format!("{:?} is the name of an earlier pool", p.name)
        };
        return Err(invalid("name", message));
    }
    if p.backends.is_empty() {
        return Err(invalid(
            "backends",
            "a pool needs at least one backend".into(),
        ));
    }
    if let Some(cookie) = &p.sticky_cookie
        && !crate::sticky::valid_name(cookie)
    {
        return Err(invalid(
            "sticky_cookie",
            format!("{cookie:?} is not a cookie name: letters, digits and !#$%&'*+-.^_`|~ only"),
        ));
    }
    let mut health = health_check.clone();
    if let Some(path) = p.health_check.path {
        health.path = path;
    }
    if let Some(interval) = p.health_check.interval {
        health.interval = interval;
    }
    Ok(PoolSpec {
        name: p.name,
        key: format!("{key}.backends"),
        algorithm: p.algorithm.unwrap_or(algorithm),
        health,
        sticky_cookie: p.sticky_cookie,
        backends: p.backends,
    })
}

fn route(index: usize, raw: RawRoute, pools: &[Pool]) -> Result<Route, ConfigError> {
    let key = |field: &str| format!("routes[{index}].{field}");
    let invalid = |field: &str, message: String| ConfigError::Invalid {
        key: key(field),
        message,
    };
    let Some(pool) = pools.iter().position(|p| p.name == raw.pool) else {
        let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
        return Err(invalid(
            "pool",
            format!(
                "no pool is named {:?} (pools: {})",
                raw.pool,
                names.join(", ")
            ),
        ));
    };
    let host = match raw.host {
        Some(text) => Some(HostPattern::parse(&text).map_err(|m| invalid("host", m))?),
        None => None,
    };
    if let Some(prefix) = &raw.path_prefix
        && !prefix.starts_with('/')
    {
        return Err(invalid(
            "path_prefix",
            format!("invalid prefix {prefix:?}: must start with '/'"),
        ));
    }
    if raw.strip_path_prefix && raw.path_prefix.is_none() {
        return Err(invalid(
            "strip_path_prefix",
            "there is no path_prefix to strip".into(),
        ));
    }
    Ok(Route {
        host,
        path_prefix: raw.path_prefix.map(|p| p.into_bytes().into()),
        pool,
        strip_path_prefix: raw.strip_path_prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    const POOLS: &str = r#"
algorithm = "least_connections"
[health_check]
path = "/h"
interval = "3s"
[[backends]]
url = "http://127.0.0.1:9001"
[[pools]]
name = "api"
algorithm = "round_robin"
backends = [{ url = "http://127.0.0.1:9002", capacity = 2 }, { url = "http://127.0.0.1:9003" }]
health_check = { path = "/healthz", interval = "1s" }
[[pools]]
name = "static"
backends = [{ url = "http://127.0.0.1:9001" }]
[[routes]]
host = "api.example.com"
path_prefix = "/api/"
pool = "api"
strip_path_prefix = true
[[routes]]
path_prefix = "/static/"
pool = "static"
"#;

    #[test]
    fn pools_and_routes_become_a_flat_list_and_a_router() {
        let config = Config::parse(POOLS).unwrap();
        let names: Vec<(&str, Algorithm, Range<usize>)> = config
            .pools
            .iter()
            .map(|p| (p.name.as_str(), p.algorithm, p.backends.clone()))
            .collect();
        assert_eq!(
            names,
            [
                ("default", Algorithm::LeastConnections, 0..1),
                ("api", Algorithm::RoundRobin, 1..3),
                ("static", Algorithm::LeastConnections, 3..4),
            ]
        );
        let flat: Vec<(&str, &str, u32, &str, Duration)> = config
            .backends
            .iter()
            .map(|b| {
                (
                    b.pool.as_str(),
                    b.url.as_str(),
                    b.capacity,
                    b.health_check_path.as_str(),
                    b.health_check_interval,
                )
            })
            .collect();
        let s = Duration::from_secs;
        assert_eq!(
            flat,
            [
                ("default", "http://127.0.0.1:9001", 1, "/h", s(3)),
                ("api", "http://127.0.0.1:9002", 2, "/healthz", s(1)),
                ("api", "http://127.0.0.1:9003", 1, "/healthz", s(1)),
                ("static", "http://127.0.0.1:9001", 1, "/h", s(3)),
            ]
        );
        let r = &config.router;
        assert_eq!(r.default_pool, Some(0));
        let routed = |host: &str, target: &str| {
            r.route(Some(host.as_bytes()), target.as_bytes())
                .map(|r| (r.pool, r.strip))
        };
        assert_eq!(routed("api.example.com", "/api/v1"), Some((1, 5)));
        assert_eq!(routed("x", "/static/a.css"), Some((2, 0)));
        assert_eq!(routed("x", "/"), Some((0, 0)));
    }

    #[test]
    fn a_pool_named_default_is_the_default_and_comes_first() {
        let text = r#"
[[pools]]
name = "api"
backends = [{ url = "http://127.0.0.1:9002" }]
[[pools]]
name = "default"
backends = [{ url = "http://127.0.0.1:9001" }]
"#;
        let config = Config::parse(text).unwrap();
        assert_eq!(config.pools[0].name, "default");
        assert_eq!(config.backends[0].url, "http://127.0.0.1:9001");
        assert_eq!(config.router.default_pool, Some(0));
        // No default pool at all: unrouted requests get 404.
        let text = "[[pools]]\nname = \"api\"\nbackends = [{ url = \"http://127.0.0.1:9002\" }]\n";
        let config = Config::parse(text).unwrap();
        assert_eq!(config.router.default_pool, None);
        assert_eq!(config.router.route(None, b"/"), None);
    }

    #[test]
    fn errors_name_the_key() {
        let api = "[[pools]]\nname = \"api\"\nbackends = [{ url = \"http://127.0.0.1:9002\" }]\n";
        let top = "[[backends]]\nurl = \"http://127.0.0.1:9001\"\n";
        let cases: Vec<(String, Vec<&str>)> = vec![
            (
                "listen = \"127.0.0.1:8080\"\n".into(),
                vec!["backends", "at least one backend"],
            ),
            (
                format!("{top}[[routes]]\npool = \"nope\"\n"),
                vec!["routes[0].pool", "\"nope\"", "default"],
            ),
            (
                format!("{top}{api}{api}"),
                vec!["pools[1].name", "earlier pool"],
            ),
            (
                format!(
                    "{top}[[pools]]\nname = \"default\"\nbackends = [{{ url = \"http://127.0.0.1:9002\" }}]\n"
                ),
                vec!["pools[0].name", "top-level"],
            ),
            (
                format!("{top}[[pools]]\nname = \"\"\nbackends = []\n"),
                vec!["pools[0].name"],
            ),
            (
                format!("{top}[[pools]]\nname = \"x\"\n"),
                vec!["pools[0].backends", "at least one"],
            ),
            (
                format!("{top}{api}[[routes]]\npath_prefix = \"api\"\npool = \"api\"\n"),
                vec!["routes[0].path_prefix", "must start with '/'"],
            ),
            (
                format!(
                    "{top}{api}[[routes]]\nhost = \"a.b\"\npool = \"api\"\nstrip_path_prefix = true\n"
                ),
                vec!["routes[0].strip_path_prefix", "no path_prefix"],
            ),
            (
                format!("{top}{api}[[routes]]\nhost = \"a.b:80\"\npool = \"api\"\n"),
                vec!["routes[0].host", "no port"],
            ),
            (
                format!("{top}{api}[[routes]]\nhots = \"a.b\"\npool = \"api\"\n"),
                vec!["hots"],
            ),
            (
                format!(
                    "{top}[[pools]]\nname = \"p\"\nbackends = [{{ url = \"http://127.0.0.1:9002\" }}, {{ url = \"http://127.0.0.1:9002\" }}]\n"
                ),
                vec!["pools[0].backends[1].url", "already pools[0].backends[0]"],
            ),
            (
                format!(
                    "{top}[[pools]]\nname = \"p\"\nhealth_check = {{ path = \"x\" }}\nbackends = [{{ url = \"http://127.0.0.1:9002\" }}]\n"
                ),
                vec!["path", "must start with '/'"],
            ),
            (
                format!(
                    "{top}[[pools]]\nname = \"p\"\nsticky_cookie = \"a b\"\nbackends = [{{ url = \"http://127.0.0.1:9002\" }}]\n"
                ),
                vec!["pools[0].sticky_cookie", "not a cookie name"],
            ),
        ];
        for (text, needles) in cases {
            let message = Config::parse(&text).unwrap_err().to_string();
            for needle in needles {
                assert!(
                    message.contains(needle),
                    "{needle:?} in {message:?}\n{text}"
                );
            }
        }
        // The same URL in two pools is two backends.
        let text = format!(
            "{top}[[pools]]\nname = \"p\"\nbackends = [{{ url = \"http://127.0.0.1:9001\" }}]\n"
        );
        assert_eq!(Config::parse(&text).unwrap().backends.len(), 2);
    }
}
