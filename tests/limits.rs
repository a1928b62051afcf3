//! `[limits]` end to end: a client over its request rate gets 429 with Retry-After, one over its
//! connection count has the new connection closed, both are counted in /metrics, and a reload changes
//! them.
//!
//! Every case runs against each engine: `event_loop::...`, `workers2::...` and `threaded::...`.

mod common;

use common::*;

for_each_engine!("cases/limits.rs");
