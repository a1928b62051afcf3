//! The loop's life as an operator steers it: signals (SIGTERM/SIGINT drain, SIGHUP reloads), commands
//! from other threads ([`Control`]), draining, reloading, and the figures it reports.

use super::*;

impl Server {
    /// Handles SIGTERM/SIGINT (drain, then return from `run`) and SIGHUP (reload `config_path`) inside
    /// the loop. Only for the process's one server: signal dispositions are process-wide.
    pub fn handle_signals(&mut self, config_path: PathBuf) -> io::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook_mio::v1_0::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some((signals, config_path));
        Ok(())
    }

    pub(super) fn on_signals(&mut self) {
        let Some((signals, path)) = self.signals.as_mut() else {
            return;
        };
        let received: Vec<i32> = signals.pending().collect();
        let path = path.clone();
        for signal in received {
            match signal {
                signal_hook::consts::SIGHUP => {
                    log::info!("SIGHUP: reloading {}", path.display());
                    match Config::load(&path) {
                        Ok(config) => self.reload(config),
                        Err(e) => {
                            log::error!("reload failed, keeping the running configuration: {e}")
                        }
                    }
                }
                _ if self.drain_deadline.is_some() => {
                    log::warn!(
                        "second stop signal: exiting now with {} open connections",
                        self.shared.upstream.process.clients()
                    );
                    self.drain_deadline = Some(Instant::now());
                    self.join_peers(true);
                }
                _ => self.begin_drain(),
            }
        }
    }

    /// Serves commands from other threads; true when asked to stop.
    pub(super) fn handle_commands(&mut self) -> bool {
        let mut stop = false;
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Shutdown => stop = true,
                Command::Drain => self.begin_drain(),
                Command::Reload(config) => self.reload(*config),
                Command::Adopt(adoption) => self.adopt(*adoption),
                Command::Snapshot(reply) => {
                    let _ = reply.send(self.snapshot());
                }
                Command::Sync(reply) => {
                    let _ = reply.send(());
                }
            }
        }
        stop
    }

    /// The process's figures: every worker's, summed.
    pub fn snapshot(&self) -> Snapshot {
        self.publish();
        let process = &self.shared.upstream.process;
        let total = process.total();
        Snapshot {
            backends: self.shared.upstream.balancer.snapshot(),
            open_connections: process.clients(),
            pooled_connections: total.pooled,
            registered_sockets: total.sockets,
            timers: total.timers,
            internal_errors: total.internal_errors,
            tls_handshake_failures: total.tls_handshake_failures,
            workers: process.each(),
        }
    }

    /// Stops accepting, closes idle keep-alive connections, and lets in-flight requests finish (their
    /// responses close the connection) until the drain deadline.
    pub(super) fn begin_drain(&mut self) {
        if self.drain_deadline.is_some() {
            return;
        }
        let now = Instant::now();
        let deadline = now + self.shared.upstream.config.timeouts.drain;
        self.drain_deadline = Some(deadline);
        self.shared.upstream.draining = true;
        self.drain_peers();
        // The listening socket is closed before the log says so.
        for mut listener in [self.listener.take(), self.tls_listener.take()]
            .into_iter()
            .flatten()
        {
            let _ = self.shared.registry.deregister(&mut listener);
        }
        log::info!(
            "draining: stopped accepting; {} open connections get up to {:?} to finish",
            self.conns.len(),
            self.shared.upstream.config.timeouts.drain
        );
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.is_idle())
            .map(|(key, _)| key)
            .collect();
        for key in idle {
            self.remove(key, Close::Graceful);
        }
        Deadline::default().set(deadline, &mut self.shared.timers, DRAIN_TIMER);
    }

    /// True once a drain is over: every connection closed, or the deadline passed.
    pub(super) fn drained(&self) -> bool {
        let Some(deadline) = self.drain_deadline else {
            return false;
        };
        if self.conns.is_empty() {
            log::info!("drained: every in-flight request finished");
            return true;
        }
        if Instant::now() >= deadline {
            log::warn!(
                "drain deadline passed: closing {} connections still open",
                self.conns.len()
            );
            return true;
        }
        false
    }

    /// Applies a new configuration without dropping a connection, and hands it to the other workers.
    /// Backends are matched by URL; kept ones keep their statistics, health and pooled connections.
    fn reload(&mut self, config: Config) {
        crate::reload::check(&self.shared.upstream.config, &config, self.local_addr);
        // The names to resolve first: kept ones keep their addresses, dropped ones lose them.
        if let Some(dns) = self.dns.as_mut() {
            dns.configure(&config, self.now);
        }
        let peers = &self.peers;
        let changes = crate::reload::apply(
            &mut self.shared.upstream.balancer,
            &config,
            self.dns.as_ref().map(|d| d.resolver()),
            |table, changes| workers::hand_reload(peers, table, Some(&config), changes),
        );
        self.install(Some(config), &changes);
        // New names are asked at once.
        self.on_dns(None);
    }

    /// Takes a reload (or new DNS answers) the first worker worked out.
    fn adopt(&mut self, adoption: crate::control::Adoption) {
        self.shared.upstream.balancer.adopt(adoption.table);
        self.install(adoption.config, &adoption.changes);
    }

    /// Puts a reloaded configuration to work in this worker: certificates for new connections, then
    /// the backends' changes.
    fn install(&mut self, config: Option<Config>, changes: &crate::balance::Reconfigured) {
        if let Some(config) = config {
            if let Some(tls) = &config.tls {
                // New connections get the new certificates; open ones keep the session they have.
                self.tls_server = Some(tls.server.clone());
            }
            self.shared.upstream.limits.configure(config.limits);
            self.shared.upstream.config = config;
        }
        self.install_backends(changes);
    }

    /// Puts a new backend table to work: stale pooled connections closed, probers (the first
    /// worker's) restarted where their backend changed.
    pub(super) fn install_backends(&mut self, changes: &crate::balance::Reconfigured) {
        let now = Instant::now();
        let slots = self.shared.upstream.balancer.slots();
        while self.shared.idle.len() < slots {
            self.shared.idle.push(Vec::new());
        }
        for &slot in changes.removed.iter().chain(&changes.moved) {
            for mut idle in std::mem::take(&mut self.shared.idle[slot]) {
                self.shared
                    .close_stream(idle.transport.socket_mut(), idle.token);
            }
        }
        if self.index != 0 {
            return;
        }
        for &slot in &changes.removed {
            self.shared.stop_prober(slot);
        }
        for &slot in changes.added.iter().chain(&changes.changed) {
            self.shared.restart_prober(slot, now);
        }
    }
}
