//! The two ends of a client connection in the loop: a socket with its token and readiness, reading
//! into a buffer and flushing what a TLS session still owes; and the backend's end, with where its
//! connect and handshake stand.

use super::*;
use crate::io::Filled;

/// One side's socket in the loop.
pub(super) struct End {
    pub(super) transport: Transport<TcpStream>,
    pub(super) token: Token,
    pub(super) ready: Readiness,
}

impl End {
    pub(super) fn new(transport: Transport<TcpStream>, token: Token, ready: Readiness) -> End {
        End {
            transport,
            token,
            ready,
        }
    }

    /// Reads into `buf` as far as readiness allows, updating the readiness bits.
    pub(super) fn fill(&mut self, buf: &mut crate::buffer::Buffer) -> io::Result<Filled> {
        let filled = self.transport.fill(buf, self.ready.hup, false)?;
        if filled.would_block || filled.eof {
            self.ready.readable = false;
        }
        self.ready.read_closed |= filled.eof;
        Ok(filled)
    }

    /// Writes the records a TLS session still owes. False when the socket would block (writability is
    /// then watched).
    pub(super) fn flush(&mut self, registry: &Registry) -> io::Result<bool> {
        if !self.transport.wants_flush() {
            return Ok(true);
        }
        if self.transport.flush_pending()? {
            return Ok(true);
        }
        let stream = self.transport.socket_mut();
        blocked_writing(registry, stream, self.token, &mut self.ready);
        Ok(false)
    }
}

/// The connection to the backend of the current attempt.
pub(super) struct BackendEnd {
    pub(super) end: End,
    pub(super) slot: usize,
    /// A non-blocking connect is in progress.
    pub(super) connecting: bool,
    /// Connected; the TLS handshake is in progress.
    pub(super) handshaking: bool,
}

impl BackendEnd {
    pub(super) fn ready_for_requests(&self) -> bool {
        !self.connecting && !self.handshaking
    }
}
