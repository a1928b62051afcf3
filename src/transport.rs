//! The byte streams both engines move requests and responses over: a [`Transport`] wraps a connected
//! socket (the event loop's non-blocking `mio` stream, or the threaded engine's blocking `std` one),
//! plain or inside a TLS session ([`crate::tls::TlsStream`]), and is what drivers read from and write
//! to. Beyond reading and writing, a driver needs to know three things TLS adds: records may wait to be
//! flushed ([`Transport::wants_flush`]), a backend session has a handshake to finish before the
//! connection counts as made ([`Transport::handshake`]), and a session that never finished its
//! handshake is reported when the connection goes ([`Transport::unfinished_handshake`]). For a plain
//! stream each is a constant.

use crate::buffer::Buffer;
use crate::io::Filled;
use crate::tls::TlsStream;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::time::Duration;

/// A connected TCP socket of either engine.
pub trait Socket: Read + Write + AsFd {
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
}

impl Socket for std::net::TcpStream {
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        std::net::TcpStream::shutdown(self, how)
    }
}

impl Socket for mio::net::TcpStream {
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        mio::net::TcpStream::shutdown(self, how)
    }
}

/// One side's byte stream.
#[derive(Debug)]
pub enum Transport<S> {
    Plain(S),
    /// Boxed: a session is a kilobyte and more, and most connections are plain.
    Tls(Box<TlsStream<S>>),
}

impl<S: Socket> Transport<S> {
    pub fn plain(socket: S) -> Transport<S> {
        Transport::Plain(socket)
    }

    pub fn tls(stream: TlsStream<S>) -> Transport<S> {
        Transport::Tls(Box::new(stream))
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// A TLS session whose handshake is complete (`close_notify` means something to its peer).
    pub fn is_tls_established(&self) -> bool {
        matches!(self, Transport::Tls(t) if !t.is_handshaking())
    }

    /// The socket underneath, to register it, set options or read its addresses.
    pub fn socket(&self) -> &S {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => t.socket(),
        }
    }

    pub fn socket_mut(&mut self) -> &mut S {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => t.socket_mut(),
        }
    }

    /// Reads into `buf` until WouldBlock, EOF or full (see [`crate::io::fill`]).
    pub fn fill(
        &mut self,
        buf: &mut Buffer,
        peer_closed: bool,
        blocking: bool,
    ) -> io::Result<Filled> {
        crate::io::fill(self, buf, peer_closed, blocking)
    }

    /// Records the session still owes the peer (a plain stream owes none).
    pub fn wants_flush(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.wants_flush(),
        }
    }

    /// Writes what the session owes. `Ok(true)` when nothing is left, `Ok(false)` when the socket would
    /// block.
    pub fn flush_pending(&mut self) -> io::Result<bool> {
        match self {
            Transport::Plain(_) => Ok(true),
            Transport::Tls(t) => t.flush_records(),
        }
    }

    /// Moves a backend session's handshake along; `Ok(true)` once the connection is ready for a
    /// request (at once for a plain stream).
    pub fn handshake(&mut self) -> io::Result<bool> {
        match self {
            Transport::Plain(_) => Ok(true),
            Transport::Tls(t) => t.handshake(),
        }
    }

    /// Why the TLS handshake did not finish, for a connection closing before it did (see
    /// [`TlsStream::unfinished_handshake`]).
    pub fn unfinished_handshake(&self) -> Option<String> {
        match self {
            Transport::Plain(_) => None,
            Transport::Tls(t) => t.unfinished_handshake(),
        }
    }

    /// Says how the socket underneath behaves now (the threaded engine switches it around checks).
    pub fn set_blocking_mode(&mut self, blocking: bool) {
        if let Transport::Tls(t) = self {
            t.set_blocking(blocking);
        }
    }

    /// Ends our sending side once everything written has been delivered (after `close_notify`, for a
    /// session).
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.shutdown(Shutdown::Write),
            Transport::Tls(t) => t.shutdown_write(),
        }
    }

    /// Makes closing send a reset (SO_LINGER 0), so that a peer cannot mistake a cut-off message for
    /// a whole one.
    pub fn set_reset_on_close(&self) {
        if let Err(e) = socket2::SockRef::from(self.socket()).set_linger(Some(Duration::ZERO)) {
            log::debug!("set_linger: {e}");
        }
    }

    /// True when an idle pooled connection is still open with nothing unexpected to read. The socket
    /// must be in non-blocking mode (the threaded engine switches it around the check).
    pub fn still_idle(&mut self) -> bool {
        match self {
            Transport::Plain(s) => still_idle(s),
            Transport::Tls(t) => t.still_idle(),
        }
    }
}

impl<S: Socket> Read for Transport<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(t) => t.read(buf),
        }
    }
}

impl<S: Socket> Write for Transport<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(t) => t.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write_vectored(bufs),
            Transport::Tls(t) => t.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(t) => t.flush(),
        }
    }
}

/// True when an idle plain connection is still open with nothing unexpected to read (non-blocking
/// socket).
fn still_idle(socket: &impl AsFd) -> bool {
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    let sock = socket2::SockRef::from(socket);
    matches!(sock.peek(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}
