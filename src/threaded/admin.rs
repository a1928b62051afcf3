//! The threaded engine's admin listener: a thread accepting admin connections, each served by a small
//! blocking HTTP/1.1 loop around `crate::admin::serve`.

use super::{State, lock, spawn_named};
use crate::admin::{self, AdminTarget, Overview, Served};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

struct AdminView<'a>(&'a State);

impl AdminTarget for AdminView<'_> {
    fn overview(&self) -> Overview {
        let config = self.0.config();
        let balancer = lock(&self.0.balancer);
        let open = self.0.open.load(Ordering::SeqCst);
        let total_requests = self.0.total_requests.load(Ordering::SeqCst);
        Overview::collect(
            &balancer,
            &config,
            open,
            f64::from_bits(self.0.per_second.load(Ordering::SeqCst)),
            crate::admin::Counts {
                total_requests,
                internal_errors: self.0.internal_errors.load(Ordering::SeqCst),
                tls_handshake_failures: self.0.tls_handshake_failures.load(Ordering::SeqCst),
                workers: vec![crate::admin::WorkerLoad {
                    requests: total_requests,
                    open_connections: open,
                }],
                limit_rejections: crate::admin::LimitRejections::of(&self.0.limits),
                history: lock(&self.0.history).samples(),
            },
            self.0.started,
        )
    }

    fn set_capacity(&mut self, index: usize, capacity: u32) -> bool {
        lock(&self.0.balancer).set_capacity(index, capacity)
    }

    fn set_enabled(&mut self, index: usize, enabled: bool) -> bool {
        lock(&self.0.balancer).set_enabled(index, enabled)
    }
}

pub(super) fn run(state: &Arc<State>, listener: TcpListener) {
    for stream in listener.incoming().flatten() {
        if state.stopping.load(Ordering::SeqCst) && !state.draining.load(Ordering::SeqCst) {
            return;
        }
        let state = state.clone();
        let _ = spawn_named("lb-admin-conn", move || serve_admin(&state, stream));
    }
}

fn serve_admin(state: &State, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut input: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let token = state.config().admin.as_ref().and_then(|a| a.token.clone());
        match admin::serve(&input, token.as_deref(), &mut AdminView(state)) {
            Served::Answer {
                used,
                bytes,
                keep_alive,
            } => {
                if stream.write_all(&bytes).is_err() || !keep_alive {
                    return;
                }
                input.drain(..used.min(input.len()));
                continue;
            }
            Served::Partial if input.len() > admin::MAX_REQUEST => {
                let _ = stream.write_all(&admin::refusal(413, "request too large"));
                return;
            }
            Served::Partial => {}
        }
        match stream.read(&mut chunk) {
            // A signal (SIGHUP) landing on this thread: a read with a timeout is never restarted.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(0) | Err(_) => return,
            Ok(n) => input.extend_from_slice(&chunk[..n]),
        }
    }
}
