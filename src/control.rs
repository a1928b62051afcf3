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

/// How an engine answered [`Control::await_sync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// It handled every command sent before.
    Answered,
    /// It stopped: its loop returned (a worker told to drain with nothing in flight returns at
    /// once), and will handle nothing more.
    Stopped,
    /// It is running but did not answer in time.
    TimedOut,
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
        self.await_sync(within) == Synced::Answered
    }

    /// [`Control::sync`], telling an engine that stopped (its loop returned, dropping the commands it
    /// had not handled) from one that did not answer in time.
    pub fn await_sync(&self, within: Duration) -> Synced {
        let (reply, answer) = mpsc::channel();
        if !self.send(Command::Sync(reply)) {
            return Synced::Stopped;
        }
        match answer.recv_timeout(within) {
            Ok(()) => Synced::Answered,
            Err(mpsc::RecvTimeoutError::Disconnected) => Synced::Stopped,
            Err(mpsc::RecvTimeoutError::Timeout) => Synced::TimedOut,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_tells_an_answer_a_stopped_engine_and_silence_apart() {
        const WITHIN: Duration = Duration::from_millis(20);
        // No engine at all: the channel's receiver is gone before the command is sent.
        let (commands, receiver) = mpsc::channel();
        drop(receiver);
        assert_eq!(
            Control::new(commands, None).await_sync(WITHIN),
            Synced::Stopped
        );

        // An engine that stops with the command unhandled (its loop returned after a drain).
        let (commands, receiver) = mpsc::channel::<Command>();
        let control = Control::new(commands, None);
        let engine = std::thread::spawn(move || {
            let first = receiver.recv();
            drop(receiver);
            drop(first);
        });
        assert_eq!(control.await_sync(Duration::from_secs(5)), Synced::Stopped);
        engine.join().unwrap();

        // An engine that answers.
        let (commands, receiver) = mpsc::channel::<Command>();
        let control = Control::new(commands, None);
        let engine = std::thread::spawn(move || {
            if let Ok(Command::Sync(reply)) = receiver.recv() {
                let _ = reply.send(());
            }
        });
        assert_eq!(control.await_sync(Duration::from_secs(5)), Synced::Answered);
        assert!(!control.sync(WITHIN), "the engine is gone now");
        engine.join().unwrap();

        // An engine that is there but does not look at its commands.
        let (commands, _receiver) = mpsc::channel::<Command>();
        assert_eq!(
            Control::new(commands, None).await_sync(WITHIN),
            Synced::TimedOut
        );
    }
}
