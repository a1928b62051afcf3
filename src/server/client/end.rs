//! The two ends of a client connection in the loop: a socket with its token and readiness, reading
//! into a buffer and flushing what a TLS session still owes; and the backend's end, with where its
//! connect and handshake stand.

use super::super::pool::blocked_writing;
use super::*;
use crate::exchange::Outgoing;
use crate::io::{Filled, send};

/// What one write to an end did.
pub(super) enum Wrote {
    /// Nothing to write, or the socket would block (writability is then watched).
    Nothing,
    Bytes(usize),
    Failed(io::Error),
}

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
        self.watch_writability(registry);
        Ok(false)
    }

    /// Writes once, if the end is writable: what a TLS session still owes, then what `output` gives
    /// (asked only then).
    pub(super) fn write<'a>(
        &mut self,
        registry: &Registry,
        output: impl FnOnce() -> Outgoing<'a>,
    ) -> Wrote {
        if !self.ready.writable {
            return Wrote::Nothing;
        }
        let result = match self.flush(registry) {
            Ok(false) => return Wrote::Nothing,
            Ok(true) => {
                let out = output();
                if out.is_empty() {
                    return Wrote::Nothing;
                }
                send(&mut self.transport, out)
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(n) => Wrote::Bytes(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.watch_writability(registry);
                Wrote::Nothing
            }
            Err(e) => Wrote::Failed(e),
        }
    }

    /// A write would block: writability is watched until it comes back.
    fn watch_writability(&mut self, registry: &Registry) {
        let stream = self.transport.socket_mut();
        blocked_writing(registry, stream, self.token, &mut self.ready);
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
