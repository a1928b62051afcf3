//! What happens when an attempt fails or a deadline passes: the retry policy's decision (`policy`)
//! carried out — the request sent again, on a new connection or another backend, or answered with an
//! error, or the client reset — with the failure counted against the backend and logged once.

use super::*;
use crate::balance::Outcome;
use policy::{Attempted, Failure, Retry};
use std::sync::Arc;

impl Exchange {
    /// Connecting to the backend failed (`timed_out`: `[timeouts] connect` passed).
    #[cold]
    pub fn on_connect_failed(
        &mut self,
        reason: &str,
        timed_out: bool,
        ctx: &mut impl Context,
        now: Instant,
    ) -> Actions {
        let mut actions = Actions::default();
        if let Phase::Serving(f) = &self.phase {
            ::log::warn!(
                "backend {}: connect failed: {reason}",
                f.attempt.inflight.backend().name
            );
            let failure = if timed_out {
                Failure::ConnectTimeout
            } else {
                Failure::Connect
            };
            let reason = format!("connect failed: {reason}");
            self.attempt_failed(failure, &reason, ctx, now, &mut actions);
        }
        actions
    }

    /// Reading from or writing to the backend failed.
    #[cold]
    pub fn on_backend_error(
        &mut self,
        what: &str,
        error: &std::io::Error,
        ctx: &mut impl Context,
        now: Instant,
    ) -> Actions {
        let mut actions = Actions::default();
        match &self.phase {
            Phase::Serving(f) if f.stage_is_tunnel() => self.close(Close::Abort, &mut actions),
            Phase::Serving(_) => {
                let reason = format!("{what} failed: {error}");
                self.attempt_failed(Failure::Broken, &reason, ctx, now, &mut actions);
            }
            _ => {}
        }
        actions
    }

    /// The deadline of [`Exchange::deadline`] passed.
    #[cold]
    pub fn on_timeout(&mut self, ctx: &mut impl Context, now: Instant) -> Actions {
        let mut actions = Actions::default();
        let response_timeout = ctx.config().timeouts.response;
        match &self.phase {
            Phase::ReadingHead { .. } if self.client_in.is_empty() => {
                ::log::debug!("conn {}: idle timeout", self.id);
                self.close(Close::Graceful, &mut actions);
            }
            Phase::ReadingHead { .. } => {
                ::log::info!("{}: request head not received in time -> 408", self.client);
                self.respond(ErrorResponse::RequestTimeout, ctx, now, &mut actions);
            }
            Phase::Serving(f) => match f.stage {
                Stage::Connecting { .. } => {
                    return self.on_connect_failed("timed out", true, ctx, now);
                }
                Stage::Tunnel { .. } => {
                    ::log::debug!("conn {}: tunnel idle timeout", self.id);
                    self.close(Close::Graceful, &mut actions);
                }
                _ => {
                    let url = &f.attempt.inflight.backend().name;
                    let reason = if f.final_head == FinalHead::Sent {
                        ::log::warn!(
                            "{} \"{}\": no progress for {response_timeout:?} mid-response (backend {url}); resetting",
                            self.client,
                            f.line
                        );
                        "stalled mid-response"
                    } else {
                        ::log::warn!(
                            "backend {url}: no response to {} \"{}\" within {response_timeout:?} -> 504",
                            self.client,
                            f.line
                        );
                        "response timeout"
                    };
                    self.attempt_failed(Failure::Timeout, reason, ctx, now, &mut actions);
                }
            },
            Phase::Queued(waiting) => {
                ::log::warn!(
                    "{}: waited {:?} in the queue for a backend with room -> 503",
                    self.client,
                    now.saturating_duration_since(waiting.since)
                );
                self.respond(ErrorResponse::ServiceUnavailable, ctx, now, &mut actions);
            }
            Phase::Closing { .. } => {
                let how = if self.to_client.is_empty() {
                    Close::Graceful
                } else {
                    Close::Abort
                };
                self.close(how, &mut actions);
            }
            Phase::Closed => {}
        }
        actions
    }

    /// Carries out the retry policy's decision for the current attempt, which failed with `failure`
    /// for `reason`. The failed connection is always released (closed).
    #[cold]
    pub(super) fn attempt_failed(
        &mut self,
        failure: Failure,
        reason: &str,
        ctx: &mut impl Context,
        now: Instant,
        actions: &mut Actions,
    ) {
        let Phase::Serving(f) = &mut self.phase else {
            return;
        };
        let retries = ctx.config().retries;
        let decision = policy::after_failure(Attempted {
            failure,
            response_started: f.attempt.response_started,
            client_output_started: f.final_head == FinalHead::Sent,
            resendable: f.head_kept > 0,
            reused_connection: f.attempt.reused,
            idempotent: f.request.idempotent,
            attempts: f.attempt.number,
            retries,
        });
        self.backend_in.clear();
        let backend = f.attempt.inflight.backend().clone();
        let url = &backend.name;
        if decision == Retry::FreshConnection {
            ::log::debug!(
                "backend {url}: pooled connection failed ({reason}); retrying on a new connection"
            );
            // Not the backend's failure: the request is counted again on the new connection.
            f.attempt.inflight = f.attempt.inflight.again();
            actions.push(Action::ReleaseBackend { reuse: false });
            self.new_attempt(backend, Pooled::Never, now, actions);
            return;
        }
        f.attempt.inflight.finish(Outcome::Failure, reason);
        f.attempt.tried = f.attempt.tried.with(backend.slot);
        let line = f.line;
        // A retry counts against max_connections like any request; it does not queue.
        let next = match decision {
            Retry::OtherBackend => {
                match ctx.pick(f.routed.pool, self.client.ip(), f.attempt.tried, f.sticky) {
                    crate::balance::Pick::Started(inflight) => Some(inflight),
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(started) = next {
            if failure == Failure::Broken {
                ::log::warn!("backend {url}: {reason}; request retried on another backend");
            }
            f.attempt.number += 1;
            let next = started.backend().clone();
            f.attempt.inflight = started;
            actions.push(Action::ReleaseBackend { reuse: false });
            let pooled = super::start::pooled(&f.request);
            self.new_attempt(next, pooled, now, actions);
            return;
        }
        let connecting = matches!(failure, Failure::Connect | Failure::ConnectTimeout);
        match decision {
            Retry::ResetClient => {
                ::log::warn!(
                    "backend {url}: {reason} in the middle of the response to {} \"{line}\"; resetting the client",
                    self.client
                );
                self.close(Close::Abort, actions);
            }
            Retry::Respond(response) if !connecting => {
                ::log::warn!(
                    "backend {url}: {reason} -> {} for {} \"{line}\"",
                    response.status(),
                    self.client
                );
                self.respond(response, ctx, now, actions);
            }
            // Connecting failed everywhere it could be tried, or no other backend is available.
            Retry::Respond(_) | Retry::OtherBackend | Retry::FreshConnection => {
                let response = match failure {
                    Failure::ConnectTimeout | Failure::Timeout => ErrorResponse::GatewayTimeout,
                    _ => ErrorResponse::BadGateway,
                };
                ::log::warn!(
                    "{} \"{line}\": no backend reachable -> {}",
                    self.client,
                    response.status()
                );
                self.respond(response, ctx, now, actions);
            }
        }
    }

    /// Starts another attempt of the current request on `backend` (already counted in flight).
    fn new_attempt(
        &mut self,
        backend: Arc<Backend>,
        pooled: Pooled,
        now: Instant,
        actions: &mut Actions,
    ) {
        if !self.rewrite_request_head(&backend) {
            self.close(Close::Abort, actions);
            return;
        }
        let Phase::Serving(f) = &mut self.phase else {
            return;
        };
        f.attempt.reused = false;
        f.attempt.response_started = false;
        f.attempt.backend_eof = false;
        f.upload = Outbox::new(f.upload.relay);
        f.stage = Stage::Connecting { since: now };
        actions.push(Action::Connect { pooled });
    }
}
