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
        return Err(pem_error(path, "no CERTIFICATE in the file".into()));
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
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| pem_error(path, e.to_string()))
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
        return Err(pem_error(path, "no X509 CRL in the file".into()));
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

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| io_error(path, source))
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn pem_error(path: &Path, reason: String) -> Error {
    Error::Pem {
        path: path.to_owned(),
        reason,
    }
}
