use super::*;
use crate::dns::message;
use simple_dns::rdata::RData;
use simple_dns::{Packet, QTYPE, RCODE};

const S1: &str = "127.0.0.1:5301";
const S2: &str = "127.0.0.1:5302";
const INTERVAL: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_millis(500);

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|t| t.parse().expect("test ip")).collect()
}

fn target(url: &str, host: &str) -> Target {
    Target {
        pool: "default".into(),
        url: url.into(),
        host: host.into(),
        interval: INTERVAL,
    }
}

/// Two names, a.test and b.test, as two backends of the default pool.
fn two_names() -> Vec<Target> {
    vec![
        target("http://a:80", "a.test"),
        target("http://b:80", "b.test"),
    ]
}

fn resolver(servers: &[&str]) -> Resolver {
    Resolver::new(
        servers.iter().map(|s| addr(s)).collect(),
        TIMEOUT,
        Rng::with_seed(7),
    )
}

/// The answer a server gives to `query`: the addresses of the asked family among `answer`, with
/// `rcode` and TC when `truncated`.
fn reply(query: &Datagram, answer: &[&str], rcode: RCODE, truncated: bool) -> Vec<u8> {
    let asked = Packet::parse(&query.bytes).expect("our query parses");
    let question = &asked.questions[0];
    let QTYPE::TYPE(record_type) = question.qtype else {
        panic!("the resolver asks for a record type");
    };
    let name = question.qname.to_string();
    let records: Vec<(&str, RData<'static>)> = ips(answer)
        .into_iter()
        .filter_map(|ip| message::tests::record_of(ip, record_type))
        .map(|rdata| (name.as_str(), rdata))
        .collect();
    let question = (name.as_str(), record_type);
    message::tests::answer(asked.id(), question, rcode, truncated, &records)
}

/// Answers every datagram in `sent` from its server with `answer`, and collects the reports.
fn answer_all(r: &mut Resolver, sent: &[Datagram], answer: &[&str], now: Instant) -> Vec<Report> {
    let mut out = Vec::new();
    let reports = sent
        .iter()
        .filter_map(|q| {
            r.on_datagram(
                q.to,
                &reply(q, answer, RCODE::NoError, false),
                now,
                &mut out,
            )
        })
        .collect();
    assert!(out.is_empty(), "answers send nothing more");
    reports
}

fn changed(url: &str, host: &str, added: &[&str], removed: &[&str]) -> Report {
    Report::Changed {
        target: target(url, host),
        added: ips(added),
        removed: ips(removed),
    }
}

#[test]
fn a_due_name_is_asked_for_a_and_aaaa_then_answered() {
    let now = Instant::now();
    let mut r = resolver(&[S1, S2]);
    r.configure(vec![target("http://api:80", "api.test")], now);
    assert_eq!(r.next_wakeup(), Some(now));
    let mut sent = Vec::new();
    assert!(r.poll(now, &mut sent).is_empty());
    assert_eq!(sent.len(), 2);
    assert!(
        sent.iter().all(|d| d.to == addr(S1)),
        "the first server first"
    );
    assert_eq!(r.next_wakeup(), Some(now + TIMEOUT));
    let reports = answer_all(&mut r, &sent, &["10.0.0.2", "10.0.0.1", "fd00::1"], now);
    assert_eq!(
        reports,
        vec![changed(
            "http://api:80",
            "api.test",
            &["10.0.0.1", "10.0.0.2", "fd00::1"],
            &[]
        )]
    );
    assert_eq!(
        r.addresses("default", "http://api:80"),
        ips(&["10.0.0.1", "10.0.0.2", "fd00::1"])
    );
    assert_eq!(r.next_wakeup(), Some(now + INTERVAL));
    // The next round, with the same answer, reports nothing; with another, what changed.
    let later = now + INTERVAL;
    let mut sent = Vec::new();
    r.poll(later, &mut sent);
    assert!(answer_all(&mut r, &sent, &["10.0.0.1", "10.0.0.2", "fd00::1"], later).is_empty());
    let later = later + INTERVAL;
    let mut sent = Vec::new();
    r.poll(later, &mut sent);
    assert_eq!(
        answer_all(&mut r, &sent, &["10.0.0.2", "10.0.0.3"], later),
        vec![changed(
            "http://api:80",
            "api.test",
            &["10.0.0.3"],
            &["10.0.0.1", "fd00::1"]
        )]
    );
}

/// What the first server does to the round, and whether the second is then asked.
#[derive(Debug, Clone, Copy)]
enum FirstServer {
    TimesOut,
    Answers(RCODE, bool),
    SendsGarbage,
}

#[test]
fn failures_move_to_the_next_server_or_end_the_round_keeping_the_last_set() {
    use FirstServer::*;
    // (what the first server does, the second server is asked, the round's failure reason)
    let cases: &[(FirstServer, bool, &str)] = &[
        (TimesOut, true, "timed out"),
        (Answers(RCODE::ServerFailure, false), true, "SERVFAIL"),
        (Answers(RCODE::Refused, false), true, "REFUSED"),
        (SendsGarbage, true, "malformed"),
        (Answers(RCODE::NameError, false), false, "NXDOMAIN"),
        (Answers(RCODE::NoError, true), false, "truncated"),
    ];
    for &(first, asks_second, reason) in cases {
        let start = Instant::now();
        let mut r = resolver(&[S1, S2]);
        r.configure(vec![target("http://api:80", "api.test")], start);
        let mut sent = Vec::new();
        r.poll(start, &mut sent);
        answer_all(&mut r, &sent, &["10.0.0.1"], start);
        // The next round: the first server misbehaves.
        let now = start + INTERVAL;
        let mut sent = Vec::new();
        r.poll(now, &mut sent);
        let mut out = Vec::new();
        let mut reports = Vec::new();
        match first {
            TimesOut => reports.extend(r.poll(now + TIMEOUT, &mut out)),
            Answers(rcode, truncated) => reports.extend(r.on_datagram(
                sent[0].to,
                &reply(&sent[0], &["10.9.9.9"], rcode, truncated),
                now,
                &mut out,
            )),
            SendsGarbage => {
                let mut bytes = reply(&sent[0], &["10.9.9.9"], RCODE::NoError, false);
                bytes.truncate(bytes.len() - 3);
                reports.extend(r.on_datagram(sent[0].to, &bytes, now, &mut out));
            }
        }
        let what = format!("{first:?}");
        if asks_second {
            assert!(reports.is_empty(), "{what}");
            assert_eq!(out.len(), 2, "{what}: both queries again");
            assert!(out.iter().all(|d| d.to == addr(S2)), "{what}");
            // The second server times out too: the round fails, the set stays.
            let reports = r.poll(now + 2 * TIMEOUT, &mut Vec::new());
            let [Report::Failed { why, kept, .. }] = reports.as_slice() else {
                panic!("{what}: {reports:?}");
            };
            assert_eq!(*kept, 1, "{what}");
            assert!(why.contains("every nameserver failed"), "{what}: {why}");
        } else {
            let [Report::Failed { why, kept, .. }] = reports.as_slice() else {
                panic!("{what}: {reports:?}");
            };
            assert!(out.is_empty(), "{what}: no other server asked");
            assert!(why.contains(reason), "{what}: {why}");
            assert_eq!(*kept, 1, "{what}");
        }
        assert_eq!(
            r.addresses("default", "http://api:80"),
            ips(&["10.0.0.1"]),
            "{what}"
        );
    }
}

#[test]
fn a_round_without_any_record_keeps_the_set() {
    let now = Instant::now();
    let mut r = resolver(&[S1]);
    r.configure(vec![target("http://api:80", "api.test")], now);
    let mut sent = Vec::new();
    r.poll(now, &mut sent);
    answer_all(&mut r, &sent, &["10.0.0.1"], now);
    let later = now + INTERVAL;
    let mut sent = Vec::new();
    r.poll(later, &mut sent);
    let reports = answer_all(&mut r, &sent, &[], later);
    assert!(
        matches!(&reports[..], [Report::Failed { why, kept: 1, .. }] if why.contains("no A or AAAA")),
        "{reports:?}"
    );
    assert_eq!(r.addresses("default", "http://api:80"), ips(&["10.0.0.1"]));
    assert_eq!(r.next_wakeup(), Some(later + INTERVAL));
}

#[test]
fn a_name_never_answered_is_retried_within_a_second() {
    let now = Instant::now();
    let mut r = resolver(&[S1]);
    r.configure(vec![target("http://api:80", "api.test")], now);
    let mut sent = Vec::new();
    r.poll(now, &mut sent);
    let reports = r.poll(now + TIMEOUT, &mut Vec::new());
    assert!(
        matches!(&reports[..], [Report::Failed { kept: 0, .. }]),
        "{reports:?}"
    );
    assert_eq!(
        r.next_wakeup(),
        Some(now + TIMEOUT + Duration::from_secs(1))
    );
}

#[test]
fn datagrams_that_are_not_the_answer_are_ignored() {
    let now = Instant::now();
    let mut r = resolver(&[S1]);
    r.configure(vec![target("http://api:80", "api.test")], now);
    let mut sent = Vec::new();
    r.poll(now, &mut sent);
    let good = reply(&sent[0], &["10.0.0.1"], RCODE::NoError, false);
    let mut out = Vec::new();
    // From another address; with another id; a query; too short for an id.
    assert_eq!(
        r.on_datagram(addr("127.0.0.1:9"), &good, now, &mut out),
        None
    );
    let mut other_id = good.clone();
    other_id[0] ^= 0xff;
    assert_eq!(r.on_datagram(addr(S1), &other_id, now, &mut out), None);
    assert_eq!(r.on_datagram(addr(S1), &sent[0].bytes, now, &mut out), None);
    assert_eq!(r.on_datagram(addr(S1), &[1], now, &mut out), None);
    assert!(out.is_empty());
    assert!(r.addresses("default", "http://api:80").is_empty());
    // The real answers still count.
    assert_eq!(answer_all(&mut r, &sent, &["10.0.0.1"], now).len(), 1);
}

#[test]
fn a_reload_keeps_the_sets_of_kept_names_and_asks_for_new_ones() {
    let now = Instant::now();
    let mut r = resolver(&[S1]);
    r.configure(two_names(), now);
    let mut sent = Vec::new();
    r.poll(now, &mut sent);
    assert_eq!(sent.len(), 4);
    answer_all(&mut r, &sent, &["10.0.0.1"], now);
    let later = now + Duration::from_secs(1);
    r.configure(
        vec![
            target("http://a:80", "a.test"),
            target("http://c:80", "c.test"),
        ],
        later,
    );
    assert_eq!(r.addresses("default", "http://a:80"), ips(&["10.0.0.1"]));
    assert!(r.addresses("default", "http://b:80").is_empty());
    assert!(r.addresses("default", "http://c:80").is_empty());
    assert_eq!(r.next_wakeup(), Some(later), "the new name is due at once");
    let mut sent = Vec::new();
    r.poll(later, &mut sent);
    let asked: Vec<String> = sent
        .iter()
        .map(|d| {
            Packet::parse(&d.bytes).expect("query").questions[0]
                .qname
                .to_string()
        })
        .collect();
    assert_eq!(asked, ["c.test", "c.test"]);
}

#[test]
fn without_a_nameserver_every_round_fails() {
    let now = Instant::now();
    let mut r = resolver(&[]);
    r.configure(vec![target("http://api:80", "api.test")], now);
    let mut sent = Vec::new();
    let reports = r.poll(now, &mut sent);
    assert!(sent.is_empty());
    assert!(
        matches!(&reports[..], [Report::Failed { why, .. }] if why.contains("no nameserver")),
        "{reports:?}"
    );
}

#[test]
fn an_answer_finds_its_query_when_two_lookups_share_an_id() {
    // Search for a generator seed with which a.test's and b.test's rounds draw one id each alike.
    let now = Instant::now();
    for seed in 0..2_000_000u64 {
        let mut r = Resolver::new(vec![addr(S1)], TIMEOUT, Rng::with_seed(seed));
        r.configure(two_names(), now);
        let mut sent = Vec::new();
        r.poll(now, &mut sent);
        let id = |d: &Datagram| message::id_of(&d.bytes);
        let (a, b) = sent.split_at(2);
        assert_ne!(
            id(&a[0]),
            id(&a[1]),
            "a round's two queries never share an id"
        );
        if !a.iter().any(|q| b.iter().any(|p| id(p) == id(q))) {
            continue;
        }
        // b.test's answers first, then a.test's: each lands on its own lookup.
        let mut reports = answer_all(&mut r, b, &["10.0.0.2"], now);
        reports.extend(answer_all(&mut r, a, &["10.0.0.1"], now));
        assert_eq!(
            reports,
            vec![
                changed("http://b:80", "b.test", &["10.0.0.2"], &[]),
                changed("http://a:80", "a.test", &["10.0.0.1"], &[]),
            ]
        );
        return;
    }
    panic!("no seed gave two lookups the same id");
}
