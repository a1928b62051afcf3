//! Test certificates, made at test time: a private CA (rcgen), leaf certificates for any names written
//! to PEM files in a folder of the test's own, and rustls client and server configurations that trust
//! that CA — for real TLS clients of lb and TLS backends behind it.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A private CA and a folder for the files made with it.
pub struct Pki {
    pub dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate's PEM file.
    pub ca_file: PathBuf,
}

/// A leaf certificate: its files, and its chain and key for a rustls server.
pub struct Leaf {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
}

impl Leaf {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

impl Pki {
    /// A new CA named `name`, its files in a new folder under the system's temporary folder.
    pub fn new(name: &str) -> Pki {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "lb-tls-{}-{}-{name}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("certificate folder");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("lb test CA {name}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("write CA");
        Pki { dir, ca, ca_file }
    }

    /// A leaf for `names` (DNS names, wildcards or IP addresses), written as `<file>.pem` and
    /// `<file>.key`.
    pub fn leaf(&self, file: &str, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.ca).expect("sign leaf");
        let cert_file = self.dir.join(format!("{file}.pem"));
        let key_file = self.dir.join(format!("{file}.key"));
        std::fs::write(&cert_file, cert.pem()).expect("write cert");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        Leaf {
            cert_file,
            key_file,
            chain: vec![cert.der().clone()],
            key_der: key.serialize_der(),
        }
    }

    /// Writes `contents` to a file of the folder.
    pub fn write(&self, file: &str, contents: &[u8]) -> PathBuf {
        let path = self.dir.join(file);
        std::fs::write(&path, contents).expect("write file");
        path
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("CA root");
        roots
    }

    /// A client trusting this CA, for the default versions.
    pub fn client(&self) -> Arc<ClientConfig> {
        self.client_for(rustls::DEFAULT_VERSIONS)
    }

    /// A client trusting this CA, offering only `versions`.
    pub fn client_for(&self, versions: &[&'static SupportedProtocolVersion]) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_protocol_versions(versions)
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A TLS server (a backend of lb's) presenting `leaf`.
    pub fn server(&self, leaf: &Leaf) -> Arc<ServerConfig> {
        Arc::new(
            ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(leaf.chain.clone(), leaf.key())
                .expect("server config"),
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
