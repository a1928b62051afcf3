//! The admin API as a pure function of a request and the balancer's state: `GET /stats` (JSON),
//! `GET /metrics` (Prometheus text exposition), `GET /` (the dashboard), and the runtime changes
//! `PUT /backends/{index}/capacity` and `PUT /backends/{index}/enabled`. Authentication by bearer token
//! is checked here too. The event loop owns the admin sockets and calls [`handle`].

mod metrics;

pub use metrics::metrics_text;

use crate::balance::BackendSnapshot;
use serde::Serialize;

/// The dashboard: one self-contained page (no external assets) that polls `/stats`.
pub const DASHBOARD: &str = include_str!("../dashboard.html");

/// What the admin endpoint shows about the whole balancer.
#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    pub backends: Vec<BackendSnapshot>,
    /// Each pool's name and the requests waiting in its queue, in configuration order.
    pub pools: Vec<(String, usize)>,
    pub open_connections: usize,
    pub requests_per_second: f64,
    pub total_requests: u64,
    /// Panics contained at a connection's boundary since start.
    pub internal_errors: u64,
    /// TLS connections closed before their handshake finished.
    pub tls_handshake_failures: u64,
    pub uptime_seconds: f64,
    pub algorithm: &'static str,
    pub engine: &'static str,
    pub version: &'static str,
    /// Each event-loop worker's load (one entry for the threaded engine), to show imbalance.
    pub workers: Vec<WorkerLoad>,
    /// Requests refused for their rate (429), connections closed for their count, by `[limits]`.
    pub limit_rejections: LimitRejections,
    /// The last ten minutes, a sample a second.
    pub history: Vec<crate::history::Sample>,
    /// The last health transitions, oldest first.
    pub health_events: Vec<crate::history::HealthEvent>,
}

/// What `[limits]` refused since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LimitRejections {
    pub rate: u64,
    pub connections: u64,
}

impl LimitRejections {
    pub fn of(limits: &crate::limit::Limits) -> LimitRejections {
        let (rate, connections) = limits.refused();
        LimitRejections { rate, connections }
    }
}

/// One worker's share of the work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerLoad {
    pub requests: u64,
    pub open_connections: usize,
}

/// The engine-wide counters both engines keep.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub total_requests: u64,
    pub internal_errors: u64,
    pub tls_handshake_failures: u64,
    pub workers: Vec<WorkerLoad>,
    pub limit_rejections: LimitRejections,
    pub history: Vec<crate::history::Sample>,
}

impl Overview {
    /// Gathers the figures both engines report.
    pub fn collect(
        balancer: &crate::balance::Balancer,
        config: &crate::config::Config,
        open_connections: usize,
        requests_per_second: f64,
        counts: Counts,
        started: std::time::Instant,
    ) -> Overview {
        Overview {
            backends: balancer.snapshot(),
            pools: balancer.queues(),
            open_connections,
            requests_per_second,
            total_requests: counts.total_requests,
            internal_errors: counts.internal_errors,
            tls_handshake_failures: counts.tls_handshake_failures,
            uptime_seconds: started.elapsed().as_secs_f64(),
            algorithm: config.algorithm.name(),
            engine: config.engine.name(),
            version: env!("CARGO_PKG_VERSION"),
            workers: counts.workers,
            limit_rejections: counts.limit_rejections,
            history: counts.history,
            health_events: balancer.health_events(),
        }
    }
}

/// Logs a warning when the admin API listens beyond loopback without a token.
pub fn warn_if_exposed(bound: std::net::SocketAddr, token: Option<&str>) {
    if !bound.ip().is_loopback() && token.is_none() {
        log::warn!(
            "admin API on {bound} is reachable from the network and has no token: anyone who can connect \
             can change backends; set [admin] token"
        );
    }
}

/// The state the admin endpoint reads and changes.
pub trait AdminTarget {
    fn overview(&self) -> Overview;
    /// Sets a backend's capacity; `index` is the position in the configuration.
    fn set_capacity(&mut self, index: usize, capacity: u32) -> bool;
    /// Enables a backend, or disables it (drains: no new requests, in-flight ones finish).
    fn set_enabled(&mut self, index: usize, enabled: bool) -> bool;
}

pub struct AdminRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub authorization: Option<&'a [u8]>,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Extra header lines, each ending in CRLF.
    pub extra_headers: &'static str,
}

impl AdminResponse {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> AdminResponse {
        AdminResponse {
            status,
            content_type,
            body: body.into(),
            extra_headers: "",
        }
    }

    fn text(status: u16, message: &str) -> AdminResponse {
        AdminResponse::new(status, "text/plain; charset=utf-8", format!("{message}\n"))
    }

    fn json(body: String) -> AdminResponse {
        AdminResponse::new(200, "application/json", body)
    }

    pub fn reason(&self) -> &'static str {
        match self.status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            405 => "Method Not Allowed",
            413 => "Content Too Large",
            _ => "Error",
        }
    }

    /// The whole response as bytes.
    pub fn to_bytes(&self, keep_alive: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{}{}\r\n",
            self.status,
            self.reason(),
            self.content_type,
            self.body.len(),
            self.extra_headers,
            if keep_alive { "" } else { "Connection: close\r\n" }
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// Largest admin request (head and body) we read.
pub const MAX_REQUEST: usize = 64 * 1024;

/// The outcome of looking at the bytes an admin connection has sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Served {
    /// No complete request yet.
    Partial,
    /// `used` bytes answered with `bytes`; the connection stays open if `keep_alive`.
    Answer {
        used: usize,
        bytes: Vec<u8>,
        keep_alive: bool,
    },
}

/// A request we cannot read further: answered with `status` and the connection closed.
pub fn refusal(status: u16, message: &str) -> Vec<u8> {
    AdminResponse::text(status, message).to_bytes(false)
}

fn refuse(message: &str) -> Served {
    Served::Answer {
        used: usize::MAX,
        bytes: refusal(400, message),
        keep_alive: false,
    }
}

/// Frames one HTTP/1.1 admin request at the start of `input` (Content-Length bodies only) and answers it.
pub fn serve(input: &[u8], token: Option<&str>, target: &mut dyn AdminTarget) -> Served {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Served::Partial,
        Err(e) => return refuse(&format!("malformed request: {e}")),
    };
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let body_len = match header("content-length").map(crate::http::parse_content_length) {
        None => 0,
        Some(Some(n)) if n <= MAX_REQUEST as u64 => n as usize,
        Some(_) => return refuse("invalid or too large Content-Length"),
    };
    if header("transfer-encoding").is_some() {
        return refuse("send the body with Content-Length");
    }
    if input.len() < head_len + body_len {
        return Served::Partial;
    }
    let method = request.method.unwrap_or("");
    let keep_alive = request.version == Some(1)
        && !header("connection")
            .is_some_and(|v| crate::http::trim_ows(v).eq_ignore_ascii_case(b"close"));
    let admin_request = AdminRequest {
        method,
        path: request.path.unwrap_or("/"),
        authorization: header("authorization"),
        body: &input[head_len..head_len + body_len],
    };
    let response = handle(&admin_request, token, target);
    let mut bytes = response.to_bytes(keep_alive);
    if method == "HEAD" {
        bytes.truncate(bytes.len() - response.body.len());
    }
    Served::Answer {
        used: head_len + body_len,
        bytes,
        keep_alive,
    }
}

/// Compares without an early exit, so response time does not reveal how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(token: Option<&str>, authorization: Option<&[u8]>) -> bool {
    let Some(token) = token else { return true };
    let Some(value) = authorization else {
        return false;
    };
    let Some(presented) = value.strip_prefix(b"Bearer ") else {
        return false;
    };
    constant_time_eq(crate::http::trim_ows(presented), token.as_bytes())
}

/// Serves one admin request.
pub fn handle(
    request: &AdminRequest<'_>,
    token: Option<&str>,
    target: &mut dyn AdminTarget,
) -> AdminResponse {
    if !authorized(token, request.authorization) {
        let mut response =
            AdminResponse::text(401, "unauthorized: send Authorization: Bearer <token>");
        response.extra_headers = "WWW-Authenticate: Bearer realm=\"lb admin\"\r\n";
        return response;
    }
    let path = request.path.split('?').next().unwrap_or("");
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (request.method, segments.as_slice()) {
        ("GET" | "HEAD", [""]) => AdminResponse::new(200, "text/html; charset=utf-8", DASHBOARD),
        ("GET" | "HEAD", ["stats"]) => AdminResponse::json(stats_json(&target.overview())),
        ("GET" | "HEAD", ["metrics"]) => AdminResponse::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics_text(&target.overview()),
        ),
        ("PUT", ["backends", index, setting @ ("capacity" | "enabled")]) => {
            let count = target.overview().backends.len();
            let Some(index) = index.parse::<usize>().ok().filter(|i| *i < count) else {
                return AdminResponse::text(
                    404,
                    &format!(
                        "no backend {index:?}: indexes run from 0 to {}",
                        count.saturating_sub(1)
                    ),
                );
            };
            let body = std::str::from_utf8(request.body).unwrap_or("").trim();
            if *setting == "capacity" {
                match body.parse::<u32>() {
                    Ok(capacity) if capacity > 0 => {
                        target.set_capacity(index, capacity);
                        log::info!("admin: backend {index} capacity set to {capacity}");
                        AdminResponse::json(changed(index, "capacity", capacity))
                    }
                    _ => AdminResponse::text(
                        400,
                        &format!("capacity must be an integer greater than 0, got {body:?}"),
                    ),
                }
            } else {
                let enabled = match body {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return AdminResponse::text(
                            400,
                            &format!("enabled must be true or false, got {body:?}"),
                        );
                    }
                };
                target.set_enabled(index, enabled);
                log::info!(
                    "admin: backend {index} {}",
                    if enabled {
                        "enabled"
                    } else {
                        "disabled (draining)"
                    }
                );
                AdminResponse::json(changed(index, "enabled", enabled))
            }
        }
        (_, [""] | ["stats"] | ["metrics"]) => {
            let mut response = AdminResponse::text(405, "method not allowed");
            response.extra_headers = "Allow: GET, HEAD\r\n";
            response
        }
        (_, ["backends", _, "capacity" | "enabled"]) => {
            let mut response = AdminResponse::text(405, "method not allowed");
            response.extra_headers = "Allow: PUT\r\n";
            response
        }
        _ => AdminResponse::text(404, &format!("no such admin resource: {path}")),
    }
}

/// A figure for JSON, to the thousandth (NaN and infinities are not JSON: they become 0).
fn json_number(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

/// The `/stats` document.
#[derive(Serialize)]
struct Stats<'a> {
    version: &'a str,
    engine: &'a str,
    algorithm: &'a str,
    uptime_seconds: f64,
    open_connections: usize,
    requests_per_second: f64,
    total_requests: u64,
    internal_errors: u64,
    tls_handshake_failures: u64,
    workers: usize,
    limit_rejections: LimitRejections,
    pools: Vec<PoolStats<'a>>,
    backends: Vec<BackendStats<'a>>,
    history: &'a [crate::history::Sample],
    health_events: &'a [crate::history::HealthEvent],
}

#[derive(Serialize)]
struct PoolStats<'a> {
    name: &'a str,
    queue_length: usize,
}

#[derive(Serialize)]
struct BackendStats<'a> {
    index: usize,
    pool: &'a str,
    url: &'a str,
    address: &'a str,
    discovered: bool,
    healthy: bool,
    enabled: bool,
    capacity: u32,
    active_connections: u32,
    request_count: u64,
    success_count: u64,
    error_count: u64,
    average_latency_ms: f64,
    latency_ms: Percentiles,
}

/// Response-time percentiles in milliseconds, from the backend's histogram (null without samples).
#[derive(Serialize)]
struct Percentiles {
    p50: Option<f64>,
    p90: Option<f64>,
    p99: Option<f64>,
}

impl Percentiles {
    fn of(counts: &crate::histogram::Counts) -> Percentiles {
        let q = |q| {
            counts
                .quantile_ms(q)
                .map(|ms| (ms * 1000.0).round() / 1000.0)
        };
        Percentiles {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
        }
    }
}

/// The answer to a change: `{"index":I,"<setting>":V}`.
fn changed(index: usize, setting: &str, value: impl Serialize) -> String {
    use serde::ser::{SerializeMap, Serializer};
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::new(&mut out);
    let written = serializer.serialize_map(Some(2)).and_then(|mut map| {
        map.serialize_entry("index", &index)?;
        map.serialize_entry(setting, &value)?;
        map.end()
    });
    match written {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

pub fn stats_json(o: &Overview) -> String {
    let stats = Stats {
        version: o.version,
        engine: o.engine,
        algorithm: o.algorithm,
        uptime_seconds: json_number(o.uptime_seconds),
        open_connections: o.open_connections,
        requests_per_second: json_number(o.requests_per_second),
        total_requests: o.total_requests,
        internal_errors: o.internal_errors,
        tls_handshake_failures: o.tls_handshake_failures,
        workers: o.workers.len(),
        limit_rejections: o.limit_rejections,
        pools: o
            .pools
            .iter()
            .map(|(name, queued)| PoolStats {
                name,
                queue_length: *queued,
            })
            .collect(),
        backends: o
            .backends
            .iter()
            .enumerate()
            .map(|(index, b)| BackendStats {
                index,
                pool: &b.pool,
                url: &b.url,
                address: &b.address,
                discovered: b.discovered,
                healthy: b.healthy,
                enabled: b.enabled,
                capacity: b.capacity,
                active_connections: b.active_connections,
                request_count: b.request_count,
                success_count: b.success_count,
                error_count: b.error_count,
                average_latency_ms: json_number(b.average_latency_ms),
                latency_ms: Percentiles::of(&b.latency),
            })
            .collect(),
        history: &o.history,
        health_events: &o.health_events,
    };
    // Plain structs of numbers and strings always serialise.
    serde_json::to_string(&stats).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        overview: Overview,
    }

    impl AdminTarget for Fake {
        fn overview(&self) -> Overview {
            self.overview.clone()
        }
        fn set_capacity(&mut self, index: usize, capacity: u32) -> bool {
            self.overview.backends[index].capacity = capacity;
            true
        }
        fn set_enabled(&mut self, index: usize, enabled: bool) -> bool {
            self.overview.backends[index].enabled = enabled;
            true
        }
    }

    fn fake() -> Fake {
        let backend = |url: &str| BackendSnapshot {
            pool: "default".to_string(),
            url: url.to_string(),
            address: "10.0.0.1:80".to_string(),
            discovered: false,
            healthy: true,
            enabled: true,
            capacity: 1,
            active_connections: 0,
            request_count: 10,
            success_count: 9,
            error_count: 1,
            average_latency_ms: 2.5,
            latency: {
                let h = crate::histogram::Histogram::default();
                for ms in [3, 3, 40] {
                    h.record(std::time::Duration::from_millis(ms));
                }
                h.counts()
            },
        };
        Fake {
            overview: Overview {
                backends: vec![backend("http://a:1"), backend("http://b\"q:2")],
                pools: vec![("default".to_string(), 3)],
                open_connections: 3,
                requests_per_second: 12.5,
                total_requests: 20,
                internal_errors: 0,
                tls_handshake_failures: 4,
                uptime_seconds: 7.25,
                algorithm: "round_robin",
                engine: "event_loop",
                version: "0.1.0",
                workers: vec![
                    WorkerLoad {
                        requests: 12,
                        open_connections: 2,
                    },
                    WorkerLoad {
                        requests: 8,
                        open_connections: 1,
                    },
                ],
                limit_rejections: LimitRejections {
                    rate: 5,
                    connections: 2,
                },
                history: vec![crate::history::Sample {
                    t: 1_795_946_825,
                    requests: 12,
                    errors: 1,
                    p99_ms: Some(4.5),
                }],
                health_events: vec![crate::history::HealthEvent {
                    t: 1_795_946_800,
                    pool: "default".into(),
                    backend: "http://a:1".into(),
                    state: "down",
                    reason: "connection refused".into(),
                }],
            },
        }
    }

    fn call(
        target: &mut Fake,
        method: &str,
        path: &str,
        body: &str,
        auth: Option<&str>,
        token: Option<&str>,
    ) -> AdminResponse {
        let request = AdminRequest {
            method,
            path,
            authorization: auth.map(str::as_bytes),
            body: body.as_bytes(),
        };
        handle(&request, token, target)
    }

    #[test]
    fn routes_and_statuses() {
        let mut t = fake();
        // (method, path, body, status)
        let cases: &[(&str, &str, &str, u16)] = &[
            ("GET", "/", "", 200),
            ("GET", "/stats", "", 200),
            ("GET", "/stats?x=1", "", 200),
            ("GET", "/metrics", "", 200),
            ("HEAD", "/stats", "", 200),
            ("POST", "/stats", "", 405),
            ("GET", "/nope", "", 404),
            ("PUT", "/backends/0/capacity", "5", 200),
            ("PUT", "/backends/0/capacity", " 7\n", 200),
            ("PUT", "/backends/0/capacity", "0", 400),
            ("PUT", "/backends/0/capacity", "-1", 400),
            ("PUT", "/backends/0/capacity", "lots", 400),
            ("PUT", "/backends/0/capacity", "", 400),
            ("PUT", "/backends/9/capacity", "5", 404),
            ("PUT", "/backends/x/capacity", "5", 404),
            ("PUT", "/backends/1/enabled", "false", 200),
            ("PUT", "/backends/1/enabled", "no", 400),
            ("GET", "/backends/1/enabled", "", 405),
            ("PUT", "/backends/1/weight", "5", 404),
        ];
        for (method, path, body, status) in cases {
            let r = call(&mut t, method, path, body, None, None);
            assert_eq!(
                r.status,
                *status,
                "{method} {path} {body:?}: {}",
                String::from_utf8_lossy(&r.body)
            );
        }
        assert_eq!(t.overview.backends[0].capacity, 7);
        assert!(!t.overview.backends[1].enabled);
    }

    #[test]
    fn bearer_token() {
        let mut t = fake();
        let token = Some("s3cret");
        assert_eq!(call(&mut t, "GET", "/stats", "", None, token).status, 401);
        assert_eq!(
            call(&mut t, "GET", "/stats", "", Some("Bearer wrong"), token).status,
            401
        );
        assert_eq!(
            call(&mut t, "GET", "/stats", "", Some("Basic s3cret"), token).status,
            401
        );
        assert_eq!(
            call(&mut t, "GET", "/stats", "", Some("Bearer s3cret"), token).status,
            200
        );
        let r = call(&mut t, "PUT", "/backends/0/capacity", "3", None, token);
        assert_eq!(r.status, 401);
        assert!(r.extra_headers.contains("WWW-Authenticate"));
        assert_eq!(
            t.overview.backends[0].capacity, 1,
            "unauthorised changes are not applied"
        );
    }

    #[test]
    fn stats_is_valid_json_with_every_field() {
        let json = stats_json(&fake().overview);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["open_connections"], 3);
        assert_eq!(v["requests_per_second"], 12.5);
        assert_eq!(v["tls_handshake_failures"], 4);
        assert_eq!(v["workers"], 2);
        assert_eq!(v["pools"][0]["name"], "default");
        assert_eq!(v["history"][0]["requests"], 12);
        assert_eq!(v["history"][0]["p99_ms"], 4.5);
        assert_eq!(v["health_events"][0]["state"], "down");
        assert_eq!(v["health_events"][0]["reason"], "connection refused");
        // 3, 3 and 40 ms: the median inside (2, 5] ms, p99 inside (20, 50] ms.
        assert_eq!(v["backends"][0]["latency_ms"]["p50"], 4.25);
        assert_eq!(v["backends"][0]["latency_ms"]["p99"], 49.1);
        assert_eq!(v["pools"][0]["queue_length"], 3);
        assert_eq!(v["limit_rejections"]["rate"], 5);
        assert_eq!(v["limit_rejections"]["connections"], 2);
        assert_eq!(v["backends"][1]["url"], "http://b\"q:2");
        assert_eq!(v["backends"][1]["pool"], "default");
        for field in [
            "pool",
            "url",
            "healthy",
            "enabled",
            "capacity",
            "active_connections",
            "request_count",
            "success_count",
            "error_count",
            "average_latency_ms",
            "latency_ms",
        ] {
            assert!(!v["backends"][0][field].is_null(), "{field}");
        }
    }

    #[test]
    fn metrics_parse_as_prometheus_text() {
        let text = metrics_text(&fake().overview);
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        let requests: Vec<_> = scrape
            .samples
            .iter()
            .filter(|s| s.metric == "lb_backend_requests_total")
            .collect();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].labels.get("backend"), Some("http://a:1"));
        assert_eq!(requests[0].labels.get("pool"), Some("default"));
        assert!(matches!(requests[0].value, prometheus_parse::Value::Counter(v) if v == 10.0));
        assert!(scrape.docs.contains_key("lb_open_connections"));
        assert!(text.contains(
            "lb_backend_response_seconds_bucket{backend=\"http://a:1\",pool=\"default\",le=\"0.005\"} 2\n"
        ));
        assert!(text.contains(
            "lb_backend_response_seconds_bucket{backend=\"http://a:1\",pool=\"default\",le=\"+Inf\"} 3\n"
        ));
        assert!(text.contains(
            "lb_backend_response_seconds_count{backend=\"http://a:1\",pool=\"default\"} 3\n"
        ));
        assert!(text.contains(
            "lb_backend_response_seconds_sum{backend=\"http://a:1\",pool=\"default\"} 0.046\n"
        ));
        let failures = scrape
            .samples
            .iter()
            .find(|s| s.metric == "lb_tls_handshake_failures_total")
            .expect("the TLS handshake failure counter");
        assert!(matches!(failures.value, prometheus_parse::Value::Counter(v) if v == 4.0));
        let per_worker = |metric: &str| -> Vec<(String, f64)> {
            scrape
                .samples
                .iter()
                .filter(|s| s.metric == metric)
                .map(|s| {
                    let value = match s.value {
                        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => {
                            v
                        }
                        _ => f64::NAN,
                    };
                    (s.labels.get("worker").unwrap_or("").to_string(), value)
                })
                .collect()
        };
        assert_eq!(
            per_worker("lb_worker_requests_total"),
            [("0".to_string(), 12.0), ("1".to_string(), 8.0)]
        );
        assert_eq!(
            per_worker("lb_worker_open_connections"),
            [("0".to_string(), 2.0), ("1".to_string(), 1.0)]
        );
        assert!(
            text.contains("backend=\"http://b\\\"q:2\""),
            "quotes escaped in labels"
        );
    }

    #[test]
    fn response_bytes() {
        let r = AdminResponse::text(404, "nope");
        let bytes = String::from_utf8(r.to_bytes(false)).unwrap();
        assert!(bytes.starts_with("HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n"));
        assert!(bytes.ends_with("Connection: close\r\n\r\nnope\n"));
    }
}
