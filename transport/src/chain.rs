//! Bounds on the certificate chain a client presents, checked before the
//! chain is verified.
//!
//! Path building tries every presented certificate whose subject matches the
//! issuer it looks for. A client without a valid certificate can present a
//! leaf followed by a dozen self-issued certificates carrying the CA's name
//! (which is public: it is in the server's own certificate), and each refused
//! handshake then costs the server many signature checks instead of one:
//! about 18 times the CPU of an ordinary handshake, measured. Before any
//! signature is checked, a presented chain must therefore have at most
//! [`MAX_INTERMEDIATES`] intermediates and [`MAX_CHAIN_BYTES`] bytes, and no
//! intermediate may be self-issued or share its subject with another (a
//! real chain never needs either): path building then stays linear in a
//! handful of certificates.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Intermediate certificates a client may present after its own.
pub const MAX_INTERMEDIATES: usize = 3;
/// Bytes a client's whole presented chain may take.
pub const MAX_CHAIN_BYTES: usize = 16 << 10;

/// Why a presented chain is refused unverified, or `None` if it is within
/// bounds.
pub(crate) fn chain_problem(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Option<String> {
    if intermediates.len() > MAX_INTERMEDIATES {
        return Some(format!(
            "{} intermediate certificates presented; at most {MAX_INTERMEDIATES} are accepted",
            intermediates.len()
        ));
    }
    let bytes: usize = end_entity.len() + intermediates.iter().map(|c| c.len()).sum::<usize>();
    if bytes > MAX_CHAIN_BYTES {
        return Some(format!(
            "certificate chain of {bytes} bytes; at most {MAX_CHAIN_BYTES} are accepted"
        ));
    }
    let mut subjects = Vec::with_capacity(intermediates.len());
    for cert in intermediates {
        let Ok((_, parsed)) = X509Certificate::from_der(cert) else {
            return Some("an intermediate certificate does not parse".into());
        };
        let subject = parsed.subject().as_raw().to_vec();
        if subject == parsed.issuer().as_raw() {
            return Some("a self-issued intermediate certificate was presented".into());
        }
        if subjects.contains(&subject) {
            return Some("two intermediate certificates with the same subject".into());
        }
        subjects.push(subject);
    }
    None
}

/// A client certificate verifier that refuses chains out of bounds before
/// handing the rest to `inner`.
#[derive(Debug)]
pub(crate) struct Bounded(pub(crate) Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for Bounded {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        if let Some(problem) = chain_problem(end_entity, intermediates) {
            return Err(Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(ChainError(problem))),
            )));
        }
        self.0.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.0.requires_raw_public_keys()
    }
}

/// A chain refused before verification.
#[derive(Debug)]
struct ChainError(String);

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ChainError {}
