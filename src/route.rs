//! Routing: which pool serves a request, from its host and path. Routes are tried in configuration
//! order and the first match wins; a request no route matches goes to the default pool (the top-level
//! `[[backends]]`), or gets 404 when there is none. Pure: no sockets, built once per (re)load.
//!
//! A host pattern is compared without the request's port and without regard to case: `api.example.com`
//! matches exactly, `*.example.com` matches one or more labels before `.example.com` (not the bare
//! `example.com`). A path prefix is compared with the path before the query, byte for byte.

use std::fmt;

/// A host pattern, kept lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(Box<[u8]>),
    /// `*.example.com`, kept as `.example.com`.
    Wildcard(Box<[u8]>),
}

impl HostPattern {
    /// Parses a route's `host`: a DNS name, or `*.` and a DNS name. The error says what is wrong.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let lower = text.to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(format!(
                "invalid host {text:?}: expected a DNS name like \"api.example.com\" or \"*.example.com\" (no port)"
            ));
        }
        Ok(if wildcard {
            HostPattern::Wildcard(format!(".{name}").into_bytes().into())
        } else {
            HostPattern::Exact(name.as_bytes().into())
        })
    }

    /// Whether `host` (lowercase, without its port) matches.
    fn matches(&self, host: &[u8]) -> bool {
        match self {
            HostPattern::Exact(name) => host == &name[..],
            HostPattern::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => write!(f, "{}", String::from_utf8_lossy(name)),
            HostPattern::Wildcard(suffix) => write!(f, "*{}", String::from_utf8_lossy(suffix)),
        }
    }
}

/// One route: what it matches, and where the request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub host: Option<HostPattern>,
    pub path_prefix: Option<Box<[u8]>>,
    /// The pool's index in the configuration's pool list.
    pub pool: usize,
    pub strip_path_prefix: bool,
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    pub pool: usize,
    /// Bytes of the path to drop before it reaches the backend (`strip_path_prefix`).
    pub strip: usize,
}

/// The routes of one configuration, and its default pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Router {
    pub routes: Vec<Route>,
    pub default_pool: Option<usize>,
}

/// The longest host name compared; longer ones match no host pattern (DNS names stop at 253).
const MAX_HOST: usize = 256;

impl Router {
    /// The pool for a request to `host` (the `Host` field or an absolute-form target's authority, with
    /// any port) and `target` (origin-form: a path and maybe a query). `None`: no route matches and
    /// there is no default pool (404).
    pub fn route(&self, host: Option<&[u8]>, target: &[u8]) -> Option<Routed> {
        if self.routes.is_empty() {
            return self.default_pool.map(|pool| Routed { pool, strip: 0 });
        }
        let mut lower = [0u8; MAX_HOST];
        let host = host.map(strip_port).and_then(|h| {
            let out = lower.get_mut(..h.len())?;
            for (o, b) in out.iter_mut().zip(h) {
                *o = b.to_ascii_lowercase();
            }
            // A fully qualified name's trailing dot names the same host.
            Some(out.strip_suffix(b".").unwrap_or(out) as &[u8])
        });
        let path = match target.iter().position(|&b| b == b'?') {
            Some(query) => &target[..query],
            None => target,
        };
        for route in &self.routes {
            if let Some(pattern) = &route.host
                && !host.is_some_and(|h| pattern.matches(h))
            {
                continue;
            }
            if let Some(prefix) = &route.path_prefix
                && !path.starts_with(prefix)
            {
                continue;
            }
            let strip = match (&route.path_prefix, route.strip_path_prefix) {
                (Some(prefix), true) => prefix.len(),
                _ => 0,
            };
            return Some(Routed {
                pool: route.pool,
                strip,
            });
        }
        self.default_pool.map(|pool| Routed { pool, strip: 0 })
    }
}

/// `host[:port]` or `[v6]:port` without the port.
fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, prefix: Option<&str>, pool: usize, strip: bool) -> Route {
        Route {
            host: host.map(|h| HostPattern::parse(h).unwrap()),
            path_prefix: prefix.map(|p| p.as_bytes().into()),
            pool,
            strip_path_prefix: strip,
        }
    }

    fn router() -> Router {
        Router {
            routes: vec![
                route(Some("api.example.com"), Some("/v2/"), 3, true),
                route(Some("api.example.com"), None, 1, false),
                route(Some("*.static.example.com"), None, 2, false),
                route(None, Some("/static/"), 2, false),
            ],
            default_pool: Some(0),
        }
    }

    #[test]
    fn the_first_matching_route_wins() {
        let r = router();
        // (host, target, (pool, bytes stripped))
        type Case<'a> = (Option<&'a str>, &'a str, Option<(usize, usize)>);
        let cases: &[Case] = &[
            (Some("api.example.com"), "/users", Some((1, 0))),
            (Some("API.Example.COM:8443"), "/users", Some((1, 0))),
            (Some("api.example.com."), "/users", Some((1, 0))),
            (Some("api.example.com"), "/v2/users?x=/v2/", Some((3, 4))),
            (Some("api.example.com"), "/v2", Some((1, 0))),
            (Some("api.example.com"), "/x?/v2/", Some((1, 0))),
            (Some("img.static.example.com"), "/a", Some((2, 0))),
            (Some("a.b.static.example.com"), "/a", Some((2, 0))),
            (Some("static.example.com"), "/a", Some((0, 0))),
            (Some("xstatic.example.com"), "/a", Some((0, 0))),
            (Some("other"), "/static/app.js", Some((2, 0))),
            (None, "/static/app.js", Some((2, 0))),
            (None, "/", Some((0, 0))),
            (Some("[::1]:8080"), "/", Some((0, 0))),
            (Some("api.example.com.evil"), "/", Some((0, 0))),
        ];
        for &(host, target, expected) in cases {
            let got = r
                .route(host.map(str::as_bytes), target.as_bytes())
                .map(|r| (r.pool, r.strip));
            assert_eq!(got, expected, "{host:?} {target}");
        }
    }

    #[test]
    fn no_route_and_no_default_is_none() {
        let mut r = router();
        r.default_pool = None;
        assert_eq!(r.route(Some(b"nowhere"), b"/"), None);
        assert_eq!(
            r.route(Some(b"api.example.com"), b"/").map(|r| r.pool),
            Some(1)
        );
        let empty = Router::default();
        assert_eq!(empty.route(Some(b"h"), b"/"), None);
        let only_default = Router {
            routes: Vec::new(),
            default_pool: Some(0),
        };
        assert_eq!(
            only_default.route(None, b"/"),
            Some(Routed { pool: 0, strip: 0 })
        );
    }

    #[test]
    fn host_patterns_parse_or_say_why() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("api.example.com", Ok("api.example.com")),
            ("API.Example.com", Ok("api.example.com")),
            ("*.example.com", Ok("*.example.com")),
            ("localhost", Ok("localhost")),
            ("", Err("invalid host")),
            ("*.", Err("invalid host")),
            ("a..b", Err("invalid host")),
            ("api.example.com:80", Err("no port")),
            ("a.*.com", Err("invalid host")),
            ("**.com", Err("invalid host")),
        ];
        for &(text, expected) in cases {
            match (HostPattern::parse(text), expected) {
                (Ok(p), Ok(shown)) => assert_eq!(p.to_string(), shown, "{text}"),
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn an_overlong_host_matches_no_pattern() {
        let r = router();
        let long = format!("{}.api.example.com", "a".repeat(300));
        assert_eq!(
            r.route(Some(long.as_bytes()), b"/").map(|r| r.pool),
            Some(0)
        );
    }
}
