use super::*;
use simple_dns::ResourceRecord;
use simple_dns::rdata::{A, AAAA, CNAME};

/// An answer to `question` (name, type) with `id`, the given records and error code, and TC when
/// `truncated` (the resolver's tests answer with it too).
pub(crate) fn answer(
    id: u16,
    question: (&str, TYPE),
    rcode: RCODE,
    truncated: bool,
    records: &[(&str, RData<'static>)],
) -> Vec<u8> {
    let mut packet = Packet::new_reply(id);
    packet.questions.push(Question::new(
        Name::new_unchecked(question.0),
        QTYPE::TYPE(question.1),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    *packet.rcode_mut() = rcode;
    if truncated {
        packet.set_flags(PacketFlag::TRUNCATION);
    }
    for (name, rdata) in records {
        packet.answers.push(ResourceRecord::new(
            Name::new_unchecked(name),
            CLASS::IN,
            30,
            rdata.clone(),
        ));
    }
    packet.build_bytes_vec().expect("test answer encodes")
}

fn a(ip: [u8; 4]) -> RData<'static> {
    RData::A(A {
        address: u32::from(Ipv4Addr::from(ip)),
    })
}

/// The record for `ip` in an answer to a query of `record_type`: none when the families differ.
pub(crate) fn record_of(ip: IpAddr, record_type: TYPE) -> Option<RData<'static>> {
    match (ip, record_type) {
        (IpAddr::V4(v4), TYPE::A) => Some(a(v4.octets())),
        (IpAddr::V6(v6), TYPE::AAAA) => Some(RData::AAAA(AAAA {
            address: u128::from(v6),
        })),
        _ => None,
    }
}

fn aaaa(ip: &str) -> RData<'static> {
    RData::AAAA(AAAA {
        address: u128::from(ip.parse::<Ipv6Addr>().expect("test address")),
    })
}

fn cname(target: &'static str) -> RData<'static> {
    RData::CNAME(CNAME(Name::new_unchecked(target)))
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

#[test]
fn a_query_round_trips_through_the_codec() {
    let bytes = query(0x1234, "api.internal", Family::V4).expect("encodes");
    assert_eq!(id_of(&bytes), Some(0x1234));
    let packet = Packet::parse(&bytes).expect("parses");
    assert!(packet.has_flags(PacketFlag::RECURSION_DESIRED));
    assert!(!packet.has_flags(PacketFlag::RESPONSE));
    assert_eq!(packet.questions.len(), 1);
    assert_eq!(packet.questions[0].qname.to_string(), "api.internal");
    assert_eq!(packet.questions[0].qtype, QTYPE::TYPE(TYPE::A));
    let v6 = Packet::parse(&query(7, "api.internal", Family::V6).expect("encodes"))
        .expect("parses")
        .questions[0]
        .qtype;
    assert_eq!(v6, QTYPE::TYPE(TYPE::AAAA));
}

#[test]
fn answers_give_their_addresses_or_say_why_not() {
    for (what, bytes, family, expected) in answer_cases() {
        assert_eq!(addresses(&bytes, 9, HOST, family), expected, "{what}");
    }
}

/// The name the answer cases ask for, with id 9.
const HOST: &str = "api.internal";

/// (what the case is, the datagram, the family asked for, what `addresses` makes of it)
type Case = (
    &'static str,
    Vec<u8>,
    Family,
    Result<Vec<IpAddr>, AnswerError>,
);

fn answer_cases() -> Vec<Case> {
    let host = HOST;
    let v4 = (host, TYPE::A);
    let ok = RCODE::NoError;
    vec![
        (
            "two A records",
            answer(
                9,
                v4,
                ok,
                false,
                &[(host, a([10, 0, 0, 1])), (host, a([10, 0, 0, 2]))],
            ),
            Family::V4,
            Ok(vec![ip("10.0.0.1"), ip("10.0.0.2")]),
        ),
        (
            "a repeated record counts once",
            answer(
                9,
                v4,
                ok,
                false,
                &[(host, a([10, 0, 0, 1])), (host, a([10, 0, 0, 1]))],
            ),
            Family::V4,
            Ok(vec![ip("10.0.0.1")]),
        ),
        (
            "no records: the name has no such address",
            answer(9, v4, ok, false, &[]),
            Family::V4,
            Ok(vec![]),
        ),
        (
            "AAAA",
            answer(9, (host, TYPE::AAAA), ok, false, &[(host, aaaa("fd00::5"))]),
            Family::V6,
            Ok(vec![ip("fd00::5")]),
        ),
        (
            "names are compared without case",
            answer(
                9,
                ("API.Internal", TYPE::A),
                ok,
                false,
                &[("api.INTERNAL", a([10, 0, 0, 3]))],
            ),
            Family::V4,
            Ok(vec![ip("10.0.0.3")]),
        ),
        (
            "a CNAME chain is followed",
            answer(
                9,
                v4,
                ok,
                false,
                &[
                    (host, cname("lb.svc")),
                    ("lb.svc", cname("pods.svc")),
                    ("pods.svc", a([10, 1, 0, 1])),
                ],
            ),
            Family::V4,
            Ok(vec![ip("10.1.0.1")]),
        ),
        (
            "records for other names are not ours to use",
            answer(
                9,
                v4,
                ok,
                false,
                &[
                    ("other.internal", a([10, 9, 9, 9])),
                    (host, a([10, 0, 0, 1])),
                ],
            ),
            Family::V4,
            Ok(vec![ip("10.0.0.1")]),
        ),
        (
            "records of the other family are skipped",
            answer(
                9,
                v4,
                ok,
                false,
                &[(host, aaaa("fd00::1")), (host, a([10, 0, 0, 1]))],
            ),
            Family::V4,
            Ok(vec![ip("10.0.0.1")]),
        ),
        (
            "another id",
            answer(10, v4, ok, false, &[(host, a([10, 0, 0, 1]))]),
            Family::V4,
            Err(AnswerError::NotOurs),
        ),
        (
            "another name",
            answer(
                9,
                ("evil.internal", TYPE::A),
                ok,
                false,
                &[("evil.internal", a([6, 6, 6, 6]))],
            ),
            Family::V4,
            Err(AnswerError::NotOurs),
        ),
        (
            "another type",
            answer(9, (host, TYPE::AAAA), ok, false, &[]),
            Family::V4,
            Err(AnswerError::NotOurs),
        ),
        (
            "our own query echoed back",
            query(9, host, Family::V4).expect("encodes"),
            Family::V4,
            Err(AnswerError::NotOurs),
        ),
        (
            "truncated",
            answer(9, v4, ok, true, &[(host, a([10, 0, 0, 1]))]),
            Family::V4,
            Err(AnswerError::Truncated),
        ),
        (
            "NXDOMAIN",
            answer(9, v4, RCODE::NameError, false, &[]),
            Family::V4,
            Err(AnswerError::NoSuchName),
        ),
        (
            "SERVFAIL",
            answer(9, v4, RCODE::ServerFailure, false, &[]),
            Family::V4,
            Err(AnswerError::Rcode(2)),
        ),
        (
            "empty datagram",
            vec![],
            Family::V4,
            Err(AnswerError::Malformed),
        ),
        (
            "header only, promising 65,535 answers",
            vec![0, 9, 0x81, 0x80, 0, 1, 0xff, 0xff, 0, 0, 0, 0],
            Family::V4,
            Err(AnswerError::Malformed),
        ),
        (
            "cut in the middle of a record",
            {
                let mut bytes = answer(9, v4, ok, false, &[(host, a([10, 0, 0, 1]))]);
                bytes.truncate(bytes.len() - 2);
                bytes
            },
            Family::V4,
            Err(AnswerError::Malformed),
        ),
    ]
}

#[test]
fn a_cname_loop_ends() {
    let bytes = answer(
        1,
        ("a.test", TYPE::A),
        RCODE::NoError,
        false,
        &[("a.test", cname("b.test")), ("b.test", cname("a.test"))],
    );
    assert_eq!(addresses(&bytes, 1, "a.test", Family::V4), Ok(vec![]));
}

#[test]
fn resolv_conf_nameservers() {
    let text = "# generated\nsearch example.com\nnameserver 10.0.0.53\nnameserver  ::1\n\
                nameserver fe80::1%eth0\nnameserver bogus\noptions ndots:5\n";
    assert_eq!(
        resolv_conf_servers(text),
        vec![
            "10.0.0.53:53".parse::<SocketAddr>().expect("addr"),
            "[::1]:53".parse().expect("addr")
        ]
    );
    assert!(resolv_conf_servers("").is_empty());
}

#[test]
fn names_that_can_be_asked_for() {
    for (host, valid) in [
        ("api.internal", true),
        ("localhost", true),
        ("a.b.c.", true),
        ("", false),
        ("a..b", false),
        (&"x".repeat(64), false),
        (&format!("{}.com", "a.".repeat(130)), false),
    ] {
        assert_eq!(valid_name(host), valid, "{host:?}");
    }
}

mod hostile {
    //! Whatever arrives on the socket, reading it never panics: arbitrary bytes, and valid answers
    //! with bytes replaced, inserted, removed or cut off (compression pointers and counts included).
    use super::*;
    use proptest::prelude::*;

    fn valid_answer() -> impl Strategy<Value = Vec<u8>> {
        (0usize..6, any::<bool>()).prop_map(|(n, cname)| {
            let host = "api.internal";
            let mut records = Vec::new();
            if cname {
                records.push((host, super::cname("pods.internal")));
            }
            for i in 0..n {
                let name = if cname { "pods.internal" } else { host };
                records.push((name, a([10, 0, 0, i as u8])));
            }
            answer(9, (host, TYPE::A), RCODE::NoError, false, &records)
        })
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Replace(usize, u8),
        Insert(usize, u8),
        Remove(usize),
        Cut(usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Replace(at, b)),
            (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Insert(at, b)),
            any::<usize>().prop_map(Mutation::Remove),
            any::<usize>().prop_map(Mutation::Cut),
        ]
    }

    fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Replace(at, b) if !bytes.is_empty() => bytes[at % len] = b,
            Mutation::Insert(at, b) => bytes.insert(at % (bytes.len() + 1), b),
            Mutation::Remove(at) if !bytes.is_empty() => {
                bytes.remove(at % len);
            }
            Mutation::Cut(at) => bytes.truncate(at % (bytes.len() + 1)),
            _ => {}
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = addresses(&bytes, 9, "api.internal", Family::V4);
            let _ = addresses(&bytes, 9, "api.internal", Family::V6);
        }

        #[test]
        fn mutated_answers_never_panic_and_never_name_a_foreign_address(
            base in valid_answer(),
            mutations in proptest::collection::vec(mutation(), 1..6),
        ) {
            let mut bytes = base;
            for m in &mutations {
                mutate(&mut bytes, m);
            }
            if let Ok(found) = addresses(&bytes, 9, "api.internal", Family::V4) {
                // A mutated answer may still be read, but only as A records (IPv4 addresses).
                prop_assert!(found.iter().all(IpAddr::is_ipv4));
                prop_assert!(found.len() <= 16);
            }
        }
    }
}
