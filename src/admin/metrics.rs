//! `GET /metrics`: the Prometheus text exposition of an [`Overview`] — per-backend series (labelled
//! with backend and pool), the response-time histograms, the process's figures, the queues and the
//! workers.

use super::{Overview, WorkerLoad, json_number};
use crate::balance::BackendSnapshot;
use std::fmt::Write as _;

pub fn metrics_text(o: &Overview) -> String {
    let mut out = String::with_capacity(1024 + 512 * o.backends.len());
    backend_series(&mut out, &o.backends);
    response_histograms(&mut out, &o.backends);
    process_series(&mut out, o);
    worker_series(&mut out, &o.workers);
    family(
        &mut out,
        "lb_uptime_seconds",
        "gauge",
        "Seconds since the balancer started.",
    );
    let _ = writeln!(out, "lb_uptime_seconds {}", json_number(o.uptime_seconds));
    out
}

/// The `# HELP` and `# TYPE` lines of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a Prometheus label value.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn backend_series(out: &mut String, backends: &[BackendSnapshot]) {
    type Field = fn(&BackendSnapshot) -> f64;
    let series: [(&str, &str, &str, Field); 8] = [
        (
            "lb_backend_requests_total",
            "counter",
            "Requests sent to the backend.",
            |b| b.request_count as f64,
        ),
        (
            "lb_backend_successes_total",
            "counter",
            "Complete responses with status below 500.",
            |b| b.success_count as f64,
        ),
        (
            "lb_backend_errors_total",
            "counter",
            "Connect failures, resets, timeouts, invalid responses and 5xx.",
            |b| b.error_count as f64,
        ),
        (
            "lb_backend_latency_seconds_total",
            "counter",
            "Sum of response times of successful requests.",
            |b| b.average_latency_ms * b.success_count as f64 / 1000.0,
        ),
        (
            "lb_backend_active_connections",
            "gauge",
            "Requests in flight on the backend.",
            |b| f64::from(b.active_connections),
        ),
        (
            "lb_backend_capacity",
            "gauge",
            "Configured weight of the backend.",
            |b| f64::from(b.capacity),
        ),
        (
            "lb_backend_healthy",
            "gauge",
            "1 when health checks consider the backend up.",
            |b| f64::from(u8::from(b.healthy)),
        ),
        (
            "lb_backend_enabled",
            "gauge",
            "1 unless an operator disabled the backend.",
            |b| f64::from(u8::from(b.enabled)),
        ),
    ];
    for (name, kind, help, field) in series {
        family(out, name, kind, help);
        for b in backends {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(b), field(b));
        }
    }
}

/// A backend's labels: its URL and pool, and for one address of a `resolve` backend the address (the
/// URL alone would not tell its addresses apart).
fn labels(b: &BackendSnapshot) -> String {
    let mut labels = format!("backend=\"{}\",pool=\"{}\"", label(&b.url), label(&b.pool));
    if b.discovered {
        let _ = write!(labels, ",address=\"{}\"", label(&b.address));
    }
    labels
}

/// `lb_backend_response_seconds` as a Prometheus histogram per backend.
fn response_histograms(out: &mut String, backends: &[BackendSnapshot]) {
    let name = "lb_backend_response_seconds";
    family(
        out,
        name,
        "histogram",
        "Time from sending a request to the end of the backend's response (successes and 5xx).",
    );
    for b in backends {
        let labels = labels(b);
        for (bound, count) in b.latency.cumulative() {
            let le = bound.map_or_else(|| "+Inf".to_string(), |s| s.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {count}");
        }
        let sum = b.latency.sum_us as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", b.latency.count());
    }
}

/// The process's own figures: connections, requests, contained panics, TLS failures, limits, queues.
fn process_series(out: &mut String, o: &Overview) {
    let scalars: [(&str, &str, &str, u64); 4] = [
        (
            "lb_open_connections",
            "gauge",
            "Open client connections.",
            o.open_connections as u64,
        ),
        (
            "lb_requests_total",
            "counter",
            "Requests completed by the balancer.",
            o.total_requests,
        ),
        (
            "lb_internal_errors_total",
            "counter",
            "Panics contained at a connection's boundary: bugs, each closing one connection.",
            o.internal_errors,
        ),
        (
            "lb_tls_handshake_failures_total",
            "counter",
            "TLS connections closed before their handshake finished.",
            o.tls_handshake_failures,
        ),
    ];
    for (name, kind, help, value) in scalars {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    family(
        out,
        "lb_limit_rejections_total",
        "counter",
        "Refused by [limits]: requests over their rate (429), connections over their count (closed).",
    );
    for (reason, count) in [
        ("rate", o.limit_rejections.rate),
        ("connections", o.limit_rejections.connections),
    ] {
        let _ = writeln!(
            out,
            "lb_limit_rejections_total{{reason=\"{reason}\"}} {count}"
        );
    }
    family(
        out,
        "lb_pool_queue_length",
        "gauge",
        "Requests waiting for a backend with room under its max_connections.",
    );
    for (name, queued) in &o.pools {
        let _ = writeln!(
            out,
            "lb_pool_queue_length{{pool=\"{}\"}} {queued}",
            label(name)
        );
    }
}

/// Per worker, so that operators can see imbalance between them.
fn worker_series(out: &mut String, workers: &[WorkerLoad]) {
    type Field = fn(&WorkerLoad) -> u64;
    let series: [(&str, &str, &str, Field); 2] = [
        (
            "lb_worker_requests_total",
            "counter",
            "Requests completed by each event-loop worker.",
            |w| w.requests,
        ),
        (
            "lb_worker_open_connections",
            "gauge",
            "Open client connections of each event-loop worker.",
            |w| w.open_connections as u64,
        ),
    ];
    for (name, kind, help, field) in series {
        family(out, name, kind, help);
        for (worker, load) in workers.iter().enumerate() {
            let _ = writeln!(out, "{name}{{worker=\"{worker}\"}} {}", field(load));
        }
    }
}
