//! DNS messages for discovery: an A or AAAA query for one name, and the addresses an answer to it
//! gives, with everything that makes an answer unusable (a wrong id or question, truncation, an error
//! code, a malformed packet) told apart. Encoding and decoding are simple-dns's; this module decides
//! what an answer means. No sockets. Also the nameservers of a resolv.conf text.

use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, TYPE};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which addresses a query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn record_type(self) -> TYPE {
        match self {
            Family::V4 => TYPE::A,
            Family::V6 => TYPE::AAAA,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "A",
            Family::V6 => "AAAA",
        }
    }
}

/// Why an answer gave no usable addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerError {
    /// Not a DNS message, or one whose header promises more records than it holds.
    Malformed,
    /// A message, but not the answer to this query (a query, another id or another question): ignored,
    /// the real answer may still come.
    NotOurs,
    /// The TC flag: the answer did not fit in a UDP datagram.
    Truncated,
    /// NXDOMAIN: the name does not exist.
    NoSuchName,
    /// Any other error code (SERVFAIL, REFUSED, ...).
    Rcode(u16),
}

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnswerError::Malformed => f.write_str("malformed answer"),
            AnswerError::NotOurs => f.write_str("answer to another query"),
            AnswerError::Truncated => f.write_str("truncated answer (TC)"),
            AnswerError::NoSuchName => f.write_str("no such name (NXDOMAIN)"),
            AnswerError::Rcode(code) => match code {
                2 => f.write_str("server failure (SERVFAIL)"),
                5 => f.write_str("refused (REFUSED)"),
                _ => write!(f, "error code {code}"),
            },
        }
    }
}

/// Whether `host` can be asked for: a name of labels of 1 to 63 bytes, at most 253 bytes in all.
pub fn valid_name(host: &str) -> bool {
    Name::new(host).is_ok()
        && !host.is_empty()
        && host.len() <= 253
        && host
            .trim_end_matches('.')
            .split('.')
            .all(|l| (1..=63).contains(&l.len()))
}

/// The query for `host`'s addresses of `family`, with recursion desired.
pub fn query(id: u16, host: &str, family: Family) -> Option<Vec<u8>> {
    let name = Name::new(host).ok()?;
    let mut packet = Packet::new_query(id);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    packet.questions.push(Question::new(
        name,
        QTYPE::TYPE(family.record_type()),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    packet.build_bytes_vec().ok()
}

/// The id of a DNS message, to find the query it answers.
pub fn id_of(message: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*message.first()?, *message.get(1)?]))
}

/// The addresses of `family` an answer gives for `host` (following CNAMEs within the answer), for
/// the query with `id`. An empty list is a valid answer: the name has no such addresses.
pub fn addresses(
    message: &[u8],
    id: u16,
    host: &str,
    family: Family,
) -> Result<Vec<IpAddr>, AnswerError> {
    check_counts(message)?;
    let packet = Packet::parse(message).map_err(|_| AnswerError::Malformed)?;
    let asked = Name::new(host).map_err(|_| AnswerError::NotOurs)?;
    let ours = packet.id() == id
        && packet.has_flags(PacketFlag::RESPONSE)
        && packet.questions.len() == 1
        && packet.questions[0].qname == asked
        && packet.questions[0].qtype == QTYPE::TYPE(family.record_type());
    if !ours {
        return Err(AnswerError::NotOurs);
    }
    if packet.has_flags(PacketFlag::TRUNCATION) {
        return Err(AnswerError::Truncated);
    }
    match packet.rcode() {
        RCODE::NoError => {}
        RCODE::NameError => return Err(AnswerError::NoSuchName),
        other => return Err(AnswerError::Rcode(other as u16)),
    }
    // The names that stand for `host`: itself, and the targets of the CNAME chain from it. A chain
    // is at most as long as the answer section, so this ends.
    let mut names = vec![asked];
    for _ in 0..packet.answers.len() {
        let next = packet.answers.iter().find_map(|rr| match &rr.rdata {
            RData::CNAME(target) if names.contains(&rr.name) && !names.contains(&target.0) => {
                Some(target.0.clone())
            }
            _ => None,
        });
        match next {
            Some(target) => names.push(target),
            None => break,
        }
    }
    let mut found = Vec::new();
    for rr in packet.answers.iter().filter(|rr| names.contains(&rr.name)) {
        let ip = match (&rr.rdata, family) {
            (RData::A(a), Family::V4) => IpAddr::V4(Ipv4Addr::from(a.address)),
            (RData::AAAA(a), Family::V6) => IpAddr::V6(Ipv6Addr::from(a.address)),
            _ => continue,
        };
        if !found.contains(&ip) {
            found.push(ip);
        }
    }
    Ok(found)
}

/// Rejects a header whose counts cannot fit in the message before any record is parsed (each
/// question takes at least 5 bytes, each record 11), so that a 12-byte datagram cannot make the parser
/// reserve room for 65,535 records.
fn check_counts(message: &[u8]) -> Result<(), AnswerError> {
    if message.len() < 12 {
        return Err(AnswerError::Malformed);
    }
    let count = |at: usize| u16::from_be_bytes([message[at], message[at + 1]]) as usize;
    let least = 12 + 5 * count(4) + 11 * (count(6) + count(8) + count(10));
    if least > message.len() {
        return Err(AnswerError::Malformed);
    }
    Ok(())
}

/// The nameservers of a resolv.conf text (port 53), in order; scoped IPv6 addresses (`fe80::1%eth0`)
/// and lines that are not addresses are skipped.
pub fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(addr)) => addr.parse::<IpAddr>().ok(),
                _ => None,
            }
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;
