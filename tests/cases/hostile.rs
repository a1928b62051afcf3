// Cases shared by both engines; included by tests/hostile.rs once per engine. The tables and checks
// live in tests/hostile.rs.

/// This module's engine: `event_loop` or `threaded`.
fn engine() -> &'static str {
    module_path!().rsplit("::").next().unwrap_or_default()
}

#[test]
fn odd_but_legal_responses_are_relayed_exactly() {
    check_relayed(engine());
}

#[test]
fn invalid_responses_get_502_or_a_reset_and_their_connection_is_closed() {
    check_invalid(engine());
}

#[test]
fn invalid_answers_on_a_pooled_connection_are_not_sent_again() {
    check_pooled_invalid(engine());
}

#[test]
fn stray_bytes_on_a_pooled_connection_never_answer_the_next_request() {
    check_stray_bytes_later(engine());
}

#[test]
fn the_binary_logs_an_invalid_response_with_the_backend_and_the_reason() {
    check_binary_logs_invalid_response(engine());
}

#[test]
fn thousands_of_random_responses_and_requests() {
    check_randomized(engine());
}
