//! The HTTP client of every request preserve sends out (Caracal's services, a time-stamp authority): rustls with
//! ring, the public web's roots plus any the site adds, and no redirects followed (a redirect is the server's
//! answer, recorded, not a place preserve goes).

use std::sync::Arc;

use rustls::pki_types::CertificateDer;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Tls(rustls::Error),
    #[error("HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// A client that trusts the public web's roots and `extra_roots`.
pub fn client(extra_roots: Vec<CertificateDer<'static>>) -> Result<reqwest::Client, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots.add_parsable_certificates(extra_roots);
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(ClientError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(format!("{}/{}", crate::TOOL_NAME, crate::TOOL_VERSION))
        .build()
        .map_err(ClientError::Client)
}
