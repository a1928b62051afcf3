//! The admin API end to end, served by the same event loop as the proxy: JSON stats, Prometheus metrics
//! checked with a real parser, the dashboard page, runtime capacity and drain, authentication and bad
//! input; plus reload and drain through the same control path the signals use.
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
    include!("cases/admin.rs");
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
    include!("cases/admin.rs");
}
