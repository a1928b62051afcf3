//! A TLS session over a connected socket, as the byte stream the drivers read and write: plaintext in
//! and out, records to and from the socket underneath, for either engine.
//!
//! It is built on rustls's unbuffered API: the records waiting to be processed or written sit in
//! buffers of ours (`records.rs`), held only while they hold something, so an idle TLS connection
//! keeps no buffer at all (rustls's buffered connection keeps a 4 KiB read buffer for life).
//!
//! The event loop's sockets are non-blocking and edge-triggered, so a read must behave like a plain
//! socket's: it comes back short only when the socket's receive queue is empty (a short socket read, or
//! WouldBlock), so that `io::fill` can keep its rule that a short read means "wait for the next event".
//! A read therefore keeps pulling records while it has room and the socket delivered a full buffer.
//! Records the socket did not take stay in the outgoing buffer: [`TlsStream::wants_flush`] says so,
//! and the next write, or the driver on writability, flushes them before anything new is accepted —
//! so a session holds at most one block of records for its peer. The threaded engine's sockets block
//! instead: reads return with the first plaintext, and flushes wait (up to the socket's timeout).

use super::records::{RECORD_BLOCK, Records};
use super::session::{Processed, RECORD_OVERHEAD, Session, Step, WriteOp, session_error};
use crate::transport::Socket;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

/// Requests and responses up to this size (head and body together) go out as one record.
const COALESCE: usize = 4096;
/// Bytes read from the socket at a time, at least.
const READ_CHUNK: usize = 4096;

pub struct TlsStream<S> {
    session: Session,
    socket: S,
    /// The socket blocks (the threaded engine): reads return with the first plaintext, flushes wait.
    blocking: bool,
    /// Records from the peer not yet processed.
    incoming: Records,
    /// Records for the peer not yet written to the socket.
    outgoing: Records,
    /// Plaintext decrypted beyond what the last reader had room for, and how much of it was read.
    plaintext: Vec<u8>,
    plaintext_read: usize,
    /// A socket read returned 0: the peer closed its sending side.
    eof: bool,
    /// close_notify came: the end of the peer's plaintext.
    peer_closed: bool,
    /// Some byte came from the peer. A connection closed before sending anything is a port probe, not
    /// a failed handshake.
    received: bool,
    /// close_notify was queued: nothing more is sent.
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
            .field("handshaking", &self.session.common().is_handshaking())
            .field("eof", &self.eof)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl<S: Socket> TlsStream<S> {
    pub fn new(session: Session, socket: S, blocking: bool) -> Self {
        TlsStream {
            session,
            socket,
            blocking,
            incoming: Records::default(),
            outgoing: Records::default(),
            plaintext: Vec::new(),
            plaintext_read: 0,
            eof: false,
            peer_closed: false,
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

    /// Says how the socket underneath behaves now (the threaded engine switches it around checks).
    pub fn set_blocking(&mut self, blocking: bool) {
        self.blocking = blocking;
    }

    pub fn is_handshaking(&self) -> bool {
        self.session.common().is_handshaking()
    }

    /// Records are waiting for the socket to take them (or a half-close waits behind them).
    pub fn wants_flush(&self) -> bool {
        !self.outgoing.is_empty() || self.shutdown_pending
    }

    /// Writes pending records. `Ok(true)` when none are left; `Ok(false)` when the socket would block.
    pub fn flush_records(&mut self) -> io::Result<bool> {
        while !self.outgoing.is_empty() {
            match self.socket.write(self.outgoing.data()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.outgoing.consume(n),
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

    /// Sends close_notify, then ends the socket's sending side once every record is out.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        if !self.close_notify_sent {
            self.close_notify_sent = true;
            // Before the handshake is over there is no session to close: the FIN says it all.
            if self.failure.is_none() && !self.is_handshaking() {
                self.write_op(WriteOp::CloseNotify)?;
            }
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
            self.process(&mut [], &mut 0)?;
            if !self.flush_records()? {
                return Ok(false);
            }
            if !self.is_handshaking() {
                return Ok(true);
            }
            if self.eof {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during the TLS handshake",
                ));
            }
            if self.read_socket()?.is_none() {
                return Ok(false);
            }
        }
    }

    /// One socket read into the incoming buffer: `None` when the socket had nothing (WouldBlock),
    /// else whether the read was short (the receive queue is now empty). Sets `eof` on a close.
    fn read_socket(&mut self) -> io::Result<Option<bool>> {
        let Some(space) = self.incoming.space(READ_CHUNK) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS message too large",
            ));
        };
        let offered = space.len();
        loop {
            match self.socket.read(space) {
                Ok(0) => {
                    self.eof = true;
                    self.incoming.filled(0);
                    return Ok(Some(true));
                }
                Ok(n) => {
                    self.incoming.filled(n);
                    self.received = true;
                    return Ok(Some(n < offered));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The block was taken for nothing: give it back.
                    self.incoming.consume(0);
                    return Ok(None);
                }
                Err(e) => {
                    self.incoming.consume(0);
                    return Err(e);
                }
            }
        }
    }

    /// Processes the records received so far: handshake messages answered (their records queued in
    /// `outgoing`), plaintext copied into `buf` after `*copied` bytes (what does not fit is kept).
    fn process(&mut self, buf: &mut [u8], copied: &mut usize) -> io::Result<Processed> {
        loop {
            let outcome = self.session.process(
                self.incoming.data_mut(),
                &mut self.outgoing,
                &mut self.plaintext,
                buf,
                copied,
                None,
            );
            let (discard, step) = outcome;
            self.incoming.consume(discard);
            match step {
                Ok(Step::Again) => {}
                Ok(Step::Done(Processed::PeerClosed)) => {
                    self.peer_closed = true;
                    return Ok(Processed::PeerClosed);
                }
                Ok(Step::Done(done)) => return Ok(done),
                Ok(Step::Wrote | Step::NotYet) => return Ok(Processed::NeedsMore),
                Err(e) => {
                    let error = session_error(&e);
                    self.failure = Some(e);
                    return Err(error);
                }
            }
        }
    }

    /// Performs `op` as soon as the session lets application data (or close_notify) go out, its
    /// records into `outgoing`; plaintext that arrives meanwhile is kept for the next read. `Ok(false)`
    /// when the handshake is not over yet.
    fn write_op(&mut self, op: WriteOp<'_>) -> io::Result<bool> {
        loop {
            let (discard, step) = self.session.process(
                self.incoming.data_mut(),
                &mut self.outgoing,
                &mut self.plaintext,
                &mut [],
                &mut 0,
                Some(op),
            );
            self.incoming.consume(discard);
            match step {
                Ok(Step::Again) => {}
                Ok(Step::Wrote) => return Ok(true),
                Ok(Step::NotYet) => return Ok(false),
                Ok(Step::Done(Processed::PeerClosed)) => self.peer_closed = true,
                Ok(Step::Done(Processed::NeedsMore)) => return Ok(false),
                Err(e) => {
                    let error = session_error(&e);
                    self.failure = Some(e);
                    return Err(error);
                }
            }
        }
    }

    /// Whether a pooled connection is still open with nothing unexpected in it: records that arrived
    /// are processed (a session ticket is fine; data, an alert or a close are not). The socket must be
    /// non-blocking.
    pub fn still_idle(&mut self) -> bool {
        if self.failure.is_some() || self.eof || self.peer_closed || self.has_plaintext() {
            return false;
        }
        loop {
            match self.read_socket() {
                Ok(None) => return true,
                Ok(Some(_)) if self.eof => return false,
                Ok(Some(_)) => match self.process(&mut [], &mut 0) {
                    Ok(Processed::NeedsMore) if !self.has_plaintext() => {}
                    _ => return false,
                },
                Err(_) => return false,
            }
        }
    }

    fn has_plaintext(&self) -> bool {
        self.plaintext_read < self.plaintext.len()
    }

    /// Why the handshake did not finish, when the connection is being closed before it did; `None`
    /// when it finished, or the peer left without sending a byte (a port probe).
    pub fn unfinished_handshake(&self) -> Option<String> {
        if !self.is_handshaking() || (self.eof && !self.received) {
            return None;
        }
        Some(match &self.failure {
            Some(e) => e.to_string(),
            None if self.eof => "the peer closed the connection".to_string(),
            None => "did not complete in time".to_string(),
        })
    }

    /// Plaintext kept from an earlier read, into `buf`.
    fn take_kept_plaintext(&mut self, buf: &mut [u8]) -> usize {
        let kept = &self.plaintext[self.plaintext_read..];
        let n = kept.len().min(buf.len());
        buf[..n].copy_from_slice(&kept[..n]);
        self.plaintext_read += n;
        if self.plaintext_read == self.plaintext.len() {
            self.plaintext_read = 0;
            self.plaintext.clear();
            if self.plaintext.capacity() > RECORD_BLOCK {
                self.plaintext = Vec::new();
            }
        }
        n
    }
}

impl<S: Socket> Read for TlsStream<S> {
    /// Plaintext into `buf`. Short only when the socket has nothing more for now (or at the end): a
    /// full socket read means more may be queued, so reading goes on while there is room.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut copied = self.take_kept_plaintext(buf);
        let mut drained = false;
        loop {
            if copied == buf.len() || (self.blocking && copied > 0) {
                return Ok(copied);
            }
            if let Some(e) = &self.failure {
                return if copied > 0 {
                    Ok(copied)
                } else {
                    Err(session_error(e))
                };
            }
            if self.peer_closed {
                return Ok(copied);
            }
            match self.process(buf, &mut copied) {
                Ok(_) => {}
                Err(_) if copied > 0 => return Ok(copied),
                Err(e) => return Err(e),
            }
            if copied == buf.len() || self.peer_closed || (self.blocking && copied > 0) {
                return Ok(copied);
            }
            // Handshake flights and alerts go out before waiting for the peer's answer to them.
            match self.flush_records() {
                Ok(_) => {}
                Err(_) if copied > 0 => return Ok(copied),
                Err(e) => return Err(e),
            }
            if drained || self.eof {
                // Closed without close_notify: HTTP/1.1's framing tells a cut message from a whole one,
                // so, as for every HTTP implementation, this is an ordinary end of stream.
                return if copied > 0 || self.eof {
                    Ok(copied)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            match self.read_socket() {
                Ok(Some(short)) => drained = short && !self.blocking,
                Ok(None) if copied > 0 => return Ok(copied),
                Ok(None) => return Err(io::ErrorKind::WouldBlock.into()),
                Err(_) if copied > 0 => return Ok(copied),
                Err(e) => return Err(e),
            }
        }
    }
}

impl<S: Socket> Write for TlsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    /// Takes plaintext once every earlier record is out, as much as one block of records holds, and
    /// writes its records as far as the socket allows; what stays behind is flushed first next time.
    /// A small message whose parts come separately (a head and a short body) goes out as one record.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if let Some(e) = &self.failure {
            return Err(session_error(e));
        }
        if !self.flush_records()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Ok(0);
        }
        let mut joined = [0u8; COALESCE];
        let parts: Vec<&[u8]>;
        let parts: &[&[u8]] = if total <= COALESCE && bufs.len() > 1 {
            let mut at = 0;
            for b in bufs {
                joined[at..at + b.len()].copy_from_slice(b);
                at += b.len();
            }
            parts = vec![&joined[..total]];
            &parts
        } else {
            parts = bufs.iter().map(|b| &b[..]).collect();
            &parts
        };
        // Two records' overhead: the most one block of plaintext makes.
        let mut room = RECORD_BLOCK - 2 * RECORD_OVERHEAD;
        let mut taken = 0;
        for part in parts {
            let n = part.len().min(room);
            if n == 0 {
                continue;
            }
            if !self.write_op(WriteOp::Encrypt(&part[..n]))? {
                break;
            }
            taken += n;
            room -= n;
            if n < part.len() || room == 0 {
                break;
            }
        }
        if taken == 0 {
            // The handshake is not over: nothing can be sent yet.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.flush_records()?;
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.flush_records()? {
            Ok(())
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }
}
