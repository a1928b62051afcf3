//! The admin listener's connections, served by the same loop: a small HTTP/1.1 server (keep-alive,
//! Content-Length bodies up to 64 KiB) whose answers come from `crate::admin::handle`. Admin traffic is
//! rare and small, so this side uses plain growable buffers instead of the proxy's pooled ones.

use super::pool::{Owner, Readiness, mark_ready};
use super::*;
use crate::admin::{self, AdminTarget, Overview, Served};
use std::io::{Read, Write};

/// Admin connections kept open at once; more are closed on accept.
const MAX_ADMIN_CONNECTIONS: usize = 64;
/// An admin connection idle (or stuck mid-request) for this long is closed.
const ADMIN_IDLE: Duration = Duration::from_secs(30);

pub(super) struct AdminConn {
    id: u64,
    stream: TcpStream,
    token: Token,
    ready: Readiness,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    close_after_output: bool,
    deadline: Deadline,
}

/// The loop's state as the admin API sees it.
struct View<'a> {
    shared: &'a mut Shared,
    open_connections: usize,
}

impl AdminTarget for View<'_> {
    fn overview(&self) -> Overview {
        self.shared.overview(self.open_connections)
    }

    fn set_capacity(&mut self, index: usize, capacity: u32) -> bool {
        self.shared.upstream.balancer.set_capacity(index, capacity)
    }

    fn set_enabled(&mut self, index: usize, enabled: bool) -> bool {
        self.shared.upstream.balancer.set_enabled(index, enabled)
    }
}

impl Shared {
    pub(super) fn overview(&self, open_connections: usize) -> Overview {
        let u = &self.upstream;
        let total = u.process.total();
        Overview::collect(
            &u.balancer,
            &u.config,
            open_connections,
            u.meter.per_second,
            crate::admin::Counts {
                total_requests: total.requests,
                internal_errors: total.internal_errors,
                tls_handshake_failures: total.tls_handshake_failures,
                workers: u
                    .process
                    .each()
                    .iter()
                    .map(|w| crate::admin::WorkerLoad {
                        requests: w.requests,
                        open_connections: w.open,
                    })
                    .collect(),
                limit_rejections: crate::admin::LimitRejections::of(&u.limits),
                history: u.history.samples(),
            },
            u.meter.started,
        )
    }
}

fn admin_key(key: usize, id: u64) -> TimerKey {
    TimerKey {
        owner: TimerOwner::Admin(key),
        generation: id,
    }
}

impl Server {
    pub(super) fn accept_admin(&mut self) {
        let Some(listener) = self.admin_listener.as_ref() else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    if self.admins.len() >= MAX_ADMIN_CONNECTIONS {
                        log::warn!("admin: too many connections; closing a new one");
                        continue;
                    }
                    let entry = self.admins.vacant_entry();
                    let key = entry.key();
                    let token = self.shared.socket_token(Owner::Admin(key));
                    if let Err(e) = self.shared.registry.register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        log::error!("admin: cannot register a connection: {e}");
                        self.shared.release_token(token);
                        continue;
                    }
                    let id =
                        Server::next_id(&mut self.next_id, self.shared.upstream.process.workers());
                    let conn = entry.insert(AdminConn {
                        id,
                        stream,
                        token,
                        ready: Readiness::default(),
                        input: Vec::new(),
                        output: Vec::new(),
                        written: 0,
                        close_after_output: false,
                        deadline: Deadline::default(),
                    });
                    conn.deadline.set(
                        Instant::now() + ADMIN_IDLE,
                        &mut self.shared.timers,
                        admin_key(key, id),
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::error!("admin: accept failed: {e}");
                    return;
                }
            }
        }
    }

    pub(super) fn on_admin_event(&mut self, key: usize, event: &Event) {
        if let Some(conn) = self.admins.get_mut(key) {
            mark_ready(&mut conn.ready, event);
            self.drive_admin(key);
        }
    }

    pub(super) fn on_admin_timer(&mut self, key: usize, key_id: u64, at: Instant, now: Instant) {
        let Some(conn) = self.admins.get_mut(key) else {
            return;
        };
        if conn.id != key_id
            || conn
                .deadline
                .on_pop(at, now, &mut self.shared.timers, admin_key(key, key_id))
                != Expiry::Fire
        {
            return;
        }
        self.close_admin(key);
    }

    fn close_admin(&mut self, key: usize) {
        let mut conn = self.admins.remove(key);
        self.shared.close_stream(&mut conn.stream, conn.token);
    }

    fn drive_admin(&mut self, key: usize) {
        let open_connections = self.shared.upstream.process.clients();
        let token = self
            .shared
            .upstream
            .config
            .admin
            .as_ref()
            .and_then(|a| a.token.clone());
        let Some(conn) = self.admins.get_mut(key) else {
            return;
        };
        let shared = &mut self.shared;
        let keep = match fault::contain(|| {
            serve_admin(conn, shared, open_connections, token.as_deref())
        }) {
            Ok(keep) => keep,
            Err(cause) => {
                self.shared.count_internal_error();
                log::error!(
                    "internal error on admin connection {}: {cause}; closing it",
                    conn.id
                );
                false
            }
        };
        if keep {
            let id = conn.id;
            conn.deadline.set(
                Instant::now() + ADMIN_IDLE,
                &mut self.shared.timers,
                admin_key(key, id),
            );
        } else {
            self.close_admin(key);
        }
    }
}

/// Reads, answers and writes as far as the socket allows. False when the connection should close.
fn serve_admin(
    conn: &mut AdminConn,
    shared: &mut Shared,
    open_connections: usize,
    token: Option<&str>,
) -> bool {
    loop {
        // Write what is pending first.
        while conn.written < conn.output.len() {
            if !conn.ready.writable {
                return true;
            }
            match conn.stream.write(&conn.output[conn.written..]) {
                Ok(0) => return false,
                Ok(n) => conn.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.ready.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        conn.output.clear();
        conn.written = 0;
        if conn.close_after_output {
            return false;
        }
        // Then read, and answer a complete request if there is one.
        let mut chunk = [0u8; 4096];
        while conn.ready.readable && conn.input.len() <= admin::MAX_REQUEST {
            match conn.stream.read(&mut chunk) {
                Ok(0) => {
                    conn.ready.readable = false;
                    if conn.input.is_empty() {
                        return false;
                    }
                    conn.close_after_output = true;
                }
                Ok(n) => conn.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.ready.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        let mut view = View {
            shared,
            open_connections,
        };
        match admin::serve(&conn.input, token, &mut view) {
            Served::Partial if conn.input.len() > admin::MAX_REQUEST => {
                conn.output = admin::refusal(413, "request too large");
                conn.close_after_output = true;
            }
            Served::Partial => return !conn.close_after_output || !conn.input.is_empty(),
            Served::Answer {
                used,
                bytes,
                keep_alive,
            } => {
                conn.input.drain(..used.min(conn.input.len()));
                conn.output = bytes;
                conn.close_after_output |= !keep_alive;
            }
        }
    }
}
