//! DNS discovery in the threaded engine: one thread waits on discovery's sockets (with a `mio::Poll` of
//! its own) until an answer arrives or the resolver's next wake-up, and applies changed sets to the
//! shared balancer through the reload path. The resolver sits behind `State::discovery`, so that a
//! reload can hand it the new names and expand the new backends with its answers.

use super::{State, lock};
use crate::dns::Report;
use mio::{Events, Poll};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The longest the thread sleeps: how soon it sees a stop, or names a reload added.
const MAX_WAIT: Duration = Duration::from_millis(100);

pub(super) fn run(state: &State, mut poll: Poll) {
    let mut events = Events::with_capacity(8);
    let mut readable = Vec::new();
    while !state.stopping.load(Ordering::SeqCst) {
        let wait = {
            let mut discovery = lock(&state.discovery);
            let now = Instant::now();
            let mut reports = Vec::new();
            for token in readable.drain(..) {
                reports.extend(discovery.step(Some(token), now));
            }
            reports.extend(discovery.step(None, now));
            for report in &reports {
                apply(state, discovery.resolver(), report);
            }
            let now = Instant::now();
            discovery
                .next_wakeup(now)
                .map_or(MAX_WAIT, |at| at.saturating_duration_since(now))
                .min(MAX_WAIT)
        };
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => readable.extend(events.iter().map(|e| e.token())),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::error!("dns: discovery stopped: {e}");
                return;
            }
        }
    }
}

/// Applies one lookup round's result. Called with the discovery lock held: the balancer's is taken
/// inside it, always in that order.
fn apply(state: &State, resolver: &crate::dns::Resolver, report: &Report) {
    let config = state.config();
    let applied = {
        let mut balancer = lock(&state.balancer);
        crate::reload::apply_answer(&mut balancer, &config, resolver, report, |_, _| {})
            .map(|changes| (changes, balancer.slots()))
    };
    if let Some((changes, slots)) = applied {
        state.install_backends(&changes, slots);
    }
}
