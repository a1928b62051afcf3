//! DNS discovery end to end: a `resolve` backend's name is asked of a DNS responder the test runs on
//! 127.0.0.1, every A address becomes a backend with figures of its own (shown in `/stats` and
//! `/metrics` with its address), addresses come and go as the answers change while a removed one
//! finishes its in-flight request, failed lookups of every kind keep the last good set, and reloads
//! add and drop names. The binary logs each change.
//!
//! Every case runs against each engine: `event_loop::...`, `workers2::...` and `threaded::...`.

mod common;

use common::dns::{Answer, DnsServer};
use common::process::LbProcess;
use common::*;

for_each_engine!("cases/dns.rs");

/// Backends answering with their name, on 127.0.0.2, 127.0.0.3, ... and all on one port: the
/// addresses of one `resolve` backend share its URL's port.
fn backends_on_one_port(scripts: Vec<Box<dyn Fn(Peer) + Send + Sync>>) -> (u16, Vec<Backend>) {
    for _ in 0..50 {
        let Ok(probe) = std::net::TcpListener::bind("127.0.0.2:0") else {
            continue;
        };
        let port = probe.local_addr().expect("address").port();
        drop(probe);
        let addrs: Vec<std::net::SocketAddr> = (0..scripts.len())
            .map(|i| {
                format!("127.0.0.{}:{port}", i + 2)
                    .parse()
                    .expect("address")
            })
            .collect();
        if addrs.iter().all(|a| std::net::TcpListener::bind(a).is_ok()) {
            let backends = scripts
                .into_iter()
                .zip(addrs)
                .map(|(script, addr)| Backend::start_at(addr, script))
                .collect();
            return (port, backends);
        }
    }
    panic!("no port free on 127.0.0.2 and up");
}

/// A keep-alive script answering `name`.
fn answering(name: &'static str) -> Box<dyn Fn(Peer) + Send + Sync> {
    Box::new(move |mut peer: Peer| {
        while peer.read_request().is_some() {
            if !peer.ok(name) {
                return;
            }
        }
    })
}

#[test]
fn every_change_is_logged_by_the_binary() {
    let dns = DnsServer::start();
    dns.set("api.test", &["127.0.0.2"]);
    let (port, _backends) = backends_on_one_port(vec![answering("a"), answering("b")]);
    let lb = LbProcess::start(&format!(
        "listen = \"127.0.0.1:0\"\n[health_check]\ninterval = \"1h\"\n\
         [dns]\nservers = [\"{}\"]\ntimeout = \"200ms\"\n\
         [[backends]]\nurl = \"http://api.test:{port}\"\nresolve = \"100ms\"\n",
        dns.addr
    ));
    wait_until("the first answer to be logged", || {
        lb.logged(&format!(
            "dns: api.test (http://api.test:{port}, pool default): added 127.0.0.2"
        ))
    });
    assert_eq!(get(lb.addr, "/").text(), "a");
    dns.set("api.test", &["127.0.0.3"]);
    wait_until("the change to be logged", || {
        lb.logged("added 127.0.0.3; removed 127.0.0.2 (their in-flight requests finish)")
    });
    dns.answer("api.test", Answer::Silent);
    wait_until("the timeout to be logged", || {
        lb.logged("dns: lookup of api.test") && lb.logged("keeping the last 1 addresses")
    });
    assert_eq!(get(lb.addr, "/").text(), "b", "{}", lb.log_text());
}
