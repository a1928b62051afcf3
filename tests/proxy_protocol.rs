//! The PROXY protocol end to end: with `proxy_protocol = true`, a v1 or v2 header names the client
//! that X-Forwarded-For, limits and the logs then see, on plain and TLS listeners, for every request
//! of the connection; a LOCAL header leaves the connection's own address; a connection without a
//! valid header is closed without an answer.
//!
//! Every case runs against each engine: `event_loop::...`, `workers2::...` and `threaded::...`.

mod common;

use common::*;

for_each_engine!("cases/proxy_protocol.rs");
