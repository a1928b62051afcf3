//! What the log says about requests: the request line (and the `Referer` and `User-Agent` fields) kept
//! for the access log once the head has left the buffer, and the access log line itself, in the
//! configured format (`access_log_format`: Apache/nginx "combined", or one JSON object), written the
//! same way whichever engine served the request.

use crate::config::AccessLogFormat;
use crate::http::Version;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The request line, kept inline (truncated) for the access log once the head has left the buffer.
#[derive(Clone, Copy)]
pub struct RequestLine {
    method: [u8; 16],
    method_len: u8,
    target: [u8; 96],
    target_len: u8,
    truncated: bool,
}

impl RequestLine {
    pub fn new(method: &[u8], target: &[u8]) -> RequestLine {
        let mut line = RequestLine {
            method: [0; 16],
            method_len: 0,
            target: [0; 96],
            target_len: 0,
            truncated: false,
        };
        line.set(method, target);
        line
    }

    /// Keeps `method` and `target` in place of what was kept (a recycled request's line is written
    /// over, not rebuilt and copied; bytes past the lengths are never read).
    pub fn set(&mut self, method: &[u8], target: &[u8]) {
        self.truncated = method.len() > 16 || target.len() > 96;
        let m = method.len().min(16);
        self.method[..m].copy_from_slice(&method[..m]);
        self.method_len = m as u8;
        let t = target.len().min(96);
        self.target[..t].copy_from_slice(&target[..t]);
        self.target_len = t as u8;
    }

    /// The request target as kept (at most 96 bytes).
    pub fn target(&self) -> &[u8] {
        &self.target[..usize::from(self.target_len)]
    }

    pub fn method(&self) -> &[u8] {
        &self.method[..usize::from(self.method_len)]
    }
}

/// A request field kept for the access log, at most 128 bytes of it.
#[derive(Clone, Copy)]
pub struct Kept {
    bytes: [u8; 128],
    len: u8,
}

impl Kept {
    pub const EMPTY: Kept = Kept {
        bytes: [0; 128],
        len: 0,
    };

    pub fn new(value: &[u8]) -> Kept {
        let mut kept = Kept::EMPTY;
        kept.set(value);
        kept
    }

    /// Keeps `value` in place of what was kept (bytes past the length are never read).
    pub fn set(&mut self, value: &[u8]) {
        let n = value.len().min(128);
        self.bytes[..n].copy_from_slice(&value[..n]);
        self.len = n as u8;
    }

    /// Keeps nothing.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn get(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// One access log entry.
pub struct Access<'a> {
    pub client: SocketAddr,
    /// The request, when its head was parsed.
    pub request: Option<(&'a RequestLine, Version)>,
    pub status: u16,
    pub bytes: u64,
    /// The backend that answered; `None` for a response of lb's own.
    pub backend: Option<&'a str>,
    pub took: Option<Duration>,
    pub referer: &'a [u8],
    pub user_agent: &'a [u8],
}

impl<'a> Access<'a> {
    /// A response lb wrote itself: no request line or backend to show.
    pub fn own(client: SocketAddr, status: u16, bytes: u64) -> Access<'a> {
        Access {
            client,
            request: None,
            status,
            bytes,
            backend: None,
            took: None,
            referer: b"",
            user_agent: b"",
        }
    }
}

/// Logs the entry `entry` makes at info, when the configuration has an access log (and only then
/// is it made: its fields are in cache lines a request without a log line need not touch).
pub fn access<'a>(config: &crate::config::Config, entry: impl FnOnce() -> Access<'a>) {
    if config.access_log {
        log::info!(
            "{}",
            access_line(config.access_log_format, &entry(), SystemTime::now())
        );
    }
}

/// The access log line of `entry` at `at`.
pub fn access_line(format: AccessLogFormat, a: &Access<'_>, at: SystemTime) -> String {
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (y, mo, d, h, mi, s) = civil(since_epoch.as_secs());
    match format {
        AccessLogFormat::Combined => {
            const MONTHS: [&str; 12] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            let request = match a.request {
                Some((line, version)) => format!("{line} {}", version_name(version)),
                None => "-".to_string(),
            };
            let mut out = format!(
                "{} - - [{d:02}/{}/{y}:{h:02}:{mi:02}:{s:02} +0000] \"",
                a.client.ip(),
                MONTHS[(mo - 1) as usize]
            );
            escape_into(&mut out, request.as_bytes());
            out.push_str(&format!("\" {} {} \"", a.status, a.bytes));
            escape_into(&mut out, or_dash(a.referer));
            out.push_str("\" \"");
            escape_into(&mut out, or_dash(a.user_agent));
            out.push('"');
            out
        }
        AccessLogFormat::Json => {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            let entry = serde_json::json!({
                "time": format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z", since_epoch.subsec_millis()),
                "client": a.client.to_string(),
                "method": a.request.map(|(l, _)| text(l.method())),
                "target": a.request.map(|(l, _)| text(l.target())),
                "protocol": a.request.map(|(_, v)| version_name(v)),
                "status": a.status,
                "bytes": a.bytes,
                "backend": a.backend,
                "duration_ms": a.took.map(|t| t.as_secs_f64() * 1000.0),
                "referer": (!a.referer.is_empty()).then(|| text(a.referer)),
                "user_agent": (!a.user_agent.is_empty()).then(|| text(a.user_agent)),
            });
            entry.to_string()
        }
    }
}

fn version_name(version: Version) -> &'static str {
    match version {
        Version::Http10 => "HTTP/1.0",
        Version::Http11 => "HTTP/1.1",
    }
}

fn or_dash(value: &[u8]) -> &[u8] {
    if value.is_empty() { b"-" } else { value }
}

/// A field inside a quoted log field: quotes, backslashes, control and non-ASCII bytes as `\xHH`
/// (as nginx writes them), so that a line is one line and its fields stay apart.
fn escape_into(out: &mut String, value: &[u8]) {
    for &b in value {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.push_str(&format!("\\x{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
}

/// Year, month, day, hour, minute, second (UTC) of a Unix time (days to civil date after Howard
/// Hinnant's algorithm).
fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem / 60 % 60) as u32,
        (rem % 60) as u32,
    )
}

impl fmt::Display for RequestLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let method = String::from_utf8_lossy(&self.method[..usize::from(self.method_len)]);
        let target = String::from_utf8_lossy(self.target());
        let more = if self.truncated { "..." } else { "" };
        write!(f, "{method} {target}{more}")
    }
}

impl fmt::Debug for RequestLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestLine({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_lines_in_both_formats() {
        let line = RequestLine::new(b"GET", b"/a?b=\"1\"");
        // 2026-11-29 10:07:05.250 UTC
        let at = UNIX_EPOCH + Duration::from_millis(1_795_946_825_250);
        let proxied = Access {
            client: "192.0.2.7:5000".parse().unwrap(),
            request: Some((&line, Version::Http11)),
            status: 200,
            bytes: 1234,
            backend: Some("http://10.0.0.1:80"),
            took: Some(Duration::from_micros(2500)),
            referer: b"https://example.com/",
            user_agent: b"curl/8.0",
        };
        let own = Access {
            client: "[2001:db8::1]:443".parse().unwrap(),
            request: None,
            status: 400,
            bytes: 80,
            backend: None,
            took: None,
            referer: b"",
            user_agent: b"",
        };
        let cases: &[(AccessLogFormat, &Access, &str)] = &[
            (
                AccessLogFormat::Combined,
                &proxied,
                "192.0.2.7 - - [29/Nov/2026:10:07:05 +0000] \"GET /a?b=\\x221\\x22 HTTP/1.1\" 200 1234 \"https://example.com/\" \"curl/8.0\"",
            ),
            (
                AccessLogFormat::Combined,
                &own,
                "2001:db8::1 - - [29/Nov/2026:10:07:05 +0000] \"-\" 400 80 \"-\" \"-\"",
            ),
            (
                AccessLogFormat::Json,
                &proxied,
                r#"{"backend":"http://10.0.0.1:80","bytes":1234,"client":"192.0.2.7:5000","duration_ms":2.5,"method":"GET","protocol":"HTTP/1.1","referer":"https://example.com/","status":200,"target":"/a?b=\"1\"","time":"2026-11-29T10:07:05.250Z","user_agent":"curl/8.0"}"#,
            ),
            (
                AccessLogFormat::Json,
                &own,
                r#"{"backend":null,"bytes":80,"client":"[2001:db8::1]:443","duration_ms":null,"method":null,"protocol":null,"referer":null,"status":400,"target":null,"time":"2026-11-29T10:07:05.250Z","user_agent":null}"#,
            ),
        ];
        for &(format, entry, expected) in cases {
            assert_eq!(access_line(format, entry, at), expected, "{format:?}");
        }
        let hostile = Access {
            user_agent: b"a\r\nb\"c\xff",
            ..own
        };
        let text = access_line(AccessLogFormat::Combined, &hostile, at);
        assert!(text.ends_with("\"a\\x0D\\x0Ab\\x22c\\xFF\""), "{text}");
    }

    #[test]
    fn civil_dates() {
        type Civil = (i64, u32, u32, u32, u32, u32);
        let cases: &[(u64, Civil)] = &[
            (0, (1970, 1, 1, 0, 0, 0)),
            (951_782_400, (2000, 2, 29, 0, 0, 0)),
            (1_795_946_825, (2026, 11, 29, 10, 7, 5)),
            (4_107_542_399, (2100, 2, 28, 23, 59, 59)),
        ];
        for &(secs, expected) in cases {
            assert_eq!(civil(secs), expected, "{secs}");
        }
    }

    #[test]
    fn request_lines_are_kept_truncated() {
        let line = RequestLine::new(b"GET", b"/a?b=1");
        assert_eq!(line.to_string(), "GET /a?b=1");
        assert_eq!(line.target(), b"/a?b=1");
        let long = RequestLine::new(b"PROPPATCHPROPPATCHX", &[b'x'; 200]);
        let text = long.to_string();
        assert!(text.starts_with("PROPPATCHPROPPAT xxx") && text.ends_with("..."));
        assert_eq!(long.target().len(), 96);
    }
}
