//! The `[tls]` section (the HTTPS listener and its certificates) and the backends' TLS keys
//! (`https://` URLs, `tls_ca`, `tls_server_name`, `tls_verify`), turned into ready TLS configurations
//! at load time: files are read and keys parsed here, once per load, and every problem is reported
//! with the key and the file it concerns. Relative paths are taken from the config file's folder.

use super::ConfigError;
use super::values::{BackendUrl, socket_addr};
use crate::tls::{self, Certificate, MinVersion};
use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use serde::Deserialize;
use serde::de::{self, Deserializer};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    #[serde(deserialize_with = "socket_addr")]
    listen: SocketAddr,
    #[serde(default)]
    certificates: Vec<RawCertificate>,
    #[serde(default = "default_min_version", deserialize_with = "min_version")]
    min_version: MinVersion,
    #[serde(default)]
    redirect_http: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    cert: PathBuf,
    key: PathBuf,
}

impl RawTls {
    pub(super) fn listen(&self) -> SocketAddr {
        self.listen
    }
}

fn default_min_version() -> MinVersion {
    MinVersion::Tls12
}

#[derive(Deserialize)]
#[serde(untagged)]
enum VersionInput {
    Text(String),
    Number(f64),
}

fn min_version<'de, D: Deserializer<'de>>(d: D) -> Result<MinVersion, D::Error> {
    let text = match VersionInput::deserialize(d)? {
        VersionInput::Text(s) => s,
        VersionInput::Number(n) => n.to_string(),
    };
    match text.trim() {
        "1.2" => Ok(MinVersion::Tls12),
        "1.3" => Ok(MinVersion::Tls13),
        other => Err(de::Error::custom(format!(
            "unknown TLS version {other:?}, expected \"1.2\" or \"1.3\""
        ))),
    }
}

/// The HTTPS listener, its certificates loaded.
#[derive(Clone)]
pub struct TlsListener {
    pub listen: SocketAddr,
    pub min_version: MinVersion,
    /// Requests on the plain listener get `308` to the same URL over HTTPS.
    pub redirect_http: bool,
    /// Each certificate's file and the names it covers, for logs.
    pub certificates: Vec<(PathBuf, String)>,
    pub server: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("listen", &self.listen)
            .field("min_version", &self.min_version)
            .field("redirect_http", &self.redirect_http)
            .field("certificates", &self.certificates)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// One line per certificate, for the start-up and reload logs.
    pub fn describe(&self) -> Vec<String> {
        self.certificates
            .iter()
            .enumerate()
            .map(|(i, (path, names))| {
                let default = if i == 0 { " (default)" } else { "" };
                format!("certificate {}{default}: {names}", path.display())
            })
            .collect()
    }
}

fn invalid(key: impl Into<String>, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message,
    }
}

pub(super) fn listener(raw: RawTls, base: &Path) -> Result<TlsListener, ConfigError> {
    if raw.certificates.is_empty() {
        return Err(invalid(
            "tls.certificates",
            "at least one { cert = \"...\", key = \"...\" } is required".into(),
        ));
    }
    let mut certificates = Vec::with_capacity(raw.certificates.len());
    let mut described = Vec::with_capacity(raw.certificates.len());
    for (index, files) in raw.certificates.iter().enumerate() {
        let key_name = |part: &str| format!("tls.certificates[{index}].{part}");
        let cert_path = base.join(&files.cert);
        let key_path = base.join(&files.key);
        let chain = tls::load_chain(&cert_path).map_err(|m| invalid(key_name("cert"), m))?;
        let key = tls::load_key(&key_path).map_err(|m| invalid(key_name("key"), m))?;
        let certificate = Certificate::new(chain, key, &key_path).map_err(|(is_key, m)| {
            let part = if is_key { "key" } else { "cert" };
            let m = if is_key {
                m
            } else {
                format!("{}: {m}", cert_path.display())
            };
            invalid(key_name(part), m)
        })?;
        described.push((cert_path, certificate.names.describe()));
        certificates.push(certificate);
    }
    let server =
        tls::server_config(&certificates, raw.min_version).map_err(|m| invalid("tls", m))?;
    Ok(TlsListener {
        listen: raw.listen,
        min_version: raw.min_version,
        redirect_http: raw.redirect_http,
        certificates: described,
        server,
    })
}

/// TLS towards one backend.
#[derive(Clone)]
pub struct BackendTls {
    /// The name the certificate must carry, and the SNI sent.
    pub server_name: ServerName<'static>,
    pub verify: bool,
    pub ca: Option<PathBuf>,
    pub client: Arc<rustls::ClientConfig>,
    /// Hash of the CA file: a reload that changes the file changes the backend's TLS.
    ca_digest: u64,
}

impl fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendTls")
            .field("server_name", &self.server_name)
            .field("verify", &self.verify)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl PartialEq for BackendTls {
    fn eq(&self, other: &Self) -> bool {
        self.server_name == other.server_name
            && self.verify == other.verify
            && self.ca == other.ca
            && self.ca_digest == other.ca_digest
    }
}

impl Eq for BackendTls {}

/// A backend's TLS keys as written.
pub(super) struct BackendTlsKeys {
    pub(super) ca: Option<PathBuf>,
    pub(super) server_name: Option<String>,
    pub(super) verify: Option<bool>,
}

/// The TLS settings of backend `key` (`backends[N]`), `None` for an `http://` one. The system's roots
/// are loaded at most once per configuration load (`system_roots`).
pub(super) fn backend(
    key: &str,
    url: &BackendUrl,
    keys: BackendTlsKeys,
    base: &Path,
    system_roots: &mut Option<RootCertStore>,
    warnings: &mut Vec<String>,
) -> Result<Option<BackendTls>, ConfigError> {
    if !url.tls {
        let set = [
            ("tls_ca", keys.ca.is_some()),
            ("tls_server_name", keys.server_name.is_some()),
            ("tls_verify", keys.verify.is_some()),
        ];
        if let Some((name, _)) = set.iter().find(|(_, set)| *set) {
            return Err(invalid(
                format!("{key}.{name}"),
                format!(
                    "{} is reached without TLS (http://); use https:// for a TLS backend",
                    url.text
                ),
            ));
        }
        return Ok(None);
    }
    let verify = keys.verify.unwrap_or(true);
    let name_key = if keys.server_name.is_some() {
        format!("{key}.tls_server_name")
    } else {
        format!("{key}.url")
    };
    let server_name = tls::server_name(keys.server_name.as_deref().unwrap_or(&url.host))
        .map_err(|m| invalid(name_key, m))?;
    let ca = keys.ca.map(|p| base.join(p));
    let mut ca_digest = 0;
    let roots = match (&ca, verify) {
        (_, false) => {
            warnings.push(format!(
                "{key}.tls_verify = false: the certificate of {} is not checked",
                url.text
            ));
            if ca.is_some() {
                warnings.push(format!(
                    "{key}.tls_ca has no effect with tls_verify = false"
                ));
            }
            None
        }
        (Some(path), true) => {
            let bytes = std::fs::read(path).unwrap_or_default();
            ca_digest = crate::random::fnv1a(&bytes);
            Some(tls::load_roots(Some(path)).map_err(|m| invalid(format!("{key}.tls_ca"), m))?)
        }
        (None, true) => {
            if system_roots.is_none() {
                *system_roots = Some(tls::load_roots(None).map_err(|m| invalid(key, m))?);
            }
            system_roots.clone()
        }
    };
    let client = tls::client_config(roots).map_err(|m| invalid(key, m))?;
    Ok(Some(BackendTls {
        server_name,
        verify,
        ca,
        client,
        ca_digest,
    }))
}
