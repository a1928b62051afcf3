//! TLS material, built once per configuration load and shared by both engines: certificate chains and
//! keys read from PEM files and checked against each other, the server configuration (versions, ALPN,
//! certificate choice by SNI, session resumption), and each TLS backend's client configuration (its
//! roots, or no verification). Nothing here parses a key during a handshake. [`TlsStream`] is the
//! session over a socket that drivers use (through `crate::transport`).
//!
//! Choices, measured on the development VM (see README, "TLS"): the aws-lc-rs provider (full TLS 1.3
//! handshakes in 51 µs of server CPU against ring's 69, resumed ones 41 against 58, and AES-GCM 1.7x
//! as fast); AES-128-GCM preferred over AES-256-GCM, so that TLS 1.3 hashes with SHA-256, which the
//! CPU accelerates, instead of SHA-384 (full handshakes 51 µs instead of 69, resumed ones 41 instead of
//! 64); stateless session tickets whose
//! key rotates (and survives reloads, so clients keep resuming), plus a bounded session-ID cache for
//! TLS 1.2 clients without tickets.

mod records;
mod session;
pub mod sni;
pub mod stream;

pub use session::{Session, client_session, server_session};
pub use stream::TlsStream;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    SupportedProtocolVersion,
};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Sessions remembered for resumption by session ID (TLS 1.2 clients that do not take tickets).
const SESSION_CACHE_ENTRIES: usize = 4096;

/// The oldest protocol version the HTTPS listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinVersion {
    Tls12,
    Tls13,
}

impl MinVersion {
    pub fn name(self) -> &'static str {
        match self {
            MinVersion::Tls12 => "1.2",
            MinVersion::Tls13 => "1.3",
        }
    }

    fn versions(self) -> &'static [&'static SupportedProtocolVersion] {
        static BOTH: [&SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            MinVersion::Tls12 => &BOTH,
            MinVersion::Tls13 => &TLS13_ONLY,
        }
    }
}

/// The crypto provider: aws-lc-rs, with AES-128-GCM first (see the module's notes).
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            use aws_lc_rs::cipher_suite::*;
            let mut provider = aws_lc_rs::default_provider();
            provider.cipher_suites = vec![
                TLS13_AES_128_GCM_SHA256,
                TLS13_AES_256_GCM_SHA384,
                TLS13_CHACHA20_POLY1305_SHA256,
                TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            ];
            Arc::new(provider)
        })
        .clone()
}

/// The ticket key (rotating) and the session cache: one per process, so that a reload, which builds a
/// new server configuration, does not make every client's ticket useless.
fn resumption() -> Result<(Arc<dyn ProducesTickets>, Arc<ServerSessionMemoryCache>), String> {
    static TICKETS: OnceLock<Arc<dyn ProducesTickets>> = OnceLock::new();
    static CACHE: OnceLock<Arc<ServerSessionMemoryCache>> = OnceLock::new();
    let tickets = match TICKETS.get() {
        Some(t) => t.clone(),
        None => {
            let t = aws_lc_rs::Ticketer::new()
                .map_err(|e| format!("cannot set up session tickets: {e}"))?;
            TICKETS.get_or_init(|| t).clone()
        }
    };
    let cache = CACHE
        .get_or_init(|| ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES))
        .clone();
    Ok((tickets, cache))
}

/// Reads a PEM certificate chain, the end-entity certificate first.
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(chain)
}

/// Reads a PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{}: no usable PEM private key: {e}", path.display()))
}

/// One certificate ready to serve: its chain with its key (checked to match), and the names it covers.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub names: sni::Names,
    pub key: Arc<CertifiedKey>,
}

impl Certificate {
    /// Pairs a chain with its key. The error says which of the two is wrong: `Err((true, _))` for the
    /// key, `Err((false, _))` for the chain.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        key_path: &Path,
    ) -> Result<Certificate, (bool, String)> {
        let names = {
            let leaf = webpki::EndEntityCert::try_from(&chain[0])
                .map_err(|e| (false, format!("cannot parse the certificate: {e:?}")))?;
            sni::Names::new(leaf.valid_dns_names())
        };
        let provider = provider();
        let signing = provider.key_provider.load_private_key(key).map_err(|e| {
            (
                true,
                format!("{}: unsupported private key: {e}", key_path.display()),
            )
        })?;
        let key = CertifiedKey::new(chain, signing);
        match key.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(_) => {
                return Err((
                    true,
                    format!(
                        "{}: the key does not match the certificate",
                        key_path.display()
                    ),
                ));
            }
        }
        Ok(Certificate {
            names,
            key: Arc::new(key),
        })
    }
}

/// Picks the certificate for each handshake by SNI (see `sni`).
#[derive(Debug)]
struct ByName(sni::Chooser<Arc<CertifiedKey>>);

impl ResolvesServerCert for ByName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.choose(hello.server_name()).cloned()
    }
}

/// The HTTPS listener's configuration: `certificates` in order (the first is the default).
pub fn server_config(
    certificates: &[Certificate],
    min_version: MinVersion,
) -> Result<Arc<ServerConfig>, String> {
    let chooser = sni::Chooser::new(
        certificates
            .iter()
            .map(|c| (c.names.clone(), c.key.clone()))
            .collect(),
    );
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(min_version.versions())
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ByName(chooser)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    let (tickets, cache) = resumption()?;
    config.ticketer = tickets;
    config.session_storage = cache;
    Ok(Arc::new(config))
}

/// Root certificates from a PEM file (a private CA), or the system's when `path` is `None`.
pub fn load_roots(path: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match path {
        Some(path) => {
            for cert in load_chain(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: unusable CA certificate: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no system root certificates found ({}); install them (ca-certificates) or set tls_ca",
                    found
                        .errors
                        .first()
                        .map_or("none in the usual places".to_string(), |e| e.to_string())
                ));
            }
        }
    }
    Ok(roots)
}

/// A backend's client configuration: certificates checked against `roots`, or not at all (`None`).
pub fn client_config(roots: Option<RootCertStore>) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = match roots {
        Some(roots) => builder.with_root_certificates(roots).with_no_client_auth(),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A backend name as TLS presents it: a DNS name or an IP address.
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(bare.to_string())
        .map_err(|_| format!("{name:?} is not a DNS name or an IP address"))
}

/// `tls_verify = false`: any certificate is accepted, but the handshake's signatures are still checked,
/// so the session is at least with whoever holds the key of the certificate presented.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
