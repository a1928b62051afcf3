//! The PROXY protocol header (versions 1 and 2, as HAProxy specifies them) that an L4 balancer in
//! front of lb sends first on each connection, naming the client it accepted. Pure: [`parse`] looks at
//! the bytes received so far and says whether a whole, valid header is there, how long it is, and the
//! client address it carries.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest header accepted, in bytes: HAProxy's recommended buffer. A v1 header is at most 107; a
/// v2 header with more than 520 bytes of addresses and TLVs is refused.
pub const MAX_HEADER: usize = 536;
const V1_MAX: usize = 107;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A whole header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes to consume before the client's own bytes begin.
    pub len: usize,
    /// The client the balancer accepted; `None` when the header names none (v1 `UNKNOWN`, v2 `LOCAL`,
    /// an unspecified or Unix-socket family): then the connection's own address stands.
    pub source: Option<SocketAddr>,
}

/// Why the bytes are not a valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// The connection does not start with a PROXY header at all.
    Missing,
    /// It starts like one but breaks the format at the named place.
    Malformed(&'static str),
    /// Longer than [`MAX_HEADER`].
    TooLong,
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::Missing => write!(f, "no PROXY protocol header"),
            ProxyError::Malformed(what) => write!(f, "malformed PROXY header: {what}"),
            ProxyError::TooLong => write!(f, "PROXY header longer than {MAX_HEADER} bytes"),
        }
    }
}

/// A header at the start of `buf`: `Ok(None)` while it is incomplete (and could still become valid).
pub fn parse(buf: &[u8]) -> Result<Option<Header>, ProxyError> {
    let prefix = |sig: &[u8]| {
        buf.len().min(sig.len()) > 0 && sig.starts_with(&buf[..buf.len().min(sig.len())])
    };
    if prefix(V2_SIGNATURE) {
        return if buf.len() < V2_SIGNATURE.len() {
            Ok(None)
        } else {
            parse_v2(buf)
        };
    }
    if prefix(b"PROXY ") {
        return if buf.len() < 6 {
            Ok(None)
        } else {
            parse_v1(buf)
        };
    }
    if buf.is_empty() {
        return Ok(None);
    }
    Err(ProxyError::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<Option<Header>, ProxyError> {
    let malformed = ProxyError::Malformed;
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX || buf.contains(&b'\n') {
            return Err(malformed("v1 line without CRLF within 107 bytes"));
        }
        return Ok(None);
    };
    let len = end + 2;
    if len > V1_MAX {
        return Err(malformed("v1 line longer than 107 bytes"));
    }
    let line = std::str::from_utf8(&buf[6..end]).map_err(|_| malformed("v1 line not ASCII"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["UNKNOWN", ..] => Ok(Some(Header { len, source: None })),
        [family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let v6 = *family == "TCP6";
            let src = v1_address(src, v6)?;
            v1_address(dst, v6)?;
            let sport = v1_port(sport)?;
            v1_port(dport)?;
            Ok(Some(Header {
                len,
                source: Some(SocketAddr::new(src, sport)),
            }))
        }
        [_family, ..] => Err(malformed(
            "v1 protocol not TCP4, TCP6 or UNKNOWN, or wrong field count",
        )),
        [] => Err(malformed("v1 line empty")),
    }
}

fn v1_address(text: &str, v6: bool) -> Result<IpAddr, ProxyError> {
    let parsed = if v6 {
        text.parse::<Ipv6Addr>().map(IpAddr::V6).ok()
    } else {
        text.parse::<Ipv4Addr>().map(IpAddr::V4).ok()
    };
    parsed.ok_or(ProxyError::Malformed("v1 address not of its family"))
}

fn v1_port(text: &str) -> Result<u16, ProxyError> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    match text.parse::<u16>() {
        Ok(port) if digits && !leading_zero => Ok(port),
        _ => Err(ProxyError::Malformed(
            "v1 port not a number from 0 to 65535",
        )),
    }
}

fn parse_v2(buf: &[u8]) -> Result<Option<Header>, ProxyError> {
    let malformed = ProxyError::Malformed;
    if buf.len() < 16 {
        return Ok(None);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(malformed("v2 version not 2"));
    }
    let (family, transport) = (buf[13] >> 4, buf[13] & 0x0f);
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body;
    if len > MAX_HEADER {
        return Err(ProxyError::TooLong);
    }
    if buf.len() < len {
        return Ok(None);
    }
    let addresses = &buf[16..len];
    let source = match command {
        // LOCAL: the balancer's own connection (a health check): the connection's address stands.
        0x0 => None,
        0x1 => match (family, transport) {
            (0x1, _) if addresses.len() < 12 => {
                return Err(malformed("v2 IPv4 addresses cut short"));
            }
            (0x1, _) => {
                let ip = Ipv4Addr::new(addresses[0], addresses[1], addresses[2], addresses[3]);
                let port = u16::from_be_bytes([addresses[8], addresses[9]]);
                Some(SocketAddr::new(IpAddr::V4(ip), port))
            }
            (0x2, _) if addresses.len() < 36 => {
                return Err(malformed("v2 IPv6 addresses cut short"));
            }
            (0x2, _) => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&addresses[..16]);
                let port = u16::from_be_bytes([addresses[32], addresses[33]]);
                Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
            }
            // UNSPEC, or a Unix socket: no address that means anything here.
            (0x0 | 0x3, _) => None,
            _ => return Err(malformed("v2 address family unknown")),
        },
        _ => return Err(malformed("v2 command neither LOCAL nor PROXY")),
    };
    Ok(Some(Header { len, source }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        out.extend_from_slice(addresses);
        out
    }

    fn addr(text: &str) -> Option<SocketAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn version_1() {
        type Case<'a> = (
            &'a [u8],
            Result<Option<(usize, Option<SocketAddr>)>, ProxyError>,
        );
        let tcp4 = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
        let cases: &[Case] = &[
            (tcp4, Ok(Some((45, addr("192.0.2.1:56324"))))),
            (
                b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 80\r\n",
                Ok(Some((45, addr("[2001:db8::1]:65535")))),
            ),
            (b"PROXY UNKNOWN\r\n", Ok(Some((15, None)))),
            (
                b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
                Ok(Some((35, None))),
            ),
            // Incomplete, from one byte on.
            (b"P", Ok(None)),
            (b"PROXY TCP4 192.0.2.1 198.51.", Ok(None)),
            (b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r", Ok(None)),
            (b"", Ok(None)),
            // Not a header.
            (b"GET / HTTP/1.1\r\n", Err(ProxyError::Missing)),
            (b"PROXX", Err(ProxyError::Missing)),
            (b"\x16\x03\x01", Err(ProxyError::Missing)),
            // Malformed.
            (
                b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
                Err(ProxyError::Malformed(
                    "v1 protocol not TCP4, TCP6 or UNKNOWN, or wrong field count",
                )),
            ),
            (
                b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
                Err(ProxyError::Malformed("v1 address not of its family")),
            ),
            (
                b"PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",
                Err(ProxyError::Malformed("v1 address not of its family")),
            ),
            (
                b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n",
                Err(ProxyError::Malformed(
                    "v1 port not a number from 0 to 65535",
                )),
            ),
            (
                b"PROXY TCP4 192.0.2.1 198.51.100.2 +80 443\r\n",
                Err(ProxyError::Malformed(
                    "v1 port not a number from 0 to 65535",
                )),
            ),
            (
                b"PROXY TCP4 192.0.2.1 198.51.100.2 080 443\r\n",
                Err(ProxyError::Malformed(
                    "v1 port not a number from 0 to 65535",
                )),
            ),
            (
                b"PROXY TCP4  192.0.2.1 198.51.100.2 80 443\r\n",
                Err(ProxyError::Malformed(
                    "v1 protocol not TCP4, TCP6 or UNKNOWN, or wrong field count",
                )),
            ),
            (
                b"PROXY UDP4 192.0.2.1 198.51.100.2 80 443\r\n",
                Err(ProxyError::Malformed(
                    "v1 protocol not TCP4, TCP6 or UNKNOWN, or wrong field count",
                )),
            ),
            (
                b"PROXY TCP4 192.0.2.1 198.51.100.2 80 443\n",
                Err(ProxyError::Malformed(
                    "v1 line without CRLF within 107 bytes",
                )),
            ),
        ];
        for (bytes, expected) in cases {
            let got = parse(bytes).map(|h| h.map(|h| (h.len, h.source)));
            assert_eq!(&got, expected, "{:?}", String::from_utf8_lossy(bytes));
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
        assert_eq!(
            parse(&long),
            Err(ProxyError::Malformed(
                "v1 line without CRLF within 107 bytes"
            ))
        );
    }

    #[test]
    fn version_2() {
        let inet = [192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb];
        let mut inet6 = vec![0x20, 0x01, 0x0d, 0xb8];
        inet6.extend_from_slice(&[0; 11]);
        inet6.push(1);
        inet6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        inet6.extend_from_slice(&[0; 11]);
        inet6.push(2);
        inet6.extend_from_slice(&[0x1f, 0x90, 0x00, 0x50]);
        let with_tlv = [inet.as_slice(), &[0x04, 0x00, 0x02, b'i', b'd']].concat();
        type Case = (
            Vec<u8>,
            Result<Option<(usize, Option<SocketAddr>)>, ProxyError>,
        );
        let cases: Vec<Case> = vec![
            (v2(1, 0x11, &inet), Ok(Some((28, addr("192.0.2.1:56324"))))),
            (
                v2(1, 0x21, &inet6),
                Ok(Some((52, addr("[2001:db8::1]:8080")))),
            ),
            // TLVs after the addresses are skipped.
            (
                v2(1, 0x11, &with_tlv),
                Ok(Some((33, addr("192.0.2.1:56324")))),
            ),
            // LOCAL, UNSPEC and Unix: the connection's own address.
            (v2(0, 0x00, &[]), Ok(Some((16, None)))),
            (v2(0, 0x11, &inet), Ok(Some((28, None)))),
            (v2(1, 0x00, &[]), Ok(Some((16, None)))),
            (v2(1, 0x31, &[0; 216]), Ok(Some((232, None)))),
            // Incomplete.
            (V2_SIGNATURE[..5].to_vec(), Ok(None)),
            (v2(1, 0x11, &inet)[..20].to_vec(), Ok(None)),
            (v2(1, 0x11, &inet)[..15].to_vec(), Ok(None)),
            // Malformed.
            (
                v2(1, 0x11, &inet[..8]),
                Err(ProxyError::Malformed("v2 IPv4 addresses cut short")),
            ),
            (
                v2(1, 0x21, &inet),
                Err(ProxyError::Malformed("v2 IPv6 addresses cut short")),
            ),
            (
                v2(1, 0x41, &inet),
                Err(ProxyError::Malformed("v2 address family unknown")),
            ),
            (
                v2(2, 0x11, &inet),
                Err(ProxyError::Malformed("v2 command neither LOCAL nor PROXY")),
            ),
            (
                {
                    let mut b = v2(1, 0x11, &inet);
                    b[12] = 0x11;
                    b
                },
                Err(ProxyError::Malformed("v2 version not 2")),
            ),
            (v2(1, 0x11, &[0; 600]), Err(ProxyError::TooLong)),
        ];
        for (bytes, expected) in cases {
            let got = parse(&bytes).map(|h| h.map(|h| (h.len, h.source)));
            assert_eq!(got, expected, "{bytes:02x?}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(ProxyError::Missing.to_string(), "no PROXY protocol header");
        assert_eq!(
            ProxyError::Malformed("v2 version not 2").to_string(),
            "malformed PROXY header: v2 version not 2"
        );
        assert_eq!(
            ProxyError::TooLong.to_string(),
            "PROXY header longer than 536 bytes"
        );
    }
}
