//! The two ends of a request's life on a connection: a head is parsed and validated, a backend picked
//! and the head rewritten for it (`read_head`); the response is delivered, the outcome recorded and the
//! backend connection released (`finish_request`).

use super::*;
use crate::balance::{Outcome, Pick};
use crate::buffer;
use crate::fault;
use crate::http::body::{ChunkedDecoder, Relay};
use crate::http::request::{self, ForwardInfo, RequestHead};
use crate::http::{Framing, HeadError};

impl Exchange {
    /// In `ReadingHead`: parses what the client sent and starts the request it holds.
    #[inline(never)]
    pub(super) fn read_head(
        &mut self,
        ctx: &mut impl Context,
        now: Instant,
        actions: &mut Actions,
    ) {
        if self.client_in.is_empty() {
            if self.client_eof {
                // It closed while the last response was on its way.
                self.close(Close::Graceful, actions);
            }
            return;
        }
        // Looked at where it was parsed into, not moved out of the result (a copy per request).
        let parsed = request::parse_request(self.client_in.data(), buffer::capacity());
        match &parsed {
            Ok(None) => {
                if self.client_eof {
                    ::log::debug!(
                        "conn {}: client closed in the middle of a request head",
                        self.id
                    );
                    self.close(Close::Graceful, actions);
                }
            }
            Err(e) => self.reject_head(*e, ctx, now, actions),
            Ok(Some(head)) => self.start_request(head, ctx, now, actions),
        }
    }

    #[cold]
    fn reject_head(
        &mut self,
        e: HeadError,
        ctx: &mut impl Context,
        now: Instant,
        actions: &mut Actions,
    ) {
        let response = request::error_response(e);
        ::log::info!(
            "{} rejected request: {e} -> {}",
            self.client,
            response.status()
        );
        self.respond(response, ctx, now, actions);
    }

    fn start_request(
        &mut self,
        head: &RequestHead,
        ctx: &mut impl Context,
        now: Instant,
        actions: &mut Actions,
    ) {
        self.requests = self.requests.saturating_add(1);
        if !ctx.admit_request(self.client.ip(), now) {
            let why = "over [limits] requests_per_second";
            self.refuse(head, why, ErrorResponse::TooManyRequests, ctx, now, actions);
            return;
        }
        if !self.secure
            && let Some(port) = ctx.https_redirect_port()
        {
            self.redirect_to_https(head, port, ctx, now, actions);
            return;
        }
        let buf = self.client_in.data();
        let Some(routed) = ctx
            .config()
            .router
            .route(head.host(buf), head.target.get(buf))
        else {
            self.refuse(head, "no route", ErrorResponse::NotFound, ctx, now, actions);
            return;
        };
        let sticky = sticky_cookie(ctx.config(), routed.pool, head, buf);
        self.pick_for(head, routed, sticky, ctx, now, actions);
    }

    /// Picks a backend of the request's pool and starts the request there; when every backend is at
    /// its `max_connections`, the request waits in the pool's queue (holding only its client
    /// connection) until the driver retries it ([`Exchange::retry_queued`]).
    pub(super) fn pick_for(
        &mut self,
        head: &RequestHead,
        routed: Routed,
        sticky: Option<u64>,
        ctx: &mut impl Context,
        now: Instant,
        actions: &mut Actions,
    ) {
        let inflight = match ctx.pick(routed.pool, self.client.ip(), Tried::default(), sticky) {
            Pick::Started(inflight) => inflight,
            Pick::Full => return self.wait_for_room(head, routed.pool, ctx, now, actions),
            Pick::None => {
                let response = ErrorResponse::ServiceUnavailable;
                return self.refuse(head, "no backend available", response, ctx, now, actions);
            }
        };
        let Some(received_head) = self.write_request_head(head, inflight.backend(), routed.strip)
        else {
            let response = ErrorResponse::HeadTooLarge;
            return self.refuse(
                head,
                "rewritten head too large",
                response,
                ctx,
                now,
                actions,
            );
        };
        let head_kept = kept_head_len(head, received_head);
        let request = RequestFacts {
            version: head.version,
            keep_alive: head.keep_alive,
            is_head: head.is_head,
            idempotent: head.idempotent,
            upgrade: head.upgrade,
            has_body: head.has_body(),
            expect_continue: head.expect_continue,
        };
        let relay = match head.framing {
            Framing::Empty | Framing::UntilClose => Relay::Done,
            Framing::Length(n) => Relay::Length { remaining: n },
            Framing::Chunked => Relay::Chunked(ChunkedDecoder::new(true)),
        };
        let pooled = pooled(&request);
        let takeoff = Takeoff {
            started: now,
            routed,
            sticky,
            request,
            relay,
            head_kept,
            received_head,
            inflight,
        };
        let buf = self.client_in.data();
        let mut flight = Flight::boxed(takeoff);
        flight.line.set(head.method(buf), head.target.get(buf));
        logged_fields(ctx.config(), head, buf, &mut flight);
        if head.has_body() {
            // The body follows the head; the line and logged fields were kept above.
            self.client_in.consume(head.head_len);
        }
        self.set_phase(Phase::Serving(flight));
        actions.push(Action::Connect { pooled });
        if let Phase::Serving(flight) = &self.phase {
            fault::inject(flight.line.target(), fault::Stage::Request);
        }
    }

    /// Every backend of the pool is at its `max_connections`: the request waits in the pool's queue,
    /// or keeps its place there, or is refused when the queue is full.
    #[cold]
    fn wait_for_room(
        &mut self,
        head: &RequestHead,
        pool: usize,
        ctx: &mut impl Context,
        now: Instant,
        actions: &mut Actions,
    ) {
        if matches!(self.phase, Phase::Queued(_)) {
            // Still no room: it keeps its place.
            return;
        }
        match ctx.enqueue(pool) {
            Some(spot) => {
                let buf = self.client_in.data();
                let line = RequestLine::new(head.method(buf), head.target.get(buf));
                ::log::debug!("conn {}: \"{line}\" queued", self.id);
                self.set_phase(Phase::Queued(Box::new(Waiting {
                    since: now,
                    _spot: spot,
                })));
                actions.push(Action::Enqueue { pool });
            }
            None => {
                let response = ErrorResponse::ServiceUnavailable;
                self.refuse(head, "queue full", response, ctx, now, actions);
            }
        }
    }

    /// Answers a request lb does not pass on (over the rate limit, no route, no backend with room, a
    /// head too large once rewritten) with `response`, and logs why: a warning when no backend could
    /// take it.
    #[cold]
    fn refuse(
        &mut self,
        head: &RequestHead,
        why: &str,
        response: ErrorResponse,
        ctx: &mut impl Context,
        now: Instant,
        actions: &mut Actions,
    ) {
        let buf = self.client_in.data();
        let line = RequestLine::new(head.method(buf), head.target.get(buf));
        let status = response.status();
        if response == ErrorResponse::ServiceUnavailable {
            ::log::warn!("{} \"{line}\": {why} -> {status}", self.client);
        } else {
            ::log::info!("{} \"{line}\": {why} -> {status}", self.client);
        }
        self.respond(response, ctx, now, actions);
    }

    /// Writes the head `backend` receives, without the first `strip` bytes of its path: into
    /// `to_backend`, or, for a bodiless head alone in `client_in` that goes as received, lb's fields
    /// into `client_in` after the client's (the answer then says how much of `client_in` is the
    /// head). `None` when it does not fit.
    pub(super) fn write_request_head(
        &mut self,
        head: &RequestHead,
        backend: &Backend,
        strip: usize,
    ) -> Option<ReceivedHead> {
        self.to_backend.clear();
        let info = ForwardInfo {
            client_ip: self.client.ip(),
            secure: self.secure,
            default_host: backend.config.authority.as_bytes(),
            strip_prefix: strip,
        };
        let buf = self.client_in.data();
        // A bodiless head alone in `client_in` goes from there, lb's fields written after it.
        if buf.len() == head.head_len
            && let Some(lead) = request::head_goes_as_received(buf, head, &info)
        {
            self.client_in.truncate(lead);
            if self
                .client_in
                .write_after(|kept, out| request::write_added_to_received(kept, head, &info, out))
            {
                return ReceivedHead::new(self.client_in.len());
            }
            // The blank line the truncation dropped (its two bytes were just freed).
            let restored = self.client_in.append(b"\r\n");
            debug_assert!(restored, "the blank line fits where it was");
        }
        let buf = self.client_in.data();
        self.to_backend
            .write_with(|out| request::write_request_head(buf, head, &info, out))
            .then_some(ReceivedHead::NONE)
    }

    /// Writes the head again for another attempt, from the request head still at the front of
    /// `client_in` (a bodiless request's: from the start again when it goes as received), or keeps
    /// what `to_backend` holds (a request with a body is only retried when connecting failed, which
    /// sent nothing).
    pub(super) fn rewrite_request_head(&mut self, backend: &Backend) -> bool {
        let Phase::Serving(f) = &mut self.phase else {
            return false;
        };
        if f.head_kept == 0 {
            return true;
        }
        if f.received_head.is_used() {
            f.received_head.restart();
            return true;
        }
        let strip = f.routed.strip;
        match request::parse_request(self.client_in.data(), buffer::capacity()) {
            Ok(Some(head)) => match self.write_request_head(&head, backend, strip) {
                Some(received) => {
                    if let Phase::Serving(f) = &mut self.phase {
                        f.head_kept = kept_head_len(&head, received);
                        f.received_head = received;
                    }
                    true
                }
                None => false,
            },
            _ => {
                ::log::error!(
                    "conn {}: cannot rebuild the request head for a retry",
                    self.id
                );
                false
            }
        }
    }

    /// The response is delivered: records the outcome, releases the backend connection (to the pool if
    /// it can carry another request), and waits for the next request or closes.
    pub(super) fn finish_request(
        &mut self,
        ctx: &mut impl Context,
        now: Instant,
        actions: &mut Actions,
    ) {
        // Taken out for the moment; put back as it was unless the response is complete.
        let Phase::Serving(mut flight) = std::mem::replace(&mut self.phase, Phase::Closed) else {
            return;
        };
        let Stage::Relaying {
            plan,
            reusable,
            request_cut,
            ..
        } = flight.stage
        else {
            self.phase = Phase::Serving(flight);
            return;
        };
        let latency = now.saturating_duration_since(flight.started);
        ctx.count_request();
        // Read before the guard is finished, rather than a clone of the handle kept past it: a clone
        // and its drop were two more atomic read-modify-writes per request.
        let backend_removed = flight.attempt.inflight.backend().removed();
        flight
            .attempt
            .inflight
            .finish(Outcome::of_status(flight.status, latency), "response");
        log::access(ctx.config(), || {
            flight.access(self.client, flight.status, flight.response_bytes, latency)
        });
        let reuse = policy::backend_reusable(
            reusable,
            !request_cut && flight.request_written(&self.to_backend),
            !self.backend_in.is_empty(),
            flight.attempt.backend_eof,
        ) && !backend_removed;
        actions.push(Action::ReleaseBackend { reuse });
        recycle(flight);
        self.backend_in.clear();
        self.to_backend.clear();
        if plan.close_client {
            self.set_phase(Phase::Closing {
                since: now,
                shut: false,
            });
        } else {
            self.set_phase(Phase::ReadingHead {
                since: now,
                head_started: (!self.client_in.is_empty()).then_some(now),
            });
        }
    }
}

/// Bytes of the request head kept at the front of `client_in` until its response starts (for a
/// retry): none for a request with a body (its head made way for the body), the client's head with
/// lb's fields after it when it goes as received, else the client's head.
fn kept_head_len(head: &RequestHead, received: ReceivedHead) -> usize {
    match received.len() {
        _ if head.has_body() => 0,
        0 => head.head_len,
        len => len,
    }
}

/// Which pooled connections an attempt may use: a request that could not be sent twice (a body, or a
/// non-idempotent method) checks the connection first; others skip that system call (see [`Pooled`]).
pub(super) fn pooled(request: &RequestFacts) -> Pooled {
    if request.has_body || !request.idempotent {
        Pooled::Verified
    } else {
        Pooled::Any
    }
}

impl Exchange {
    /// In `Queued`: tries again to start the request (a backend may have room now). Still no room: it
    /// stays queued, in its place.
    pub fn retry_queued(&mut self, ctx: &mut impl Context, now: Instant) -> Actions {
        let mut actions = Actions::default();
        if !matches!(self.phase, Phase::Queued(_)) {
            return actions;
        }
        match request::parse_request(self.client_in.data(), buffer::capacity()) {
            Ok(Some(head)) => {
                // Routed again: a reload may have changed the pools since the request queued.
                let buf = self.client_in.data();
                let Some(routed) = ctx
                    .config()
                    .router
                    .route(head.host(buf), head.target.get(buf))
                else {
                    ::log::info!("{}: its route is gone while queued -> 404", self.client);
                    self.respond(ErrorResponse::NotFound, ctx, now, &mut actions);
                    return actions;
                };
                let sticky = sticky_cookie(ctx.config(), routed.pool, &head, buf);
                self.pick_for(&head, routed, sticky, ctx, now, &mut actions);
                if matches!(self.phase, Phase::Serving(_)) {
                    // Queued no more: what the new phase asks for comes next.
                    let more = self.settle(ctx, now);
                    for action in more {
                        actions.push(action);
                    }
                }
            }
            _ => {
                ::log::error!(
                    "conn {}: cannot parse a queued request's head again",
                    self.id
                );
                self.close(Close::Abort, &mut actions);
            }
        }
        actions
    }

    /// Waiting in its pool's queue.
    pub fn is_queued(&self) -> bool {
        matches!(self.phase, Phase::Queued(_))
    }
}

/// Keeps the request's `Referer` and `User-Agent` (the first of each) in `flight` for the access log;
/// nothing when the log is off.
fn logged_fields(config: &Config, head: &RequestHead, buf: &[u8], flight: &mut Flight) {
    flight.fields_logged = config.access_log;
    if config.access_log {
        flight.referer.clear();
        flight.user_agent.clear();
        // One pass over the fields for both, the first of each.
        let (mut referer, mut user_agent) = (false, false);
        for h in head.headers.iter(buf) {
            let name = h.name.get(buf);
            if !referer && name.eq_ignore_ascii_case(b"referer") {
                flight.referer.set(h.value.get(buf));
                referer = true;
            } else if !user_agent && name.eq_ignore_ascii_case(b"user-agent") {
                flight.user_agent.set(h.value.get(buf));
                user_agent = true;
            }
        }
    }
}

/// The backend id in the request's sticky cookie, when the pool keeps clients by one.
fn sticky_cookie(config: &Config, pool: usize, head: &RequestHead, buf: &[u8]) -> Option<u64> {
    let name = config.pools.get(pool)?.sticky_cookie.as_deref()?;
    let fields = head
        .headers
        .iter(buf)
        .filter(|h| h.name.get(buf).eq_ignore_ascii_case(b"cookie"))
        .map(|h| h.value.get(buf));
    crate::sticky::find(fields, name.as_bytes())
}
