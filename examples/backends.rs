//! Demo backends for trying `lb` out: the routes of the original design, one small HTTP/1.1 server per
//! port (8001 and 8002 by default, the ports the shipped `lb.toml` names).
//!
//! ```text
//! cargo run --release --example backends              # ports 8001 and 8002
//! cargo run --release --example backends -- 8001 8003 # any ports (0: a free one, printed)
//! ```
//!
//! Routes: `GET /` → `Hello, world! This is a GET request.`, `GET /health` → `OK`,
//! `POST /` and `PUT /` with a JSON body → `Received POST request with data: …`. Every response carries
//! `X-Backend: <port>` so that the balancing is visible with `curl -i`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

fn main() {
    let ports: Vec<u16> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .unwrap_or_else(|_| panic!("not a port number: {a}"))
        })
        .collect();
    let ports = if ports.is_empty() {
        vec![8001, 8002]
    } else {
        ports
    };
    let mut handles = Vec::new();
    for port in ports {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:{port}: {e}"));
        let port = listener.local_addr().map_or(port, |a| a.port());
        println!("demo backend listening on http://127.0.0.1:{port}");
        handles.push(thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || {
                    if let Err(e) = serve(stream, port) {
                        eprintln!("backend {port}: {e}");
                    }
                });
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
}

/// Serves requests on one connection until the client closes or asks to.
fn serve(stream: TcpStream, port: u16) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut head = Vec::new();
        loop {
            let before = head.len();
            if reader.read_until(b'\n', &mut head)? == 0 {
                return Ok(());
            }
            let line = &head[before..];
            if before > 0 && (line == b"\r\n" || line == b"\n") {
                break;
            }
            if head.len() > 64 * 1024 {
                return respond(
                    &mut writer,
                    port,
                    431,
                    "Request Header Fields Too Large",
                    "head too large\n",
                    true,
                );
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        if !matches!(request.parse(&head), Ok(httparse::Status::Complete(_))) {
            return respond(&mut writer, port, 400, "Bad Request", "bad request\n", true);
        }
        let method = request.method.unwrap_or("").to_string();
        let path = request.path.unwrap_or("").to_string();
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
        };
        let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || request.version == Some(0);
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        let route = path.split('?').next().unwrap_or("");
        match (method.as_str(), route) {
            ("GET", "/") => respond(
                &mut writer,
                port,
                200,
                "OK",
                "Hello, world! This is a GET request.",
                close,
            )?,
            ("GET", "/health") => respond(&mut writer, port, 200, "OK", "OK", close)?,
            ("POST" | "PUT", "/") => match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(data) => {
                    let text = format!("Received {method} request with data: {data}");
                    respond(&mut writer, port, 200, "OK", &text, close)?
                }
                Err(e) => respond(
                    &mut writer,
                    port,
                    400,
                    "Bad Request",
                    &format!("invalid JSON body: {e}\n"),
                    close,
                )?,
            },
            (_, "/" | "/health") => respond(
                &mut writer,
                port,
                405,
                "Method Not Allowed",
                "method not allowed\n",
                close,
            )?,
            _ => respond(&mut writer, port, 404, "Not Found", "not found\n", close)?,
        }
        if close {
            return Ok(());
        }
    }
}

fn respond(
    w: &mut TcpStream,
    port: u16,
    status: u16,
    reason: &str,
    body: &str,
    close: bool,
) -> std::io::Result<()> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nX-Backend: {port}\r\n{connection}\r\n{body}",
        body.len()
    );
    w.write_all(response.as_bytes())
}
