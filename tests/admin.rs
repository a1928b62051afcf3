//! The admin API end to end, served by the same event loop as the proxy: JSON stats, Prometheus metrics
//! checked with a real parser, the dashboard page, runtime capacity and drain, authentication and bad
//! input; plus reload and drain through the same control path the signals use.
//!
//! Every case runs against both engines: `event_loop::...` and `threaded::...`.

mod common;

use common::*;

for_each_engine!("cases/admin.rs");
