//! Property tests of the pure HTTP code: parsers and the chunked decoder never panic on arbitrary bytes;
//! a valid message split at any boundary gives the same result as fed whole; chunking then decoding gives
//! back the original body; request framing decisions match a small reference model of RFC 9112 6.

use lb::http::body::{ChunkedDecoder, Relay, Step, relay_all};
use lb::http::request::parse_request;
use lb::http::response::parse_response;
use lb::http::{Framing, HeadError};
use proptest::prelude::*;

const MAX_HEAD: usize = 16 * 1024;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    }
}

/// Bytes that look enough like HTTP to get deep into the parsers.
fn http_ish() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop::sample::select(vec![
        &b"GET / HTTP/1.1\r\n"[..],
        b"POST /x HTTP/1.0\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"Host: a\r\n",
        b"Content-Length: 5\r\n",
        b"Content-Length: 0\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Connection: close\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b" ",
        b":",
        b"5\r\nhello\r\n",
        b"0\r\n\r\n",
        b"\0",
        b"\x7f",
    ]);
    prop::collection::vec(
        prop_oneof![
            pieces.prop_map(|p| p.to_vec()),
            prop::collection::vec(any::<u8>(), 0..8)
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

/// A valid request head with a generated method, target and extra fields.
fn valid_request() -> impl Strategy<Value = String> {
    let method = prop::sample::select(vec![
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH",
    ]);
    let target = "/[a-z0-9/._-]{0,20}(\\?[a-z0-9=&]{0,10})?";
    let field =
        ("X-[A-Za-z]{1,10}", "[ -~]{0,30}").prop_map(|(n, v)| format!("{n}: {}\r\n", v.trim()));
    let framing = prop_oneof![
        Just(String::new()),
        (0u32..100_000).prop_map(|n| format!("Content-Length: {n}\r\n")),
        Just("Transfer-Encoding: chunked\r\n".to_string()),
    ];
    (method, target, prop::collection::vec(field, 0..6), framing).prop_map(
        |(m, t, fields, framing)| {
            format!(
                "{m} {t} HTTP/1.1\r\nHost: example.test\r\n{}{framing}\r\n",
                fields.concat()
            )
        },
    )
}

fn chunk(body: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes
            .get(i)
            .copied()
            .unwrap_or(rest.len())
            .clamp(1, rest.len());
        out.extend_from_slice(format!("{n:X}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
        i += 1;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Decodes `input` fed in pieces cut at `cuts`, returning (output, bytes used, done).
fn decode_in_pieces(
    input: &[u8],
    cuts: &[usize],
    reencode: bool,
) -> Result<(Vec<u8>, usize, bool), String> {
    let mut relay = Relay::Chunked(ChunkedDecoder::new(reencode));
    let mut out = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut used = 0;
    let mut fed = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    bounds.push(input.len());
    bounds.sort_unstable();
    for bound in bounds {
        if bound <= fed {
            continue;
        }
        pending.extend_from_slice(&input[fed..bound]);
        fed = bound;
        let n = relay_all(&mut relay, &pending, &mut out).map_err(|e| e.to_string())?;
        used += n;
        pending.drain(..n);
        if relay.is_done() {
            break;
        }
    }
    Ok((out, used, relay.is_done()))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parsers_never_panic(bytes in prop_oneof![http_ish(), prop::collection::vec(any::<u8>(), 0..512)]) {
        let _ = parse_request(&bytes, MAX_HEAD);
        let _ = parse_response(&bytes, false, MAX_HEAD);
        let _ = parse_response(&bytes, true, 64);
        let mut out = Vec::new();
        let mut relay = Relay::Chunked(ChunkedDecoder::new(true));
        let _ = relay_all(&mut relay, &bytes, &mut out);
    }

    #[test]
    fn a_request_split_anywhere_parses_like_the_whole(head in valid_request(), body in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut whole = head.clone().into_bytes();
        whole.extend_from_slice(&body);
        let parsed = parse_request(&whole, MAX_HEAD).expect("valid").expect("complete");
        prop_assert_eq!(parsed.head_len, head.len());
        for cut in 0..head.len() {
            // Every strict prefix of the head is incomplete, never an error.
            prop_assert!(matches!(parse_request(&whole[..cut], MAX_HEAD), Ok(None)), "prefix {}", cut);
        }
        for cut in head.len()..=whole.len() {
            let again = parse_request(&whole[..cut], MAX_HEAD).expect("valid").expect("complete");
            prop_assert_eq!(again.head_len, parsed.head_len);
            prop_assert_eq!(again.framing, parsed.framing);
            prop_assert_eq!(again.keep_alive, parsed.keep_alive);
        }
    }

    #[test]
    fn chunking_then_decoding_returns_the_body(
        body in prop::collection::vec(any::<u8>(), 0..2048),
        sizes in prop::collection::vec(1usize..300, 0..16),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let encoded = chunk(&body, &sizes);
        let mut trailing = encoded.clone();
        trailing.extend_from_slice(b"GET /next HTTP/1.1\r\n");
        // Decoded to the payload, whole and in pieces.
        let (payload, used, done) = decode_in_pieces(&trailing, &[], false).unwrap();
        prop_assert!(done);
        prop_assert_eq!(&payload, &body);
        prop_assert_eq!(used, encoded.len(), "stops exactly at the end of the body");
        let (pieces, used_pieces, _) = decode_in_pieces(&trailing, &cuts, false).unwrap();
        prop_assert_eq!(&pieces, &body);
        prop_assert_eq!(used_pieces, encoded.len());
        // Re-encoded, it decodes to the same body again.
        let (reencoded, _, _) = decode_in_pieces(&encoded, &cuts, true).unwrap();
        let (again, _, done) = decode_in_pieces(&reencoded, &[], false).unwrap();
        prop_assert!(done);
        prop_assert_eq!(again, body);
    }

    #[test]
    fn truncated_chunked_bodies_never_complete(
        body in prop::collection::vec(any::<u8>(), 1..512),
        sizes in prop::collection::vec(1usize..100, 0..8),
        cut in any::<usize>(),
    ) {
        let encoded = chunk(&body, &sizes);
        let cut = cut % encoded.len(); // strictly shorter
        let mut relay = Relay::Chunked(ChunkedDecoder::new(false));
        let mut out = Vec::new();
        let used = relay_all(&mut relay, &encoded[..cut], &mut out).unwrap();
        prop_assert!(!relay.is_done());
        prop_assert_eq!(used, cut);
        prop_assert_eq!(relay.step(&[]).unwrap(), Step::NeedInput);
    }

    #[test]
    fn request_framing_matches_the_reference_model(
        version in prop::sample::select(vec!["1.0", "1.1"]),
        lengths in prop::collection::vec(prop::sample::select(vec!["0", "5", "7", "+5", "5x", "5, 5", "5, 6", "", "99999999999999999999"]), 0..3),
        codings in prop::collection::vec(prop::sample::select(vec!["chunked", "gzip", "gzip, chunked", "chunked, gzip", "identity", "CHUNKED", "\"chunked\""]), 0..3),
    ) {
        let mut head = format!("POST / HTTP/{version}\r\nHost: h\r\n");
        for l in &lengths {
            head.push_str(&format!("Content-Length: {l}\r\n"));
        }
        for c in &codings {
            head.push_str(&format!("Transfer-Encoding: {c}\r\n"));
        }
        head.push_str("\r\n");
        let got = parse_request(head.as_bytes(), MAX_HEAD).map(|h| h.map(|h| h.framing));
        prop_assert_eq!(got, reference_framing(version, &lengths, &codings), "{}", head);
    }
}

/// RFC 9112 6.1-6.3 as the proxy applies it to requests, written as plainly as possible.
fn reference_framing(
    version: &str,
    lengths: &[&str],
    codings: &[&str],
) -> Result<Option<Framing>, HeadError> {
    // Content-Length: every field (and every list member) the same run of digits, no overflow.
    let mut length: Option<u64> = None;
    for field in lengths {
        for member in field.split(',') {
            let member = member.trim();
            if member.is_empty() || member.len() > 19 || !member.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(HeadError::BadContentLength);
            }
            let n: u64 = member.parse().map_err(|_| HeadError::BadContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::BadContentLength);
            }
            length = Some(n);
        }
    }
    if !codings.is_empty() {
        if version == "1.0" {
            return Err(HeadError::TransferEncodingInHttp10);
        }
        if length.is_some() {
            return Err(HeadError::ContentLengthWithTransferEncoding);
        }
        let all: Vec<String> = codings
            .iter()
            .flat_map(|c| c.split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        let chunked_count = all.iter().filter(|c| *c == "chunked").count();
        let valid_tokens = all.iter().all(|c| !c.contains('"'));
        if !valid_tokens || chunked_count != 1 || all.last().map(String::as_str) != Some("chunked")
        {
            return Err(HeadError::BadTransferEncoding);
        }
        if all.len() > 1 {
            return Err(HeadError::UnsupportedTransferEncoding);
        }
        return Ok(Some(Framing::Chunked));
    }
    Ok(Some(match length {
        None | Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
    }))
}
