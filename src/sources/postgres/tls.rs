//! TLS to PostgreSQL with libpq's `sslmode` meanings (rustls underneath): `disable`, `prefer` (the default) and
//! `require` encrypt without checking who answers (as libpq does; `require` with `sslrootcert` checks the chain
//! like `verify-ca`), `verify-ca` checks the chain against the CA, `verify-full` the chain and the host name.
//! `sslmode` and `sslrootcert` come from the connection URL (`?sslmode=verify-full&sslrootcert=/ca.pem`) or
//! `PGSSLMODE` / `PGSSLROOTCERT`; `sslrootcert=system` means the Mozilla roots.

use std::sync::Arc;

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::WebPkiServerVerifier,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(s: &str) -> Result<Self, SettingError> {
        Ok(match s {
            "disable" => Mode::Disable,
            "allow" | "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            other => {
                return Err(SettingError::UnknownMode(other.to_string()));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Disable => "disable",
            Mode::Prefer => "prefer",
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        }
    }
}

/// What is wrong with a connection string's TLS settings.
#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    #[error("sslmode `{0}`: expected disable, prefer, require, verify-ca or verify-full")]
    UnknownMode(String),
    #[error("sslmode={} needs sslrootcert: the CA's PEM file, or `system` for the Mozilla roots", .0.as_str())]
    NoRootCert(Mode),
}

/// The TLS part of a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub mode: Mode,
    pub root_cert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a URL or `key=value` connection string (tokio-postgres knows neither
/// `verify-*` nor `sslrootcert`), falling back to `PGSSLMODE` / `PGSSLROOTCERT`.
pub fn split(conn: &str, env: impl Fn(&str) -> Option<String>) -> Result<(String, Tls), SettingError> {
    let (mut mode, mut root) = (None, None);
    let mut take = |key: &str, value: String| match key {
        "sslmode" => {
            mode = Some(value);
            true
        }
        "sslrootcert" => {
            root = Some(value);
            true
        }
        _ => false,
    };
    let rest = if conn.contains("://") {
        match conn.split_once('?') {
            None => conn.to_string(),
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned();
                        !take(k, v)
                    })
                    .collect();
                if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) }
            }
        }
    } else {
        conn.split_whitespace()
            .filter(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                !take(k.trim(), v.trim_matches('\'').to_string())
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mode = match mode.or_else(|| env("PGSSLMODE")) {
        Some(m) => Mode::parse(&m)?,
        None => Mode::Prefer,
    };
    let root_cert = root.or_else(|| env("PGSSLROOTCERT")).filter(|r| !r.is_empty());
    if matches!(mode, Mode::VerifyCa | Mode::VerifyFull) && root_cert.is_none() {
        return Err(SettingError::NoRootCert(mode));
    }
    Ok((rest, Tls { mode, root_cert }))
}

impl Tls {
    /// tokio-postgres' own mode: whether TLS is attempted, and whether it is required.
    pub fn ssl_mode(&self) -> SslMode {
        match self.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        }
    }

    /// A connector that checks the server as the mode says.
    pub fn connector(&self) -> Result<MakeRustlsConnect, ConnectorError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(ConnectorError::Tls)?;
        let algorithms = provider.signature_verification_algorithms;
        let verifier: Arc<dyn ServerCertVerifier> = match (self.mode, &self.root_cert) {
            (Mode::Disable | Mode::Prefer, _) | (Mode::Require, None) => Arc::new(Lenient { chain: None, algorithms }),
            (mode, Some(root)) => {
                let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(root)?), provider)
                    .build()
                    .map_err(ConnectorError::Verifier)?;
                if mode == Mode::VerifyFull { inner } else { Arc::new(Lenient { chain: Some(inner), algorithms }) }
            }
            (_, None) => unreachable!("split() requires sslrootcert for verify-ca and verify-full"),
        };
        let config = builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }
}

/// Why no TLS connector could be built for the server's certificate check.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("TLS: {0}")]
    Tls(#[source] rustls::Error),
    #[error("TLS: {0}")]
    Verifier(#[source] rustls::client::VerifierBuilderError),
    #[error("sslrootcert {path}: {source}")]
    RootCertFile { path: String, source: rustls::pki_types::pem::Error },
    #[error("sslrootcert {0}: no certificate in it")]
    NoRootCert(String),
}

fn roots(root: &str) -> Result<RootCertStore, ConnectorError> {
    let mut store = RootCertStore::empty();
    if root == "system" {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(store);
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(root)
        .and_then(|i| i.collect())
        .map_err(|source| ConnectorError::RootCertFile { path: root.to_string(), source })?;
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(ConnectorError::NoRootCert(root.to_string()));
    }
    Ok(store)
}

/// The server checks libpq makes short of `verify-full`: `chain = None` accepts whoever answers (`prefer`,
/// `require` without a CA: encrypted, unauthenticated, as libpq does); `chain = Some` requires the chain to lead to
/// the CA but does not compare the certificate's name with the host (`verify-ca`). Handshake signatures are always
/// checked.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_parameters_are_taken_out_of_urls_and_keyword_strings() {
        let none = |_: &str| None;
        let (rest, tls) = split(
            "postgres://u@db:5432/caracal?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
            none,
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@db:5432/caracal?application_name=x");
        assert_eq!(tls, Tls { mode: Mode::VerifyFull, root_cert: Some("/etc/ca.pem".into()) });
        let (rest, tls) = split("host=db dbname=caracal sslmode=require", none).unwrap();
        assert_eq!((rest.as_str(), tls.mode), ("host=db dbname=caracal", Mode::Require));
        let env = |k: &str| (k == "PGSSLMODE").then(|| "disable".to_string());
        assert_eq!(split("postgres://db/x", env).unwrap().1.mode, Mode::Disable);
        assert_eq!(split("postgres://db/x", none).unwrap().1.mode, Mode::Prefer);
        assert!(
            split("postgres://db/x?sslmode=verify-ca", none).unwrap_err().to_string().contains("needs sslrootcert")
        );
        assert!(split("postgres://db/x?sslmode=bogus", none).unwrap_err().to_string().contains("sslmode `bogus`"));
    }
}
