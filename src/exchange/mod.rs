//! The exchange core: everything one client connection decides, as a state machine that does no I/O,
//! shared by both engines.
//!
//! An [`Exchange`] owns the connection's four buffers and its [`Phase`]: reading a head, serving a
//! request (whose [`Stage`] is connecting, awaiting the response head, relaying, or tunnelling), or
//! closing. A driver — the event loop or a connection's thread — moves bytes between sockets and the
//! buffers, tells the exchange what happened (bytes arrived, bytes were written, a peer closed, a
//! connection was made or failed, a deadline passed), and carries out the [`Action`]s it answers with:
//! connect to a backend, pool or close the backend connection, half-close a side, close. What to write
//! next is always [`Exchange::client_output`] and [`Exchange::backend_output`]. Time comes in with
//! every event; nothing here reads a clock, touches a socket, or sleeps.
//!
//! The flow of one request: head parsed → backend picked and counted in flight → `Connect` → connected
//! → request head and body written → response head parsed (1xx passed on) → body relayed → outcome
//! recorded, backend connection pooled or closed → the next head (a pipelined one first) or closing.

mod action;
mod events;
mod failure;
mod flight;
pub mod log;
mod output;
pub mod policy;
mod response;
mod start;

pub use action::{Action, Actions, Close, Context, Pooled};
pub use log::RequestLine;
pub use output::Outgoing;

use crate::balance::{Backend, InFlight, QueueSpot, Tried};
use crate::buffer::Buffer;
use crate::config::Config;
use crate::http::body::Relay;
use crate::http::response::ResponsePlan;
use crate::http::{ErrorResponse, Version};
use crate::route::Routed;
use flight::{Takeoff, recycle};
use output::{Flow, Outbox, ReceivedHead};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a closing client connection is drained after our last byte, so that a reset caused by its
/// unread pipelined data cannot destroy the response it has not read yet.
pub const LINGER: Duration = Duration::from_secs(2);
/// How long a driver that waits on one socket at a time waits for `100 Continue` before reading the
/// request body anyway (curl waits as long before sending it).
pub const CONTINUE_WAIT: Duration = Duration::from_secs(1);

/// The facts of the current request needed after its head was consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RequestFacts {
    version: Version,
    keep_alive: bool,
    is_head: bool,
    idempotent: bool,
    upgrade: bool,
    has_body: bool,
    /// `Expect: 100-continue`: the client may wait for an interim response before sending the body.
    expect_continue: bool,
}

/// Where a client connection is in its life.
enum Phase {
    /// Waiting for a request head (the first, or the next on a keep-alive connection).
    ReadingHead {
        since: Instant,
        /// When the first byte of this head arrived (`request_head` runs from there).
        head_started: Option<Instant>,
    },
    /// A request waits in its pool's queue for a backend with room; its head stays in `client_in`.
    /// (Boxed: the phase is part of every connection, and few wait.)
    Queued(Box<Waiting>),
    /// A request is being served.
    Serving(Box<Flight>),
    /// A final response of ours (or the last one) is being flushed; then the client's input is
    /// drained until it closes or `LINGER` passes.
    Closing { since: Instant, shut: bool },
    /// Over: the driver closes the sockets.
    Closed,
}

/// A request in its pool's queue.
struct Waiting {
    since: Instant,
    /// Its place in the queue, given back when the phase ends.
    _spot: QueueSpot,
}

/// One request, from its head to its response's last byte.
///
/// In declaration order (`repr(C)`): what every event of a request reads comes first, in a few
/// cache lines, and the copies kept for log lines last. A batch's write pass comes after its read
/// pass over every ready connection, by which time a flight has left the first-level cache: the
/// fewer of its lines a request touches, the fewer it fetches again.
#[repr(C)]
struct Flight {
    stage: Stage,
    /// The request body, client → backend (after a `101`, every byte the client sends).
    upload: Outbox,
    /// The request head, when it goes from `client_in` as received (else it is in `to_backend`).
    received_head: ReceivedHead,
    attempt: Attempt,
    request: RequestFacts,
    final_head: FinalHead,
    status: u16,
    /// `referer` and `user_agent` were kept for this request (the access log was on at its start).
    fields_logged: bool,
    /// Bytes of the response sent to the client (head and body).
    response_bytes: u64,
    /// Bytes of the request head still at the front of `client_in`: a bodiless request's head stays
    /// until its response starts, so that it can be written again for a retry.
    head_kept: usize,
    started: Instant,
    /// The pool serving the request, and what of its path the backend does not see.
    routed: Routed,
    /// The backend the client's sticky cookie names, when its pool has one.
    sticky: Option<u64>,
    line: RequestLine,
    /// `Referer` and `User-Agent`, for the access log: only written, and read, when
    /// `fields_logged`.
    referer: log::Kept,
    user_agent: log::Kept,
}

impl Flight {
    /// The access log entry of this request's response.
    fn access(
        &self,
        client: SocketAddr,
        status: u16,
        bytes: u64,
        took: Duration,
    ) -> log::Access<'_> {
        fn logged(on: bool, kept: &log::Kept) -> &[u8] {
            if on { kept.get() } else { b"" }
        }
        log::Access {
            client,
            request: Some((&self.line, self.request.version)),
            status,
            bytes,
            backend: Some(&self.attempt.inflight.backend().name),
            took: Some(took),
            referer: logged(self.fields_logged, &self.referer),
            user_agent: logged(self.fields_logged, &self.user_agent),
        }
    }
}

/// Where the final response head stands on its way to the client: until its first byte is written,
/// an error response of ours can still take its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FinalHead {
    NotYet,
    /// Queued behind `after` bytes of interim heads.
    Queued {
        after: usize,
    },
    /// Some byte of it went out.
    Sent,
}

/// The current attempt at a backend.
struct Attempt {
    inflight: InFlight,
    /// Attempts made for this request, this one included.
    number: u32,
    /// Backends that failed this request.
    tried: Tried,
    /// The connection came from the idle pool.
    reused: bool,
    /// A response byte arrived.
    response_started: bool,
    /// The backend closed its sending side.
    backend_eof: bool,
}

/// Where the current request's attempt stands.
enum Stage {
    Connecting {
        since: Instant,
    },
    /// The request is being written; the response head has not arrived (interim 1xx may pass).
    AwaitingResponse,
    /// The final response head was passed on; its body follows as planned.
    Relaying {
        plan: ResponsePlan,
        download: Outbox,
        /// The response head allows another request on the backend connection.
        reusable: bool,
        /// The backend answered before the whole request body: no more of it is sent.
        request_cut: bool,
    },
    /// After `101 Switching Protocols`: bytes both ways until both sides have closed.
    Tunnel {
        download: Outbox,
        client_shut: bool,
        backend_shut: bool,
    },
}

/// Which side a blocking driver should wait on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Backend,
}

/// One client connection's exchange state and buffers.
pub struct Exchange {
    /// Unique for the life of the process: names the connection in logs.
    pub id: u64,
    client: SocketAddr,
    /// The client came through the HTTPS listener.
    secure: bool,
    phase: Phase,
    /// Requests started on this connection.
    requests: u32,
    /// Raw bytes from the client: heads, request bodies, pipelined requests.
    client_in: Buffer,
    /// Rewritten request heads and chunk framing for the backend (and what was left to send of a
    /// head that went as received, when its response began before it was all sent).
    to_backend: Buffer,
    /// Raw bytes from the backend.
    backend_in: Buffer,
    /// Response heads, chunk framing and our own responses for the client.
    to_client: Buffer,
    /// The client closed its sending side.
    client_eof: bool,
    /// Bumped by every change of phase ([`Exchange::set_phase`]): `settle` asks this, not the
    /// phase's variant, whose tag is folded into an `Instant` and costs a few instructions to read.
    phase_changes: u8,
    /// Bytes last moved in either direction (the `response` and tunnel idle timeouts run from here).
    last_progress: Instant,
}

impl Exchange {
    /// A new client connection; `secure` when it came through the HTTPS listener.
    pub fn new(id: u64, client: SocketAddr, secure: bool, now: Instant) -> Exchange {
        Exchange {
            id,
            client,
            secure,
            phase: Phase::ReadingHead {
                since: now,
                head_started: None,
            },
            requests: 0,
            client_in: Buffer::new(),
            to_backend: Buffer::new(),
            backend_in: Buffer::new(),
            to_client: Buffer::new(),
            client_eof: false,
            phase_changes: 0,
            last_progress: now,
        }
    }

    pub fn client_addr(&self) -> SocketAddr {
        self.client
    }

    /// The client a PROXY protocol header named: from now on it is the client everywhere
    /// (X-Forwarded-For, ip_hash, limits, the access log).
    pub fn set_client_addr(&mut self, client: SocketAddr) {
        self.client = client;
    }

    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// How the current attempt's backend is reached over TLS (`None` for a plain one), for a driver
    /// making a new connection to it.
    pub fn backend_tls(&self) -> Option<&crate::config::BackendTls> {
        self.attempt_backend()?.config.tls.as_ref()
    }

    /// The backend of the attempt under way, which [`Action::Connect`] asks a connection to.
    pub fn attempt_backend(&self) -> Option<&Backend> {
        match &self.phase {
            Phase::Serving(f) => Some(f.attempt.inflight.backend()),
            _ => None,
        }
    }

    /// A short name of the phase, for logs.
    pub fn phase_name(&self) -> &'static str {
        match &self.phase {
            Phase::ReadingHead { .. } => "reading a head",
            Phase::Serving(flight) => match flight.stage {
                Stage::Connecting { .. } => "connecting",
                Stage::AwaitingResponse => "awaiting a response",
                Stage::Relaying { .. } => "relaying",
                Stage::Tunnel { .. } => "tunnel",
            },
            Phase::Queued(_) => "queued",
            Phase::Closing { .. } => "closing",
            Phase::Closed => "closed",
        }
    }

    /// Waiting between requests with nothing received: safe to close when draining.
    pub fn is_idle(&self) -> bool {
        matches!(
            self.phase,
            Phase::ReadingHead {
                head_started: None,
                ..
            }
        ) && self.client_in.is_empty()
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// After a `101`: the driver may relay raw bytes both ways.
    pub fn is_tunnel(&self) -> bool {
        matches!(&self.phase, Phase::Serving(f) if matches!(f.stage, Stage::Tunnel { .. }))
    }

    /// The buffer the driver reads client bytes into; then it reports [`Exchange::on_client_input`].
    pub fn client_buffer(&mut self) -> &mut Buffer {
        &mut self.client_in
    }

    /// The buffer the driver reads backend bytes into; then it reports [`Exchange::on_backend_input`].
    pub fn backend_buffer(&mut self) -> &mut Buffer {
        &mut self.backend_in
    }

    /// The exchange wants bytes from the client (and has room for them).
    pub fn wants_client_input(&self) -> bool {
        if self.client_in.is_full() || self.client_eof {
            return false;
        }
        match &self.phase {
            Phase::ReadingHead { .. } | Phase::Closing { .. } => true,
            // A queued request holds its connection and nothing more.
            Phase::Queued(_) => false,
            Phase::Serving(f) => match f.stage {
                Stage::Tunnel { .. } => true,
                Stage::Relaying {
                    request_cut: true, ..
                } => false,
                _ => !f.upload.relay.is_done(),
            },
            Phase::Closed => false,
        }
    }

    /// The exchange wants bytes from the backend (and has room for them).
    pub fn wants_backend_input(&self) -> bool {
        match &self.phase {
            Phase::Serving(f) => {
                !matches!(f.stage, Stage::Connecting { .. })
                    && !f.attempt.backend_eof
                    && !self.backend_in.is_full()
            }
            _ => false,
        }
    }

    /// For a driver that can wait on only one socket at a time: the side whose bytes the exchange
    /// needs next. The request body comes first, unless the client waits for `100 Continue`.
    /// The second value, if any, is when to look again even if nothing arrives: the end of the
    /// [`CONTINUE_WAIT`], after which the body is read whether or not `100 Continue` came.
    pub fn blocking_read_side(&self, now: Instant) -> Option<(Side, Option<Instant>)> {
        match &self.phase {
            Phase::ReadingHead { .. } | Phase::Closing { .. } => Some((Side::Client, None)),
            Phase::Queued(_) => None,
            Phase::Serving(f) => {
                let body_pending = self.wants_client_input() && !f.upload.relay.is_done();
                let continue_until = f.started + CONTINUE_WAIT;
                let awaits_continue = f.request.expect_continue
                    && !f.attempt.response_started
                    && self.client_in.is_empty()
                    && now < continue_until;
                if body_pending && awaits_continue && self.wants_backend_input() {
                    Some((Side::Backend, Some(continue_until)))
                } else if body_pending {
                    Some((Side::Client, None))
                } else if self.wants_backend_input() {
                    Some((Side::Backend, None))
                } else if self.wants_client_input() {
                    Some((Side::Client, None))
                } else {
                    None
                }
            }
            Phase::Closed => None,
        }
    }

    /// What to write to the backend now.
    pub fn backend_output(&self) -> Outgoing<'_> {
        match &self.phase {
            Phase::Serving(f) if f.uploading() => {
                f.request_outgoing(&self.client_in, &self.to_backend)
            }
            _ => Outgoing::EMPTY,
        }
    }

    /// What to write to the client now.
    pub fn client_output(&self) -> Outgoing<'_> {
        match &self.phase {
            Phase::Serving(f) => match &f.stage {
                Stage::Relaying { download, .. } | Stage::Tunnel { download, .. } => {
                    download.outgoing(&self.backend_in, &self.to_client)
                }
                _ => Outgoing {
                    first: self.to_client.data(),
                    second: &[],
                },
            },
            _ => Outgoing {
                first: self.to_client.data(),
                second: &[],
            },
        }
    }

    /// When the current phase times out.
    pub fn deadline(&self, config: &Config) -> Instant {
        let t = &config.timeouts;
        match &self.phase {
            Phase::ReadingHead {
                since,
                head_started,
            } => match head_started {
                Some(started) => *started + t.request_head,
                // Between keep-alive requests the idle timeout applies; before the first, the head timeout.
                None if self.requests > 0 => *since + t.idle,
                None => *since + t.request_head,
            },
            Phase::Serving(f) => match f.stage {
                Stage::Connecting { since } => since + t.connect,
                Stage::Tunnel { .. } => self.last_progress + t.idle,
                _ => self.last_progress + t.response,
            },
            Phase::Queued(w) => w.since + config.queue.timeout,
            Phase::Closing { since, .. } => *since + LINGER,
            Phase::Closed => self.last_progress,
        }
    }

    /// Moves to `phase` (counted, for `settle`).
    fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
        self.phase_changes = self.phase_changes.wrapping_add(1);
    }

    /// Leaves the current phase for `Closed`, returning it (counted, for `settle`).
    fn take_phase(&mut self) -> Phase {
        self.phase_changes = self.phase_changes.wrapping_add(1);
        std::mem::replace(&mut self.phase, Phase::Closed)
    }

    /// Gives back the blocks of empty buffers: a connection waiting on a slow backend then holds one
    /// block, not four, and recently used blocks are reused while still in cache.
    pub fn release_idle_buffers(&mut self) {
        self.release_idle_inputs();
        self.to_backend.release_if_empty();
        self.to_client.release_if_empty();
    }

    /// Gives back the blocks of the two input buffers if empty. Only a write empties an output
    /// buffer, so after a pass that only reads, these are the blocks there can be to give back.
    pub fn release_idle_inputs(&mut self) {
        self.client_in.release_if_empty();
        self.backend_in.release_if_empty();
    }
}

impl Flight {
    fn stage_is_tunnel(&self) -> bool {
        matches!(self.stage, Stage::Tunnel { .. })
    }

    fn request_cut(&self) -> bool {
        matches!(
            self.stage,
            Stage::Relaying {
                request_cut: true,
                ..
            }
        )
    }

    /// What of the request is ready for the backend: the rest of a head that goes from the client's
    /// input ([`ReceivedHead`]), else what the request's outbox holds (a head written anew, the body).
    #[inline]
    fn request_outgoing<'a>(&self, client_in: &'a Buffer, to_backend: &'a Buffer) -> Outgoing<'a> {
        if self.received_head.pending() {
            self.received_head.outgoing(client_in.data())
        } else {
            self.upload.outgoing(client_in, to_backend)
        }
    }

    /// `n` bytes of [`Flight::request_outgoing`] were written.
    #[inline]
    fn request_sent(&mut self, n: usize, client_in: &mut Buffer, to_backend: &mut Buffer) {
        if self.received_head.pending() {
            self.received_head.sent(n);
        } else {
            self.upload.sent(n, client_in, to_backend);
        }
    }

    /// The request (head and body) is read and written to the backend.
    fn request_written(&self, to_backend: &Buffer) -> bool {
        !self.received_head.pending() && self.upload.finished(to_backend)
    }

    /// Request bytes may be written to the backend: it is connected, and did not answer early.
    fn uploading(&self) -> bool {
        match self.stage {
            Stage::Connecting { .. } => false,
            Stage::Relaying { request_cut, .. } => !request_cut,
            Stage::AwaitingResponse | Stage::Tunnel { .. } => true,
        }
    }
}

#[cfg(test)]
mod tests;
