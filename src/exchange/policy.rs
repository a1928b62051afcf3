//! The decisions of an exchange that do not depend on bytes, as pure functions with tables of cases:
//! whether a failed attempt is retried (and where), whether a backend connection may carry another
//! request, and whether the client connection closes after a response.

use crate::http::ErrorResponse;

/// How an attempt at a backend failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be established (refused, unreachable, reset during the handshake).
    Connect,
    /// Connecting took longer than `[timeouts] connect`.
    ConnectTimeout,
    /// The connection broke (reset, closed, a write or read failed) or the response was unusable.
    Broken,
    /// No response byte within `[timeouts] response`, or the response stalled.
    Timeout,
}

/// What is known about the attempt when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempted {
    pub failure: Failure,
    /// Some response byte had arrived.
    pub response_started: bool,
    /// Some response byte had been passed on to the client.
    pub client_output_started: bool,
    /// The request can be written again: it has no body, so its head is still buffered.
    pub resendable: bool,
    /// The connection came from the idle pool.
    pub reused_connection: bool,
    /// Safe to send twice (RFC 9110 9.2.2).
    pub idempotent: bool,
    /// Attempts made so far, this one included.
    pub attempts: u32,
    /// `retries`: other backends that may be tried.
    pub retries: u32,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Send the request again on a new connection to the same backend: the pooled connection it went
    /// out on had been closed by the backend, which is not the backend's failure.
    FreshConnection,
    /// Try another backend (if one is available), counting this as the backend's failure.
    OtherBackend,
    /// Answer the client with this status, counting the failure.
    Respond(ErrorResponse),
    /// Part of the response already went to the client: reset it, so a truncated response cannot
    /// look complete.
    ResetClient,
}

/// Decides what follows a failed attempt.
///
/// Nothing was sent when connecting failed, so that is retried elsewhere within `retries`. After that,
/// only a request whose bytes can be sent again and that got no response byte is retried: on a new
/// connection when a pooled one turned out stale, or on another backend when it is idempotent. A
/// request whose body left for a backend is never sent twice, and a timed-out request is not retried
/// (the backend may still be working on it; a second one would only double the load).
pub fn after_failure(a: Attempted) -> Retry {
    let retries_left = a.attempts <= a.retries;
    let give_up = |timed_out: bool| {
        if a.client_output_started {
            Retry::ResetClient
        } else if timed_out {
            Retry::Respond(ErrorResponse::GatewayTimeout)
        } else {
            Retry::Respond(ErrorResponse::BadGateway)
        }
    };
    match a.failure {
        Failure::Connect | Failure::ConnectTimeout if retries_left => Retry::OtherBackend,
        Failure::Connect => give_up(false),
        Failure::ConnectTimeout => give_up(true),
        Failure::Timeout => give_up(true),
        Failure::Broken => {
            let untouched = a.resendable && !a.response_started;
            if untouched && a.reused_connection {
                Retry::FreshConnection
            } else if untouched && a.idempotent && retries_left {
                Retry::OtherBackend
            } else {
                give_up(false)
            }
        }
    }
}

/// Whether a backend connection can go back to the pool once its response is complete: the response
/// head allowed it, the whole request was sent (else the backend would read the rest as a request),
/// nothing unexpected followed the response, and the backend did not close its side.
pub fn backend_reusable(
    head_allows: bool,
    request_complete: bool,
    extra_input: bool,
    backend_closed: bool,
) -> bool {
    head_allows && request_complete && !extra_input && !backend_closed
}

/// Whether the client connection closes after this response: the plan says so (the request or the
/// framing asks for it), the backend answered before the whole request body arrived (the rest must
/// never be read as a request), or lb is draining.
pub fn close_client(plan_closes: bool, request_incomplete: bool, draining: bool) -> bool {
    plan_closes || request_incomplete || draining
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(failure: Failure) -> Attempted {
        Attempted {
            failure,
            response_started: false,
            client_output_started: false,
            resendable: true,
            reused_connection: false,
            idempotent: true,
            attempts: 1,
            retries: 2,
        }
    }

    #[test]
    fn retry_table() {
        use ErrorResponse::{BadGateway, GatewayTimeout};
        use Failure::*;
        let base = attempt;
        // (attempt, decision)
        let cases: Vec<(Attempted, Retry)> = vec![
            (base(Connect), Retry::OtherBackend),
            (base(ConnectTimeout), Retry::OtherBackend),
            (
                Attempted {
                    resendable: false,
                    idempotent: false,
                    ..base(Connect)
                },
                Retry::OtherBackend,
            ),
            (
                Attempted {
                    attempts: 3,
                    ..base(Connect)
                },
                Retry::Respond(BadGateway),
            ),
            (
                Attempted {
                    attempts: 3,
                    ..base(ConnectTimeout)
                },
                Retry::Respond(GatewayTimeout),
            ),
            (
                Attempted {
                    retries: 0,
                    ..base(Connect)
                },
                Retry::Respond(BadGateway),
            ),
            (
                Attempted {
                    reused_connection: true,
                    ..base(Broken)
                },
                Retry::FreshConnection,
            ),
            (
                Attempted {
                    reused_connection: true,
                    idempotent: false,
                    attempts: 9,
                    ..base(Broken)
                },
                Retry::FreshConnection,
            ),
            (
                Attempted {
                    reused_connection: true,
                    resendable: false,
                    ..base(Broken)
                },
                Retry::Respond(BadGateway),
            ),
            (base(Broken), Retry::OtherBackend),
            (
                Attempted {
                    idempotent: false,
                    ..base(Broken)
                },
                Retry::Respond(BadGateway),
            ),
            (
                Attempted {
                    attempts: 3,
                    ..base(Broken)
                },
                Retry::Respond(BadGateway),
            ),
            (
                Attempted {
                    response_started: true,
                    reused_connection: true,
                    ..base(Broken)
                },
                Retry::Respond(BadGateway),
            ),
            (
                Attempted {
                    response_started: true,
                    client_output_started: true,
                    ..base(Broken)
                },
                Retry::ResetClient,
            ),
            (base(Timeout), Retry::Respond(GatewayTimeout)),
            (
                Attempted {
                    response_started: true,
                    client_output_started: true,
                    ..base(Timeout)
                },
                Retry::ResetClient,
            ),
        ];
        for (a, expected) in cases {
            assert_eq!(after_failure(a), expected, "{a:?}");
        }
    }

    #[test]
    fn reuse_table() {
        // (head allows, request complete, extra input, backend closed, reusable)
        let cases = [
            (true, true, false, false, true),
            (false, true, false, false, false),
            (true, false, false, false, false),
            (true, true, true, false, false),
            (true, true, false, true, false),
        ];
        for (head, complete, extra, closed, expected) in cases {
            assert_eq!(
                backend_reusable(head, complete, extra, closed),
                expected,
                "{head} {complete} {extra} {closed}"
            );
        }
    }

    #[test]
    fn close_table() {
        // (plan closes, request incomplete, draining, close)
        let cases = [
            (false, false, false, false),
            (true, false, false, true),
            (false, true, false, true),
            (false, false, true, true),
        ];
        for (plan, incomplete, draining, expected) in cases {
            assert_eq!(close_client(plan, incomplete, draining), expected);
        }
    }
}
