//! How other threads steer a running engine: a command channel plus, for the event loop, a `mio::Waker`
//! that makes the loop look at it. The same [`Control`] drives both engines, so tests and the binary do
//! not care which one runs.

use crate::balance::{BackendSnapshot, Reconfigured, Table};
use crate::config::Config;
use std::sync::Arc;
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

/// The figures an engine reports through [`Control::snapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub backends: Vec<BackendSnapshot>,
    pub open_connections: usize,
    pub pooled_connections: usize,
    /// Sockets registered with the event loop: clients, backends, pooled and probe connections, admin
    /// connections (0 for the threaded engine). For leak checks.
    pub registered_sockets: usize,
    /// Entries in the timer heap, lazily cancelled ones included (0 for the threaded engine).
    pub timers: usize,
    /// Panics contained at a connection's boundary since start (`lb_internal_errors_total`).
    pub internal_errors: u64,
    /// TLS connections closed before their handshake finished (`lb_tls_handshake_failures_total`).
    pub tls_handshake_failures: u64,
    /// Each event-loop worker's figures (one entry for the threaded engine).
    pub workers: Vec<crate::workers::Figures>,
}

pub enum Command {
    Shutdown,
    Drain,
    Reload(Box<Config>),
    /// A reload the first worker worked out, for the other workers to take as it is.
    Adopt(Box<Adoption>),
    Snapshot(Sender<Snapshot>),
    /// Answered once every command sent before it has been handled.
    Sync(Sender<()>),
}

/// What a reload hands to every other worker: the configuration (none when only DNS answers
/// changed), and the backend table with what changed in it (by slot, the same for every worker).
pub struct Adoption {
    pub config: Option<Config>,
    pub table: Table,
    pub changes: Reconfigured,
}

/// Talks to a running engine from another thread.
#[derive(Clone)]
pub struct Control {
    commands: Sender<Command>,
    waker: Option<Arc<mio::Waker>>,
}

impl Control {
    pub fn new(commands: Sender<Command>, waker: Option<Arc<mio::Waker>>) -> Control {
        Control { commands, waker }
    }

    fn send(&self, command: Command) -> bool {
        if self.commands.send(command).is_err() {
            return false;
        }
        if let Some(waker) = &self.waker
            && let Err(e) = waker.wake()
        {
            log::error!("cannot wake the event loop: {e}");
        }
        true
    }

    /// Asks the engine to stop at once; its `run` returns.
    pub fn shutdown(&self) {
        self.send(Command::Shutdown);
    }

    /// What SIGTERM does: stop accepting, finish in-flight requests, then return from `run`.
    pub fn drain(&self) {
        self.send(Command::Drain);
    }

    /// What SIGHUP does, with a configuration already loaded.
    pub fn reload(&self, config: Config) {
        self.send(Command::Reload(Box::new(config)));
    }

    /// Hands a reload worked out elsewhere to one worker.
    pub fn adopt(&self, adoption: Adoption) {
        self.send(Command::Adopt(Box::new(adoption)));
    }

    /// Waits (at most `within`) until the engine has handled every command sent before; false if it
    /// did not answer.
    pub fn sync(&self, within: Duration) -> bool {
        let (reply, answer) = mpsc::channel();
        self.send(Command::Sync(reply)) && answer.recv_timeout(within).is_ok()
    }

    /// The engine's current figures, or `None` if it is not running.
    pub fn snapshot(&self) -> Option<Snapshot> {
        let (reply, answer) = mpsc::channel();
        if !self.send(Command::Snapshot(reply)) {
            return None;
        }
        answer.recv_timeout(Duration::from_secs(5)).ok()
    }
}
