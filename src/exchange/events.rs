//! The exchange's events: what a driver reports (bytes read or written, a peer's EOF or error, a
//! connection made), and `settle`, where every event ends: heads are parsed, bodies stepped, complete
//! responses finished, tunnels half-closed — whatever the bytes now allow.

use super::*;
use crate::http::redirect;
use crate::http::request::RequestHead;

impl Exchange {
    /// Bytes from the client were appended to [`Exchange::client_buffer`].
    pub fn on_client_input(&mut self, ctx: &mut impl Context, now: Instant) -> Actions {
        self.last_progress = now;
        match &mut self.phase {
            Phase::ReadingHead { head_started, .. } => {
                head_started.get_or_insert(now);
            }
            // Nothing the client sends after our last response matters.
            Phase::Closing { .. } => self.client_in.clear(),
            _ => {}
        }
        self.settle(ctx, now)
    }

    /// The client closed its sending side (a read returned 0).
    pub fn on_client_eof(&mut self, ctx: &mut impl Context, now: Instant) -> Actions {
        self.client_eof = true;
        let mut actions = Actions::default();
        match &self.phase {
            Phase::ReadingHead { .. } if self.client_in.is_empty() => {
                self.close(Close::Graceful, &mut actions)
            }
            // Closed once our last bytes are out (see `settle`).
            Phase::Closing { shut: true, .. } => self.close(Close::Graceful, &mut actions),
            // An incomplete request body is noticed by `serve`, once the bytes still buffered have
            // been looked at.
            _ => {}
        }
        if !actions.is_empty() {
            return actions;
        }
        self.settle(ctx, now)
    }

    /// Reading from or writing to the client failed: it is gone.
    #[cold]
    pub fn on_client_error(&mut self, what: &str, error: &std::io::Error) -> Actions {
        let mut actions = Actions::default();
        match &self.phase {
            Phase::Serving(f) if !f.stage_is_tunnel() => ::log::info!(
                "{} \"{}\": client went away during the exchange ({what}: {error})",
                self.client,
                f.line
            ),
            _ => ::log::debug!("conn {}: client {what} failed: {error}", self.id),
        }
        self.close(Close::Abort, &mut actions);
        actions
    }

    /// The connection asked for by [`Action::Connect`] is established (`reused`: it came from the pool).
    pub fn on_connected(&mut self, reused: bool, ctx: &mut impl Context, now: Instant) -> Actions {
        if let Phase::Serving(f) = &mut self.phase
            && let Stage::Connecting { .. } = f.stage
        {
            f.attempt.reused = reused;
            f.stage = Stage::AwaitingResponse;
            self.last_progress = now;
        }
        self.settle(ctx, now)
    }

    /// Bytes from the backend were appended to [`Exchange::backend_buffer`].
    pub fn on_backend_input(&mut self, ctx: &mut impl Context, now: Instant) -> Actions {
        self.last_progress = now;
        if let Phase::Serving(f) = &mut self.phase {
            f.attempt.response_started = true;
        }
        self.settle(ctx, now)
    }

    /// The backend closed its sending side (a read returned 0).
    pub fn on_backend_eof(&mut self, ctx: &mut impl Context, now: Instant) -> Actions {
        if let Phase::Serving(f) = &mut self.phase {
            f.attempt.backend_eof = true;
        }
        self.settle(ctx, now)
    }

    /// `n` bytes of [`Exchange::backend_output`] were written.
    pub fn on_backend_sent(&mut self, n: usize, ctx: &mut impl Context, now: Instant) -> Actions {
        if n > 0 {
            self.last_progress = now;
        }
        if let Phase::Serving(f) = &mut self.phase {
            f.request_sent(n, &mut self.client_in, &mut self.to_backend);
        }
        self.settle(ctx, now)
    }

    /// Waiting for the response, with no request body left to step and no response byte received:
    /// `settle` would step nothing and parse nothing, and answers at once. This is where a bodiless
    /// request stands after its pooled connection is handed over and after its head is written.
    pub(super) fn awaiting_with_nothing_to_settle(&self) -> bool {
        match &self.phase {
            Phase::Serving(f) => {
                matches!(f.stage, Stage::AwaitingResponse)
                    && f.upload.stepped_out()
                    && self.backend_in.is_empty()
                    && !f.attempt.backend_eof
            }
            _ => false,
        }
    }

    /// `n` bytes of [`Exchange::client_output`] were written.
    pub fn on_client_sent(&mut self, n: usize, ctx: &mut impl Context, now: Instant) -> Actions {
        if n > 0 {
            self.last_progress = now;
        }
        match &mut self.phase {
            Phase::Serving(f) => {
                f.response_bytes += n as u64;
                if let FinalHead::Queued { after } = f.final_head {
                    f.final_head = if n > after {
                        FinalHead::Sent
                    } else {
                        FinalHead::Queued { after: after - n }
                    };
                }
                match &mut f.stage {
                    Stage::Relaying { download, .. } | Stage::Tunnel { download, .. } => {
                        download.sent(n, &mut self.backend_in, &mut self.to_client)
                    }
                    _ => self.to_client.consume(n.min(self.to_client.len())),
                }
            }
            _ => self.to_client.consume(n.min(self.to_client.len())),
        }
        self.settle(ctx, now)
    }

    /// Advances whatever the bytes now allow: parses heads, steps the bodies' framing, finishes a
    /// complete response, half-closes a tunnel. Every event ends here.
    // The answer where there is nothing to settle is inlined into each event, so that those events
    // (two of a bodiless request's five) do not pay the settling's entry.
    #[inline]
    pub(super) fn settle(&mut self, ctx: &mut impl Context, now: Instant) -> Actions {
        if self.awaiting_with_nothing_to_settle() {
            return Actions::default();
        }
        self.settle_now(ctx, now)
    }

    #[inline(never)]
    fn settle_now(&mut self, ctx: &mut impl Context, now: Instant) -> Actions {
        let mut actions = Actions::default();
        // A finished response may leave a pipelined head behind, to be started at once: no event would
        // announce bytes that are already buffered. Each round either waits on I/O or changes the phase.
        for _ in 0..4 {
            let before = self.phase_changes;
            match &self.phase {
                Phase::ReadingHead { .. } => self.read_head(ctx, now, &mut actions),
                Phase::Serving(_) => self.serve(ctx, now, &mut actions),
                // The driver retries it when a backend may have room.
                Phase::Queued(_) => {}
                Phase::Closing { shut, .. } => {
                    if !*shut && self.to_client.is_empty() {
                        self.client_in.release();
                        self.set_phase(Phase::Closing {
                            since: now,
                            shut: true,
                        });
                        actions.push(Action::ShutdownClient);
                        if self.client_eof {
                            // Nothing left to drain: the client already closed its side.
                            self.close(Close::Graceful, &mut actions);
                        }
                    }
                }
                Phase::Closed => {}
            }
            if self.phase_changes == before {
                break;
            }
        }
        actions
    }

    /// Steps both bodies of the request being served, then finishes it if it is complete.
    pub(super) fn serve(&mut self, ctx: &mut impl Context, now: Instant, actions: &mut Actions) {
        let Phase::Serving(f) = &mut self.phase else {
            return;
        };
        if !f.request_cut() {
            match f.upload.prepare(&mut self.client_in, &mut self.to_backend) {
                Err(e) => {
                    ::log::info!(
                        "{} \"{}\": bad request body: {e} -> 400",
                        self.client,
                        f.line
                    );
                    self.respond(ErrorResponse::BadRequest, ctx, now, actions);
                    return;
                }
                // The client closed before the body was complete (it may have done so while an
                // earlier, pipelined request was being answered).
                Ok(Flow::NeedInput) if self.client_eof && !f.stage_is_tunnel() => {
                    self.body_cut_short(actions);
                    return;
                }
                Ok(_) => {}
            }
        }
        if matches!(f.stage, Stage::AwaitingResponse) {
            self.response_head(ctx, now, actions);
        }
        // A final head that just arrived usually brought (part of) its body: step that at once, so
        // that head and body leave in one write.
        let Phase::Serving(f) = &self.phase else {
            return;
        };
        match f.stage {
            Stage::Connecting { .. } | Stage::AwaitingResponse => {}
            Stage::Relaying { .. } => self.download(ctx, now, actions),
            Stage::Tunnel { .. } => self.tunnel(actions),
        }
    }

    /// Steps the response body; finishes the request once the response is delivered.
    pub(super) fn download(&mut self, ctx: &mut impl Context, now: Instant, actions: &mut Actions) {
        let Phase::Serving(f) = &mut self.phase else {
            return;
        };
        let request_done = f.request_written(&self.to_backend);
        let backend_eof = f.attempt.backend_eof;
        let Stage::Relaying {
            download,
            reusable,
            plan,
            request_cut,
        } = &mut f.stage
        else {
            return;
        };
        let failure = match download.prepare(&mut self.backend_in, &mut self.to_client) {
            Ok(Flow::NeedInput) if backend_eof && download.relay.ends_at_close() => {
                // A close-delimited body ends here; the connection cannot be reused.
                download.relay = crate::http::body::Relay::Done;
                *reusable = false;
                None
            }
            Ok(Flow::NeedInput) if backend_eof => Some("connection closed mid-body".to_string()),
            Ok(_) => None,
            Err(e) => Some(format!("invalid response body: {e}")),
        };
        let complete = download.finished(&self.to_client)
            && (request_done || plan.close_client || *request_cut);
        if let Some(reason) = failure {
            self.attempt_failed(policy::Failure::Broken, &reason, ctx, now, actions);
        } else if complete {
            self.finish_request(ctx, now, actions);
        }
    }

    /// Half-closes each side of a tunnel once the other has closed and everything it sent is delivered.
    pub(super) fn tunnel(&mut self, actions: &mut Actions) {
        let Phase::Serving(f) = &mut self.phase else {
            return;
        };
        let upload_idle = f
            .request_outgoing(&self.client_in, &self.to_backend)
            .is_empty();
        let backend_eof = f.attempt.backend_eof;
        let Stage::Tunnel {
            download,
            client_shut,
            backend_shut,
        } = &mut f.stage
        else {
            return;
        };
        // An until-close relay cannot fail.
        let _ = download.prepare(&mut self.backend_in, &mut self.to_client);
        if self.client_eof && !*backend_shut && upload_idle {
            *backend_shut = true;
            actions.push(Action::ShutdownBackend);
        }
        if backend_eof
            && !*client_shut
            && download
                .outgoing(&self.backend_in, &self.to_client)
                .is_empty()
        {
            *client_shut = true;
            actions.push(Action::ShutdownClient);
        }
        if *client_shut && *backend_shut {
            self.close(Close::Graceful, actions);
        }
    }

    /// The client closed its side with the request body incomplete: the request can never be
    /// completed, and is not the backend's failure.
    #[cold]
    pub(super) fn body_cut_short(&mut self, actions: &mut Actions) {
        if let Phase::Serving(f) = &self.phase {
            ::log::info!(
                "{} \"{}\": client closed before sending the whole request body",
                self.client,
                f.line
            );
        }
        self.close(Close::Abort, actions);
    }

    /// Ends the connection.
    pub(super) fn close(&mut self, how: Close, actions: &mut Actions) {
        if let Phase::Serving(flight) = self.take_phase() {
            // Still in flight: not completed, for a reason of the client's or ours.
            recycle(flight);
        }
        actions.push(Action::Close(how));
    }

    /// Answers the client with one of our own responses and closes after it.
    #[cold]
    pub(super) fn respond(
        &mut self,
        response: ErrorResponse,
        ctx: &mut impl Context,
        now: Instant,
        actions: &mut Actions,
    ) {
        let (status, bytes) = (response.status(), response.bytes().len() as u64);
        // Answering a request being served (a backend failed, a body was malformed): the line shows
        // that request, its fields and the backend tried, as nginx's would.
        match &self.phase {
            Phase::Serving(f) => {
                let took = now.saturating_duration_since(f.started);
                log::access(ctx.config(), || f.access(self.client, status, bytes, took));
            }
            _ => log::access(ctx.config(), || {
                log::Access::own(self.client, status, bytes)
            }),
        }
        self.abandon_for_own_response(actions);
        self.to_client.append(response.bytes());
        self.own_response_queued(ctx, now);
    }

    /// Drops what the current request had going (its backend connection, a response not yet begun)
    /// before a response of ours.
    fn abandon_for_own_response(&mut self, actions: &mut Actions) {
        if let Phase::Serving(flight) = self.take_phase() {
            actions.push(Action::ReleaseBackend { reuse: false });
            match flight.final_head {
                // Interim heads already queued still go out, ahead of ours.
                FinalHead::Queued { after } => self.to_client.truncate(after),
                FinalHead::NotYet => {}
                FinalHead::Sent => self.to_client.clear(),
            }
            // The backend's response (a head relayed as it was received waits there) never goes.
            self.backend_in.clear();
            recycle(flight);
        } else {
            self.to_client.clear();
        }
    }

    /// A response of ours is queued (and logged): counted, and the connection closes after it.
    fn own_response_queued(&mut self, ctx: &mut impl Context, now: Instant) {
        ctx.count_request();
        self.set_phase(Phase::Closing {
            since: now,
            shut: false,
        });
    }

    /// A plain-HTTP request while `[tls] redirect_http` is on: `308` to the same URL over HTTPS.
    #[cold]
    pub(super) fn redirect_to_https(
        &mut self,
        head: &RequestHead,
        port: u16,
        ctx: &mut impl Context,
        now: Instant,
        actions: &mut Actions,
    ) {
        let buf = self.client_in.data();
        let Some(host) = head.host(buf) else {
            ::log::info!(
                "{} rejected request: no Host to redirect to HTTPS -> 400",
                self.client
            );
            self.respond(ErrorResponse::BadRequest, ctx, now, actions);
            return;
        };
        let target = head.target.get(buf);
        self.to_client.clear();
        let written = self
            .to_client
            .write_with(|out| redirect::write_https_redirect(host, target, port, out));
        if !written {
            self.respond(ErrorResponse::HeadTooLarge, ctx, now, actions);
            return;
        }
        let bytes = self.to_client.len();
        log::access(ctx.config(), || {
            log::Access::own(self.client, 308, bytes as u64)
        });
        self.own_response_queued(ctx, now);
    }
}
