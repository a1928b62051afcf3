//! Header field names lb acts on (framing, hop-by-hop, `Host`, `Expect`, `X-Forwarded-*`), told apart
//! in one dispatch on a name's length: every field of every head passes through here, on the way in
//! (validation) and on the way out (rewriting).

/// The header fields lb acts on, told apart by one dispatch on the name's length and then at most two
/// case-insensitive comparisons: the head is scanned and rewritten once per request, and comparing
/// every name against each known one in turn cost more than the rest of the scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Upgrade,
    ProxyAuthenticate,
    Host,
    Expect,
    XForwardedFor,
    XForwardedProto,
    /// Any other name.
    Other,
}

impl Field {
    pub(crate) fn of(name: &[u8]) -> Field {
        let is = |known: &[u8]| same_name(name, known);
        match name.len() {
            2 if is(b"te") => Field::Te,
            4 if is(b"host") => Field::Host,
            6 if is(b"expect") => Field::Expect,
            7 if is(b"upgrade") => Field::Upgrade,
            10 if is(b"connection") => Field::Connection,
            10 if is(b"keep-alive") => Field::KeepAlive,
            14 if is(b"content-length") => Field::ContentLength,
            15 if is(b"x-forwarded-for") => Field::XForwardedFor,
            16 if is(b"proxy-connection") => Field::ProxyConnection,
            17 if is(b"transfer-encoding") => Field::TransferEncoding,
            17 if is(b"x-forwarded-proto") => Field::XForwardedProto,
            18 if is(b"proxy-authenticate") => Field::ProxyAuthenticate,
            _ => Field::Other,
        }
    }

    /// Headers that describe one hop and are never forwarded as received (RFC 9110 7.6.1), plus the
    /// framing headers that the proxy regenerates itself.
    pub(crate) fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Field::Connection
                | Field::KeepAlive
                | Field::ProxyConnection
                | Field::Te
                | Field::Upgrade
                | Field::TransferEncoding
                | Field::ContentLength
                | Field::ProxyAuthenticate
        )
    }
}

/// `name` equals `known` ignoring ASCII case, where `known` holds only lowercase letters, digits and
/// `-` (as every name [`Field`] knows). Compared eight bytes at a time: a letter of `known` has bit
/// 0x40 set, so `(known & 0x40) >> 1` sets the case bit 0x20 of `name` exactly where `known` has a
/// letter, and anything else must match exactly; the same answer as `eq_ignore_ascii_case`, in a
/// few instructions instead of a few per byte.
#[inline(always)]
fn same_name(name: &[u8], known: &[u8]) -> bool {
    fn word(bytes: &[u8], at: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(w)
    }
    fn same(n: u64, k: u64) -> bool {
        n | ((k & 0x4040_4040_4040_4040) >> 1) == k
    }
    let len = known.len();
    if name.len() != len {
        return false;
    }
    if len < 8 {
        return name
            .iter()
            .zip(known)
            .all(|(&n, &k)| n | ((k & 0x40) >> 1) == k);
    }
    // Whole words, then the last eight bytes (overlapping the previous word).
    let mut at = 0;
    while at + 8 < len {
        if !same(word(name, at), word(known, at)) {
            return false;
        }
        at += 8;
    }
    same(word(name, len - 8), word(known, len - 8))
}

/// A field like `Transfer_Encoding` or `Content_Length`: harmless to us, but a backend that maps `_` to
/// `-` (CGI-style) would read it as framing or routing. It is dropped, as nginx does by default with
/// every underscore field; other underscore fields pass.
pub fn framing_lookalike(name: &[u8]) -> bool {
    const SENSITIVE: [&[u8]; 5] = [
        b"transfer-encoding",
        b"content-length",
        b"host",
        b"connection",
        b"upgrade",
    ];
    // Only names as long as a sensitive one can be one: most are ruled out before the scan for `_`.
    matches!(name.len(), 4 | 7 | 10 | 14 | 17)
        && name.contains(&b'_')
        && SENSITIVE.iter().any(|s| {
            s.len() == name.len()
                && s.iter().zip(name).all(|(a, b)| {
                    let b = if *b == b'_' {
                        b'-'
                    } else {
                        b.to_ascii_lowercase()
                    };
                    *a == b
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_told_apart_as_eq_ignore_ascii_case_would() {
        let known: &[(&[u8], Field)] = &[
            (b"te", Field::Te),
            (b"host", Field::Host),
            (b"expect", Field::Expect),
            (b"upgrade", Field::Upgrade),
            (b"connection", Field::Connection),
            (b"keep-alive", Field::KeepAlive),
            (b"content-length", Field::ContentLength),
            (b"x-forwarded-for", Field::XForwardedFor),
            (b"proxy-connection", Field::ProxyConnection),
            (b"transfer-encoding", Field::TransferEncoding),
            (b"x-forwarded-proto", Field::XForwardedProto),
            (b"proxy-authenticate", Field::ProxyAuthenticate),
        ];
        for (name, field) in known {
            assert_eq!(Field::of(name), *field);
            assert_eq!(Field::of(&name.to_ascii_uppercase()), *field);
            // Every byte changed in turn: to its other case (still the field), to anything else (not).
            for i in 0..name.len() {
                for b in 0..=255u8 {
                    let mut other = name.to_vec();
                    other[i] = b;
                    let expected = if other.eq_ignore_ascii_case(name) {
                        *field
                    } else {
                        Field::Other
                    };
                    assert_eq!(Field::of(&other), expected, "{other:?}");
                }
            }
            assert_eq!(Field::of(&name[1..]), Field::Other);
            assert_eq!(Field::of(&[*name, b"x"].concat()), Field::Other);
        }
        for other in [
            &b"Content-Type"[..],
            b"Accept",
            b"User-Agent",
            b"Transfer_Encoding",
            b"",
        ] {
            assert_eq!(Field::of(other), Field::Other);
        }
    }
}
