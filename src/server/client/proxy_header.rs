//! A connection's first read when `proxy_protocol` is on: the PROXY protocol header, taken off the
//! socket before any TLS or HTTP byte, naming the client the connection is then counted and served as.

use super::*;

impl Conn {
    /// Reads the PROXY protocol header, and only it, off the socket (before any TLS or HTTP bytes):
    /// looked at with `peek` until it is whole, then consumed to its last byte. False while it is
    /// not whole yet. A connection without a valid one is closed.
    pub(super) fn read_proxy_header(
        &mut self,
        sh: &mut Shared,
        now: Instant,
    ) -> Result<bool, Close> {
        use crate::proxy_protocol::{MAX_HEADER, ProxyError, parse};
        use std::io::Read;
        let mut buf = [0u8; MAX_HEADER];
        let socket = self.client.transport.socket();
        let seen = match socket.peek(&mut buf) {
            Ok(0) => return Err(Close::Graceful),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.client.ready.readable = false;
                return Ok(false);
            }
            Err(_) => return Err(Close::Abort),
        };
        let addr = self.exchange.client_addr();
        let header = match parse(&buf[..seen]) {
            Ok(Some(header)) => header,
            Ok(None) if seen < MAX_HEADER => {
                // The rest comes with the next readiness event.
                self.client.ready.readable = false;
                return Ok(false);
            }
            Ok(None) => return Err(Close::Abort),
            Err(e) => {
                let level = if e == ProxyError::Missing {
                    log::Level::Info
                } else {
                    log::Level::Warn
                };
                log::log!(level, "{addr}: {e}; connection closed");
                return Err(Close::Abort);
            }
        };
        let mut consumed = 0;
        while consumed < header.len {
            match (&*socket).read(&mut buf[consumed..header.len]) {
                Ok(0) => return Err(Close::Graceful),
                Ok(n) => consumed += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The bytes were there a moment ago (peeked); anything else is a broken socket.
                Err(_) => return Err(Close::Abort),
            }
        }
        if let Some(client) = header.source {
            log::debug!(
                "conn {}: PROXY header from {addr} names {client}",
                self.id()
            );
            self.exchange.set_client_addr(client);
        }
        let client = self.exchange.client_addr();
        match sh.upstream.limits.connect(client.ip(), now) {
            Ok(held) => self.limit = held,
            Err(_) => {
                log::debug!("{client}: over [limits] connections_per_client, connection closed");
                return Err(Close::Abort);
            }
        }
        self.proxy_pending = false;
        Ok(true)
    }
}
