//! HTTPS: TLS termination with certificates chosen by SNI, keep-alive, pipelining, large bodies,
//! `100-continue` and WebSocket over TLS, reloads, `min_version`, `redirect_http`, TLS to backends (a
//! private CA, a wrong one, no verification), and clients that never finish a handshake. Certificates
//! are made at test time; the clients are real TLS clients (rustls).
//!
//! Every case runs against both engines: `event_loop::...` and `threaded::...`.

mod common;

use common::tls::{Leaf, Pki};
use common::*;
use std::sync::Arc;

for_each_engine!("cases/tls.rs");

/// `[tls]` for `leaves` (the first the default), with `extra` keys in the section.
fn tls_section(leaves: &[&Leaf], extra: &str) -> String {
    let certificates: Vec<String> = leaves
        .iter()
        .map(|l| {
            format!(
                "{{ cert = \"{}\", key = \"{}\" }}",
                l.cert_file.display(),
                l.key_file.display()
            )
        })
        .collect();
    format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\ncertificates = [{}]\n{extra}\n",
        certificates.join(", ")
    )
}

/// A backend that answers every request with `200` and, as the body, the value of the
/// `X-Forwarded-Proto` it received followed by the request's body.
fn proto_echo() -> Backend {
    Backend::start(|mut peer| {
        while let Some(req) = peer.read_request() {
            let mut body = req
                .header("x-forwarded-proto")
                .unwrap_or_default()
                .into_bytes();
            body.extend_from_slice(&req.raw_body);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            if !peer.write(head.as_bytes()) || !peer.write(&body) {
                return;
            }
        }
    })
}

/// The end-entity certificate the server presented.
fn presented(client: &Client) -> Vec<u8> {
    client
        .tls
        .as_ref()
        .and_then(|t| t.peer_certificates())
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .expect("a peer certificate")
}

/// A client that accepts any certificate (to see which one lb chose for names it does not cover):
/// lb's own `tls_verify = false` configuration.
fn trusting_client() -> Arc<rustls::ClientConfig> {
    lb::tls::client_config(None).expect("client configuration")
}

/// `lb --check` on a configuration whose TLS files are wrong: exit 1, with the key and the file named.
#[test]
fn check_names_the_key_and_the_file_at_fault() {
    use common::process::lb_command;
    let pki = Pki::new("check");
    let a = pki.leaf("a", &["a.example"]);
    let b = pki.leaf("b", &["b.example"]);
    let garbage = pki.write("garbage.key", b"-----BEGIN PRIVATE KEY-----\nnot base64\n");
    let backend = "[[backends]]\nurl = \"http://127.0.0.1:1\"\n";
    let section = |pairs: &[(&std::path::Path, &std::path::Path)]| {
        let list: Vec<String> = pairs
            .iter()
            .map(|(c, k)| {
                format!(
                    "{{ cert = \"{}\", key = \"{}\" }}",
                    c.display(),
                    k.display()
                )
            })
            .collect();
        format!(
            "[tls]\nlisten = \"127.0.0.1:0\"\ncertificates = [{}]\n",
            list.join(", ")
        )
    };
    let missing = pki.dir.join("missing.pem");
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "missing-cert.toml",
            section(&[(&missing, &a.key_file)]),
            vec![
                "tls.certificates[0].cert".into(),
                missing.display().to_string(),
            ],
        ),
        (
            "garbage-key.toml",
            section(&[(&a.cert_file, &garbage)]),
            vec![
                "tls.certificates[0].key".into(),
                garbage.display().to_string(),
            ],
        ),
        (
            "mismatch.toml",
            section(&[(&a.cert_file, &a.key_file), (&b.cert_file, &a.key_file)]),
            vec![
                "tls.certificates[1].key".into(),
                a.key_file.display().to_string(),
                "does not match".into(),
            ],
        ),
        (
            "key-as-cert.toml",
            section(&[(&a.key_file, &a.key_file)]),
            vec![
                "tls.certificates[0].cert".into(),
                a.key_file.display().to_string(),
            ],
        ),
        (
            "no-certificates.toml",
            "[tls]\nlisten = \"127.0.0.1:0\"\ncertificates = []\n".into(),
            vec!["tls.certificates".into()],
        ),
        (
            "version.toml",
            format!(
                "{}min_version = \"1.1\"\n",
                section(&[(&a.cert_file, &a.key_file)])
            ),
            vec!["min_version".into(), "1.1".into()],
        ),
    ];
    for (name, tls, expected) in cases {
        let path = pki.write(name, format!("{tls}{backend}").as_bytes());
        let out = lb_command().arg("--check").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        for needle in expected {
            assert!(stderr.contains(&needle), "{name}: {needle:?} in {stderr}");
        }
    }
    // Backend keys.
    let cases = [
        (
            "missing-ca.toml",
            "[[backends]]\nurl = \"https://127.0.0.1:1\"\ntls_ca = \"nowhere/ca.pem\"\n",
            "backends[0].tls_ca",
        ),
        (
            "ca-on-http.toml",
            "[[backends]]\nurl = \"http://127.0.0.1:1\"\ntls_verify = false\n",
            "backends[0].tls_verify",
        ),
        (
            "bad-name.toml",
            "[[backends]]\nurl = \"https://127.0.0.1:1\"\ntls_server_name = \"bad name!\"\n",
            "backends[0].tls_server_name",
        ),
    ];
    for (name, text, key) in cases {
        let path = pki.write(name, text.as_bytes());
        let out = lb_command().arg("--check").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains(key), "{name}: {key:?} in {stderr}");
    }
    // Relative paths are taken from the config file's folder; tls_verify = false is valid, with a
    // warning.
    let relative = "[tls]\nlisten = \"127.0.0.1:0\"\ncertificates = [{ cert = \"a.pem\", key = \"a.key\" }]\n\
         [[backends]]\nurl = \"https://127.0.0.1:1\"\ntls_ca = \"ca.pem\"\n\
         [[backends]]\nurl = \"https://127.0.0.1:2\"\ntls_verify = false\n";
    let path = pki.write("relative.toml", relative.as_bytes());
    let out = lb_command()
        .arg("--check")
        .arg(&path)
        .current_dir("/")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: backends[1].tls_verify = false"),
        "{stderr}"
    );
}

/// SIGHUP reloads the certificates (new connections get the new one); a reload with a broken key keeps
/// the running set and says why.
#[test]
fn sighup_reloads_certificates_and_keeps_them_when_a_file_is_broken() {
    use common::process::LbProcess;
    for engine in ["event_loop", "threaded"] {
        let pki = Pki::new(&format!("sighup-{engine}"));
        let first = pki.leaf("site", &["site.test"]);
        let backend = proto_echo();
        let text = format!(
            "listen = \"127.0.0.1:0\"\nengine = \"{engine}\"\naccess_log = false\n[health_check]\ninterval = \"1h\"\n{}[[backends]]\nurl = \"http://{}\"\n",
            tls_section(&[&first], ""),
            backend.addr
        );
        let lb = LbProcess::start(&text);
        let tls_addr = lb.tls.expect("HTTPS listener in the log");
        let served = || {
            let mut client = Client::connect_tls(tls_addr, pki.client(), "site.test");
            client.send(b"GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n");
            assert_eq!(client.response(false).text(), "https");
            presented(&client)
        };
        assert_eq!(served(), first.chain[0].to_vec());
        let second = pki.leaf("site", &["site.test"]);
        lb.signal(libc::SIGHUP);
        wait_until("the new certificate", || {
            served() == second.chain[0].to_vec()
        });
        std::fs::write(&second.key_file, b"broken").unwrap();
        lb.signal(libc::SIGHUP);
        wait_until("the failed reload to be logged", || {
            lb.logged("reload failed, keeping the running configuration")
                && lb.logged("tls.certificates[0].key")
        });
        assert_eq!(
            served(),
            second.chain[0].to_vec(),
            "{engine}: the running set stays"
        );
    }
}

/// A backend whose certificate does not verify gets 502, and the log says why.
#[test]
fn a_backend_failing_verification_is_logged_with_the_reason() {
    use common::process::LbProcess;
    let pki = Pki::new("verify-log");
    let other = Pki::new("verify-log-other");
    let leaf = pki.leaf("backend", &["backend.test"]);
    let backend = Backend::start_tls(pki.server(&leaf), |mut peer| {
        while peer.read_request().is_some() {
            if !peer.ok("no") {
                return;
            }
        }
    });
    for engine in ["event_loop", "threaded"] {
        let lb = LbProcess::start(&format!(
            "listen = \"127.0.0.1:0\"\nengine = \"{engine}\"\nretries = 0\n[health_check]\ninterval = \"1h\"\n[[backends]]\nurl = \"https://{}\"\ntls_ca = \"{}\"\ntls_server_name = \"backend.test\"\n",
            backend.addr,
            other.ca_file.display()
        ));
        let mut client = Client::connect(lb.addr);
        client.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n");
        let status = client.try_response(false).map(|r| r.status);
        assert_eq!(status, Some(502), "{engine}; lb's log:\n{}", lb.log_text());
        wait_until("the reason in the log", || {
            lb.logged("invalid peer certificate") && lb.logged("UnknownIssuer")
        });
    }
    assert_eq!(backend.request_count(), 0);
}

#[test]
fn shipped_example_passes_check_with_certificates_beside_it() {
    use common::process::lb_command;
    let pki = Pki::new("example");
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tls.toml");
    let config = pki.write(
        "tls.toml",
        &std::fs::read(&example).expect("examples/tls.toml"),
    );
    // Without its certificate the example fails, naming the key and the path beside the file:
    // relative paths resolve against the config's folder, not the working directory.
    let out = lb_command().arg("--check").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("tls.certificates[0].cert"), "{stderr}");
    assert!(
        stderr.contains(&pki.dir.join("cert.pem").display().to_string()),
        "{stderr}"
    );
    let leaf = pki.leaf("localhost", &["localhost"]);
    std::fs::copy(&leaf.cert_file, pki.dir.join("cert.pem")).expect("cert.pem");
    std::fs::copy(&leaf.key_file, pki.dir.join("key.pem")).expect("key.pem");
    let out = lb_command().arg("--check").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
