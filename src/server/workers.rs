//! Workers: `workers = N` event loops in one process, each a whole [`Server`] with its own `Poll`,
//! slab, timers, buffers and idle backend connections, on a thread of its own. What they share is the
//! backends' live state (atomics, in `balance`) and the process figures (`crate::workers`), so no lock
//! is taken on the request path. The first worker is the one the caller runs: it also serves the admin
//! API, takes the signals, runs the one health prober, and works a reload out once (configuration and
//! backend table) before handing it to the others through their [`Control`] (a channel and a waker).
//!
//! The listening sockets are bound once, here, and never closed or re-bound by a reload: either one
//! socket all workers register with EPOLLEXCLUSIVE (the default), or a SO_REUSEPORT socket per worker
//! (`reuse_port = true`).

use super::*;
use crate::control::{Adoption, Synced};
use std::thread::JoinHandle;

/// Another worker, as the first one holds it.
pub(super) struct Peer {
    control: Control,
    /// The worker before `run` starts it.
    server: Option<Box<Server>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

/// One worker's listening sockets.
struct Listeners {
    plain: std::net::TcpListener,
    tls: Option<std::net::TcpListener>,
    /// Shared with other workers: registered with EPOLLEXCLUSIVE.
    exclusive: bool,
}

impl Server {
    /// Binds the listeners and prepares every worker's loop; nothing is served until [`Server::run`],
    /// which runs the first worker on the caller's thread and starts the others.
    pub fn bind(config: Config) -> io::Result<Server> {
        let count = match config.engine {
            crate::config::Engine::EventLoop => config.workers.max(1),
            crate::config::Engine::Threaded => 1,
        };
        let exclusive = count > 1 && !config.reuse_port;
        let plain =
            crate::listen::bind_for_workers(config.listen, "listen", count, config.reuse_port)?;
        let mut tls: Vec<Option<std::net::TcpListener>> = match &config.tls {
            Some(tls) => {
                let all = crate::listen::bind_for_workers(
                    tls.listen,
                    "tls.listen",
                    count,
                    config.reuse_port,
                )?;
                all.into_iter().map(Some).collect()
            }
            None => (0..count).map(|_| None).collect(),
        };
        let process = Process::new(count);
        let limits = Arc::new(crate::limit::Limits::new(config.limits, Instant::now()));
        let balancer = Balancer::from_config(&config);
        let mut workers = Vec::with_capacity(count);
        for (index, plain) in plain.into_iter().enumerate() {
            let listeners = Listeners {
                plain,
                tls: tls[index].take(),
                exclusive,
            };
            workers.push(Server::worker(
                index,
                config.clone(),
                balancer.share(index),
                listeners,
                process.clone(),
                limits.clone(),
            )?);
        }
        let mut workers = workers.into_iter();
        let Some(mut first) = workers.next() else {
            return Err(io::Error::other("no worker to run"));
        };
        first.peers = workers
            .map(|w| Peer {
                control: w.control(),
                server: Some(Box::new(w)),
                thread: None,
            })
            .collect();
        Ok(first)
    }

    /// One worker's loop on its listeners; the first also binds the admin listener.
    fn worker(
        index: usize,
        config: Config,
        balancer: Balancer,
        listeners: Listeners,
        process: Arc<Process>,
        limits: Arc<crate::limit::Limits>,
    ) -> io::Result<Server> {
        let poll = Poll::new()?;
        let local_addr = listeners.plain.local_addr()?;
        let register = |listener: std::net::TcpListener, token| -> io::Result<TcpListener> {
            let mut listener = TcpListener::from_std(listener);
            if listeners.exclusive {
                crate::listen::register_exclusive(poll.registry(), &listener, token)?;
            } else {
                poll.registry()
                    .register(&mut listener, token, Interest::READABLE)?;
            }
            Ok(listener)
        };
        let listener = register(listeners.plain, LISTENER)?;
        let tls_listener = match listeners.tls {
            Some(l) => Some(register(l, TLS_LISTENER)?),
            None => None,
        };
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let admin_listener = match (&config.admin, index) {
            (Some(admin), 0) => Some(bind_admin(admin, poll.registry())?),
            _ => None,
        };
        let tls_server = config.tls.as_ref().map(|t| t.server.clone());
        let https_port = match &tls_listener {
            Some(l) => Some(l.local_addr()?.port()),
            None => None,
        };
        let registry = poll.registry().try_clone()?;
        let idle = (0..balancer.slots()).map(|_| Vec::new()).collect();
        let probers = match index {
            0 => balancer.iter().map(|b| Prober::new(&b.config, 0)).collect(),
            _ => Vec::new(),
        };
        let dns = match index {
            0 => Some(crate::discovery::Discovery::new(
                &config,
                poll.registry().try_clone()?,
            )),
            _ => None,
        };
        let (commands_in, commands) = mpsc::channel();
        // A bound on the reservation, whatever max_connections says.
        let max_connections = config.max_connections.min(1 << 16);
        Ok(Server {
            poll,
            listener: Some(listener),
            tls_listener,
            tls_server,
            admin_listener,
            admins: Slab::new(),
            signals: None,
            drain_deadline: None,
            local_addr,
            // Reserved (not touched) up front, so that growing never copies the table or doubles it.
            conns: Slab::with_capacity(max_connections),
            shared: Shared {
                upstream: Upstream {
                    config,
                    balancer,
                    draining: false,
                    meter: RequestMeter::new(Instant::now()),
                    https_port,
                    process,
                    worker: index,
                    limits,
                    history: Default::default(),
                },
                registry,
                sockets: Slab::with_capacity(max_connections * 2),
                idle,
                timers: Timers::new(),
                probers,
                queues: Default::default(),
            },
            next_id: 1 + index as u64,
            listener_ready: false,
            tls_listener_ready: false,
            accept_paused: false,
            yielded: Vec::new(),
            now: Instant::now(),
            woken: false,
            batch: 0,
            batch_ready: Vec::new(),
            commands,
            control: Control::new(commands_in, Some(waker)),
            index,
            peers: Vec::new(),
            dns,
            dns_deadline: Deadline::default(),
        })
    }

    /// Workers in the process.
    pub fn workers(&self) -> usize {
        self.shared.upstream.process.workers()
    }

    /// A connection id unique in the process: each worker counts in steps of the worker count.
    pub(super) fn next_id(next_id: &mut u64, workers: usize) -> u64 {
        let id = *next_id;
        *next_id += workers as u64;
        id
    }

    /// Starts the other workers' threads (the first worker's `run`, before its loop).
    pub(super) fn start_peers(&mut self) -> io::Result<()> {
        for (n, peer) in self.peers.iter_mut().enumerate() {
            let Some(mut server) = peer.server.take() else {
                continue;
            };
            let thread = std::thread::Builder::new()
                .name(format!("lb-worker-{}", n + 1))
                .spawn(move || {
                    let result = server.run();
                    if let Err(e) = &result {
                        log::error!("worker {} stopped: {e}", server.index);
                    }
                    result
                })?;
            peer.thread = Some(thread);
        }
        Ok(())
    }

    /// Waits for the other workers to finish (after the first one's loop): stopped at once, or left to
    /// finish their own drain.
    pub(super) fn join_peers(&mut self, stop: bool) {
        for peer in &mut self.peers {
            if stop {
                peer.control.shutdown();
            }
            if let Some(thread) = peer.thread.take()
                && thread.join().is_err()
            {
                log::error!("a worker thread panicked");
            }
        }
    }

    /// Tells the other workers to drain, and waits until each has closed its listeners, so that once
    /// the first worker goes on, no worker accepts (a shared listening socket closes with its last
    /// descriptor).
    pub(super) fn drain_peers(&self) {
        for peer in &self.peers {
            peer.control.drain();
        }
        for peer in &self.peers {
            match peer.control.await_sync(Duration::from_secs(1)) {
                // A worker with nothing in flight finishes its drain at once and stops: its
                // listeners are closed.
                Synced::Answered | Synced::Stopped => {}
                Synced::TimedOut => log::warn!("a worker did not confirm its drain within 1s"),
            }
        }
    }

    /// Publishes the figures that change with every connection, once per batch of events.
    pub(super) fn publish(&self) {
        let s = &self.shared;
        s.upstream.process.publish(
            s.upstream.worker,
            s.idle.iter().map(Vec::len).sum(),
            s.sockets.len(),
            s.timers.len(),
        );
    }
}

/// The first worker's admin listener, registered with its loop.
fn bind_admin(admin: &crate::config::Admin, registry: &Registry) -> io::Result<TcpListener> {
    let mut listener = crate::listen::bind_nonblocking(admin.listen, "[admin] listen")?;
    registry.register(&mut listener, ADMIN_LISTENER, Interest::READABLE)?;
    crate::admin::warn_if_exposed(listener.local_addr()?, admin.token.as_deref());
    Ok(listener)
}

/// Hands a reload the first worker worked out to every other worker, and waits (briefly) until each
/// has taken it: only then are the dropped backends retired, so no worker is ever left with a table
/// of retired backends only.
pub(super) fn hand_reload(
    peers: &[Peer],
    balancer: &Balancer,
    config: Option<&Config>,
    changes: &crate::balance::Reconfigured,
) {
    let table = balancer.table();
    for peer in peers {
        peer.control.adopt(Adoption {
            config: config.cloned(),
            table: table.clone(),
            changes: changes.clone(),
        });
    }
    for peer in peers {
        match peer.control.await_sync(Duration::from_secs(1)) {
            Synced::Answered => {}
            // Draining, with nothing left in flight: it takes no more requests.
            Synced::Stopped => log::debug!("a worker had stopped before the reload"),
            Synced::TimedOut => log::warn!("a worker did not confirm the reload within 1s"),
        }
    }
}
