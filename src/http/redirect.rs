//! The answer a plain-HTTP request gets when `[tls] redirect_http` is on: `308 Permanent Redirect` to
//! the same host and target over HTTPS, at the HTTPS listener's port. 308 rather than 301, so that a
//! client repeats the method and body as they were (RFC 9110 15.4.9). The connection closes after it,
//! as after every response of lb's own: the client's next request goes to the other port anyway.

use super::HeadWriter;

/// Writes the redirect for a request to `host` (a `Host` value or an absolute-form authority, with or
/// without a port, an IPv6 address in brackets) and `target` (origin-form: path and query) into `out`.
/// The HTTPS port is left out when it is 443. `None` when it does not fit.
pub fn write_https_redirect(
    host: &[u8],
    target: &[u8],
    port: u16,
    out: &mut [u8],
) -> Option<usize> {
    let name = without_port(host);
    let mut w = HeadWriter::new(out);
    w.put(b"HTTP/1.1 308 Permanent Redirect\r\nLocation: https://");
    w.put(name);
    if port != 443 {
        w.put(b":");
        w.put_u64(u64::from(port));
    }
    if target.first() != Some(&b'/') {
        // `OPTIONS *` and the like: the site's root.
        w.put(b"/");
    } else {
        w.put(target);
    }
    w.put(b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    w.finish()
}

/// `host` without its `:port`.
fn without_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().position(|&b| b == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects() {
        let cases: &[(&str, &str, u16, &str)] = &[
            ("example.com", "/a?b=1", 443, "https://example.com/a?b=1"),
            ("example.com:8080", "/", 8443, "https://example.com:8443/"),
            ("127.0.0.1:80", "/x", 8443, "https://127.0.0.1:8443/x"),
            ("[::1]:8080", "/x", 443, "https://[::1]/x"),
            ("[::1]", "/", 8443, "https://[::1]:8443/"),
            ("example.com", "*", 443, "https://example.com/"),
        ];
        for (host, target, port, location) in cases {
            let mut out = [0u8; 256];
            let n = write_https_redirect(host.as_bytes(), target.as_bytes(), *port, &mut out)
                .expect("fits");
            let expected = format!(
                "HTTP/1.1 308 Permanent Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            assert_eq!(
                std::str::from_utf8(&out[..n]).unwrap(),
                expected,
                "{host} {target}"
            );
        }
        let mut small = [0u8; 40];
        assert_eq!(
            write_https_redirect(b"example.com", b"/", 443, &mut small),
            None
        );
    }
}
