use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::Error;

/// Reads every certificate in a PEM file (a chain, leaf first, or a CA bundle).
///
/// ```no_run
/// let chain = quicall_certs::read_certs("certs/node-1.crt".as_ref())?;
/// # Ok::<(), quicall_certs::Error>(())
/// ```
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error(path, found(&bytes, "a PEM CERTIFICATE block")));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, SEC1 or PKCS#1) in a PEM file.
///
/// ```no_run
/// let key = quicall_certs::read_key("certs/node-1.key".as_ref())?;
/// # Ok::<(), quicall_certs::Error>(())
/// ```
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let expected = "an unencrypted PEM PRIVATE KEY (PKCS#8), EC PRIVATE KEY (SEC1) or RSA PRIVATE KEY (PKCS#1) block";
        let labels = pem_labels(&bytes);
        if labels.iter().any(|l| l == "ENCRYPTED PRIVATE KEY") {
            pem_error(
                path,
                format!(
                    "the key is encrypted (ENCRYPTED PRIVATE KEY); expected {expected} \
                     (decrypt it with `openssl pkcs8 -in KEY -out KEY.plain`)"
                ),
            )
        } else if labels.is_empty() && !bytes.is_empty() {
            pem_error(path, found(&bytes, expected))
        } else {
            pem_error(path, format!("{e}; {}", found(&bytes, expected)))
        }
    })
}

/// Reads every certificate revocation list in a PEM file.
///
/// ```no_run
/// let crls = quicall_certs::read_crls("certs/ca.crl".as_ref())?;
/// # Ok::<(), quicall_certs::Error>(())
/// ```
pub fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, Error> {
    let bytes = read(path)?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e.to_string()))?;
    if crls.is_empty() {
        return Err(pem_error(path, found(&bytes, "a PEM X509 CRL block")));
    }
    Ok(crls)
}

/// Reads the serial number of the first certificate in a PEM file.
pub fn read_serial(path: &Path) -> Result<Vec<u8>, Error> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let cert = read_certs(path)?.remove(0);
    let (_, parsed) = X509Certificate::from_der(&cert)
        .map_err(|e| pem_error(path, format!("not an X.509 certificate: {e}")))?;
    Ok(parsed.raw_serial().to_vec())
}

/// Writes a public file (a certificate), creating parent folders.
pub fn write_public(path: &Path, contents: &str) -> Result<(), Error> {
    create_parent(path)?;
    std::fs::write(path, contents).map_err(|source| io_error(path, source))
}

/// Writes a private file (a key), readable only by its owner on Unix, creating
/// parent folders.
pub fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    use std::io::Write;
    create_parent(path)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|source| io_error(path, source))?;
    file.write_all(contents.as_bytes())
        .map_err(|source| io_error(path, source))
}

fn create_parent(path: &Path) -> Result<(), Error> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|source| io_error(dir, source))
        }
        _ => Ok(()),
    }
}

/// The labels of the PEM blocks in `bytes` (`CERTIFICATE`, `PRIVATE KEY` ...).
fn pem_labels(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|line| line.trim().strip_prefix("-----BEGIN "))
        .filter_map(|rest| rest.strip_suffix("-----"))
        .map(str::to_owned)
        .collect()
}

/// What a file holds, for a message that also says what was `expected`.
fn found(bytes: &[u8], expected: &str) -> String {
    let labels = pem_labels(bytes);
    let what = if bytes.is_empty() {
        "the file is empty".to_owned()
    } else if !labels.is_empty() {
        format!("found PEM blocks {}", labels.join(", "))
    } else if bytes[0] == 0x30 {
        // An ASN.1 SEQUENCE: most likely DER.
        "found binary data that looks like DER (convert it with \
         `openssl x509 -inform der` or `openssl pkey -inform der`)"
            .to_owned()
    } else {
        "found no PEM block".to_owned()
    };
    format!("{what}; expected {expected}")
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|error| io_error(path, error))
}

fn io_error(path: &Path, error: std::io::Error) -> Error {
    Error::Io {
        path: path.to_owned(),
        error,
    }
}

fn pem_error(path: &Path, reason: String) -> Error {
    Error::Pem {
        path: path.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that cannot be read says so once, with its path: the reason
    /// is in the message and not also the `source()`, which a printed
    /// chain (`quicall serve`'s `error: {e:#}`) would repeat.
    #[test]
    fn an_unreadable_file_is_named_with_its_reason_once() {
        let missing = Path::new("/nonexistent/quicall/node.key");
        let e = read_key(missing).unwrap_err();
        let message = e.to_string();
        assert!(
            message.starts_with("/nonexistent/quicall/node.key: "),
            "{message}"
        );
        assert_eq!(message.matches("os error").count(), 1, "{message}");
        assert!(std::error::Error::source(&e).is_none());
    }

    #[test]
    fn messages_say_what_was_found_and_what_was_expected() {
        let dir = tempfile_dir();
        let der = dir.join("cert.der");
        std::fs::write(&der, [0x30, 0x82, 0x01, 0x0a]).unwrap();
        let e = read_certs(&der).unwrap_err().to_string();
        assert!(
            e.contains("DER") && e.contains("expected a PEM CERTIFICATE"),
            "{e}"
        );

        let encrypted = dir.join("enc.key");
        std::fs::write(
            &encrypted,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = read_key(&encrypted).unwrap_err().to_string();
        assert!(
            e.contains("encrypted") && e.contains("expected an unencrypted"),
            "{e}"
        );

        let cert_as_key = dir.join("cert.key");
        std::fs::write(
            &cert_as_key,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = read_key(&cert_as_key).unwrap_err().to_string();
        assert!(e.contains("found PEM blocks CERTIFICATE"), "{e}");

        let empty = dir.join("empty.crt");
        std::fs::write(&empty, "").unwrap();
        let e = read_certs(&empty).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "quicall-certs-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
