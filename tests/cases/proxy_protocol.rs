// PROXY protocol cases, included once per engine by tests/proxy_protocol.rs.

const HEAD: &str = "listen = \"127.0.0.1:0\"\naccess_log = false\nproxy_protocol = true\n\
                    [health_check]\ninterval = \"1h\"\n";

fn proxied_lb(extra: &str, backend: &Backend) -> Lb {
    lb_text(&format!(
        "{HEAD}{extra}[[backends]]\nurl = \"http://{}\"\n",
        backend.addr
    ))
}

/// A v2 header (PROXY command, TCP over IPv6) for `[2001:db8::7]:40000` to `[2001:db8::1]:443`.
fn v2_ipv6() -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x21, 0x00, 36]);
    let client: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
    let server: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
    header.extend_from_slice(&client.octets());
    header.extend_from_slice(&server.octets());
    header.extend_from_slice(&40000u16.to_be_bytes());
    header.extend_from_slice(&443u16.to_be_bytes());
    header
}

fn forwarded_for(backend: &Backend) -> Option<String> {
    backend.requests().last().and_then(|r| r.header("x-forwarded-for"))
}

#[test]
fn a_v1_header_names_the_client_for_every_request_of_the_connection() {
    let backend = Backend::named("ok");
    let lb = proxied_lb("", &backend);
    let mut client = lb.client();
    client.send(b"PROXY TCP4 203.0.113.9 192.0.2.1 51000 80\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(client.response(false).status, 200);
    assert_eq!(forwarded_for(&backend).as_deref(), Some("203.0.113.9"));
    // Keep-alive: the header came once, and still names the client.
    client.send(b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(client.response(false).status, 200);
    assert_eq!(forwarded_for(&backend).as_deref(), Some("203.0.113.9"));
}

#[test]
fn a_v2_header_in_pieces_names_an_ipv6_client() {
    let backend = Backend::named("ok");
    let lb = proxied_lb("", &backend);
    let mut client = lb.client();
    let header = v2_ipv6();
    // The header is sent in two writes, the request after it (a header cut anywhere is the parser's
    // tables' business; here the driver must wait for the rest without reading past it).
    client.send(&header[..10]);
    client.send(&header[10..]);
    client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(client.response(false).status, 200);
    assert_eq!(forwarded_for(&backend).as_deref(), Some("2001:db8::7"));
}

#[test]
fn a_local_header_keeps_the_connections_own_address() {
    let backend = Backend::named("ok");
    let lb = proxied_lb("", &backend);
    let mut client = lb.client();
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    client.send(&local);
    client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(client.response(false).status, 200);
    assert_eq!(forwarded_for(&backend).as_deref(), Some("127.0.0.1"));
}

#[test]
fn a_connection_without_a_valid_header_is_closed_unanswered() {
    let backend = Backend::named("ok");
    let lb = proxied_lb("", &backend);
    for bytes in [
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\n".as_slice(),
        b"PROXY TCP4 203.0.113.9 192.0.2.1 99999 80\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"PROXY TCP4 not-an-address 192.0.2.1 1 80\r\n",
    ] {
        let mut client = lb.client();
        client.send(bytes);
        assert_eq!(client.read_all(), b"", "{:?}", String::from_utf8_lossy(bytes));
    }
    assert_eq!(backend.request_count(), 0);
}

#[test]
fn the_header_comes_before_the_tls_handshake() {
    let backend = Backend::named("ok");
    let pki = common::tls::Pki::new("proxy-protocol");
    let leaf = pki.leaf("a", &["a.example"]);
    let lb = proxied_lb(
        &format!(
            "[tls]\nlisten = \"127.0.0.1:0\"\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
            leaf.cert_file.display(),
            leaf.key_file.display()
        ),
        &backend,
    );
    let mut client = Client::connect_tls(lb.tls_addr.unwrap(), pki.client(), "a.example");
    client.send_raw(b"PROXY TCP4 203.0.113.50 192.0.2.1 40000 443\r\n");
    client.send(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n");
    assert_eq!(client.response(false).status, 200);
    let seen = backend.requests().last().cloned().unwrap();
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("203.0.113.50"));
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
}

#[test]
fn limits_count_the_client_the_header_names() {
    let backend = Backend::named("ok");
    let lb = proxied_lb("[limits]\nconnections_per_client = 1\n", &backend);
    // Two clients behind the same balancer address: one connection each is fine.
    let mut held = Vec::new();
    for client_ip in ["203.0.113.1", "203.0.113.2"] {
        let mut c = lb.client();
        c.send(format!("PROXY TCP4 {client_ip} 192.0.2.1 5000 80\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!(c.response(false).status, 200, "{client_ip}");
        held.push(c);
    }
    // A second connection of the first client is closed.
    let mut again = lb.client();
    again.send(b"PROXY TCP4 203.0.113.1 192.0.2.1 5001 80\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(again.read_all(), b"");
}
