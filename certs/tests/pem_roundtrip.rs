//! Certificates written to PEM files read back with the names, usages and
//! validity that were asked for, and a CA loaded from files still signs.

use std::time::Duration;

use quicall_certs::{CertificateAuthority, NodeSpec, Role, read_certs, read_key};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

#[test]
fn node_certificate_has_requested_names_usage_and_validity() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::new("test CA", Duration::from_secs(3600)).unwrap();
    ca.write_pem(dir.path(), "ca").unwrap();
    let node = ca
        .issue(
            &NodeSpec::server("node-1")
                .san("localhost")
                .san("127.0.0.1")
                .san("::1")
                .validity(Duration::from_secs(10 * 86_400)),
        )
        .unwrap();
    let (cert_path, key_path) = node.write_pem(dir.path()).unwrap();

    let chain = read_certs(&cert_path).unwrap();
    assert_eq!(chain.len(), 1);
    read_key(&key_path).unwrap();
    let (_, cert) = X509Certificate::from_der(&chain[0]).unwrap();
    let cn = cert.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "node-1");
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(d) => dns.push(d.to_string()),
            GeneralName::IPAddress(ip) => ips.push(ip.len()),
            _ => {}
        }
    }
    assert_eq!(dns, ["node-1", "localhost"]);
    assert_eq!(ips, [4, 16]);
    let eku = cert.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.server_auth && !eku.value.client_auth);
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86_400;
    assert_eq!(days, 10, "10 days plus the hour of clock skew");
    let (_, ca_cert) = X509Certificate::from_der(ca.cert_der()).unwrap();
    assert_eq!(cert.issuer(), ca_cert.subject());
    assert!(cert.verify_signature(Some(ca_cert.public_key())).is_ok());
}

#[test]
fn ca_read_from_files_signs_verifiable_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::new("test CA", Duration::from_secs(3600)).unwrap();
    ca.write_pem(dir.path(), "ca").unwrap();
    let loaded =
        CertificateAuthority::read_pem(&dir.path().join("ca.crt"), &dir.path().join("ca.key"))
            .unwrap();
    let client = loaded.issue(&NodeSpec::new("alice", Role::Client)).unwrap();
    let chain = client.chain();
    let (_, cert) = X509Certificate::from_der(&chain[0]).unwrap();
    let (_, ca_cert) = X509Certificate::from_der(ca.cert_der()).unwrap();
    assert!(cert.verify_signature(Some(ca_cert.public_key())).is_ok());
    let eku = cert.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.client_auth && !eku.value.server_auth);
}

#[test]
fn missing_and_malformed_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.crt");
    let err = read_certs(&missing).unwrap_err().to_string();
    assert!(err.contains("nope.crt"), "{err}");
    let junk = dir.path().join("junk.crt");
    std::fs::write(&junk, "not a pem file").unwrap();
    let err = read_certs(&junk).unwrap_err().to_string();
    assert!(err.contains("expected a PEM CERTIFICATE"), "{err}");
    assert!(read_key(&junk).is_err());
}
