use super::*;
use crate::config::{Algorithm, Resolve};
use std::time::Duration;

fn config(text: &str) -> Config {
    Config::parse(text).expect("valid test config")
}

const TWO_POOLS: &str = r#"
[dns]
servers = ["127.0.0.1:5353"]

[[backends]]
url = "http://127.0.0.1:8001"

[[backends]]
url = "http://api.internal:8080"
resolve = "5s"

[[pools]]
name = "img"
backends = [{ url = "http://img.internal:9000", resolve = "1s" }, { url = "http://127.0.0.1:8002" }]
"#;

#[test]
fn resolve_backends_become_one_backend_per_address() {
    let config = config(TWO_POOLS);
    assert_eq!(config.backends.len(), 4);
    assert_eq!(
        config.backends[1].resolve,
        Some(Resolve {
            host: "api.internal".into(),
            interval: Duration::from_secs(5)
        })
    );
    let api: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "fd00::2".parse().unwrap()];
    let answers = |b: &BackendConfig| -> &[IpAddr] {
        if b.url == "http://api.internal:8080" {
            &api
        } else {
            &[]
        }
    };
    let (served, pools) = expand(&config.backends, &config.pools, answers);
    let described: Vec<String> = served.iter().map(|b| b.to_string()).collect();
    assert_eq!(
        described,
        [
            "http://127.0.0.1:8001",
            "http://api.internal:8080 [10.0.0.1:8080]",
            "http://api.internal:8080 [[fd00::2]:8080]",
            "http://127.0.0.1:8002",
        ]
    );
    assert_eq!(pools[0].backends, 0..3);
    assert_eq!(
        pools[1].backends,
        3..4,
        "img has no address yet: only its static backend"
    );
    assert_eq!(pools[1].name, "img");
    assert_eq!(pools[1].algorithm, Algorithm::RoundRobin);
    // Each address is a backend of its own; the static ones are named by URL alone as before.
    assert!(!served[1].same_backend(&served[2]));
    assert!(served[1].same_backend(&served[1].clone()));
    assert_ne!(served[1].sticky_name(), served[2].sticky_name());
    assert_eq!(served[0].sticky_name(), "http://127.0.0.1:8001");
}

#[test]
fn targets_are_the_resolve_backends() {
    let targets = targets(&config(TWO_POOLS));
    assert_eq!(
        targets,
        vec![
            Target {
                pool: "default".into(),
                url: "http://api.internal:8080".into(),
                host: "api.internal".into(),
                interval: Duration::from_secs(5),
            },
            Target {
                pool: "img".into(),
                url: "http://img.internal:9000".into(),
                host: "img.internal".into(),
                interval: Duration::from_secs(1),
            },
        ]
    );
}

#[test]
fn reports_are_logged_with_what_changed() {
    let target = Target {
        pool: "default".into(),
        url: "http://api.internal:8080".into(),
        host: "api.internal".into(),
        interval: Duration::from_secs(5),
    };
    let ip = |t: &str| t.parse::<IpAddr>().unwrap();
    let cases = [
        (
            Report::Changed {
                target: target.clone(),
                added: vec![ip("10.0.0.1"), ip("10.0.0.2")],
                removed: vec![],
            },
            log::Level::Info,
            "dns: api.internal (http://api.internal:8080, pool default): added 10.0.0.1, 10.0.0.2",
        ),
        (
            Report::Changed {
                target: target.clone(),
                added: vec![ip("10.0.0.3")],
                removed: vec![ip("10.0.0.1")],
            },
            log::Level::Info,
            "dns: api.internal (http://api.internal:8080, pool default): added 10.0.0.3; removed \
             10.0.0.1 (their in-flight requests finish)",
        ),
        (
            Report::Failed {
                target,
                why: "timed out (127.0.0.1:5353)".into(),
                kept: 2,
            },
            log::Level::Warn,
            "dns: lookup of api.internal (http://api.internal:8080, pool default) failed: timed out \
             (127.0.0.1:5353); keeping the last 2 addresses",
        ),
    ];
    for (report, level, line) in cases {
        assert_eq!(describe(&report), (level, line.to_string()));
    }
}

#[test]
fn a_resolve_backend_needs_a_name_and_no_system_lookup() {
    // The name is not in /etc/hosts nor anywhere: with `resolve`, the file still loads.
    let ok = "[dns]\nservers = [\"127.0.0.1:5353\"]\n[[backends]]\nurl = \"http://no-such-host.invalid:80\"\nresolve = \"2s\"\n";
    let config = config(ok);
    assert!(config.backends[0].addr.ip().is_unspecified());
    assert_eq!(config.dns.servers, vec!["127.0.0.1:5353".parse().unwrap()]);
    let cases = [
        (
            "[[backends]]\nurl = \"http://10.0.0.1:80\"\nresolve = \"2s\"\n[dns]\nservers = [\"127.0.0.1\"]\n",
            "backends[0].resolve",
        ),
        (
            "[[backends]]\nurl = \"http://api:80\"\nresolve = \"0s\"\n[dns]\nservers = [\"127.0.0.1\"]\n",
            // serde's own checks name the line: `resolve = "0s"` ... must be greater than zero.
            "resolve = \"0s\"",
        ),
        (
            "[[backends]]\nurl = \"http://api:80\"\nresolve = \"2s\"\n[dns]\nservers = [\"nope\"]\n",
            "dns.servers[0]",
        ),
        (
            "[[backends]]\nurl = \"http://127.0.0.1:80\"\n[dns]\nservers = [\"127.0.0.1\"]\ntimeout = \"0s\"\n",
            "timeout = \"0s\"",
        ),
    ];
    for (text, key) in cases {
        let error = Config::parse(text).expect_err(text).to_string();
        assert!(error.contains(key), "{text}: {error}");
    }
}

#[test]
fn a_retry_skips_the_failed_address_however_many_addresses_came_before() {
    use crate::balance::{Balancer, Pick, Tried};
    let config = config(
        "algorithm = \"ip_hash\"\n[dns]\nservers = [\"127.0.0.1:5353\"]\n\
         [[backends]]\nurl = \"http://api.internal:8080\"\nresolve = \"5s\"\n",
    );
    let mut balancer = Balancer::from_config(&config);
    // 40 rounds of two new addresses each: the live ones end up in slots past 64.
    for round in 0..40u8 {
        let ips: Vec<IpAddr> = vec![
            IpAddr::from([10, 1, round, 1]),
            IpAddr::from([10, 1, round, 2]),
        ];
        let (backends, pools) = expand(&config.backends, &config.pools, |_| &ips);
        let changes = balancer.reconfigure(&backends, &pools, 2, 3);
        balancer.retire(&changes.removed);
    }
    let client = IpAddr::from([192, 0, 2, 7]);
    let slot_of = |pick: Pick| match pick {
        Pick::Started(inflight) => inflight.backend().slot,
        other => panic!("no backend: {other:?}"),
    };
    let first = slot_of(balancer.pick(0, client, Tried::NONE, None));
    assert!(first >= 64, "slot {first}");
    let retry = slot_of(balancer.pick(0, client, Tried::NONE.with(first), None));
    assert_ne!(
        retry, first,
        "the retry went back to the backend that failed"
    );
}
