//! RFC 3161 trusted timestamps over a bundle's SHA-256: asking a time-stamp authority (TSA) for a token, and
//! checking one. The request and token formats are `x509-tsp`'s and `cms`'s; signatures are checked with `rsa`
//! (PKCS #1 v1.5) and `p256`/`p384` (ECDSA). The `.tsr` file is the TSA's whole answer, as `openssl ts -reply`
//! writes it and `openssl ts -verify -in` reads it.
//!
//! A token is accepted when: the TSA granted it; its message imprint is the archive's SHA-256 (and, when asked by
//! preserve, its nonce is the request's); the `messageDigest` attribute is the digest of the TSTInfo; the signer
//! certificate's key verifies the signed attributes; that certificate is meant for time-stamping (extended key
//! usage `timeStamping`) and was valid at the stamped time; and, given CA certificates, it chains to one of them.

use std::time::Duration;

use cmpv2::status::PkiStatus;
use cms::{
    cert::IssuerAndSerialNumber,
    signed_data::{SignedData, SignerIdentifier},
};
use der::{
    Decode, Encode,
    asn1::{Int, ObjectIdentifier, OctetString},
};
use jiff::Timestamp;
use sha2::{Digest, Sha256, Sha384, Sha512};
use x509_cert::Certificate;
use x509_tsp::{MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

use crate::config::TsaSettings;

/// Largest TSA answer read: a token with a certificate chain is a few kilobytes.
pub const RESPONSE_LIMIT: u64 = 1 << 20;
/// Certificates followed from the signer towards a CA.
const CHAIN_LIMIT: usize = 8;

const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const RSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const RSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");

/// Why a bundle was left without a timestamp.
#[derive(Debug, thiserror::Error)]
pub enum TsaError {
    #[error("the TSA at {url} cannot be reached: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the TSA at {url} did not answer within {timeout}")]
    Timeout { url: String, timeout: String },
    #[error("the TSA at {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("the TSA at {url} answered more than {RESPONSE_LIMIT} bytes")]
    TooLarge { url: String },
    #[error("the TSA at {url} gave no usable token: {detail}")]
    BadToken { url: String, detail: String },
    #[error("seal.tsa_ca_file {path}: {detail}")]
    CaFile { path: String, detail: String },
}

/// What a token that checked out says.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stamp {
    /// The time the TSA vouches for.
    pub time: Timestamp,
    /// The signer certificate's subject.
    pub tsa: String,
    /// The token's serial number, hex.
    pub serial: String,
    pub policy: String,
    /// The CA certificate's subject the signer chains to; `None` when no CA was given to check against.
    pub anchored_to: Option<String>,
}

/// A request for a token over `digest`, with `nonce`, asking for the signer's certificate.
pub fn request(digest: &[u8; 32], nonce: &[u8; 8]) -> Vec<u8> {
    let req = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: imprint(digest),
        req_policy: None,
        nonce: nonce_int(nonce),
        cert_req: true,
        extensions: None,
    };
    req.to_der().unwrap_or_default()
}

/// The nonce as the INTEGER sent: positive (top bit cleared) and with a first byte that is not zero, so its
/// encoding is already the minimal one a TSA echoes back byte for byte.
fn nonce_int(nonce: &[u8; 8]) -> Option<Int> {
    Int::new(&[&[(nonce[0] & 0x7f).max(1)], &nonce[1..]].concat()).ok()
}

fn imprint(digest: &[u8; 32]) -> MessageImprint {
    MessageImprint {
        hash_algorithm: x509_cert::spki::AlgorithmIdentifier { oid: SHA256, parameters: Some(der::asn1::Null.into()) },
        hashed_message: OctetString::new(digest.to_vec())
            .unwrap_or_else(|_| OctetString::new(Vec::new()).expect("empty")),
    }
}

/// Asks the TSA for a token over `digest`; returns the whole answer (the `.tsr`) once it checked out against the
/// request and, when set, the CA file.
pub async fn stamp(tsa: &TsaSettings, digest: &[u8; 32]) -> Result<(Vec<u8>, Stamp), TsaError> {
    let url = tsa.url.clone();
    let ca = tsa
        .ca_file
        .as_ref()
        .map(|p| read_ca_file(p).map_err(|detail| TsaError::CaFile { path: p.display().to_string(), detail }))
        .transpose()?;
    let mut nonce = [0u8; 8];
    let _ = getrandom::fill(&mut nonce);
    let timeout = tsa.timeout.unsigned_abs();
    let exchange = async {
        let client = crate::web::client(Vec::new())
            .map_err(|e| TsaError::Unreachable { url: url.clone(), detail: e.to_string() })?;
        let unreachable = |e: reqwest::Error| TsaError::Unreachable { url: url.clone(), detail: with_causes(&e) };
        let mut resp = client
            .post(&url)
            .header(http::header::CONTENT_TYPE, "application/timestamp-query")
            .body(request(digest, &nonce))
            .send()
            .await
            .map_err(unreachable)?;
        if !resp.status().is_success() {
            return Err(TsaError::Status { url: url.clone(), status: resp.status().as_u16() });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            if body.len() as u64 + chunk.len() as u64 > RESPONSE_LIMIT {
                return Err(TsaError::TooLarge { url: url.clone() });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    let body = tokio::time::timeout(timeout.max(Duration::from_millis(1)), exchange)
        .await
        .map_err(|_| TsaError::Timeout { url: url.clone(), timeout: format!("{:#}", tsa.timeout) })??;
    let stamp = check(&body, digest, ca.as_deref(), Some(&nonce))
        .map_err(|detail| TsaError::BadToken { url: url.clone(), detail })?;
    Ok((body, stamp))
}

/// An error with its causes (`error sending request: connection refused`), as reqwest's own text names only the
/// first.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The certificates of a PEM file (a CA, or a chain).
pub fn read_ca_file(path: &std::path::Path) -> Result<Vec<Certificate>, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let ders: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(path).and_then(|i| i.collect()).map_err(|e| e.to_string())?;
    if ders.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    ders.iter().map(|d| Certificate::from_der(d).map_err(|e| format!("a certificate cannot be read: {e}"))).collect()
}

/// Checks a TSA answer (`.tsr`) against the archive's SHA-256 and, given, the CA certificates and the nonce sent.
pub fn check(
    tsr: &[u8],
    digest: &[u8; 32],
    ca: Option<&[Certificate]>,
    nonce: Option<&[u8; 8]>,
) -> Result<Stamp, String> {
    check_token(&Token::open(tsr)?, digest, ca, nonce)
}

/// A granted answer's token, opened: its SignedData, the TSTInfo's bytes (what its signature covers) and the
/// TSTInfo read from them, and the certificates it carries.
struct Token {
    sd: SignedData,
    tst_der: OctetString,
    tst: TstInfo,
    certs: Vec<Certificate>,
}

impl Token {
    fn open(tsr: &[u8]) -> Result<Self, String> {
        let resp = TimeStampResp::from_der(tsr).map_err(|e| format!("not an RFC 3161 time-stamp response: {e}"))?;
        if !matches!(resp.status.status, PkiStatus::Accepted | PkiStatus::GrantedWithMods) {
            return Err(format!("the TSA refused the request (status {:?})", resp.status.status));
        }
        let token = resp.time_stamp_token.ok_or("the response holds no token")?;
        if token.content_type != SIGNED_DATA {
            return Err("the token is not CMS SignedData".into());
        }
        let sd = SignedData::from_der(&token.content.to_der().map_err(|e| e.to_string())?)
            .map_err(|e| format!("the token's SignedData cannot be read: {e}"))?;
        if sd.encap_content_info.econtent_type != TST_INFO {
            return Err("the token does not hold a TSTInfo".into());
        }
        let econtent = sd.encap_content_info.econtent.as_ref().ok_or("the token's TSTInfo is missing")?;
        let tst_der = OctetString::from_der(&econtent.to_der().map_err(|e| e.to_string())?)
            .map_err(|e| format!("the token's content is not an OCTET STRING: {e}"))?;
        let tst = TstInfo::from_der(tst_der.as_bytes()).map_err(|e| format!("the TSTInfo cannot be read: {e}"))?;
        let certs = certificates(&sd);
        Ok(Self { sd, tst_der, tst, certs })
    }
}

/// The stamped time and the signer's subject, read without checking anything (for `inspect`).
pub fn peek(tsr: &[u8]) -> Option<(Timestamp, String)> {
    let Token { sd, tst, certs, .. } = Token::open(tsr).ok()?;
    let time = Timestamp::try_from(tst.gen_time.to_system_time()).ok()?;
    let signer = sd.signer_infos.0.iter().next()?;
    let tsa = find_signer(&signer.sid, &certs, &[]).map(|c| subject(&c));
    Some((time, tsa.unwrap_or_else(|| "an unnamed TSA".into())))
}

fn check_token(
    token: &Token,
    digest: &[u8; 32],
    ca: Option<&[Certificate]>,
    nonce: Option<&[u8; 8]>,
) -> Result<Stamp, String> {
    let Token { sd, tst_der, tst, certs } = token;

    if tst.message_imprint.hash_algorithm.oid != SHA256 {
        return Err(format!("the token stamps a {} digest, not SHA-256", tst.message_imprint.hash_algorithm.oid));
    }
    if tst.message_imprint.hashed_message.as_bytes() != digest {
        return Err(format!(
            "the token stamps digest {}, not this archive's {}",
            hex::encode(tst.message_imprint.hashed_message.as_bytes()),
            hex::encode(digest)
        ));
    }
    if let Some(sent) = nonce {
        let sent = nonce_int(sent).ok_or("the request's nonce cannot be encoded")?;
        if tst.nonce.as_ref().map(Int::as_bytes) != Some(sent.as_bytes()) {
            return Err("the token's nonce is not the request's (a replayed or misdirected answer)".into());
        }
    }
    let time = Timestamp::try_from(tst.gen_time.to_system_time()).map_err(|e| e.to_string())?;

    let signer_info = sd.signer_infos.0.iter().next().ok_or("the token has no signer")?;
    let signer = find_signer(&signer_info.sid, certs, ca.unwrap_or_default())
        .ok_or("the signer's certificate is neither in the token nor among the CA certificates")?;

    // The signed attributes bind the TSTInfo: its content type and digest, signed by the TSA's key.
    let attrs = signer_info.signed_attrs.as_ref().ok_or("the token's signature has no signed attributes")?;
    let attr_value = |oid: ObjectIdentifier| {
        attrs.iter().find(|a| a.oid == oid).and_then(|a| a.values.iter().next()).and_then(|v| v.to_der().ok())
    };
    let content_type = attr_value(CONTENT_TYPE).and_then(|d| ObjectIdentifier::from_der(&d).ok());
    if content_type != Some(TST_INFO) {
        return Err("the signed attributes do not name the TSTInfo content type".into());
    }
    let digest_alg = signer_info.digest_alg.oid;
    let tst_digest = hash(digest_alg, tst_der.as_bytes())?;
    let claimed =
        attr_value(MESSAGE_DIGEST).and_then(|d| OctetString::from_der(&d).ok()).ok_or("no messageDigest attribute")?;
    if claimed.as_bytes() != tst_digest.as_slice() {
        return Err("the signed messageDigest is not the TSTInfo's digest (the TSTInfo was altered)".into());
    }
    let signed = attrs.to_der().map_err(|e| e.to_string())?;
    verify_signature(
        &signer,
        signer_info.signature_algorithm.oid,
        digest_alg,
        &signed,
        signer_info.signature.as_bytes(),
    )
    .map_err(|e| format!("the TSA's signature does not verify: {e}"))?;

    check_time_stamping_use(&signer)?;
    let validity = &signer.tbs_certificate.validity;
    let (from, until) = (validity.not_before.to_system_time(), validity.not_after.to_system_time());
    let at = tst.gen_time.to_system_time();
    if at < from || at > until {
        return Err("the TSA's certificate was not valid at the stamped time".into());
    }
    let anchored_to = match ca {
        Some(anchors) => Some(chain_to(&signer, certs, anchors)?),
        None => None,
    };
    Ok(Stamp {
        time,
        tsa: subject(&signer),
        serial: hex::encode(tst.serial_number.as_bytes()),
        policy: tst.policy.to_string(),
        anchored_to,
    })
}

/// A certificate's subject as shown: a token is whatever its author made it, so a name is cut to 256 characters.
fn subject(cert: &Certificate) -> String {
    const SHOWN: usize = 256;
    let name = cert.tbs_certificate.subject.to_string();
    if name.chars().count() > SHOWN { name.chars().take(SHOWN).chain(['…']).collect() } else { name }
}

/// The certificates a SignedData carries (a real token has one to three; at most 16 are looked at, so a crafted
/// token cannot make the chain search verify signatures by the thousand).
fn certificates(sd: &SignedData) -> Vec<Certificate> {
    sd.certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .take(16)
        .filter_map(|c| match c {
            cms::cert::CertificateChoices::Certificate(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

fn find_signer(sid: &SignerIdentifier, certs: &[Certificate], extra: &[Certificate]) -> Option<Certificate> {
    certs
        .iter()
        .chain(extra)
        .find(|c| match sid {
            SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber { issuer, serial_number }) => {
                &c.tbs_certificate.issuer == issuer && &c.tbs_certificate.serial_number == serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => c.tbs_certificate.extensions.iter().flatten().any(|e| {
                e.extn_id == ObjectIdentifier::new_unwrap("2.5.29.14")
                    && e.extn_value.as_bytes().ends_with(ski.0.as_bytes())
            }),
        })
        .cloned()
}

fn check_time_stamping_use(cert: &Certificate) -> Result<(), String> {
    let eku = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == EXT_KEY_USAGE)
        .ok_or("the TSA's certificate has no extended key usage (timeStamping is required)")?;
    let usages = x509_cert::ext::pkix::ExtendedKeyUsage::from_der(eku.extn_value.as_bytes())
        .map_err(|e| format!("the TSA's extended key usage cannot be read: {e}"))?;
    if !usages.0.contains(&TIME_STAMPING) {
        return Err("the TSA's certificate is not meant for time-stamping (no timeStamping key usage)".into());
    }
    Ok(())
}

/// Follows issuers from `leaf` through the token's and the CA file's certificates until a certificate of the CA
/// file vouches; returns that CA's subject.
fn chain_to(leaf: &Certificate, certs: &[Certificate], anchors: &[Certificate]) -> Result<String, String> {
    let mut current = leaf.clone();
    for _ in 0..CHAIN_LIMIT {
        let issuer_name = &current.tbs_certificate.issuer;
        let tbs = current.tbs_certificate.to_der().map_err(|e| e.to_string())?;
        let sig_alg = current.signature_algorithm.oid;
        let sig = current.signature.raw_bytes();
        let verified_by = |issuer: &Certificate| {
            &issuer.tbs_certificate.subject == issuer_name
                && verify_signature(issuer, sig_alg, digest_of_signature(sig_alg), &tbs, sig).is_ok()
        };
        if let Some(anchor) = anchors.iter().find(|a| verified_by(a)) {
            return Ok(subject(anchor));
        }
        // The anchor itself may be in the token: then it is the CA file's certificate that counts.
        if anchors.iter().any(|a| a == &current) {
            return Ok(subject(&current));
        }
        let Some(next) = certs.iter().find(|c| *c != &current && verified_by(c)) else {
            return Err(format!(
                "the TSA's certificate does not chain to the given CA (no issuer for {})",
                subject(&current)
            ));
        };
        current = next.clone();
    }
    Err("the TSA's certificate chain is longer than preserve follows".into())
}

fn digest_of_signature(sig_alg: ObjectIdentifier) -> ObjectIdentifier {
    match sig_alg {
        RSA_SHA384 | ECDSA_SHA384 => SHA384,
        RSA_SHA512 => SHA512,
        _ => SHA256,
    }
}

fn hash(alg: ObjectIdentifier, data: &[u8]) -> Result<Vec<u8>, String> {
    Ok(match alg {
        SHA256 => Sha256::digest(data).to_vec(),
        SHA384 => Sha384::digest(data).to_vec(),
        SHA512 => Sha512::digest(data).to_vec(),
        other => return Err(format!("unsupported digest algorithm {other}")),
    })
}

/// Verifies `sig` over `data` with the certificate's key: RSA PKCS #1 v1.5, or ECDSA on P-256 or P-384.
fn verify_signature(
    cert: &Certificate,
    sig_alg: ObjectIdentifier,
    digest_alg: ObjectIdentifier,
    data: &[u8],
    sig: &[u8],
) -> Result<(), String> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let spki_der = spki.to_der().map_err(|e| e.to_string())?;
    let hashed = hash(digest_alg, data)?;
    match (spki.algorithm.oid, sig_alg) {
        (RSA, RSA | RSA_SHA256 | RSA_SHA384 | RSA_SHA512) => {
            use rsa::pkcs8::DecodePublicKey;
            let key = rsa::PublicKey::from_public_key_der(&spki_der).map_err(|e| e.to_string())?;
            let scheme = match digest_alg {
                SHA256 => rsa::Pkcs1v15Sign::new::<Sha256>(),
                SHA384 => rsa::Pkcs1v15Sign::new::<Sha384>(),
                _ => rsa::Pkcs1v15Sign::new::<Sha512>(),
            };
            key.verify(scheme, &hashed, sig).map_err(|e| e.to_string())
        }
        (EC_PUBLIC_KEY, ECDSA_SHA256 | ECDSA_SHA384) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
                .ok_or("an EC key without a named curve")?;
            match curve {
                P256 => {
                    use p256::ecdsa::signature::hazmat::PrehashVerifier;
                    use p256::pkcs8::DecodePublicKey;
                    let key = p256::ecdsa::VerifyingKey::from_public_key_der(&spki_der).map_err(|e| e.to_string())?;
                    let sig = p256::ecdsa::Signature::from_der(sig).map_err(|e| e.to_string())?;
                    key.verify_prehash(&hashed, &sig).map_err(|e| e.to_string())
                }
                P384 => {
                    use p384::ecdsa::signature::hazmat::PrehashVerifier;
                    use p384::pkcs8::DecodePublicKey;
                    let key = p384::ecdsa::VerifyingKey::from_public_key_der(&spki_der).map_err(|e| e.to_string())?;
                    let sig = p384::ecdsa::Signature::from_der(sig).map_err(|e| e.to_string())?;
                    key.verify_prehash(&hashed, &sig).map_err(|e| e.to_string())
                }
                other => Err(format!("unsupported curve {other}")),
            }
        }
        (key, alg) => Err(format!("unsupported key {key} or signature algorithm {alg}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TSA reads the nonce as a number and echoes it minimally encoded: a nonce sent with a leading zero byte
    /// (one random nonce in 256 once its top bit was cleared) would come back as other bytes and fail the check.
    #[test]
    fn every_nonce_is_sent_minimally_encoded_and_positive() {
        for first in [0x00u8, 0x80, 0x01, 0x7f, 0xff] {
            let req = TimeStampReq::from_der(&request(&[7; 32], &[first, 0x05, 1, 2, 3, 4, 5, 6])).unwrap();
            let nonce = req.nonce.expect("a nonce is sent");
            let bytes = nonce.as_bytes();
            assert_eq!(bytes.len(), 8, "{first:#x}: {bytes:?}");
            assert!(bytes[0] != 0 && bytes[0] < 0x80, "{first:#x}: {bytes:?}");
        }
    }
}
