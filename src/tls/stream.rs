//! A TLS session over a connected socket, as the byte stream the drivers read and write: plaintext in
//! and out, records to and from the socket underneath, for either engine.
//!
//! The event loop's sockets are non-blocking and edge-triggered, so a read must behave like a plain
//! socket's: it comes back short only when the socket's receive queue is empty (a short socket read, or
//! WouldBlock), so that `io::fill` can keep its rule that a short read means "wait for the next event".
//! A read therefore keeps pulling records while it has room and the socket delivered a full buffer.
//! Records that could not be written at once (the socket's send buffer is full) stay inside the session:
//! [`TlsStream::wants_flush`] says so, and the next write, or the driver on writability, flushes them
//! before anything new is accepted. That bounds what a connection can hold to one batch of records
//! (`BUFFER_LIMIT`). The threaded engine's sockets block instead: reads then return with the first
//! plaintext, and flushes wait (up to the socket's timeout).

use super::BUFFER_LIMIT;
use crate::transport::Socket;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

pub struct TlsStream<S> {
    session: Connection,
    socket: S,
    /// The socket blocks (the threaded engine): reads return with the first plaintext, flushes wait.
    blocking: bool,
    /// A socket read returned 0: the peer closed its sending side.
    eof: bool,
    /// Some byte came from the peer. A connection closed before sending anything is a port probe, not
    /// a failed handshake.
    received: bool,
    /// `close_notify` was queued: nothing more is sent.
    close_notify_sent: bool,
    /// The socket's sending side is to be shut once the records before it are out.
    shutdown_pending: bool,
    /// Why the session failed: a bad record, an alert, a rejected certificate. Every later call
    /// reports it.
    failure: Option<rustls::Error>,
}

impl<S> std::fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("handshaking", &self.session.is_handshaking())
            .field("eof", &self.eof)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

/// Reads from the socket and notes whether the read came back short: the receive queue is then empty
/// (epoll(7)), and another read would only say WouldBlock.
struct Tracked<'a, S> {
    socket: &'a mut S,
    short: bool,
}

impl<S: Read> Read for Tracked<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.socket.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

fn session_error(e: &rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.clone())
}

/// A session that answers a client's handshake, to wrap a socket with [`TlsStream::new`].
pub fn server_session(config: Arc<ServerConfig>) -> io::Result<Connection> {
    let session = ServerConnection::new(config).map_err(|e| session_error(&e))?;
    Ok(session.into())
}

/// A session that starts a handshake with a backend known as `name`.
pub fn client_session(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> io::Result<Connection> {
    let session = ClientConnection::new(config, name).map_err(|e| session_error(&e))?;
    Ok(session.into())
}

impl<S: Socket> TlsStream<S> {
    pub fn new(mut session: Connection, socket: S, blocking: bool) -> Self {
        session.set_buffer_limit(Some(BUFFER_LIMIT));
        TlsStream {
            session,
            socket,
            blocking,
            eof: false,
            received: false,
            close_notify_sent: false,
            shutdown_pending: false,
            failure: None,
        }
    }

    pub fn socket(&self) -> &S {
        &self.socket
    }

    pub fn socket_mut(&mut self) -> &mut S {
        &mut self.socket
    }

    pub fn into_socket(self) -> S {
        self.socket
    }

    /// Says how the socket underneath behaves now (the threaded engine switches it around checks).
    pub fn set_blocking(&mut self, blocking: bool) {
        self.blocking = blocking;
    }

    pub fn is_handshaking(&self) -> bool {
        self.session.is_handshaking()
    }

    /// Records are waiting for the socket to take them (or a half-close waits behind them).
    pub fn wants_flush(&self) -> bool {
        self.session.wants_write() || self.shutdown_pending
    }

    /// Writes pending records. `Ok(true)` when none are left; `Ok(false)` when the socket would block.
    pub fn flush_records(&mut self) -> io::Result<bool> {
        while self.session.wants_write() {
            match self.session.write_tls(&mut self.socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        if self.shutdown_pending {
            self.shutdown_pending = false;
            self.socket.shutdown(Shutdown::Write)?;
        }
        Ok(true)
    }

    /// Sends `close_notify`, then ends the socket's sending side once every record is out.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        if !self.close_notify_sent {
            self.close_notify_sent = true;
            self.session.send_close_notify();
            self.shutdown_pending = true;
        }
        self.flush_records().map(|_| ())
    }

    /// Moves a handshake along as far as the socket allows. `Ok(true)` once it is complete and its
    /// last flight is written; a blocking socket waits for that (up to its timeout).
    pub fn handshake(&mut self) -> io::Result<bool> {
        loop {
            if let Some(e) = &self.failure {
                return Err(session_error(e));
            }
            if !self.flush_records()? {
                return Ok(false);
            }
            if !self.session.is_handshaking() {
                return Ok(true);
            }
            if self.eof {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during the TLS handshake",
                ));
            }
            if !self.read_records()? {
                return Ok(false);
            }
        }
    }

    /// One socket read into the session, and what it brought processed. `Ok(false)` when the socket
    /// had nothing (WouldBlock); `Ok(true)` otherwise, with `eof` set on a close.
    fn read_records(&mut self) -> io::Result<bool> {
        let mut tracked = Tracked {
            socket: &mut self.socket,
            short: false,
        };
        let n = loop {
            match self.session.read_tls(&mut tracked) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            self.eof = true;
        } else {
            self.received = true;
        }
        self.process()?;
        Ok(true)
    }

    fn process(&mut self) -> io::Result<()> {
        if let Err(e) = self.session.process_new_packets() {
            // rustls queued an alert telling the peer why; it goes if the socket takes it now.
            let _ = self.flush_records();
            let error = session_error(&e);
            self.failure = Some(e);
            return Err(error);
        }
        Ok(())
    }

    /// Whether a pooled connection is still open with nothing unexpected in it: records that arrived
    /// are processed (a session ticket is fine; data, an alert or a close are not). The socket must be
    /// non-blocking.
    pub fn still_idle(&mut self) -> bool {
        if self.failure.is_some() || self.eof {
            return false;
        }
        let mut probe = [0u8; 1];
        match self.session.reader().read(&mut probe) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            _ => return false,
        }
        loop {
            match self.read_records() {
                Ok(false) => return true,
                Ok(true) if self.eof => return false,
                Ok(true) => match self.session.reader().read(&mut probe) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    _ => return false,
                },
                Err(_) => return false,
            }
        }
    }

    /// Why the handshake did not finish, when the connection is being closed before it did; `None`
    /// when it finished, or the peer left without sending a byte (a port probe).
    pub fn unfinished_handshake(&self) -> Option<String> {
        if !self.session.is_handshaking() || (self.eof && !self.received) {
            return None;
        }
        Some(match &self.failure {
            Some(e) => e.to_string(),
            None if self.eof => "the peer closed the connection".to_string(),
            None => "did not complete in time".to_string(),
        })
    }

    /// Protocol version and cipher suite, for logs.
    pub fn describe(&self) -> String {
        format!(
            "{:?} {:?}",
            self.session.protocol_version(),
            self.session.negotiated_cipher_suite().map(|s| s.suite())
        )
    }
}

impl<S: Socket> Read for TlsStream<S> {
    /// Plaintext into `buf`. Short only when the socket has nothing more for now (or at the end): a
    /// full socket read means more may be queued, so reading goes on while there is room.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut total = 0;
        let mut drained = false;
        loop {
            match self.session.reader().read(&mut buf[total..]) {
                // A close_notify: the end of the stream.
                Ok(0) => return Ok(total),
                Ok(n) => {
                    total += n;
                    if total == buf.len() || self.blocking {
                        return Ok(total);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Closed without close_notify. HTTP/1.1 framing tells a complete message from a cut one,
                // so, as every HTTP implementation does, this is an ordinary end of stream.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(total),
                Err(e) if total > 0 => {
                    log::debug!("TLS read after {total} bytes: {e}");
                    return Ok(total);
                }
                Err(e) => return Err(e),
            }
            if let Some(e) = &self.failure {
                return if total > 0 {
                    Ok(total)
                } else {
                    Err(session_error(e))
                };
            }
            if drained || self.eof {
                return if total > 0 || self.eof {
                    Ok(total)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            // Handshake flights and alerts go out before waiting for the peer's answer to them.
            match self.flush_records() {
                Ok(_) => {}
                Err(e) if total > 0 => {
                    log::debug!("TLS flush while reading: {e}");
                    return Ok(total);
                }
                Err(e) => return Err(e),
            }
            let mut tracked = Tracked {
                socket: &mut self.socket,
                short: false,
            };
            match self.session.read_tls(&mut tracked) {
                Ok(0) => self.eof = true,
                Ok(_) => {
                    self.received = true;
                    // A blocking socket waits for more instead.
                    drained = tracked.short && !self.blocking;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) if total > 0 => return Ok(total),
                Err(e) => return Err(e),
            }
            if let Err(e) = self.process() {
                return if total > 0 { Ok(total) } else { Err(e) };
            }
        }
    }
}

impl<S: Socket> Write for TlsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    /// Takes plaintext once every earlier record is out, and writes its records as far as the socket
    /// allows; what stays behind is flushed first next time.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if let Some(e) = &self.failure {
            return Err(session_error(e));
        }
        if !self.flush_records()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.session.writer().write_vectored(bufs)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            // The session holds all it may (during a handshake): wait for it to move.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.flush_records()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.flush_records()? {
            Ok(())
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }
}
