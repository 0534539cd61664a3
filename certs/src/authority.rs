use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SerialNumber,
};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};

use crate::node::{NodeCert, NodeSpec, validity_window};
use crate::{Error, pem_files};

/// A certificate authority that signs node certificates.
///
/// Its certificate is the trust anchor that servers and clients of one cluster
/// share; its private key should stay with whoever issues certificates.
///
/// ```
/// # use quicall_certs::{CertificateAuthority, NodeSpec};
/// let ca = CertificateAuthority::new("cluster CA", quicall_certs::DEFAULT_VALIDITY)?;
/// // Written to PEM and read back, it still signs.
/// let again = CertificateAuthority::from_pem(ca.cert_pem(), &ca.key_pem())?;
/// again.issue(&NodeSpec::server("node-1").san("localhost"))?;
/// # Ok::<(), quicall_certs::Error>(())
/// ```
pub struct CertificateAuthority {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Creates a new self-signed CA with a fresh ECDSA P-256 key, valid from one
    /// hour ago (for clock skew) for `validity`.
    pub fn new(common_name: &str, validity: Duration) -> Result<Self, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "quicall");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = validity_window(validity);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate and private key in PEM form.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        let cert_der = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| Error::Pem {
                path: "<ca certificate>".into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            cert_der,
            issuer,
        })
    }

    /// Loads a CA from `cert` and `key` PEM files, as written by [`write_pem`](Self::write_pem).
    pub fn read_pem(cert: &Path, key: &Path) -> Result<Self, Error> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|error| Error::Io {
                path: p.to_owned(),
                error,
            })
        };
        Self::from_pem(&read(cert)?, &read(key)?)
    }

    /// The CA certificate in PEM form: what every node trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate in DER form.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA private key in PKCS#8 PEM form. Keep it secret.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The CA private key in DER form (for a test that presents the CA's own,
    /// self-signed certificate as a peer identity).
    pub fn key_der(&self) -> rustls_pki_types::PrivateKeyDer<'static> {
        rustls_pki_types::PrivateKeyDer::Pkcs8(self.issuer.key().serialize_der().into())
    }

    /// Writes `DIR/BASENAME.crt` (the certificate) and `DIR/BASENAME.key` (the
    /// private key, mode 0600 on Unix), creating `dir` if needed.
    pub fn write_pem(&self, dir: &Path, basename: &str) -> Result<(), Error> {
        pem_files::write_public(&dir.join(format!("{basename}.crt")), &self.cert_pem)?;
        pem_files::write_private(&dir.join(format!("{basename}.key")), &self.key_pem())
    }

    /// Issues a node certificate signed by this CA, with a fresh ECDSA P-256 key.
    pub fn issue(&self, spec: &NodeSpec) -> Result<NodeCert, Error> {
        NodeCert::issue(spec, &self.issuer)
    }

    /// A certificate revocation list, signed by this CA, that revokes the
    /// certificates with these serial numbers; valid for `validity` (when a
    /// server should have a newer one).
    ///
    /// ```
    /// # use quicall_certs::{CertificateAuthority, NodeSpec};
    /// # use std::time::Duration;
    /// let ca = CertificateAuthority::new("ca", Duration::from_secs(3600))?;
    /// let mallory = ca.issue(&NodeSpec::client("mallory"))?;
    /// let crl = ca.revocation_list([mallory.serial()], Duration::from_secs(86_400))?;
    /// assert!(crl.pem().starts_with("-----BEGIN X509 CRL-----"));
    /// # Ok::<(), quicall_certs::Error>(())
    /// ```
    pub fn revocation_list<'a>(
        &self,
        serials: impl IntoIterator<Item = &'a [u8]>,
        validity: Duration,
    ) -> Result<RevocationList, Error> {
        let now = time::OffsetDateTime::now_utc();
        let revoked_certs = serials
            .into_iter()
            .map(|serial| RevokedCertParams {
                serial_number: SerialNumber::from_slice(serial),
                revocation_time: now,
                reason_code: Some(RevocationReason::Unspecified),
                invalidity_date: None,
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: now - time::Duration::hours(1),
            next_update: now
                + time::Duration::try_from(validity).unwrap_or(time::Duration::days(365)),
            crl_number: SerialNumber::from((now.unix_timestamp() as u64).max(1)),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer)?;
        Ok(RevocationList {
            pem: crl.pem()?,
            der: crl.der().clone(),
        })
    }
}

/// A signed certificate revocation list.
#[derive(Debug, Clone)]
pub struct RevocationList {
    pem: String,
    der: CertificateRevocationListDer<'static>,
}

impl RevocationList {
    /// The list in PEM form.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The list in DER form, as a TLS verifier takes it.
    pub fn der(&self) -> &CertificateRevocationListDer<'static> {
        &self.der
    }

    /// Writes the list to `path` in PEM form.
    pub fn write_pem(&self, path: &Path) -> Result<(), Error> {
        pem_files::write_public(path, &self.pem)
    }
}
