//! What an exchange tells its driver to do ([`Action`]), and what it asks of the engine it runs in
//! ([`Context`]).

use crate::balance::{Pick, QueueSpot, Tried};
use crate::config::Config;
use std::net::IpAddr;
use std::time::Instant;

/// How a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// Orderly: everything owed was delivered.
    Graceful,
    /// Something broke mid-message: reset the client so a truncated response can never look complete.
    Abort,
}

/// Whether a pooled backend connection may serve an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooled {
    /// Any pooled connection. The request is safe to send again (idempotent, no body), so a stale one is
    /// found by the attempt failing before any response byte, and the check's system call is saved.
    Any,
    /// A pooled connection that a non-blocking read shows to be still open and silent.
    Verified,
    /// A new connection (a pooled one just failed this request).
    Never,
}

/// What the driver must do for the exchange.
#[derive(Debug)]
pub enum Action {
    /// Get a connection to the current attempt's backend ([`Exchange::attempt_backend`]: its `slot`,
    /// at its `config.addr`), then report [`Exchange::on_connected`] or
    /// [`Exchange::on_connect_failed`]; nothing if no attempt is under way any more (it ended within
    /// the same event). The backend is asked of the exchange rather than carried:
    /// a handle here cost two atomic read-modify-writes per request (its clone and its drop), and a
    /// copy of the slot and address made every [`Actions`] a memcpy call.
    Connect { pooled: Pooled },
    /// The current backend connection is done with: keep it for another request if `reuse`, else close.
    ReleaseBackend { reuse: bool },
    /// Shut down our sending side towards the backend (a tunnel's client finished sending).
    ShutdownBackend,
    /// Shut down our sending side towards the client (everything owed was written).
    ShutdownClient,
    /// Close the client connection (and the backend connection, if one is left).
    Close(Close),
    /// The request waits in pool `pool`'s queue: retry it ([`Exchange::retry_queued`]) when a
    /// backend may have room, oldest first.
    Enqueue { pool: usize },
}

/// The actions one event produced, in order (never more than three). Also its own iterator: the
/// driver takes them from the front. No action holds anything to drop, so neither does this:
/// returning it by value several times per request costs a few stores.
#[must_use]
#[derive(Debug, Default)]
pub struct Actions {
    list: [Option<Action>; 3],
    len: u8,
    /// The next one to hand out.
    next: u8,
}

impl Actions {
    pub(super) fn push(&mut self, action: Action) {
        debug_assert!(
            usize::from(self.len) < self.list.len(),
            "more actions than expected"
        );
        if let Some(slot) = self.list.get_mut(usize::from(self.len)) {
            *slot = Some(action);
            self.len += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Iterator for Actions {
    type Item = Action;

    fn next(&mut self) -> Option<Action> {
        let action = self.list.get_mut(usize::from(self.next))?.take();
        self.next += 1;
        action
    }
}

/// What an exchange needs from the engine it runs in.
pub trait Context {
    fn config(&self) -> &Config;
    /// Chooses a backend of pool `pool` for a request from `client` among available ones not in
    /// `tried`: the one whose sticky id is `prefer` if it can take the request.
    fn pick(&mut self, pool: usize, client: IpAddr, tried: Tried, prefer: Option<u64>) -> Pick;
    /// A place in pool `pool`'s queue, if it has room (`[queue] size`).
    fn enqueue(&mut self, pool: usize) -> Option<QueueSpot>;
    /// Takes a token from `client`'s request bucket (`[limits]`); false: answer 429.
    fn admit_request(&mut self, client: IpAddr, now: Instant) -> bool;
    /// SIGTERM was received: every response closes its connection.
    fn draining(&self) -> bool;
    /// A request was answered, by a backend or by lb itself (the requests-per-second meter).
    fn count_request(&mut self);
    /// Where plain-HTTP requests are redirected (`[tls] redirect_http`): the HTTPS listener's port as
    /// bound. `None` to serve them.
    fn https_redirect_port(&self) -> Option<u16>;
}
