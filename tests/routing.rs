//! Pools and routes end to end: requests reach the pool their host and path select (exact and
//! wildcard hosts, path prefixes, absolute-form targets), prefixes are stripped, unrouted requests get
//! 404 without a default pool, the admin API lists every pool's backends in one flat order, and a
//! reload adds and removes pools and routes while kept backends keep their statistics.
//!
//! Every case runs against each engine: `event_loop::...`, `workers2::...` and `threaded::...`.

mod common;

use common::*;

for_each_engine!("cases/routing.rs");
