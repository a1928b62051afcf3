//! One step of rustls's unbuffered API at a time, for [`super::stream::TlsStream`]: the two kinds of
//! session (answering clients, or connecting to backends) behind one type, and what one call to
//! `process_tls_records` comes to — records to encode into the outgoing buffer, plaintext to hand to the
//! reader (what does not fit is kept), or the moment application data (or close_notify) may be
//! encrypted. No I/O happens here: the stream reads and writes the socket around these steps.

use super::records::Records;
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::{ClientConfig, ServerConfig};
use std::io;
use std::sync::Arc;

/// The most one record adds to its plaintext (TLS 1.2 AES-GCM: header, explicit nonce, tag).
pub(super) const RECORD_OVERHEAD: usize = 29;
/// Room asked for at first when encoding a handshake record.
const ENCODE_ROOM: usize = 4096;

/// Either side of a session.
pub enum Session {
    Server(Box<UnbufferedServerConnection>),
    Client(Box<UnbufferedClientConnection>),
}

/// A session that answers a client's handshake, to wrap a socket with [`TlsStream::new`].
pub fn server_session(config: Arc<ServerConfig>) -> io::Result<Session> {
    let session = UnbufferedServerConnection::new(config).map_err(|e| session_error(&e))?;
    Ok(Session::Server(Box::new(session)))
}

/// A session that starts a handshake with a backend known as `name`.
pub fn client_session(config: Arc<ClientConfig>, name: ServerName<'static>) -> io::Result<Session> {
    let session = UnbufferedClientConnection::new(config, name).map_err(|e| session_error(&e))?;
    Ok(Session::Client(Box::new(session)))
}

impl Session {
    pub(super) fn common(&self) -> &rustls::CommonState {
        match self {
            Session::Server(s) => s,
            Session::Client(c) => c,
        }
    }

    /// Processes the records in `incoming` once; see [`step`].
    pub(super) fn process(
        &mut self,
        incoming: &mut [u8],
        outgoing: &mut Records,
        kept: &mut Vec<u8>,
        buf: &mut [u8],
        copied: &mut usize,
        op: Option<WriteOp<'_>>,
    ) -> (usize, Result<Step, rustls::Error>) {
        match self {
            Session::Server(s) => step(
                s.process_tls_records(incoming),
                outgoing,
                kept,
                buf,
                copied,
                op,
            ),
            Session::Client(c) => step(
                c.process_tls_records(incoming),
                outgoing,
                kept,
                buf,
                copied,
                op,
            ),
        }
    }
}

pub(super) fn session_error(e: &rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.clone())
}

/// What processing the buffered records came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Processed {
    /// Everything in the buffer was processed; more records are needed to go on.
    NeedsMore,
    /// The peer sent close_notify (or the session is closed): no more plaintext will come.
    PeerClosed,
}

/// What one call into rustls came to, once its borrow of our buffers ended.
pub(super) enum Step {
    /// Go on processing.
    Again,
    Done(Processed),
    /// The write asked for went into `outgoing`.
    Wrote,
    /// The handshake must progress before application data can be written.
    NotYet,
}

/// What to send once the session allows it.
#[derive(Clone, Copy)]
pub(super) enum WriteOp<'a> {
    /// These bytes of plaintext, whole (the caller sized them to fit the outgoing block).
    Encrypt(&'a [u8]),
    CloseNotify,
}

/// Handles what one `process_tls_records` call returned (with `op` to perform when application data
/// may go out); the bytes of the incoming buffer to discard come back with the outcome, for the caller
/// to apply once rustls's borrow has ended.
fn step<Data>(
    status: UnbufferedStatus<'_, '_, Data>,
    outgoing: &mut Records,
    kept: &mut Vec<u8>,
    buf: &mut [u8],
    copied: &mut usize,
    op: Option<WriteOp<'_>>,
) -> (usize, Result<Step, rustls::Error>) {
    let discard = status.discard;
    let state = match status.state {
        Ok(state) => state,
        Err(e) => return (discard, Err(e)),
    };
    let outcome = match state {
        ConnectionState::ReadTraffic(mut traffic) => {
            while let Some(record) = traffic.next_record() {
                match record {
                    Ok(record) => deliver(record.payload, kept, buf, copied),
                    Err(e) => return (discard, Err(e)),
                }
            }
            Ok(Step::Again)
        }
        // Early data is never enabled (max_early_data_size is 0), so `ReadEarlyData` does not come.
        ConnectionState::EncodeTlsData(mut encode) => {
            let written = write_growing(outgoing, ENCODE_ROOM, "TLS message too large", |out| {
                encode.encode(out).map_err(|e| match e {
                    EncodeError::InsufficientSize(e) => Grow::Need(e.required_size),
                    EncodeError::AlreadyEncoded => Grow::Nothing,
                })
            });
            written.map(|()| Step::Again)
        }
        ConnectionState::TransmitTlsData(mut transmit) => {
            let wrote = match (op, transmit.may_encrypt_app_data()) {
                (Some(op), Some(mut traffic)) => Some(perform(op, &mut traffic, outgoing)),
                _ => None,
            };
            // Our flush sends the records; rustls only needs to know they are taken care of.
            transmit.done();
            match wrote {
                Some(result) => result.map(|()| Step::Wrote),
                None => Ok(Step::Again),
            }
        }
        ConnectionState::WriteTraffic(mut traffic) => match op {
            Some(op) => perform(op, &mut traffic, outgoing).map(|()| Step::Wrote),
            None => Ok(Step::Done(Processed::NeedsMore)),
        },
        ConnectionState::BlockedHandshake if op.is_some() => Ok(Step::NotYet),
        ConnectionState::PeerClosed | ConnectionState::Closed => {
            Ok(Step::Done(Processed::PeerClosed))
        }
        _ => Ok(Step::Done(Processed::NeedsMore)),
    };
    (discard, outcome)
}

fn perform<Data>(
    op: WriteOp<'_>,
    traffic: &mut rustls::unbuffered::WriteTraffic<'_, Data>,
    outgoing: &mut Records,
) -> Result<(), rustls::Error> {
    write_growing(outgoing, RECORD_OVERHEAD, "TLS record too large", |out| {
        let written = match op {
            WriteOp::Encrypt(plaintext) => traffic.encrypt(plaintext, out),
            WriteOp::CloseNotify => traffic.queue_close_notify(out),
        };
        written.map_err(|e| match e {
            EncryptError::InsufficientSize(e) => Grow::Need(e.required_size),
            EncryptError::EncryptExhausted => Grow::Fail(rustls::Error::EncryptError),
        })
    })
}

/// Plaintext of one record: into the reader's buffer as far as it goes, the rest kept.
fn deliver(payload: &[u8], kept: &mut Vec<u8>, buf: &mut [u8], copied: &mut usize) {
    let room = buf.len() - *copied;
    let n = payload.len().min(room);
    buf[*copied..*copied + n].copy_from_slice(&payload[..n]);
    *copied += n;
    kept.extend_from_slice(&payload[n..]);
}

/// What a write into `outgoing` asks for when it did not fit.
enum Grow {
    /// Room for this many bytes, then try again.
    Need(usize),
    /// Nothing to write after all.
    Nothing,
    Fail(rustls::Error),
}

/// Runs a write of records (a handshake message, or encrypted application data) into the free space
/// of `outgoing`, starting with room for `first` bytes and growing it as rustls asks, up to the
/// largest block (beyond it: `too_large`).
fn write_growing(
    outgoing: &mut Records,
    first: usize,
    too_large: &str,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Grow>,
) -> Result<(), rustls::Error> {
    let mut need = first;
    loop {
        let Some(space) = outgoing.space(need) else {
            return Err(rustls::Error::General(too_large.into()));
        };
        match write(space) {
            Ok(n) => {
                outgoing.filled(n);
                return Ok(());
            }
            Err(Grow::Need(n)) => need = n,
            Err(Grow::Nothing) => return Ok(()),
            Err(Grow::Fail(e)) => return Err(e),
        }
    }
}
