//! The backend pool end to end: failover with zero client-visible errors, health transitions driven by
//! real probes, algorithm behaviour measured through real sockets, and statistics that add up.
//!
//! Every case runs against both engines: `event_loop::...` and `threaded::...`.

mod common;

use common::*;
use std::net::SocketAddr;

/// Prepends the engine to a configuration's top-level keys.
fn with_engine(engine: &str, text: &str) -> String {
    format!("engine = \"{engine}\"\n{text}")
}

mod event_loop {
    use super::*;
    const ENGINE: &str = "event_loop";
    fn lb(settings: &str, backends: &[SocketAddr]) -> Lb {
        Lb::start(&with_engine(ENGINE, settings), backends)
    }
    #[allow(dead_code)]
    fn lb_text(text: &str) -> Lb {
        Lb::start_text(&with_engine(ENGINE, text))
    }
    include!("cases/pool.rs");
}

mod threaded {
    use super::*;
    const ENGINE: &str = "threaded";
    fn lb(settings: &str, backends: &[SocketAddr]) -> Lb {
        Lb::start(&with_engine(ENGINE, settings), backends)
    }
    #[allow(dead_code)]
    fn lb_text(text: &str) -> Lb {
        Lb::start_text(&with_engine(ENGINE, text))
    }
    include!("cases/pool.rs");
}
