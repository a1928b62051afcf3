//! A DNS responder on 127.0.0.1 for discovery tests: it answers A and AAAA queries for the names it
//! is given, or misbehaves as told (silence, an error code, truncation, no records), and counts the
//! queries it receives per name.

use simple_dns::rdata::{A, AAAA, RData};
use simple_dns::{CLASS, Packet, PacketFlag, QTYPE, RCODE, ResourceRecord, TYPE};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How the responder answers one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Addresses(Vec<IpAddr>),
    /// No answer at all: the lookup times out.
    Silent,
    /// An answer with this error code and no records.
    Rcode(RCODE),
    /// The TC flag, with the addresses it has room for.
    Truncated,
}

#[derive(Default)]
struct Zone {
    answers: HashMap<String, Answer>,
    queries: HashMap<String, usize>,
}

pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DnsServer {
    pub fn start() -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the test DNS server");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("read timeout");
        let addr = socket.local_addr().expect("local address");
        let zone = Arc::new(Mutex::new(Zone::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (zone, stop) = (zone.clone(), stop.clone());
            thread::spawn(move || serve(&socket, &zone, &stop))
        };
        DnsServer {
            addr,
            zone,
            stop,
            thread: Some(thread),
        }
    }

    /// Answers `name` with `addresses` from now on.
    pub fn set(&self, name: &str, addresses: &[&str]) {
        let ips = addresses
            .iter()
            .map(|a| a.parse().expect("test address"))
            .collect();
        self.answer(name, Answer::Addresses(ips));
    }

    pub fn answer(&self, name: &str, answer: Answer) {
        self.zone
            .lock()
            .unwrap()
            .answers
            .insert(name.to_ascii_lowercase(), answer);
    }

    /// The queries (A and AAAA) received for `name` so far.
    pub fn queries(&self, name: &str) -> usize {
        let zone = self.zone.lock().unwrap();
        zone.queries
            .get(&name.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(socket: &UdpSocket, zone: &Mutex<Zone>, stop: &AtomicBool) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Ok(query) = Packet::parse(&buf[..n]) else {
            continue;
        };
        let Some(question) = query.questions.first() else {
            continue;
        };
        let name = question.qname.to_string().to_ascii_lowercase();
        let answer = {
            let mut zone = zone.lock().unwrap();
            *zone.queries.entry(name.clone()).or_default() += 1;
            zone.answers
                .get(&name)
                .cloned()
                .unwrap_or(Answer::Rcode(RCODE::NameError))
        };
        let mut reply = Packet::new_reply(query.id());
        reply.questions.push(question.clone());
        match &answer {
            Answer::Silent => continue,
            Answer::Rcode(rcode) => *reply.rcode_mut() = *rcode,
            Answer::Truncated => reply.set_flags(PacketFlag::TRUNCATION),
            Answer::Addresses(ips) => {
                for ip in ips {
                    let rdata = match (ip, question.qtype) {
                        (IpAddr::V4(v4), QTYPE::TYPE(TYPE::A)) => RData::A(A {
                            address: u32::from(*v4),
                        }),
                        (IpAddr::V6(v6), QTYPE::TYPE(TYPE::AAAA)) => RData::AAAA(AAAA {
                            address: u128::from(*v6),
                        }),
                        _ => continue,
                    };
                    reply.answers.push(ResourceRecord::new(
                        question.qname.clone(),
                        CLASS::IN,
                        1,
                        rdata,
                    ));
                }
            }
        }
        if let Ok(bytes) = reply.build_bytes_vec() {
            let _ = socket.send_to(&bytes, from);
        }
    }
}
