//! What a reload (SIGHUP) means, the same for both engines: the warnings the new file raises, which
//! changes take a restart (said in the log, never half-applied), the log level, and the one line that
//! reports what the new configuration did to the backends; and new DNS answers, which take the same
//! path.

use crate::balance::{Balancer, Reconfigured};
use crate::config::Config;
use crate::dns::{Report, Resolver};
use std::net::SocketAddr;

/// Logs what the new configuration asks for that a reload cannot do, and its own warnings.
pub fn check(old: &Config, new: &Config, listening: SocketAddr) {
    new.log_warnings();
    if new.listen != old.listen {
        log::warn!(
            "reload: listen changed to {}; that takes a restart (still on {listening})",
            new.listen
        );
    }
    if new.admin.as_ref().map(|a| a.listen) != old.admin.as_ref().map(|a| a.listen) {
        log::warn!("reload: [admin] listen changed; that takes a restart");
    }
    if new.engine != old.engine {
        log::warn!("reload: engine changed; that takes a restart");
    }
    if new.workers != old.workers || new.reuse_port != old.reuse_port {
        log::warn!(
            "reload: workers or reuse_port changed; that takes a restart (still {} workers)",
            old.workers
        );
    }
    match (&old.tls, &new.tls) {
        (Some(old_tls), Some(new_tls)) if old_tls.listen != new_tls.listen => log::warn!(
            "reload: tls.listen changed to {}; that takes a restart (still on {})",
            new_tls.listen,
            old_tls.listen
        ),
        (None, Some(_)) => log::warn!("reload: [tls] added; the HTTPS listener takes a restart"),
        (Some(_), None) => log::warn!(
            "reload: [tls] removed; HTTPS stays on with the previous certificates until a restart"
        ),
        _ => {}
    }
    if let (Some(_), Some(tls)) = (&old.tls, &new.tls) {
        for line in tls.describe() {
            log::info!("reload: TLS {line}");
        }
    }
    if std::env::var_os("RUST_LOG").is_none() {
        log::set_max_level(new.log_level.to_filter());
    }
}

/// Applies the new backend list to `balancer` (with the addresses `resolver` last found for its
/// `resolve` backends), lets `hand_over` pass the new table on (to the other workers) before the
/// dropped backends are retired, and logs the result.
pub fn apply(
    balancer: &mut Balancer,
    config: &Config,
    resolver: Option<&Resolver>,
    hand_over: impl FnOnce(&Balancer, &Reconfigured),
) -> Reconfigured {
    let changes = serve(balancer, config, resolver, hand_over);
    let urls: Vec<String> = balancer.iter().map(|b| b.config.to_string()).collect();
    log::info!(
        "configuration reloaded: algorithm {}, {} backends ({} added, {} removed): {}",
        config.algorithm.name(),
        urls.len(),
        changes.added.len(),
        changes.removed.len(),
        urls.join(", ")
    );
    changes
}

/// Applies what a DNS lookup round found (`report`, logged here) in the same way: a new address is a
/// new backend, a removed one is retired once every worker has the new table and finishes its
/// in-flight requests.
pub fn apply_answer(
    balancer: &mut Balancer,
    config: &Config,
    resolver: &Resolver,
    report: &Report,
    hand_over: impl FnOnce(&Balancer, &Reconfigured),
) -> Option<Reconfigured> {
    let (level, line) = crate::dns::describe(report);
    log::log!(level, "{line}");
    match report {
        Report::Changed { .. } => Some(serve(balancer, config, Some(resolver), hand_over)),
        Report::Failed { .. } => None,
    }
}

/// The backends `config` and `resolver` give, put in place.
fn serve(
    balancer: &mut Balancer,
    config: &Config,
    resolver: Option<&Resolver>,
    hand_over: impl FnOnce(&Balancer, &Reconfigured),
) -> Reconfigured {
    let (backends, pools) = crate::dns::expand(&config.backends, &config.pools, |b| {
        resolver.map_or(&[], |r| r.addresses(&b.pool, &b.url))
    });
    let changes = balancer.reconfigure(
        &backends,
        &pools,
        config.health_check.rise,
        config.health_check.fall,
    );
    hand_over(balancer, &changes);
    balancer.retire(&changes.removed);
    changes
}
