//! Cookie stickiness: a pool with `sticky_cookie` sends a client back to the backend its cookie names.
//! The value is an opaque 64-bit name of the backend, a hash of its pool and URL (and address, for one
//! address of a `resolve` backend): it does not show the
//! backend's address, it stays the same across reloads and restarts, and every lb instance with the
//! same configuration gives the same one. Pure: finding the cookie in a request's `Cookie` fields, and
//! writing the `Set-Cookie` field.

use crate::random::{fnv1a, mix64};

/// The cookie value of the backend `url` in pool `pool`.
pub fn backend_id(pool: &str, url: &str) -> u64 {
    let mut key = Vec::with_capacity(pool.len() + url.len() + 1);
    key.extend_from_slice(pool.as_bytes());
    key.push(0);
    key.extend_from_slice(url.as_bytes());
    mix64(fnv1a(&key))
}

/// Whether `name` may be a cookie's name (an RFC 6265 token).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// The backend id in the first cookie called `name` among `fields` (the values of the request's
/// `Cookie` fields), if it is one we could have set (16 hex digits).
pub fn find<'a>(fields: impl Iterator<Item = &'a [u8]>, name: &[u8]) -> Option<u64> {
    for field in fields {
        for pair in field.split(|&b| b == b';') {
            let pair = trim(pair);
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if trim(&pair[..eq]) != name {
                continue;
            }
            let value = trim(&pair[eq + 1..]);
            let value = value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value);
            return parse_id(value);
        }
    }
    None
}

fn parse_id(value: &[u8]) -> Option<u64> {
    if value.len() != 16 {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    u64::from_str_radix(text, 16).ok()
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// The `Set-Cookie` field (with its CRLF) that sends the client back to backend `id`: for the whole
/// site, not readable by scripts.
pub fn set_cookie_field(name: &str, id: u64) -> String {
    format!("Set-Cookie: {name}={id:016x}; Path=/; HttpOnly\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_opaque_and_distinct() {
        let a = backend_id("api", "http://10.0.0.1:80");
        assert_eq!(a, backend_id("api", "http://10.0.0.1:80"));
        assert_ne!(a, backend_id("web", "http://10.0.0.1:80"));
        assert_ne!(a, backend_id("api", "http://10.0.0.2:80"));
        let field = set_cookie_field("lb", a);
        assert!(!field.contains("10.0.0.1"), "{field}");
        assert_eq!(
            field,
            format!("Set-Cookie: lb={a:016x}; Path=/; HttpOnly\r\n")
        );
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let id = 0x0123_4567_89ab_cdef_u64;
        // (Cookie fields, what is found for the name "lb")
        let cases: &[(&[&str], Option<u64>)] = &[
            (&["lb=0123456789abcdef"], Some(id)),
            (&["a=1; lb=0123456789abcdef; b=2"], Some(id)),
            (&["a=1", " lb = 0123456789ABCDEF "], Some(id)),
            (&["lb=\"0123456789abcdef\""], Some(id)),
            (&["lbx=0123456789abcdef; xlb=0123456789abcdef"], None),
            (&["lb=0123456789abcde"], None),
            (&["lb=0123456789abcdefg"], None),
            (&["lb=zzzzzzzzzzzzzzzz"], None),
            (&["lb"], None),
            (&["lb=; lb=0123456789abcdef"], None),
            (&[], None),
        ];
        for &(fields, expected) in cases {
            let got = find(fields.iter().map(|f| f.as_bytes()), b"lb");
            assert_eq!(got, expected, "{fields:?}");
        }
    }

    #[test]
    fn cookie_names_are_tokens() {
        for (name, ok) in [
            ("lb_api", true),
            ("SERVERID", true),
            ("", false),
            ("a b", false),
            ("a;b", false),
            ("a=b", false),
            ("é", false),
        ] {
            assert_eq!(valid_name(name), ok, "{name:?}");
        }
    }
}
