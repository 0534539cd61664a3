use std::path::PathBuf;

/// Why a certificate could not be made, written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// rcgen refused the parameters or could not sign.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A name given as a subject alternative name is not a valid DNS name or IP address.
    #[error("invalid subject alternative name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error: in the message, and not also the
        /// `source()`, so that a printed chain says it once.
        error: std::io::Error,
    },
    /// A PEM file holds no usable item of the kind asked for, or is malformed.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
}
