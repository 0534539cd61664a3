use std::fmt;
use std::net::IpAddr;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The verified identity of the peer of a connection: the names in its leaf
/// certificate and the certificate's SHA-256 fingerprint.
///
/// It is only built from a certificate that TLS has already verified against
/// the configured CA, so a handler may trust it for authorization.
///
/// ```
/// # use quicall_certs::{CertificateAuthority, NodeSpec};
/// use quicall_transport::PeerIdentity;
/// # let ca = CertificateAuthority::new("ca", std::time::Duration::from_secs(60))?;
/// # let cert = ca.issue(&NodeSpec::client("alice").san("alice.example"))?;
/// let id = PeerIdentity::from_der(&cert.chain()[0]).unwrap();
/// assert_eq!(id.name(), "alice");
/// assert_eq!(id.dns_names(), ["alice", "alice.example"]);
/// assert_eq!(id.fingerprint_hex().len(), 64);
/// # Ok::<(), quicall_certs::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    common_name: Option<String>,
    dns_names: Vec<String>,
    ip_addresses: Vec<IpAddr>,
    fingerprint: [u8; 32],
}

impl PeerIdentity {
    /// Reads the identity from a DER certificate, or `None` if it does not parse.
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => dns_names.push((*d).to_owned()),
                    GeneralName::IPAddress(ip) => {
                        if let Some(ip) = ip_from_bytes(ip) {
                            ip_addresses.push(ip);
                        }
                    }
                    _ => {}
                }
            }
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(digest.as_ref());
        Some(Self {
            common_name,
            dns_names,
            ip_addresses,
            fingerprint,
        })
    }

    /// The name to show and to authorize by: the subject common name, else the
    /// first DNS name, else the empty string.
    pub fn name(&self) -> &str {
        self.common_name
            .as_deref()
            .or(self.dns_names.first().map(String::as_str))
            .unwrap_or("")
    }

    /// The subject common name, if any.
    pub fn common_name(&self) -> Option<&str> {
        self.common_name.as_deref()
    }

    /// DNS subject alternative names.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// IP address subject alternative names.
    pub fn ip_addresses(&self) -> &[IpAddr] {
        &self.ip_addresses
    }

    /// SHA-256 of the leaf certificate's DER bytes.
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    /// The fingerprint as 64 lowercase hex digits.
    pub fn fingerprint_hex(&self) -> String {
        use fmt::Write;
        self.fingerprint
            .iter()
            .fold(String::with_capacity(64), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
    }
}

impl fmt::Debug for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerIdentity")
            .field("common_name", &self.common_name)
            .field("dns_names", &self.dns_names)
            .field("ip_addresses", &self.ip_addresses)
            .field("sha256", &self.fingerprint_hex())
            .finish()
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_an_identity() {
        assert!(PeerIdentity::from_der(b"").is_none());
        assert!(PeerIdentity::from_der(&[0x30, 0x82, 0xff, 0xff, 0]).is_none());
    }

    #[test]
    fn ip_bytes() {
        assert_eq!(
            ip_from_bytes(&[127, 0, 0, 1]),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(ip_from_bytes(&[0; 16]), Some("::".parse().unwrap()));
        assert_eq!(ip_from_bytes(&[1, 2, 3]), None);
    }
}
