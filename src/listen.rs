//! Listening sockets for both engines: the same options and backlog whichever engine binds, and an
//! error that names the address and the configuration key it came from, so that a busy port reads
//! `cannot listen on 127.0.0.1:8080 (listen): Address already in use` rather than a bare OS message.

use socket2::{Domain, Socket, Type};
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};

/// Pending connections the kernel queues for us. std's default of 128 makes a burst beyond it wait a
/// second for SYN retransmission; mio uses 1024 too.
const BACKLOG: i32 = 1024;

/// A listener that could not be set up.
#[derive(Debug)]
pub struct ListenError {
    pub addr: SocketAddr,
    /// The configuration key the address came from: `listen`, `[admin] listen`.
    pub key: &'static str,
    pub error: io::Error,
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot listen on {} ({}): {}",
            self.addr,
            self.key,
            os_message(&self.error)
        )
    }
}

impl std::error::Error for ListenError {}

impl From<ListenError> for io::Error {
    fn from(e: ListenError) -> io::Error {
        io::Error::new(e.error.kind(), e.to_string())
    }
}

/// The OS's description of an error without the `(os error N)` suffix std appends.
pub fn os_message(error: &io::Error) -> String {
    let text = error.to_string();
    match text.rsplit_once(" (os error ") {
        Some((message, _)) => message.to_string(),
        None => text,
    }
}

/// Binds a listening socket on `addr` (from configuration key `key`), in blocking mode.
pub fn bind(addr: SocketAddr, key: &'static str) -> Result<TcpListener, ListenError> {
    let fail = |error| ListenError { addr, key, error };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(fail)?;
    // A restarted lb can bind while connections of the previous one sit in TIME_WAIT.
    socket.set_reuse_address(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(BACKLOG).map_err(fail)?;
    Ok(socket.into())
}

/// Like [`bind`], in non-blocking mode for the event loop.
pub fn bind_nonblocking(
    addr: SocketAddr,
    key: &'static str,
) -> Result<mio::net::TcpListener, ListenError> {
    let listener = bind(addr, key)?;
    listener
        .set_nonblocking(true)
        .map_err(|error| ListenError { addr, key, error })?;
    Ok(mio::net::TcpListener::from_std(listener))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_address_is_named_with_its_key() {
        let taken = bind("127.0.0.1:0".parse().unwrap(), "listen").unwrap();
        let addr = taken.local_addr().unwrap();
        let error = bind(addr, "[admin] listen").unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("cannot listen on {addr} ([admin] listen): Address already in use")
        );
        assert_eq!(io::Error::from(error).kind(), io::ErrorKind::AddrInUse);
        let listener = bind_nonblocking("127.0.0.1:0".parse().unwrap(), "listen").unwrap();
        assert!(listener.local_addr().unwrap().port() > 0);
    }

    #[test]
    fn os_suffix_is_dropped() {
        let e = io::Error::from_raw_os_error(98);
        assert_eq!(os_message(&e), "Address already in use");
        let custom = io::Error::other("plain");
        assert_eq!(os_message(&custom), "plain");
    }
}
