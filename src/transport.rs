//! The byte streams both engines move requests and responses over: a [`Transport`] wraps a connected
//! socket (the event loop's non-blocking `mio` stream, or the threaded engine's blocking `std` one)
//! and is what drivers read from and write to. Plain TCP today; a TLS session is one more variant
//! here, and no driver or policy code needs to know which one it has.

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
}

impl<S: Socket> Transport<S> {
    pub fn plain(socket: S) -> Transport<S> {
        Transport::Plain(socket)
    }

    /// The socket underneath, to register it, set options or read its addresses.
    pub fn socket(&self) -> &S {
        match self {
            Transport::Plain(s) => s,
        }
    }

    pub fn socket_mut(&mut self) -> &mut S {
        match self {
            Transport::Plain(s) => s,
        }
    }

    pub fn into_socket(self) -> S {
        match self {
            Transport::Plain(s) => s,
        }
    }

    /// Bytes the transport itself still owes the peer (TLS records); a plain stream owes none.
    pub fn wants_flush(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
        }
    }

    /// Ends our sending side once everything written has been delivered.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        self.socket().shutdown(Shutdown::Write)
    }

    /// Makes closing send a reset (SO_LINGER 0), so that a peer cannot mistake a cut-off message for
    /// a whole one.
    pub fn set_reset_on_close(&self) {
        if let Err(e) = socket2::SockRef::from(self.socket()).set_linger(Some(Duration::ZERO)) {
            log::debug!("set_linger: {e}");
        }
    }
}

impl<S: Socket> Read for Transport<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
        }
    }
}

impl<S: Socket> Write for Transport<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
        }
    }
}

/// True when an idle pooled connection is still open with nothing unexpected to read. The socket must be
/// in non-blocking mode (the threaded engine switches it around the check).
pub fn still_idle(socket: &impl AsFd) -> bool {
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    let sock = socket2::SockRef::from(socket);
    matches!(sock.peek(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}
