//! End-to-end HTTP/1.1 behaviour of the event loop: real sockets on 127.0.0.1, raw bytes in, exact
//! bytes and statuses out, and what each backend received.
//!
//! Every case runs against both engines: `event_loop::...` and `threaded::...`.

mod common;

use common::*;

for_each_engine!("cases/proxy.rs");
