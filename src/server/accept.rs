//! Accepting clients: on the plain listener and the HTTPS one, while `max_connections` allows, with a
//! pause (a timer entry) when the process runs out of descriptors. A client from the HTTPS listener gets
//! a TLS session with the certificates of the last (re)load; its handshake runs inside its first reads.

use super::*;

impl Server {
    pub(super) fn accept_clients(&mut self) {
        self.accept_from(Entry::Plain);
        self.accept_from(Entry::Tls);
    }

    /// Accepts what one listener has queued, while the connection limit allows.
    pub(super) fn accept_from(&mut self, entry: Entry) {
        loop {
            let (listener, ready) = match entry {
                Entry::Plain => (self.listener.as_ref(), self.listener_ready),
                Entry::Tls => (self.tls_listener.as_ref(), self.tls_listener_ready),
            };
            let Some(listener) = listener else {
                return;
            };
            if !ready || self.accept_paused {
                return;
            }
            let max = self.shared.upstream.config.max_connections;
            let (process, worker) = (&self.shared.upstream.process, self.shared.upstream.worker);
            // A place is taken before accepting, so that workers together never pass the limit.
            if !process.admit(worker, max) {
                log::warn!(
                    "max_connections ({max}) reached: not accepting until a connection closes"
                );
                self.accept_paused = true;
                return;
            }
            let accepted = match listener.accept() {
                Ok((stream, addr)) => self.add_client(stream, addr, entry),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match entry {
                        Entry::Plain => self.listener_ready = false,
                        Entry::Tls => self.tls_listener_ready = false,
                    }
                    false
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS...: the pending connection stays queued; retrying at once
                    // would spin, so back off and let closing connections free resources.
                    log::error!("accept failed: {e}; pausing accept for {ACCEPT_BACKOFF:?}");
                    self.accept_paused = true;
                    Deadline::default().set(
                        Instant::now() + ACCEPT_BACKOFF,
                        &mut self.shared.timers,
                        ACCEPT_TIMER,
                    );
                    false
                }
            };
            if !accepted {
                self.shared.upstream.process.release(worker);
            }
        }
    }

    /// Takes an accepted client in; false when it could not be (and is closed).
    fn add_client(&mut self, stream: TcpStream, addr: SocketAddr, entry: Entry) -> bool {
        let now = self.now;
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("set_nodelay on client {addr}: {e}");
        }
        // The session is made before the socket is registered, so that nothing fails after.
        let session = match (entry, &self.tls_server) {
            (Entry::Plain, _) => None,
            (Entry::Tls, Some(config)) => match crate::tls::server_session(config.clone()) {
                Ok(session) => Some(session),
                Err(e) => {
                    log::error!("cannot start a TLS session for {addr}: {e}");
                    return false;
                }
            },
            (Entry::Tls, None) => return false,
        };
        // Behind a PROXY header the client is not known yet: it is counted once the header names it.
        let proxied = self.shared.upstream.config.proxy_protocol;
        let counted = match proxied {
            true => Ok(None),
            false => self.shared.upstream.limits.connect(addr.ip(), now),
        };
        let limit = match counted {
            Ok(limit) => limit,
            Err(_) => {
                // Closed at once (the stream is dropped): a client over its connection count.
                log::debug!("{addr}: over [limits] connections_per_client, connection closed");
                return false;
            }
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let Some((stream, token)) =
            self.shared
                .register(stream, Owner::Client(key), Interest::READABLE)
        else {
            if let Some(held) = limit {
                self.shared.upstream.limits.disconnect(held);
            }
            return false;
        };
        let transport = match session {
            Some(session) => Transport::tls(TlsStream::new(session, stream, false)),
            None => Transport::plain(stream),
        };
        let id = Server::next_id(&mut self.next_id, self.shared.upstream.process.workers());
        log::debug!("conn {id}: accepted {addr}");
        let conn = entry.insert(Conn::new(key, id, transport, token, addr, now, limit));
        conn.proxy_pending = proxied;
        conn.refresh_deadline(&mut self.shared);
        true
    }

    pub(super) fn resume_accepting(&mut self) {
        let max = self.shared.upstream.config.max_connections;
        if self.accept_paused && self.shared.upstream.process.clients() < max {
            self.accept_paused = false;
            self.accept_clients();
        }
    }
}
