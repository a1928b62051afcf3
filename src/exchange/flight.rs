//! A request's flight, made and given back: each new request fills a spare box of its thread's (no
//! allocation per request), and a finished one leaves its box for the next.

use super::*;
use crate::balance::InFlight;
use std::cell::RefCell;

thread_local! {
    /// Boxes of finished requests, reused by the next ones: no allocation per request. The boxes
    /// themselves are what is recycled (they move in and out of connections), hence a Vec of boxes.
    #[allow(clippy::vec_box)]
    static SPARE_FLIGHTS: RefCell<Vec<Box<Flight>>> = const { RefCell::new(Vec::new()) };
}

/// Spare flight boxes kept per thread.
const SPARE_FLIGHTS_KEPT: usize = 1024;

/// What a new request's flight starts from, besides its request line and logged fields (which the
/// caller writes into the box).
pub(super) struct Takeoff {
    pub(super) started: Instant,
    pub(super) routed: Routed,
    pub(super) sticky: Option<u64>,
    pub(super) request: RequestFacts,
    pub(super) relay: Relay,
    pub(super) head_kept: usize,
    pub(super) received_head: ReceivedHead,
    pub(super) inflight: InFlight,
}

impl Flight {
    /// The flight of a new request: a spare box of this thread's, filled in place field by field (a
    /// flight built on the stack and moved into it was a ~650-byte copy, twice), or a new box. Its
    /// request line and logged fields are left for the caller to write over.
    pub(super) fn boxed(takeoff: Takeoff) -> Box<Flight> {
        match SPARE_FLIGHTS.with(|spare| spare.borrow_mut().pop()) {
            Some(mut spare) => {
                spare.refill(takeoff);
                spare
            }
            None => Box::new(Flight {
                started: takeoff.started,
                line: RequestLine::new(b"", b""),
                routed: takeoff.routed,
                sticky: takeoff.sticky,
                referer: log::Kept::EMPTY,
                user_agent: log::Kept::EMPTY,
                request: takeoff.request,
                upload: Outbox::new(takeoff.relay),
                head_kept: takeoff.head_kept,
                received_head: takeoff.received_head,
                attempt: Attempt::first(takeoff.inflight),
                stage: Stage::Connecting {
                    since: takeoff.started,
                },
                status: 0,
                fields_logged: false,
                response_bytes: 0,
                final_head: FinalHead::NotYet,
            }),
        }
    }

    /// Every field but the line and the logged ones, as [`Flight::boxed`] makes them (named one by
    /// one, so that a new field cannot be forgotten here).
    fn refill(&mut self, takeoff: Takeoff) {
        let Flight {
            started,
            line: _,
            routed,
            sticky,
            referer: _,
            user_agent: _,
            fields_logged: _,
            request,
            upload,
            head_kept,
            received_head,
            attempt,
            stage,
            status,
            response_bytes,
            final_head,
        } = self;
        *started = takeoff.started;
        *routed = takeoff.routed;
        *sticky = takeoff.sticky;
        *request = takeoff.request;
        *upload = Outbox::new(takeoff.relay);
        *head_kept = takeoff.head_kept;
        *received_head = takeoff.received_head;
        *attempt = Attempt::first(takeoff.inflight);
        *stage = Stage::Connecting {
            since: takeoff.started,
        };
        *status = 0;
        *response_bytes = 0;
        *final_head = FinalHead::NotYet;
    }
}

impl Attempt {
    /// A request's first attempt, on the backend `inflight` counts it on.
    fn first(inflight: InFlight) -> Attempt {
        Attempt {
            inflight,
            number: 1,
            tried: Tried::default(),
            reused: false,
            response_started: false,
            backend_eof: false,
        }
    }
}

pub(super) fn recycle(mut flight: Box<Flight>) {
    // Settle the counts now, as dropping would; the box itself is kept for the next request.
    flight.attempt.inflight.abandon();
    let _ = SPARE_FLIGHTS.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < SPARE_FLIGHTS_KEPT {
            spare.push(flight);
        }
    });
}
