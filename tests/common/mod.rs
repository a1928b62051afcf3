//! Test harness: an in-process balancer on 127.0.0.1:0, scripted backends on real sockets that record
//! exactly what they receive, and a raw-bytes HTTP client that parses what comes back.
#![allow(dead_code)]

pub mod dns;
pub mod process;
pub mod tls;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Defines modules `event_loop` and `threaded`, each including the same file of test cases, in which
/// `lb(settings, backends)` and `lb_text(text)` start a balancer on that module's engine.
#[macro_export]
macro_rules! for_each_engine {
    ($cases:literal) => {
        $crate::engine_module!(event_loop, "event_loop", "", $cases);
        $crate::engine_module!(workers2, "event_loop", "workers = 2\n", $cases);
        $crate::engine_module!(threaded, "threaded", "", $cases);
    };
}

/// A module of `$cases` run on `$engine`, with `$settings` (top-level keys) added to every
/// configuration.
#[macro_export]
macro_rules! engine_module {
    ($module:ident, $engine:literal, $settings:literal, $cases:literal) => {
        mod $module {
            use super::*;
            #[allow(dead_code)]
            fn lb(settings: &str, backends: &[std::net::SocketAddr]) -> Lb {
                Lb::start(
                    &format!("engine = \"{}\"\n{}{settings}", $engine, $settings),
                    backends,
                )
            }
            #[allow(dead_code)]
            fn lb_text(text: &str) -> Lb {
                Lb::start_text(&format!("engine = \"{}\"\n{}{text}", $engine, $settings))
            }
            /// `text` with this module's engine settings, as `lb_text` starts it (for reloads).
            #[allow(dead_code)]
            fn engine_config(text: &str) -> String {
                format!("engine = \"{}\"\n{}{text}", $engine, $settings)
            }
            #[allow(dead_code)]
            fn workers() -> usize {
                if $settings.is_empty() { 1 } else { 2 }
            }
            #[allow(dead_code)]
            fn engine_name() -> &'static str {
                $engine
            }
            include!($cases);
        }
    };
}

/// The configuration line of a test engine name: `workers2` is the event loop with two workers.
pub fn engine_line(engine: &str) -> String {
    match engine {
        "workers2" => "engine = \"event_loop\"\nworkers = 2".to_string(),
        other => format!("engine = \"{other}\""),
    }
}

/// Workers of a test engine name (1 for the threaded engine, which has none).
pub fn workers_of(engine: &str) -> usize {
    if engine == "workers2" { 2 } else { 1 }
}

/// Generous bound for anything that should happen "at once" on loopback.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = simple_logger::SimpleLogger::new().env().init();
        }
    });
}

/// Polls `condition` until it holds or `WAIT` passes.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A balancer running in a thread of the test process.
pub struct Lb {
    pub addr: SocketAddr,
    /// The HTTPS listener, when the configuration has `[tls]`.
    pub tls_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub control: lb::server::Control,
    thread: Option<JoinHandle<()>>,
    /// Panics the test provokes on purpose; on drop, `internal_errors` must equal this (0 unless a test
    /// injects faults), so that the containment net never hides a bug in any test.
    pub expected_internal_errors: std::cell::Cell<u64>,
}

impl Lb {
    /// Starts a balancer. `settings` holds top-level keys and tables (`[timeouts]` ...) of lb.toml;
    /// `listen` and the `[[backends]]` list are added here.
    /// Unless `settings` has a `[health_check]` table, probes are pushed an hour out so that they never
    /// show up in what the scripted backends count.
    pub fn start(settings: &str, backends: &[SocketAddr]) -> Lb {
        let mut text = format!("listen = \"127.0.0.1:0\"\naccess_log = false\n{settings}\n");
        if !settings.contains("[health_check]") {
            text.push_str("[health_check]\ninterval = \"1h\"\n");
        }
        for b in backends {
            text.push_str(&format!("[[backends]]\nurl = \"http://{b}\"\n"));
        }
        Lb::start_text(&text)
    }

    pub fn start_text(text: &str) -> Lb {
        init_logging();
        // Requests to /__lb_fault/ panic or stall only in an armed process.
        lb::fault::arm();
        let config =
            lb::config::Config::parse(text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"));
        match config.engine {
            lb::config::Engine::EventLoop => {
                let mut server = lb::server::Server::bind(config).expect("bind");
                let (addr, tls_addr, admin_addr, control) = (
                    server.local_addr(),
                    server.tls_addr(),
                    server.admin_addr(),
                    server.control(),
                );
                let thread = thread::spawn(move || server.run().expect("event loop"));
                Lb {
                    addr,
                    tls_addr,
                    admin_addr,
                    control,
                    thread: Some(thread),
                    expected_internal_errors: std::cell::Cell::new(0),
                }
            }
            lb::config::Engine::Threaded => {
                let engine = lb::threaded::Threaded::bind(config).expect("bind");
                let (addr, tls_addr, admin_addr, control) = (
                    engine.local_addr(),
                    engine.tls_addr(),
                    engine.admin_addr(),
                    engine.control(),
                );
                let thread = thread::spawn(move || engine.run().expect("threaded engine"));
                Lb {
                    addr,
                    tls_addr,
                    admin_addr,
                    control,
                    thread: Some(thread),
                    expected_internal_errors: std::cell::Cell::new(0),
                }
            }
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    pub fn snapshot(&self) -> lb::server::Snapshot {
        self.control.snapshot().expect("the event loop answers")
    }

    /// Waits until no client connection is open, no request is in flight, and (event loop) the only
    /// sockets still registered are pooled backend connections.
    pub fn wait_released(&self) {
        self.wait_idle();
        wait_until("every socket but the pooled ones to be released", || {
            let s = self.snapshot();
            // The threaded engine registers nothing and reports 0.
            s.registered_sockets == 0 || s.registered_sockets == s.pooled_connections
        });
    }

    /// Waits until no client connection is open and every request counted has finished.
    pub fn wait_idle(&self) {
        wait_until(
            "open connections and active requests to drop to zero",
            || {
                let s = self.snapshot();
                s.open_connections == 0 && s.backends.iter().all(|b| b.active_connections == 0)
            },
        );
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        if !thread::panicking()
            && let Some(snapshot) = self.control.snapshot()
        {
            assert_eq!(
                snapshot.internal_errors,
                self.expected_internal_errors.get(),
                "lb contained a panic (lb_internal_errors_total): a bug; the log has its cause"
            );
        }
        self.control.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request as a backend received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The head exactly as received, including the final empty line.
    pub head: String,
    /// The body bytes exactly as received (chunk framing included, if chunked).
    pub raw_body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        header_value(&self.head, name)
    }
}

pub fn header_value(head: &str, name: &str) -> Option<String> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// Reading a socket through a buffer of received, not yet consumed bytes: backend peers and clients.
trait Buffered {
    fn pending(&mut self) -> &mut Vec<u8>;

    /// Reads more bytes into `pending`; false when the connection has ended.
    fn fill(&mut self) -> bool;

    /// The bytes up to and including the first `delimiter`, or `None` if the connection ends first.
    fn take_through(&mut self, delimiter: &[u8]) -> Option<Vec<u8>> {
        loop {
            if let Some(pos) = find(self.pending(), delimiter) {
                return Some(self.pending().drain(..pos + delimiter.len()).collect());
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Exactly `n` bytes, or `None` if the connection ends first.
    fn take_exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.pending().len() < n {
            if !self.fill() {
                return None;
            }
        }
        Some(self.pending().drain(..n).collect())
    }
}

/// A backend connection as seen from the backend side.
pub struct Peer {
    pub stream: TcpStream,
    /// A TLS backend's session with lb.
    pub tls: Option<Box<rustls::ServerConnection>>,
    pending: Vec<u8>,
    log: Arc<Mutex<Vec<Received>>>,
    /// Every byte this backend has read, across connections, in arrival order.
    raw: Arc<Mutex<Vec<u8>>>,
}

impl Peer {
    /// Reads one request (head and body framed by Content-Length or chunked). `None` on EOF or reset.
    pub fn read_request(&mut self) -> Option<Received> {
        let head = self.take_head()?;
        let chunked = header_value(&head, "transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let raw_body = if chunked {
            self.read_chunked_raw()?
        } else {
            let n: usize = header_value(&head, "content-length")
                .map_or(0, |v| v.parse().expect("backend got a bad CL"));
            self.read_exact_bytes(n)?
        };
        let received = Received { head, raw_body };
        self.log.lock().unwrap().push(received.clone());
        Some(received)
    }

    /// Reads a head only (for tests that answer before reading the body).
    pub fn read_head(&mut self) -> Option<String> {
        let head = self.take_head()?;
        self.log.lock().unwrap().push(Received {
            head: head.clone(),
            raw_body: Vec::new(),
        });
        Some(head)
    }

    fn take_head(&mut self) -> Option<String> {
        let head = self.take_through(b"\r\n\r\n")?;
        Some(String::from_utf8_lossy(&head).to_string())
    }

    pub fn read_exact_bytes(&mut self, n: usize) -> Option<Vec<u8>> {
        self.take_exact(n)
    }

    fn read_chunked_raw(&mut self) -> Option<Vec<u8>> {
        let mut raw = Vec::new();
        loop {
            let line = self.take_through(b"\r\n")?;
            raw.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line);
            let size = usize::from_str_radix(text.trim_end().split(';').next().unwrap_or(""), 16)
                .expect("chunk size");
            if size == 0 {
                // Trailer section up to the empty line.
                loop {
                    let line = self.take_through(b"\r\n")?;
                    raw.extend_from_slice(&line);
                    if line == b"\r\n" {
                        return Some(raw);
                    }
                }
            }
            raw.extend_from_slice(&self.take_exact(size + 2)?);
        }
    }

    pub fn write(&mut self, bytes: &[u8]) -> bool {
        match self.tls.as_deref_mut() {
            Some(tls) => {
                let mut stream = rustls::Stream::new(tls, &mut self.stream);
                stream.write_all(bytes).is_ok() && stream.flush().is_ok()
            }
            None => self.stream.write_all(bytes).is_ok(),
        }
    }

    /// Answers `200 OK` with `body`, keeping the connection open.
    pub fn ok(&mut self, body: &str) -> bool {
        self.write(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    }

    /// Closes with a reset instead of a FIN.
    pub fn reset(self) {
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Buffered for Peer {
    fn pending(&mut self) -> &mut Vec<u8> {
        &mut self.pending
    }

    fn fill(&mut self) -> bool {
        let mut buf = [0u8; 65536];
        let read = match self.tls.as_deref_mut() {
            Some(tls) => rustls::Stream::new(tls, &mut self.stream).read(&mut buf),
            None => self.stream.read(&mut buf),
        };
        match read {
            // A read with a timeout is never restarted after a signal handler (signal(7)).
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                self.raw.lock().unwrap().extend_from_slice(&buf[..n]);
                true
            }
        }
    }
}

/// A scripted backend on 127.0.0.1:0: every accepted connection runs `script` on its own thread.
/// It can be killed (listener closed, every connection shut down) and started again on the same address.
pub struct Backend {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    /// Connections whose script has returned (for looping scripts: the balancer closed the connection).
    pub finished: Arc<AtomicUsize>,
    pub received: Arc<Mutex<Vec<Received>>>,
    raw: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    /// Clones of the open connections, by connection number, so that `kill` can shut them down; a
    /// connection's clone is dropped as soon as its script returns, so closing stays prompt.
    open: Arc<Mutex<HashMap<usize, TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Backend {
    pub fn start(script: impl Fn(Peer) + Send + Sync + 'static) -> Backend {
        Backend::start_at("127.0.0.1:0".parse().unwrap(), script)
    }

    /// A TLS backend: every connection is a session with `config` (handshake on first use).
    pub fn start_tls(
        config: Arc<rustls::ServerConfig>,
        script: impl Fn(Peer) + Send + Sync + 'static,
    ) -> Backend {
        Backend::start_with("127.0.0.1:0".parse().unwrap(), Some(config), script)
    }

    /// Starts on a given address (to bring a killed backend back where the balancer expects it).
    pub fn start_at(addr: SocketAddr, script: impl Fn(Peer) + Send + Sync + 'static) -> Backend {
        Backend::start_with(addr, None, script)
    }

    fn start_with(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        script: impl Fn(Peer) + Send + Sync + 'static,
    ) -> Backend {
        let listener = TcpListener::bind(addr).expect("bind backend");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let finished = Arc::new(AtomicUsize::new(0));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(HashMap::new()));
        let script = Arc::new(script);
        let (count, log, done, stopping, streams, bytes) = (
            connections.clone(),
            received.clone(),
            finished.clone(),
            stop.clone(),
            open.clone(),
            raw.clone(),
        );
        let acceptor = thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                let stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    Err(_) => continue,
                };
                stream.set_nonblocking(false).unwrap();
                let number = count.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = stream.try_clone() {
                    streams.lock().unwrap().insert(number, clone);
                }
                let script = script.clone();
                let log = log.clone();
                let done = done.clone();
                let streams = streams.clone();
                let raw = bytes.clone();
                let tls = tls.clone().map(|config| {
                    Box::new(rustls::ServerConnection::new(config).expect("TLS session"))
                });
                thread::spawn(move || {
                    script(Peer {
                        stream,
                        tls,
                        pending: Vec::new(),
                        log,
                        raw,
                    });
                    streams.lock().unwrap().remove(&number);
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Backend {
            addr,
            connections,
            finished,
            received,
            raw,
            stop,
            open,
            acceptor: Some(acceptor),
        }
    }

    /// Stops listening (new connections are refused) and shuts down every open connection.
    pub fn kill(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for (_, stream) in self.open.lock().unwrap().drain() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// A keep-alive backend answering every request with `200 OK` and `name` as the body.
    pub fn named(name: &'static str) -> Backend {
        Backend::start(move |mut peer| {
            while peer.read_request().is_some() {
                if !peer.ok(name) {
                    return;
                }
            }
        })
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Every byte the backend has read so far.
    pub fn raw_received(&self) -> Vec<u8> {
        self.raw.lock().unwrap().clone()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An address nothing listens on (bound, then closed).
pub fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A parsed response as the client received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        header_value(&self.head, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// A raw client connection with a read buffer, for keep-alive and pipelining.
pub struct Client {
    pub stream: TcpStream,
    /// A TLS client's session with lb.
    pub tls: Option<Box<rustls::ClientConnection>>,
    pending: Vec<u8>,
    eof: bool,
    /// The connection ended with a reset rather than a FIN.
    pub reset: bool,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to lb");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Client::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        Client {
            stream,
            tls: None,
            pending: Vec::new(),
            eof: false,
            reset: false,
        }
    }

    /// A TLS client asking for `server_name` (SNI); the handshake happens with the first exchange, or
    /// [`Client::handshake`].
    pub fn connect_tls(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Client {
        let mut client = Client::connect(addr);
        let name =
            rustls::pki_types::ServerName::try_from(server_name.to_string()).expect("server name");
        client.tls = Some(Box::new(
            rustls::ClientConnection::new(config, name).expect("TLS session"),
        ));
        client
    }

    /// Completes the TLS handshake.
    pub fn handshake(&mut self) -> std::io::Result<()> {
        let tls = self.tls.as_deref_mut().expect("a TLS client");
        while tls.is_handshaking() {
            tls.complete_io(&mut self.stream)?;
        }
        Ok(())
    }

    /// Writes `bytes` on the TCP stream itself, under any TLS session (a PROXY protocol header).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to lb");
    }

    pub fn send(&mut self, bytes: &[u8]) {
        match self.tls.as_deref_mut() {
            Some(tls) => {
                let mut stream = rustls::Stream::new(tls, &mut self.stream);
                stream.write_all(bytes).expect("client write");
                stream.flush().expect("client flush");
            }
            None => self.stream.write_all(bytes).expect("client write"),
        }
    }

    /// Waits until a whole response head is buffered (without consuming it). False if the connection ends.
    pub fn wait_for_head(&mut self) -> bool {
        while find(&self.pending, b"\r\n\r\n").is_none() {
            if !self.fill() {
                return false;
            }
        }
        true
    }

    /// Reads one response; `request_was_head` suppresses the body. Panics if the connection ends first.
    pub fn response(&mut self, request_was_head: bool) -> Response {
        self.try_response(request_was_head).unwrap_or_else(|| {
            panic!(
                "connection ended before a complete response; got {:?}",
                String::from_utf8_lossy(&self.pending)
            )
        })
    }

    /// Reads one response, or `None` if the connection ends before it is complete.
    pub fn try_response(&mut self, request_was_head: bool) -> Option<Response> {
        let head = String::from_utf8_lossy(&self.take_through(b"\r\n\r\n")?).to_string();
        let status: u16 = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let body =
            if request_was_head || status == 204 || status == 304 || (100..200).contains(&status) {
                Vec::new()
            } else if header_value(&head, "transfer-encoding").is_some() {
                self.read_chunked()?
            } else if let Some(n) = header_value(&head, "content-length") {
                self.take_exact(n.parse().expect("content-length"))?
            } else {
                while self.fill() {}
                if self.reset {
                    // A close-delimited body ended by a reset is incomplete.
                    return None;
                }
                std::mem::take(&mut self.pending)
            };
        Some(Response { status, head, body })
    }

    fn read_chunked(&mut self) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.take_through(b"\r\n")?;
            let size = usize::from_str_radix(String::from_utf8_lossy(&line).trim_end(), 16)
                .expect("normalised chunk size");
            let chunk = self.take_exact(size + 2)?;
            assert_eq!(&chunk[size..], b"\r\n");
            body.extend_from_slice(&chunk[..size]);
            if size == 0 {
                return Some(body);
            }
        }
    }

    /// True once the server has closed (EOF or reset) with nothing more to read.
    pub fn is_closed(&mut self) -> bool {
        while !self.eof {
            if !self.fill() {
                break;
            }
        }
        self.eof && self.pending.is_empty()
    }

    /// Everything until the connection ends (EOF or reset).
    pub fn read_all(&mut self) -> Vec<u8> {
        while self.fill() {}
        std::mem::take(&mut self.pending)
    }

    pub fn half_close(&mut self) {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.send_close_notify();
            let _ = tls.complete_io(&mut self.stream);
        }
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

impl Buffered for Client {
    fn pending(&mut self) -> &mut Vec<u8> {
        &mut self.pending
    }

    /// Reads more bytes; false on EOF or reset.
    fn fill(&mut self) -> bool {
        let mut buf = [0u8; 65536];
        let read = match self.tls.as_deref_mut() {
            Some(tls) => rustls::Stream::new(tls, &mut self.stream).read(&mut buf),
            None => self.stream.read(&mut buf),
        };
        match read {
            Ok(0) => {
                self.eof = true;
                false
            }
            // A TLS peer closed without close_notify: an end, but not a reset.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                true
            }
            // A signal reached this thread: a read with a timeout (SO_RCVTIMEO) is never restarted
            // after a handler (signal(7)), and fails with EINTR; read again. (It made this client
            // see a reset about once in 40 runs of the TLS suite.)
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!(
                    "client read timed out with {:?} pending",
                    String::from_utf8_lossy(&self.pending)
                )
            }
            Err(_) => {
                self.eof = true;
                self.reset = true;
                false
            }
        }
    }
}

/// Sends `request` on a new connection and reads one response.
pub fn request(addr: SocketAddr, request: &str) -> Response {
    let mut client = Client::connect(addr);
    client.send(request.as_bytes());
    client.response(request.starts_with("HEAD "))
}

pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, &format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"))
}
