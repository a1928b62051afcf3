//! End-to-end benchmark: for each engine, a separate `lb` process in front of two fast backends, driven
//! with keep-alive load at 1, 64 and 1000 concurrent connections for a fixed time. Prints, per engine,
//! requests/s, p50/p99 latency, CPU time of the `lb` process per request (utime + stime from /proc) and
//! its peak RSS, then the threaded engine's figures as ratios of the event loop's from the same run.
//!
//! `cargo bench --bench e2e`; `LB_BENCH_SECONDS=10` for longer runs, `LB_BENCH_CONNS="64 1000"` to choose,
//! `LB_BENCH_ROUNDS=3` for several rounds in alternating order (medians are reported).
//! `LB_BENCH_BASELINE=/path/to/an/older/lb` runs that binary's engines in the same rounds and reports each
//! engine's figures as ratios of the baseline's: before/after comparisons on a noisy machine.
//! The `lb` that `cargo bench` builds has the tests' fault-injection feature unified in; it is never
//! armed, which leaves a load and a branch per request stage (`fault::inject`).

#[path = "support/fast_backend.rs"]
mod fast_backend;
#[path = "support/load.rs"]
mod load;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct LbProcess {
    child: Child,
    addr: SocketAddr,
}

impl LbProcess {
    fn start(binary: &Path, engine: &str, backends: &[SocketAddr]) -> LbProcess {
        let dir = std::env::temp_dir().join(format!("lb-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(format!("{engine}.toml"));
        let mut text = format!(
            "listen = \"127.0.0.1:0\"\nengine = \"{engine}\"\naccess_log = false\nmax_connections = 5000\n\
             [health_check]\ninterval = \"1h\"\n"
        );
        for b in backends {
            text.push_str(&format!("[[backends]]\nurl = \"http://{b}\"\n"));
        }
        std::fs::write(&path, text).expect("write config");
        let mut child = Command::new(binary)
            .arg(&path)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lb");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines.next().expect("lb exited").expect("log line");
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .expect("address")
                    .parse()
                    .expect("address");
            }
        };
        std::thread::spawn(move || for _ in lines {});
        LbProcess { child, addr }
    }

    fn stat(&self) -> (f64, u64) {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).expect("stat");
        // Fields after the command name (which is in parentheses): utime and stime are 14th and 15th.
        let after = &stat[stat.rfind(')').expect("stat format") + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 =
            fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
        let hz = 100.0; // USER_HZ is 100 on Linux
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        (ticks as f64 / hz, hwm)
    }
}

impl Drop for LbProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy)]
struct Row {
    conns: usize,
    rps: f64,
    p50: f64,
    p99: f64,
    cpu_us: f64,
    rss_mib: f64,
    errors: u64,
}

/// A binary and an engine to measure.
struct Variant {
    label: String,
    binary: PathBuf,
    engine: &'static str,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn measure(v: &Variant, backends: &[SocketAddr], conns: usize, seconds: u64) -> Row {
    // A fresh process per run: its peak RSS is this run's.
    let lb = LbProcess::start(&v.binary, v.engine, backends);
    let warm = load::run(lb.addr, conns.min(16), Duration::from_millis(300));
    assert!(warm.requests > 0, "{}: warm-up got no response", v.label);
    let (cpu_before, _) = lb.stat();
    let mut result = load::run(lb.addr, conns, Duration::from_secs(seconds));
    let (cpu_after, hwm_kib) = lb.stat();
    assert!(
        result.requests > 0,
        "{} at {conns} connections served nothing",
        v.label
    );
    let row = Row {
        conns,
        rps: result.per_second(),
        p50: result.quantile_ms(0.50),
        p99: result.quantile_ms(0.99),
        cpu_us: (cpu_after - cpu_before) * 1e6 / result.requests as f64,
        rss_mib: hwm_kib as f64 / 1024.0,
        errors: result.errors,
    };
    eprintln!(
        "{:>18} c={conns:<5} {:>10.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  cpu {:>6.2} us/req  peak RSS {:>7.1} MiB  errors {}",
        v.label, row.rps, row.p50, row.p99, row.cpu_us, row.rss_mib, row.errors
    );
    row
}

/// The row of medians of `rows` (each figure on its own).
fn medians(rows: &[Row]) -> Row {
    let med = |f: fn(&Row) -> f64| {
        let mut xs: Vec<f64> = rows.iter().map(f).collect();
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    Row {
        conns: rows[0].conns,
        rps: med(|r| r.rps),
        p50: med(|r| r.p50),
        p99: med(|r| r.p99),
        cpu_us: med(|r| r.cpu_us),
        rss_mib: med(|r| r.rss_mib),
        errors: rows.iter().map(|r| r.errors).sum(),
    }
}

fn ratios(title: &str, pairs: &[(Row, Row)]) {
    println!("\n{title}:");
    println!(
        "{:>6} {:>8} {:>9} {:>11} {:>10}",
        "conns", "req/s", "p99", "cpu/req", "peak RSS"
    );
    for (base, other) in pairs {
        println!(
            "{:>6} {:>8.2} {:>9.2} {:>11.2} {:>10.2}",
            base.conns,
            other.rps / base.rps,
            other.p99 / base.p99,
            other.cpu_us / base.cpu_us,
            other.rss_mib / base.rss_mib
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; anything else (e.g. a filter) is ignored.
    let seconds: u64 = env_or("LB_BENCH_SECONDS", 5);
    let rounds: usize = env_or("LB_BENCH_ROUNDS", 1usize).max(1);
    let levels: Vec<usize> = std::env::var("LB_BENCH_CONNS")
        .ok()
        .map(|s| {
            s.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_else(|| vec![1, 64, 1000]);
    let current = PathBuf::from(env!("CARGO_BIN_EXE_lb"));
    let mut variants: Vec<Variant> = ["event_loop", "threaded"]
        .into_iter()
        .map(|engine| Variant {
            label: engine.to_string(),
            binary: current.clone(),
            engine,
        })
        .collect();
    let baseline = std::env::var_os("LB_BENCH_BASELINE").map(PathBuf::from);
    if let Some(path) = &baseline {
        for engine in ["event_loop", "threaded"] {
            variants.push(Variant {
                label: format!("baseline {engine}"),
                binary: path.clone(),
                engine,
            });
        }
    }
    let backends: Vec<SocketAddr> = (0..2)
        .map(|_| fast_backend::spawn(0).expect("backend").0)
        .collect();
    // samples[variant][level] = one row per round
    let mut samples: Vec<Vec<Vec<Row>>> = vec![vec![Vec::new(); levels.len()]; variants.len()];
    for round in 0..rounds {
        for (l, &conns) in levels.iter().enumerate() {
            // Alternate the order every round so that drift in the machine's load hits all alike.
            let mut order: Vec<usize> = (0..variants.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for v in order {
                samples[v][l].push(measure(&variants[v], &backends, conns, seconds));
            }
        }
    }
    let table: Vec<Vec<Row>> = samples
        .iter()
        .map(|per_level| per_level.iter().map(|rows| medians(rows)).collect())
        .collect();
    println!(
        "\nlb end to end, {seconds} s per run, {rounds} round(s) (medians), 2 fast backends, keep-alive clients"
    );
    println!(
        "{:<20} {:>6} {:>11} {:>9} {:>9} {:>12} {:>13} {:>7}",
        "engine", "conns", "req/s", "p50 ms", "p99 ms", "cpu us/req", "peak RSS MiB", "errors"
    );
    for (v, rows) in variants.iter().zip(&table) {
        for r in rows {
            println!(
                "{:<20} {:>6} {:>11.0} {:>9.3} {:>9.3} {:>12.2} {:>13.1} {:>7}",
                v.label, r.conns, r.rps, r.p50, r.p99, r.cpu_us, r.rss_mib, r.errors
            );
        }
    }
    let pair = |a: usize, b: usize| -> Vec<(Row, Row)> {
        table[a]
            .iter()
            .copied()
            .zip(table[b].iter().copied())
            .collect()
    };
    ratios("threaded / event_loop at the same concurrency", &pair(0, 1));
    if baseline.is_some() {
        ratios("event_loop / baseline event_loop", &pair(2, 0));
        ratios("threaded / baseline threaded", &pair(3, 1));
    }
}
