//! What the log says about requests: the request line kept for the access log once the head has left
//! the buffer, and the access log line itself, written the same way whichever engine served it.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// The request line, kept inline (truncated) for the access log once the head has left the buffer.
#[derive(Clone, Copy)]
pub struct RequestLine {
    method: [u8; 16],
    method_len: u8,
    target: [u8; 96],
    target_len: u8,
    truncated: bool,
}

impl RequestLine {
    pub fn new(method: &[u8], target: &[u8]) -> RequestLine {
        let mut line = RequestLine {
            method: [0; 16],
            method_len: 0,
            target: [0; 96],
            target_len: 0,
            truncated: method.len() > 16 || target.len() > 96,
        };
        let m = method.len().min(16);
        line.method[..m].copy_from_slice(&method[..m]);
        line.method_len = m as u8;
        let t = target.len().min(96);
        line.target[..t].copy_from_slice(&target[..t]);
        line.target_len = t as u8;
        line
    }

    /// The request target as kept (at most 96 bytes).
    pub fn target(&self) -> &[u8] {
        &self.target[..usize::from(self.target_len)]
    }
}

impl fmt::Display for RequestLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let method = String::from_utf8_lossy(&self.method[..usize::from(self.method_len)]);
        let target = String::from_utf8_lossy(self.target());
        let more = if self.truncated { "..." } else { "" };
        write!(f, "{method} {target}{more}")
    }
}

impl fmt::Debug for RequestLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestLine({self})")
    }
}

/// One access log line for a response a backend gave:
/// `client "METHOD target" status bytes backend-url duration`.
pub fn proxied(
    client: SocketAddr,
    line: &RequestLine,
    status: u16,
    bytes: u64,
    backend: &str,
    took: Duration,
) {
    log::info!(
        "{client} \"{line}\" {status} {bytes} {backend} {}ms",
        took.as_millis()
    );
}

/// The access log line of a protocol switch: the exchange becomes a tunnel.
pub fn tunnel(client: SocketAddr, line: &RequestLine, backend: &str) {
    log::info!("{client} \"{line}\" 101 - {backend} tunnel");
}

/// The access log line of a response lb wrote itself: `client - status bytes`.
pub fn own(client: SocketAddr, status: u16, bytes: usize) {
    log::info!("{client} - {status} {bytes}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_kept_truncated() {
        let line = RequestLine::new(b"GET", b"/a?b=1");
        assert_eq!(line.to_string(), "GET /a?b=1");
        assert_eq!(line.target(), b"/a?b=1");
        let long = RequestLine::new(b"PROPPATCHPROPPATCHX", &[b'x'; 200]);
        let text = long.to_string();
        assert!(text.starts_with("PROPPATCHPROPPAT xxx") && text.ends_with("..."));
        assert_eq!(long.target().len(), 96);
    }
}
