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
    bind_with(addr, key, false)
}

fn bind_with(
    addr: SocketAddr,
    key: &'static str,
    reuse_port: bool,
) -> Result<TcpListener, ListenError> {
    let fail = |error| ListenError { addr, key, error };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(fail)?;
    // A restarted lb can bind while connections of the previous one sit in TIME_WAIT.
    socket.set_reuse_address(true).map_err(fail)?;
    if reuse_port {
        socket.set_reuse_port(true).map_err(fail)?;
    }
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(BACKLOG).map_err(fail)?;
    Ok(socket.into())
}

/// The listening sockets of `workers` event loops on `addr`, non-blocking. Without `reuse_port`, one
/// socket that every worker holds a descriptor of (each registers it with [`register_exclusive`]);
/// with it, a SO_REUSEPORT socket per worker, across which the kernel hashes new connections (when
/// `addr` has port 0, the first one's port is the one all share).
pub fn bind_for_workers(
    addr: SocketAddr,
    key: &'static str,
    workers: usize,
    reuse_port: bool,
) -> Result<Vec<TcpListener>, ListenError> {
    let fail = |addr, error| ListenError { addr, key, error };
    let first = bind_with(addr, key, reuse_port)?;
    first.set_nonblocking(true).map_err(|e| fail(addr, e))?;
    let bound = first.local_addr().map_err(|e| fail(addr, e))?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        let next = if reuse_port {
            bind_with(bound, key, true)?
        } else {
            listeners[0].try_clone().map_err(|e| fail(bound, e))?
        };
        next.set_nonblocking(true).map_err(|e| fail(bound, e))?;
        listeners.push(next);
    }
    Ok(listeners)
}

/// Registers a listener that several event loops share so that a new connection wakes one of the
/// loops waiting in `epoll_wait` (EPOLLEXCLUSIVE), not all of them; a loop busy with other work is
/// skipped, so a stalled worker holds up no connection. Edge-triggered like every mio registration;
/// `Registry::deregister` removes it.
pub fn register_exclusive(
    registry: &mio::Registry,
    listener: &mio::net::TcpListener,
    token: mio::Token,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut event = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLET | libc::EPOLLEXCLUSIVE) as u32,
        u64: token.0 as u64,
    };
    // SAFETY: both descriptors are open for the duration of the call (borrowed), and `event` is a
    // valid epoll_event that the kernel only reads. mio reads the token back from `u64`, as for its
    // own registrations.
    let rc = unsafe {
        libc::epoll_ctl(
            registry.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            listener.as_raw_fd(),
            &mut event,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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
