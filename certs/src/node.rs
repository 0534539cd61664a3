use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::{Error, pem_files};

/// What a node certificate may be used for (its extended key usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// A server: TLS server authentication.
    Server,
    /// A client: TLS client authentication.
    Client,
    /// Both: a node that serves and also calls other nodes.
    Both,
}

/// What to put in a node certificate.
///
/// ```
/// use quicall_certs::NodeSpec;
/// use std::time::Duration;
/// let spec = NodeSpec::server("node-1")
///     .san("node-1.example.internal")
///     .san("10.0.0.7")
///     .validity(Duration::from_secs(30 * 86_400));
/// assert_eq!(spec.sans().len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct NodeSpec {
    name: String,
    sans: Vec<String>,
    role: Role,
    validity: Duration,
    window: Option<(SystemTime, SystemTime)>,
}

impl NodeSpec {
    /// A node named `name` (the certificate's common name) with the given role.
    /// The name is also added as a DNS subject alternative name when it is a
    /// valid one, so that it can be verified as a server name.
    pub fn new(name: impl Into<String>, role: Role) -> Self {
        Self {
            name: name.into(),
            sans: Vec::new(),
            role,
            validity: crate::DEFAULT_VALIDITY,
            window: None,
        }
    }

    /// A server certificate named `name`.
    pub fn server(name: impl Into<String>) -> Self {
        Self::new(name, Role::Server)
    }

    /// A client certificate named `name`.
    pub fn client(name: impl Into<String>) -> Self {
        Self::new(name, Role::Client)
    }

    /// Adds a subject alternative name: an IP address if it parses as one,
    /// otherwise a DNS name.
    pub fn san(mut self, name: impl Into<String>) -> Self {
        self.sans.push(name.into());
        self
    }

    /// Sets how long the certificate is valid (from one hour ago).
    pub fn validity(mut self, validity: Duration) -> Self {
        self.validity = validity;
        self
    }

    /// Sets the exact validity window, for example to make an expired or a
    /// not-yet-valid certificate for a test.
    pub fn valid_between(mut self, not_before: SystemTime, not_after: SystemTime) -> Self {
        self.window = Some((not_before, not_after));
        self
    }

    /// The node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The extra subject alternative names.
    pub fn sans(&self) -> &[String] {
        &self.sans
    }

    fn params(&self) -> Result<CertificateParams, Error> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, &self.name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "quicall");
        let mut names: Vec<&str> = Vec::with_capacity(self.sans.len() + 1);
        if is_dns_name(&self.name) {
            names.push(&self.name);
        }
        names.extend(self.sans.iter().map(String::as_str));
        for name in names {
            let san = match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) if is_dns_name(name) => SanType::DnsName(name.try_into()?),
                Err(_) => {
                    return Err(Error::InvalidName {
                        name: name.to_owned(),
                        reason: "neither an IP address nor a DNS name".into(),
                    });
                }
            };
            if !params.subject_alt_names.contains(&san) {
                params.subject_alt_names.push(san);
            }
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match self.role {
            Role::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Role::Both => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        (params.not_before, params.not_after) = match self.window {
            Some((from, to)) => (OffsetDateTime::from(from), OffsetDateTime::from(to)),
            None => validity_window(self.validity),
        };
        Ok(params)
    }
}

/// A node certificate and its private key.
pub struct NodeCert {
    name: String,
    serial: Vec<u8>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

impl std::fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCert")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NodeCert {
    pub(crate) fn issue(spec: &NodeSpec, issuer: &Issuer<'_, KeyPair>) -> Result<Self, Error> {
        let key = KeyPair::generate()?;
        let params = spec.params()?;
        let cert = params.signed_by(&key, issuer)?;
        Ok(Self {
            name: spec.name.clone(),
            serial: params
                .serial_number
                .as_ref()
                .map(SerialNumber::to_bytes)
                .unwrap_or_default(),
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key,
        })
    }

    /// The node name (common name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The certificate's serial number (big-endian), by which a CA revokes it.
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }

    /// The certificate in PEM form.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key in PKCS#8 PEM form.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The certificate chain (the leaf; the CA is the trust anchor) in DER form.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert_der.clone()]
    }

    /// The private key in DER form.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }

    /// Writes `DIR/NAME.crt` and `DIR/NAME.key` (mode 0600 on Unix), creating
    /// `dir` if needed, and returns the two paths.
    pub fn write_pem(&self, dir: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf), Error> {
        let cert = dir.join(format!("{}.crt", self.name));
        let key = dir.join(format!("{}.key", self.name));
        pem_files::write_public(&cert, &self.cert_pem)?;
        pem_files::write_private(&key, &self.key_pem())?;
        Ok((cert, key))
    }
}

/// `[now - 1 h, now + validity]`: the hour before absorbs clock skew between hosts.
pub(crate) fn validity_window(validity: Duration) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    let skew = time::Duration::hours(1);
    let validity = time::Duration::try_from(validity).unwrap_or(time::Duration::days(36_500));
    (now - skew, now + validity)
}

/// 16 random bytes, first bit clear (a positive serial, RFC 5280 4.1.2.2).
fn random_serial() -> Result<[u8; 16], Error> {
    use ring::rand::SecureRandom;
    let mut serial = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| Error::Generate(rcgen::Error::RingUnspecified))?;
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    Ok(serial)
}

/// A DNS name as certificates accept it: labels of letters, digits, '-' and
/// '_', separated by dots, with an optional leading "*." wildcard.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(is_dns_name("localhost"));
        assert!(is_dns_name("node-1.example.internal"));
        assert!(is_dns_name("*.svc.cluster.local"));
        assert!(!is_dns_name("bad name"));
        assert!(!is_dns_name("a..b"));
        assert!(!is_dns_name(""));
    }

    #[test]
    fn bad_san_is_a_clear_error() {
        let ca = crate::CertificateAuthority::new("ca", Duration::from_secs(60)).unwrap();
        let err = ca
            .issue(&NodeSpec::server("n").san("not a name"))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{err}");
    }
}
