//! One client connection driven through its states: reading a head, connecting, exchanging, tunnelling,
//! closing. Each step does as much I/O as the readiness bits allow and reports whether it progressed;
//! `Conn::drive` repeats steps within a budget. Everything shared (backends, pool, buffers, timers) comes
//! in through `Shared`.

use super::*;

/// One client connection and, while a request is in flight, its backend connection.
pub(super) struct Conn {
    pub(super) key: usize,
    /// Unique for the life of the process: names the connection in logs and timer entries.
    pub(super) id: u64,
    pub(super) state: State,
    pub(super) state_since: Instant,
    pub(super) last_progress: Instant,
    /// When the first byte of the head being read arrived (`request_head` runs from there).
    pub(super) head_started: Option<Instant>,
    pub(super) requests: u64,
    pub(super) client: TcpStream,
    pub(super) client_token: Token,
    pub(super) client_addr: SocketAddr,
    pub(super) client_ready: Readiness,
    pub(super) client_write_shut: bool,
    /// Raw bytes from the client: heads, request bodies, pipelined requests.
    pub(super) client_in: Buffer,
    /// Rewritten request heads and chunk framing for the backend.
    pub(super) to_backend: Buffer,
    /// Raw bytes from the backend.
    pub(super) backend_in: Buffer,
    /// Response heads, chunk framing and our own responses for the client.
    pub(super) to_client: Buffer,
    pub(super) backend: Option<BackendConn>,
    /// Boxed (and recycled through `Shared`) so that an idle connection does not carry its size.
    pub(super) exchange: Option<Box<Exchange>>,
    pub(super) deadline: Deadline,
}

impl Conn {
    /// Waiting between requests with nothing received: safe to close when draining.
    pub(super) fn is_idle(&self) -> bool {
        self.state == State::ReadingHead && self.client_in.is_empty() && self.head_started.is_none()
    }

    fn set_state(&mut self, next: State, why: &str, now: Instant) {
        set_state(self.id, &mut self.state, next, why);
        self.state_since = now;
    }

    fn timer_key(&self) -> TimerKey {
        TimerKey {
            owner: TimerOwner::Conn(self.key),
            generation: self.id,
        }
    }

    /// The deadline that applies in the current state.
    pub(super) fn refresh_deadline(&mut self, sh: &mut Shared, now: Instant) {
        let t = &sh.config.timeouts;
        let at = match self.state {
            State::ReadingHead => match self.head_started {
                Some(started) => started + t.request_head,
                // Between keep-alive requests the idle timeout applies; before the first, the head timeout.
                None if self.requests > 0 => self.state_since + t.idle,
                None => self.state_since + t.request_head,
            },
            State::Connecting => self.state_since + t.connect,
            State::Exchanging => self.last_progress + t.response,
            State::Tunnel => self.last_progress + t.idle,
            State::Closing => self.state_since + LINGER,
        };
        if self.deadline.due() != Some(at) {
            let key = self.timer_key();
            self.deadline.set(at.max(now), &mut sh.timers, key);
        }
    }

    pub(super) fn drive(&mut self, sh: &mut Shared, now: Instant) -> Result<Work, Close> {
        let mut work = Work::Yielded;
        for _ in 0..DRIVE_BUDGET {
            let progressed = match self.state {
                State::ReadingHead => self.read_head(sh, now)?,
                State::Connecting => self.check_connect(sh, now)?,
                State::Exchanging => self.exchange(sh, now)?,
                State::Tunnel => self.tunnel(sh, now)?,
                State::Closing => self.closing(sh, now)?,
            };
            if !progressed {
                work = Work::Done;
                break;
            }
        }
        // Whatever is empty goes back to the pool now, not at the end of the exchange: a connection
        // waiting on a slow backend then holds one block (its request head), not four, and recently
        // used blocks are reused while still in cache.
        for buf in [
            &mut self.client_in,
            &mut self.to_backend,
            &mut self.backend_in,
            &mut self.to_client,
        ] {
            buf.release_if_empty(&mut sh.buffers);
        }
        Ok(work)
    }

    /// Reads from the client into `client_in` when readiness and room allow. Returns bytes read.
    fn read_client(&mut self, sh: &mut Shared) -> Result<usize, Close> {
        let ready = &mut self.client_ready;
        if !ready.readable || self.client_in.is_full(&sh.buffers) {
            return Ok(0);
        }
        match fill(
            &mut self.client,
            &mut self.client_in,
            &mut sh.buffers,
            ready.hup,
        ) {
            Ok(filled) => {
                if filled.would_block {
                    ready.readable = false;
                }
                if filled.eof {
                    ready.readable = false;
                    ready.read_closed = true;
                }
                Ok(filled.bytes)
            }
            Err(e) => {
                log::debug!("conn {}: client read error: {e}", self.id);
                Err(Close::Abort)
            }
        }
    }

    fn client_eof(&self) -> bool {
        self.client_ready.read_closed && !self.client_ready.readable
    }

    fn read_head(&mut self, sh: &mut Shared, now: Instant) -> Result<bool, Close> {
        if self.read_client(sh)? > 0 {
            self.last_progress = now;
            self.head_started.get_or_insert(now);
        }
        if self.client_in.is_empty() {
            self.client_in.release_if_empty(&mut sh.buffers);
            if self.client_eof() {
                return Err(Close::Graceful);
            }
            return Ok(false);
        }
        match request::parse_request(self.client_in.data(), BUFFER_SIZE) {
            Ok(None) => {
                if self.client_eof() {
                    log::debug!(
                        "conn {}: client closed in the middle of a request head",
                        self.id
                    );
                    return Err(Close::Graceful);
                }
                Ok(false)
            }
            Err(e) => {
                let response = request::error_response(e);
                log::info!(
                    "{} rejected request: {} -> {}",
                    self.client_addr,
                    e,
                    response.status()
                );
                self.respond_error(sh, response, now);
                Ok(true)
            }
            Ok(Some(head)) => {
                self.start_exchange(sh, &head, now);
                Ok(true)
            }
        }
    }

    fn start_exchange(&mut self, sh: &mut Shared, head: &RequestHead, now: Instant) {
        self.requests += 1;
        self.head_started = None;
        let buf = self.client_in.data();
        let line = RequestLine::new(head.method(buf), head.target.get(buf));
        let Some(index) = sh.balancer.pick(self.client_addr.ip(), Tried::default()) else {
            log::warn!(
                "{} \"{line}\": no backend available -> 503",
                self.client_addr
            );
            self.respond_error(sh, ErrorResponse::ServiceUnavailable, now);
            return;
        };
        if !self.write_request_head(sh, head, index) {
            log::info!(
                "{} \"{line}\": rewritten head too large -> 431",
                self.client_addr
            );
            self.respond_error(sh, ErrorResponse::HeadTooLarge, now);
            return;
        }
        let head_in_client_buffer = if head.has_body() {
            self.client_in.consume(head.head_len);
            0
        } else {
            head.head_len
        };
        self.exchange = Some(sh.new_exchange(Exchange {
            started: now,
            line,
            backend: index,
            request: RequestFacts {
                version: head.version,
                keep_alive: head.keep_alive,
                is_head: head.is_head,
                idempotent: head.idempotent,
                upgrade: head.upgrade,
                has_body: head.has_body(),
            },
            request_relay: match head.framing {
                Framing::Empty | Framing::UntilClose => Relay::Done,
                Framing::Length(n) => Relay::Length { remaining: n },
                Framing::Chunked => Relay::Chunked(ChunkedDecoder::new(true)),
            },
            head_in_client_buffer,
            reused_connection: false,
            attempts: 1,
            tried: Tried::default(),
            response: ResponseStage::Head,
            response_relay: Relay::Done,
            backend_reusable: false,
            response_started: false,
            client_output_started: false,
            response_bytes: 0,
            status: 0,
        }));
        self.connect_backend(sh, index, true, now);
        fault::inject(line.target(), fault::Stage::Request);
    }

    /// Writes the head the backend receives into `to_backend`. False when it does not fit.
    fn write_request_head(&mut self, sh: &mut Shared, head: &RequestHead, index: usize) -> bool {
        self.to_backend.clear();
        let info = ForwardInfo {
            client_ip: self.client_addr.ip(),
            default_host: sh.balancer.backends[index].config.authority.as_bytes(),
        };
        let client_in = &self.client_in;
        self.to_backend.write_with(&mut sh.buffers, |out| {
            request::write_request_head(client_in.data(), head, &info, out)
        })
    }

    /// Gets a connection to backend `index` for the current exchange: a live pooled one if allowed and
    /// available, else a new non-blocking connect.
    fn connect_backend(&mut self, sh: &mut Shared, index: usize, allow_pooled: bool, now: Instant) {
        let Some(exchange) = self.exchange.as_mut() else {
            return;
        };
        exchange.backend = index;
        let verify = exchange.request.has_body || !exchange.request.idempotent;
        if allow_pooled && let Some(idle) = sh.take_idle(index, verify) {
            sh.sockets[idle.token.0 - FIRST_SOCKET] = Owner::Backend(self.key);
            exchange.reused_connection = true;
            sh.balancer.start(index);
            self.backend = Some(BackendConn {
                stream: idle.stream,
                token: idle.token,
                index,
                // A pooled socket is writable; a response will announce itself with a new edge.
                ready: Readiness {
                    writable: true,
                    ..Readiness::default()
                },
                write_shut: false,
            });
            self.set_state(State::Exchanging, "pooled backend connection", now);
            return;
        }
        exchange.reused_connection = false;
        let addr = sh.balancer.backends[index].config.addr;
        let result = TcpStream::connect(addr).and_then(|mut stream| {
            let token = sh.socket_token(Owner::Backend(self.key));
            match sh
                .registry
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            {
                Ok(()) => Ok((stream, token)),
                Err(e) => {
                    sh.release_token(token);
                    Err(e)
                }
            }
        });
        sh.balancer.start(index);
        match result {
            Ok((stream, token)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    log::debug!("set_nodelay on backend connection: {e}");
                }
                self.backend = Some(BackendConn {
                    stream,
                    token,
                    index,
                    ready: Readiness {
                        write_interest: true,
                        ..Readiness::default()
                    },
                    write_shut: false,
                });
                self.set_state(State::Connecting, "connecting to backend", now);
            }
            Err(e) => self.connect_failed(sh, &e.to_string(), ErrorResponse::BadGateway, now),
        }
    }

    fn check_connect(&mut self, sh: &mut Shared, now: Instant) -> Result<bool, Close> {
        let Some(backend) = self.backend.as_mut() else {
            return Err(Close::Abort);
        };
        if !backend.ready.writable && !backend.ready.readable {
            return Ok(false);
        }
        let failure = match backend.stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match backend.stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    backend.ready.writable = false;
                    backend.ready.readable = false;
                    return Ok(false);
                }
                Err(e) => Some(e),
            },
        };
        match failure {
            None => {
                // Connected: from now on only reads are watched until a write would block.
                if let Err(e) =
                    sh.registry
                        .reregister(&mut backend.stream, backend.token, Interest::READABLE)
                {
                    log::debug!("reregister backend connection: {e}");
                }
                backend.ready.write_interest = false;
                backend.ready.writable = true;
                self.last_progress = now;
                self.set_state(State::Exchanging, "backend connected", now);
            }
            Some(e) => self.connect_failed(sh, &e.to_string(), ErrorResponse::BadGateway, now),
        }
        Ok(true)
    }

    /// A connection attempt failed: try another backend while `retries` allow, else answer `response`.
    fn connect_failed(
        &mut self,
        sh: &mut Shared,
        reason: &str,
        response: ErrorResponse,
        now: Instant,
    ) {
        let Some(exchange) = self.exchange.as_mut() else {
            return;
        };
        let index = exchange.backend;
        exchange.tried = exchange.tried.with(index);
        log::warn!(
            "backend {}: connect failed: {reason}",
            sh.balancer.backends[index].config.url
        );
        sh.finish(
            index,
            Outcome::Failure,
            &format!("connect failed: {reason}"),
        );
        if let Some(backend) = self.backend.take() {
            sh.close_stream(backend.stream, backend.token);
        }
        if self.retry_elsewhere(sh, now) {
            return;
        }
        if let Some(exchange) = self.exchange.take() {
            log::warn!(
                "{} \"{}\": no backend reachable -> {}",
                self.client_addr,
                exchange.line,
                response.status()
            );
            sh.recycle(exchange);
        }
        self.respond_error(sh, response, now);
    }

    /// Starts another attempt on a backend not tried yet, if `retries` allow. A bodiless request's head
    /// is rebuilt from the client buffer (it may have been partly sent); otherwise nothing was written and
    /// `to_backend` still holds the whole head.
    fn retry_elsewhere(&mut self, sh: &mut Shared, now: Instant) -> bool {
        let Some(exchange) = self.exchange.as_mut() else {
            return false;
        };
        if exchange.attempts > sh.config.retries {
            return false;
        }
        let Some(next) = sh.balancer.pick(self.client_addr.ip(), exchange.tried) else {
            return false;
        };
        exchange.attempts += 1;
        if exchange.head_in_client_buffer > 0 && !self.rebuild_request_head(sh, next) {
            return false;
        }
        self.connect_backend(sh, next, true, now);
        true
    }

    /// Writes the backend's head again from the request head still at the front of `client_in`.
    fn rebuild_request_head(&mut self, sh: &mut Shared, index: usize) -> bool {
        match request::parse_request(self.client_in.data(), BUFFER_SIZE) {
            Ok(Some(head)) => self.write_request_head(sh, &head, index),
            _ => {
                log::error!(
                    "conn {}: cannot rebuild the request head for a retry",
                    self.id
                );
                false
            }
        }
    }

    /// The backend connection failed after it was established. Before any response byte, a bodiless
    /// request is sent again: on a new connection to the same backend when a pooled connection turned out
    /// stale, on another backend when the request is idempotent. Otherwise 502, or a reset if the client
    /// already has part of the response.
    fn backend_failed(
        &mut self,
        sh: &mut Shared,
        reason: &str,
        now: Instant,
    ) -> Result<bool, Close> {
        let Some(exchange) = self.exchange.as_mut() else {
            return Err(Close::Abort);
        };
        let index = exchange.backend;
        if let Some(backend) = self.backend.take() {
            sh.close_stream(backend.stream, backend.token);
        }
        self.backend_in.clear();
        let url = sh.balancer.backends[index].config.url.clone();
        let resendable = !exchange.response_started && exchange.head_in_client_buffer > 0;
        if resendable && exchange.reused_connection {
            log::debug!(
                "backend {url}: pooled connection failed ({reason}); retrying on a new connection"
            );
            sh.balancer.abandon(index);
            if !self.rebuild_request_head(sh, index) {
                return Err(Close::Abort);
            }
            self.connect_backend(sh, index, false, now);
            return Ok(true);
        }
        exchange.tried = exchange.tried.with(index);
        let idempotent = exchange.request.idempotent;
        sh.finish(index, Outcome::Failure, reason);
        if resendable && idempotent && self.retry_elsewhere(sh, now) {
            log::warn!("backend {url}: {reason}; request retried on another backend");
            return Ok(true);
        }
        let Some(exchange) = self.exchange.take() else {
            return Err(Close::Abort);
        };
        let (started, line) = (exchange.client_output_started, exchange.line);
        sh.recycle(exchange);
        if started {
            log::warn!(
                "backend {url}: {reason} in the middle of the response to {} \"{}\"; resetting the client",
                self.client_addr,
                line
            );
            return Err(Close::Abort);
        }
        log::warn!(
            "backend {url}: {reason} -> 502 for {} \"{}\"",
            self.client_addr,
            line
        );
        self.respond_error(sh, ErrorResponse::BadGateway, now);
        Ok(true)
    }

    /// Queues one of our own responses, drops any backend connection, and closes after sending it.
    fn respond_error(&mut self, sh: &mut Shared, response: ErrorResponse, now: Instant) {
        if let Some(backend) = self.backend.take() {
            sh.close_stream(backend.stream, backend.token);
        }
        if let Some(exchange) = self.exchange.take() {
            sh.recycle(exchange);
        }
        sh.meter.total += 1;
        self.to_client.clear();
        self.to_client.append(&mut sh.buffers, response.bytes());
        if sh.config.access_log {
            log::info!(
                "{} - {} {}",
                self.client_addr,
                response.status(),
                response.bytes().len()
            );
        }
        self.set_state(State::Closing, "error response", now);
    }

    /// One pass over both directions of an exchange.
    fn exchange(&mut self, sh: &mut Shared, now: Instant) -> Result<bool, Close> {
        let mut progressed = false;

        // Client -> backend: the request head and body.
        let request_done = self
            .exchange
            .as_ref()
            .is_some_and(|e| e.request_relay.is_done());
        if !request_done || !self.to_backend.is_empty() {
            if self.read_client(sh)? > 0 {
                progressed = true;
            }
            let Some(exchange) = self.exchange.as_mut() else {
                return Err(Close::Abort);
            };
            let Some(backend) = self.backend.as_mut() else {
                return Err(Close::Abort);
            };
            let early_response = matches!(
                exchange.response,
                ResponseStage::Body(_) | ResponseStage::Done(_)
            );
            if backend.ready.writable && !early_response {
                match pump(
                    &mut exchange.request_relay,
                    &mut self.client_in,
                    &mut self.to_backend,
                    &mut backend.stream,
                    &mut sh.buffers,
                ) {
                    Ok((written, status)) => {
                        if written > 0 {
                            progressed = true;
                            self.last_progress = now;
                        }
                        if status == PumpStatus::Blocked {
                            blocked_writing(
                                &sh.registry,
                                &mut backend.stream,
                                backend.token,
                                &mut backend.ready,
                            );
                        }
                    }
                    Err(PumpError::Framing(e)) => {
                        log::info!(
                            "{} \"{}\": bad request body: {e} -> 400",
                            self.client_addr,
                            exchange.line
                        );
                        sh.balancer.abandon(exchange.backend);
                        self.respond_error(sh, ErrorResponse::BadRequest, now);
                        return Ok(true);
                    }
                    Err(PumpError::Io(e)) => {
                        return self.backend_failed(sh, &format!("write failed: {e}"), now);
                    }
                }
            }
            let exchange = self.exchange.as_ref().ok_or(Close::Abort)?;
            if self.client_eof() && !exchange.request_relay.is_done() && !early_response {
                log::info!(
                    "{} \"{}\": client closed before sending the whole request body",
                    self.client_addr,
                    exchange.line
                );
                if let Some(e) = self.exchange.as_ref() {
                    sh.balancer.abandon(e.backend);
                }
                return Err(Close::Abort);
            }
        }

        // Backend -> client: the response.
        let Some(backend) = self.backend.as_mut() else {
            return Err(Close::Abort);
        };
        if backend.ready.readable && !self.backend_in.is_full(&sh.buffers) {
            match fill(
                &mut backend.stream,
                &mut self.backend_in,
                &mut sh.buffers,
                backend.ready.hup,
            ) {
                Ok(filled) => {
                    if filled.would_block {
                        backend.ready.readable = false;
                    }
                    if filled.eof {
                        backend.ready.readable = false;
                        backend.ready.read_closed = true;
                    }
                    if filled.bytes > 0 {
                        progressed = true;
                        self.last_progress = now;
                        if let Some(e) = self.exchange.as_mut() {
                            e.response_started = true;
                        }
                    }
                }
                Err(e) => return self.backend_failed(sh, &format!("read failed: {e}"), now),
            }
        }
        let backend_eof = backend.ready.read_closed && !backend.ready.readable;

        let stage = self.exchange.as_ref().ok_or(Close::Abort)?.response;
        match stage {
            ResponseStage::Head => {
                if self.backend_in.is_empty() {
                    if backend_eof {
                        return self.backend_failed(sh, "connection closed before a response", now);
                    }
                    return Ok(progressed);
                }
                return self
                    .response_head(sh, backend_eof, now)
                    .map(|p| p || progressed);
            }
            ResponseStage::Body(plan) => {
                // Without writability a pump can only finish a body that has nothing left to send.
                if !(self.client_ready.writable
                    || self.to_client.is_empty() && self.backend_in.is_empty())
                {
                    return Ok(progressed);
                }
                let exchange = self.exchange.as_mut().ok_or(Close::Abort)?;
                match pump(
                    &mut exchange.response_relay,
                    &mut self.backend_in,
                    &mut self.to_client,
                    &mut self.client,
                    &mut sh.buffers,
                ) {
                    Ok((written, status)) => {
                        if written > 0 {
                            progressed = true;
                            self.last_progress = now;
                            exchange.response_bytes += written;
                        }
                        match status {
                            PumpStatus::Blocked => blocked_writing(
                                &sh.registry,
                                &mut self.client,
                                self.client_token,
                                &mut self.client_ready,
                            ),
                            PumpStatus::Done => {
                                exchange.response = ResponseStage::Done(plan);
                                progressed = true;
                            }
                            PumpStatus::NeedInput if backend_eof => {
                                if exchange.response_relay.ends_at_close() {
                                    exchange.response = ResponseStage::Done(plan);
                                    exchange.backend_reusable = false;
                                    progressed = true;
                                } else {
                                    return self.backend_failed(
                                        sh,
                                        "connection closed mid-body",
                                        now,
                                    );
                                }
                            }
                            PumpStatus::NeedInput => {}
                        }
                    }
                    Err(PumpError::Framing(e)) => {
                        return self.backend_failed(
                            sh,
                            &format!("invalid response body: {e}"),
                            now,
                        );
                    }
                    Err(PumpError::Io(e)) => {
                        log::info!(
                            "{} \"{}\": client went away during the response: {e}",
                            self.client_addr,
                            exchange.line
                        );
                        sh.balancer.abandon(exchange.backend);
                        return Err(Close::Abort);
                    }
                }
            }
            ResponseStage::Done(_) => {}
        }

        let exchange = self.exchange.as_ref().ok_or(Close::Abort)?;
        if let ResponseStage::Done(plan) = exchange.response
            && (exchange.request_relay.is_done() && self.to_backend.is_empty() || plan.close_client)
        {
            self.finish_exchange(sh, now);
            return Ok(true);
        }
        Ok(progressed)
    }

    /// Parses the response head in `backend_in` and queues the client's head.
    fn response_head(
        &mut self,
        sh: &mut Shared,
        backend_eof: bool,
        now: Instant,
    ) -> Result<bool, Close> {
        let exchange = self.exchange.as_mut().ok_or(Close::Abort)?;
        let head = match response::parse_response(
            self.backend_in.data(),
            exchange.request.is_head,
            BUFFER_SIZE,
        ) {
            Ok(Some(head)) => head,
            Ok(None) if backend_eof => {
                return self.backend_failed(sh, "connection closed in the response head", now);
            }
            Ok(None) => return Ok(false),
            Err(e) => return self.backend_failed(sh, &format!("invalid response: {e}"), now),
        };
        fault::inject(exchange.line.target(), fault::Stage::Response);
        if exchange.head_in_client_buffer > 0 {
            self.client_in.consume(exchange.head_in_client_buffer);
            exchange.head_in_client_buffer = 0;
        }
        let client_version = exchange.request.version;
        if head.is_informational() && head.status != 101 {
            // 100 Continue, 103 Early Hints: passed on to HTTP/1.1 clients, then the real response follows.
            if client_version == crate::http::Version::Http11 {
                let backend_in = &self.backend_in;
                let written = self.to_client.write_with(&mut sh.buffers, |out| {
                    response::write_response_head(
                        backend_in.data(),
                        &head,
                        None,
                        client_version,
                        out,
                    )
                });
                if !written {
                    return self.backend_failed(sh, "interim response head too large", now);
                }
                exchange.client_output_started = true;
                if self.client_ready.writable {
                    match flush(&mut self.client, &mut self.to_client) {
                        Ok((_, true)) => blocked_writing(
                            &sh.registry,
                            &mut self.client,
                            self.client_token,
                            &mut self.client_ready,
                        ),
                        Ok(_) => {}
                        Err(_) => return Err(Close::Abort),
                    }
                }
            }
            self.backend_in.consume(head.head_len);
            return Ok(true);
        }
        let request_incomplete = !exchange.request_relay.is_done();
        let mut plan = match response::plan_response(
            &head,
            client_version,
            exchange.request.keep_alive,
            exchange.request.upgrade,
        ) {
            Ok(plan) => plan,
            Err(e) => return self.backend_failed(sh, &format!("unusable response: {e}"), now),
        };
        if request_incomplete {
            // The backend answered before the whole body arrived: the rest of the body must never be
            // read as a new request, so this client connection ends with the response.
            plan.close_client = true;
        }
        if sh.draining {
            plan.close_client = true;
        }
        let backend_in = &self.backend_in;
        let written = self.to_client.write_with(&mut sh.buffers, |out| {
            response::write_response_head(
                backend_in.data(),
                &head,
                Some(&plan),
                client_version,
                out,
            )
        });
        if !written {
            return self.backend_failed(sh, "response head too large", now);
        }
        self.backend_in.consume(head.head_len);
        exchange.client_output_started = true;
        exchange.status = head.status;
        exchange.backend_reusable = head.reusable && !request_incomplete;
        exchange.response_relay = match plan.body {
            ClientBody::Empty => Relay::Done,
            ClientBody::Length(n) => Relay::Length { remaining: n },
            ClientBody::Chunked => Relay::Chunked(ChunkedDecoder::new(true)),
            ClientBody::Dechunked => Relay::Chunked(ChunkedDecoder::new(false)),
            ClientBody::UntilClose | ClientBody::Tunnel => Relay::UntilClose,
        };
        exchange.response = ResponseStage::Body(plan);
        if plan.body == ClientBody::Tunnel {
            exchange.request_relay = Relay::UntilClose;
            let line = exchange.line;
            let index = exchange.backend;
            let latency = now - exchange.started;
            sh.finish(
                index,
                Outcome::Success { latency },
                "101 Switching Protocols",
            );
            if sh.config.access_log {
                log::info!(
                    "{} \"{line}\" 101 - {} tunnel",
                    self.client_addr,
                    sh.balancer.backends[index].config.url
                );
            }
            self.set_state(State::Tunnel, "101 Switching Protocols", now);
        }
        Ok(true)
    }

    /// The response is delivered: account for it, pool or close the backend connection, and either wait
    /// for the next request or close.
    fn finish_exchange(&mut self, sh: &mut Shared, now: Instant) {
        let Some(exchange) = self.exchange.take() else {
            return;
        };
        let ResponseStage::Done(plan) = exchange.response else {
            return;
        };
        let index = exchange.backend;
        let latency = now - exchange.started;
        sh.meter.total += 1;
        let outcome = if exchange.status < 500 {
            Outcome::Success { latency }
        } else {
            Outcome::ErrorResponse { latency }
        };
        sh.finish(index, outcome, "response");
        if sh.config.access_log {
            log::info!(
                "{} \"{}\" {} {} {} {}ms",
                self.client_addr,
                exchange.line,
                exchange.status,
                exchange.response_bytes,
                sh.balancer.backends[index].config.url,
                latency.as_millis()
            );
        }
        if let Some(backend) = self.backend.take() {
            let reusable = exchange.backend_reusable
                && exchange.request_relay.is_done()
                && self.backend_in.is_empty()
                && !backend.ready.read_closed
                && sh.idle[index].len() < sh.config.max_connections;
            if reusable {
                let mut backend = backend;
                if backend.ready.write_interest
                    && let Err(e) = sh.registry.reregister(
                        &mut backend.stream,
                        backend.token,
                        Interest::READABLE,
                    )
                {
                    log::debug!("reregister pooled connection: {e}");
                }
                sh.sockets[backend.token.0 - FIRST_SOCKET] = Owner::Idle(index);
                sh.idle[backend.index].push(IdleConn {
                    stream: backend.stream,
                    token: backend.token,
                });
            } else {
                sh.close_stream(backend.stream, backend.token);
            }
        }
        sh.recycle(exchange);
        self.backend_in.clear();
        if plan.close_client {
            self.set_state(State::Closing, "response delivered, closing", now);
        } else {
            self.head_started = (!self.client_in.is_empty()).then_some(now);
            self.set_state(State::ReadingHead, "response delivered, keep-alive", now);
        }
    }

    /// Relays bytes both ways after a protocol switch until both sides have closed.
    fn tunnel(&mut self, sh: &mut Shared, now: Instant) -> Result<bool, Close> {
        let exchange = self.exchange.as_mut().ok_or(Close::Abort)?;
        let backend = self.backend.as_mut().ok_or(Close::Abort)?;
        let upstream = TunnelLeg {
            src: &mut self.client,
            src_ready: &mut self.client_ready,
            input: &mut self.client_in,
            out: &mut self.to_backend,
            relay: &mut exchange.request_relay,
            dst: &mut backend.stream,
            dst_token: backend.token,
            dst_ready: &mut backend.ready,
            dst_shut: &mut backend.write_shut,
        }
        .relay(sh)?;
        let downstream = TunnelLeg {
            src: &mut backend.stream,
            src_ready: &mut backend.ready,
            input: &mut self.backend_in,
            out: &mut self.to_client,
            relay: &mut exchange.response_relay,
            dst: &mut self.client,
            dst_token: self.client_token,
            dst_ready: &mut self.client_ready,
            dst_shut: &mut self.client_write_shut,
        }
        .relay(sh)?;
        let progressed = upstream || downstream;
        if progressed {
            self.last_progress = now;
        }
        if self.client_write_shut && backend.write_shut {
            return Err(Close::Graceful);
        }
        Ok(progressed)
    }

    /// Flushes what the client is owed, then half-closes and drains its input until it closes too.
    fn closing(&mut self, sh: &mut Shared, _now: Instant) -> Result<bool, Close> {
        if !self.to_client.is_empty() {
            if !self.client_ready.writable {
                return Ok(false);
            }
            match flush(&mut self.client, &mut self.to_client) {
                Ok((_, true)) => {
                    blocked_writing(
                        &sh.registry,
                        &mut self.client,
                        self.client_token,
                        &mut self.client_ready,
                    );
                    return Ok(false);
                }
                Ok(_) => {}
                Err(_) => return Err(Close::Abort),
            }
        }
        if !self.client_write_shut {
            if self.client.shutdown(Shutdown::Write).is_err() {
                return Err(Close::Graceful);
            }
            self.client_write_shut = true;
            self.client_in.release(&mut sh.buffers);
        }
        // Discard whatever the client still sends until it closes (or the linger deadline passes).
        let mut sink = [0u8; 4096];
        while self.client_ready.readable {
            match self.client.read(&mut sink) {
                Ok(0) => return Err(Close::Graceful),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.client_ready.readable = false
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Close::Graceful),
            }
        }
        Ok(false)
    }

    /// The connection's deadline passed.
    pub(super) fn on_timeout(&mut self, sh: &mut Shared, now: Instant) -> Result<(), Close> {
        match self.state {
            State::ReadingHead => {
                if self.client_in.is_empty() {
                    log::debug!("conn {}: idle timeout", self.id);
                    return Err(Close::Graceful);
                }
                log::info!(
                    "{}: request head not received in time -> 408",
                    self.client_addr
                );
                self.respond_error(sh, ErrorResponse::RequestTimeout, now);
            }
            State::Connecting => {
                self.connect_failed(sh, "timed out", ErrorResponse::GatewayTimeout, now);
            }
            State::Exchanging => {
                let Some(exchange) = self.exchange.as_ref() else {
                    return Err(Close::Abort);
                };
                let index = exchange.backend;
                let url = sh.balancer.backends[index].config.url.clone();
                if exchange.client_output_started {
                    log::warn!(
                        "{} \"{}\": no progress for {:?} mid-response (backend {url}); resetting",
                        self.client_addr,
                        exchange.line,
                        sh.config.timeouts.response
                    );
                    sh.finish(index, Outcome::Failure, "stalled mid-response");
                    return Err(Close::Abort);
                }
                log::warn!(
                    "backend {url}: no response to {} \"{}\" within {:?} -> 504",
                    self.client_addr,
                    exchange.line,
                    sh.config.timeouts.response
                );
                sh.finish(index, Outcome::Failure, "response timeout");
                self.respond_error(sh, ErrorResponse::GatewayTimeout, now);
            }
            State::Tunnel => {
                log::debug!("conn {}: tunnel idle timeout", self.id);
                return Err(Close::Graceful);
            }
            State::Closing => {
                return Err(if self.to_client.is_empty() {
                    Close::Graceful
                } else {
                    Close::Abort
                });
            }
        }
        Ok(())
    }

    /// Releases every resource of a connection that is being removed.
    pub(super) fn teardown(&mut self, sh: &mut Shared, how: Close) {
        if let Some(exchange) = self.exchange.take() {
            // Still in flight: the backend never finished this request for a reason of ours or the client's.
            if self.backend.is_some() && !matches!(self.state, State::Tunnel) {
                sh.balancer.abandon(exchange.backend);
            }
            sh.recycle(exchange);
        }
        if let Some(backend) = self.backend.take() {
            sh.close_stream(backend.stream, backend.token);
        }
        if how == Close::Abort {
            // SO_LINGER 0: close sends RST, so the client cannot mistake a cut-off body for a whole one.
            if let Err(e) = socket2::SockRef::from(&self.client).set_linger(Some(Duration::ZERO)) {
                log::debug!("set_linger: {e}");
            }
        }
        if let Err(e) = sh.registry.deregister(&mut self.client) {
            log::debug!("deregister client: {e}");
        }
        sh.release_token(self.client_token);
        for buf in [
            &mut self.client_in,
            &mut self.to_backend,
            &mut self.backend_in,
            &mut self.to_client,
        ] {
            buf.release(&mut sh.buffers);
        }
        log::debug!(
            "conn {}: closed ({how:?}) after {} requests",
            self.id,
            self.requests
        );
    }
}

/// One direction of a tunnel, borrowed from the connection: bytes read from `src` into `input` go to
/// `dst` (through `out` for any framing, which a tunnel has none of).
struct TunnelLeg<'a> {
    src: &'a mut TcpStream,
    src_ready: &'a mut Readiness,
    input: &'a mut Buffer,
    out: &'a mut Buffer,
    relay: &'a mut Relay,
    dst: &'a mut TcpStream,
    dst_token: Token,
    dst_ready: &'a mut Readiness,
    dst_shut: &'a mut bool,
}

impl TunnelLeg<'_> {
    /// Reads what the source has, forwards it, and half-closes the destination once the source has closed
    /// and everything it sent is delivered. True if anything moved.
    fn relay(self, sh: &mut Shared) -> Result<bool, Close> {
        let mut progressed = false;
        if self.src_ready.readable && !self.input.is_full(&sh.buffers) {
            let f = fill(self.src, self.input, &mut sh.buffers, self.src_ready.hup)
                .map_err(|_| Close::Abort)?;
            progressed |= f.bytes > 0;
            if f.would_block || f.eof {
                self.src_ready.readable = false;
            }
            self.src_ready.read_closed |= f.eof;
        }
        if self.dst_ready.writable && !*self.dst_shut {
            let (n, status) = pump(self.relay, self.input, self.out, self.dst, &mut sh.buffers)
                .map_err(|_| Close::Abort)?;
            progressed |= n > 0;
            if status == PumpStatus::Blocked {
                blocked_writing(&sh.registry, self.dst, self.dst_token, self.dst_ready);
            }
        }
        if self.src_ready.read_closed
            && self.input.is_empty()
            && self.out.is_empty()
            && !*self.dst_shut
        {
            let _ = self.dst.shutdown(Shutdown::Write);
            *self.dst_shut = true;
            progressed = true;
        }
        Ok(progressed)
    }
}

#[cfg(test)]
mod tests {
    /// What an idle keep-alive connection costs is mostly this struct (buffers and the exchange record
    /// are only held while a request is in flight): keep it small.
    #[test]
    fn an_idle_connection_stays_small() {
        let size = std::mem::size_of::<super::Conn>();
        assert!(size <= 320, "Conn grew to {size} bytes");
        assert!(std::mem::size_of::<crate::buffer::Buffer>() <= 24);
    }
}
