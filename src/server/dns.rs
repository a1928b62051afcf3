//! DNS discovery in the event loop (the first worker's): its sockets registered with the loop, one
//! timer entry for the resolver's next wake-up, and every changed set applied through the reload
//! path and handed to the other workers.

use super::*;
use crate::dns::Report;

const DNS_TIMER: TimerKey = TimerKey {
    owner: TimerOwner::Dns,
    generation: 0,
};

impl Server {
    /// Starts discovery with the configuration's names (the first worker's).
    pub(super) fn start_dns(&mut self) {
        let Some(dns) = self.dns.as_mut() else {
            return;
        };
        dns.configure(&self.shared.upstream.config, self.now);
        self.on_dns(None);
    }

    /// The resolver's timer fired (`None`), or one of its sockets is readable: answers and timeouts
    /// are handed to the resolver, changed sets applied, and the timer armed for what comes next.
    pub(super) fn on_dns(&mut self, readable: Option<Token>) {
        let now = self.now;
        let Some(dns) = self.dns.as_mut() else {
            return;
        };
        let reports = dns.step(readable, now);
        if let Some(at) = dns.next_wakeup(now) {
            self.dns_deadline
                .set(at, &mut self.shared.timers, DNS_TIMER);
        }
        for report in reports {
            self.apply_dns(&report);
        }
    }

    /// The timer entry of the resolver popped.
    pub(super) fn on_dns_timer(&mut self, at: Instant) {
        let now = self.now;
        let expiry = self
            .dns_deadline
            .on_pop(at, now, &mut self.shared.timers, DNS_TIMER);
        if expiry == Expiry::Fire {
            self.on_dns(None);
        }
    }

    /// Puts one lookup round's result to work, in this worker and the others.
    fn apply_dns(&mut self, report: &Report) {
        let Some(dns) = self.dns.as_ref() else {
            return;
        };
        let peers = &self.peers;
        let upstream = &mut self.shared.upstream;
        let changes = crate::reload::apply_answer(
            &mut upstream.balancer,
            &upstream.config,
            dns.resolver(),
            report,
            |table, changes| workers::hand_reload(peers, table, None, changes),
        );
        if let Some(changes) = changes {
            self.install_backends(&changes);
        }
    }
}
