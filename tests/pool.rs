//! The backend pool end to end: failover with zero client-visible errors, health transitions driven by
//! real probes, algorithm behaviour measured through real sockets, and statistics that add up.
//!
//! Every case runs against both engines: `event_loop::...` and `threaded::...`.

mod common;

use common::*;

for_each_engine!("cases/pool.rs");
