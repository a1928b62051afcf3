//! Per-backend `max_connections` and the pools' queues end to end: a backend never serves more
//! requests at once than its bound, the others wait (oldest first on one worker) holding only their
//! client connection, and a full queue or a queue timeout answers 503.
//!
//! Every case runs against each engine: `event_loop::...`, `workers2::...` and `threaded::...`.

mod common;

use common::*;

for_each_engine!("cases/queue.rs");
