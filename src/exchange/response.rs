//! The response head: parsed from the backend's bytes, interim (1xx) heads passed on to HTTP/1.1
//! clients, and for the final head the plan — how its body travels, whether the client connection
//! stays open, whether the backend connection may be reused — then the head the client receives.

use super::*;
use crate::buffer;
use crate::fault;
use crate::http::body::{ChunkedDecoder, Relay};
use crate::http::response::{self, ClientBody, ResponseHead};

/// What one look at the backend's bytes found.
enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// An interim head was queued for the client; another head follows.
    Interim,
    /// The final head: relaying starts.
    Final,
    /// The attempt failed for this reason.
    Failed(String),
}

impl Exchange {
    /// In `AwaitingResponse`: passes on interim heads and starts relaying at the final one.
    pub(super) fn response_head(
        &mut self,
        ctx: &mut impl Context,
        now: Instant,
        actions: &mut Actions,
    ) {
        loop {
            let Phase::Serving(f) = &self.phase else {
                return;
            };
            let backend_eof = f.attempt.backend_eof;
            if self.backend_in.is_empty() {
                if backend_eof {
                    let reason = "connection closed before a response";
                    self.attempt_failed(policy::Failure::Broken, reason, ctx, now, actions);
                }
                return;
            }
            match self.next_head(ctx, now) {
                Parsed::Partial if backend_eof => {
                    let reason = "connection closed in the response head";
                    self.attempt_failed(policy::Failure::Broken, reason, ctx, now, actions);
                    return;
                }
                Parsed::Partial | Parsed::Final => return,
                Parsed::Interim => {}
                Parsed::Failed(reason) => {
                    self.attempt_failed(policy::Failure::Broken, &reason, ctx, now, actions);
                    return;
                }
            }
        }
    }

    #[inline(never)]
    fn next_head(&mut self, ctx: &mut impl Context, now: Instant) -> Parsed {
        let Phase::Serving(f) = &mut self.phase else {
            return Parsed::Partial;
        };
        // Looked at where it was parsed into: the head is a few hundred bytes, and moving it out
        // of the result was a copy per response.
        let parsed = response::parse_response(
            self.backend_in.data(),
            f.request.is_head,
            buffer::capacity(),
        );
        let head = match &parsed {
            Ok(Some(head)) => head,
            Ok(None) => return Parsed::Partial,
            Err(e) => return Parsed::Failed(format!("invalid response: {e}")),
        };
        fault::inject(f.line.target(), fault::Stage::Response);
        // The request is answered: its head is no longer needed for a retry. What of it the backend
        // has not read yet is still written (from `to_backend`), as a head written anew would be.
        if f.received_head.pending()
            && !f
                .received_head
                .move_rest(self.client_in.data(), &mut self.to_backend)
        {
            return Parsed::Failed("request head too large to finish".into());
        }
        f.received_head = ReceivedHead::NONE;
        self.client_in.consume(std::mem::take(&mut f.head_kept));
        let version = f.request.version;
        if head.is_informational() && head.status != 101 {
            // 100 Continue, 103 Early Hints: passed on to HTTP/1.1 clients, then the real response.
            if version == Version::Http11 {
                let backend_in = &self.backend_in;
                let written = self.to_client.write_with(|out| {
                    response::write_response_head(backend_in.data(), head, None, version, out)
                });
                if !written {
                    return Parsed::Failed("interim response head too large".into());
                }
            }
            self.backend_in.consume(head.head_len);
            return Parsed::Interim;
        }
        match self.final_head(head, ctx, now) {
            Ok(()) => Parsed::Final,
            Err(reason) => Parsed::Failed(reason),
        }
    }

    /// Plans the final response, queues the client's head and starts relaying (or tunnelling).
    fn final_head(
        &mut self,
        head: &ResponseHead,
        ctx: &mut impl Context,
        now: Instant,
    ) -> Result<(), String> {
        let Phase::Serving(f) = &mut self.phase else {
            return Ok(());
        };
        let version = f.request.version;
        let mut plan =
            response::plan_response(head, version, f.request.keep_alive, f.request.upgrade)
                .map_err(|e| format!("unusable response: {e}"))?;
        let request_cut = !f.upload.relay.is_done();
        plan.close_client = policy::close_client(plan.close_client, request_cut, ctx.draining());
        let interim_queued = self.to_client.len();
        let backend = f.attempt.inflight.backend();
        // A sticky pool names the backend that answered, unless the client's cookie already does.
        let set_cookie = match &ctx.config().pools.get(f.routed.pool) {
            Some(pool) if f.sticky != Some(backend.sticky_id) => pool
                .sticky_cookie
                .as_deref()
                .map(|name| crate::sticky::set_cookie_field(name, backend.sticky_id)),
            _ => None,
        };
        let extra = set_cookie.as_deref().unwrap_or_default().as_bytes();
        let backend_in = &self.backend_in;
        // A head that needs no rewriting stays where it was read and goes out ahead of its body.
        let as_received =
            response::head_goes_as_received(backend_in.data(), head, &plan, version, extra);
        if !as_received {
            let written = self.to_client.write_with(|out| {
                response::write_response_head_with(
                    backend_in.data(),
                    head,
                    Some(&plan),
                    version,
                    extra,
                    out,
                )
            });
            if !written {
                return Err("response head too large".into());
            }
            self.backend_in.consume(head.head_len);
        }
        f.final_head = FinalHead::Queued {
            after: interim_queued,
        };
        f.status = head.status;
        let relay = match plan.body {
            ClientBody::Empty => Relay::Done,
            ClientBody::Length(n) => Relay::Length { remaining: n },
            ClientBody::Chunked => Relay::Chunked(ChunkedDecoder::new(true)),
            ClientBody::Dechunked => Relay::Chunked(ChunkedDecoder::new(false)),
            ClientBody::UntilClose | ClientBody::Tunnel => Relay::UntilClose,
        };
        if plan.body == ClientBody::Tunnel {
            f.upload = Outbox::new(Relay::UntilClose);
            let latency = now.saturating_duration_since(f.started);
            let outcome = crate::balance::Outcome::Success { latency };
            f.attempt
                .inflight
                .finish(outcome, "101 Switching Protocols");
            log::access(ctx.config(), || f.access(self.client, 101, 0, latency));
            f.stage = Stage::Tunnel {
                download: Outbox::new(relay),
                client_shut: false,
                backend_shut: false,
            };
            return Ok(());
        }
        f.stage = Stage::Relaying {
            plan,
            download: if as_received {
                Outbox::after_head(relay, head.head_len)
            } else {
                Outbox::new(relay)
            },
            reusable: head.reusable && !request_cut,
            request_cut,
        };
        Ok(())
    }
}
