use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::TransportError;

/// The ALPN protocol identifier of quicall's wire protocol, version 1.
pub const ALPN: &[u8] = b"quicall/1";

/// Whether a server asks its clients for certificates.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientAuth {
    /// Mutual TLS: every client must present a certificate that chains to one
    /// of these CA certificates; others are refused during the handshake.
    Required(Vec<CertificateDer<'static>>),
    /// Clients may present a certificate from one of these CAs (and are then
    /// identified) or none (and are anonymous); a certificate from another CA
    /// is refused.
    Optional(Vec<CertificateDer<'static>>),
    /// Clients are not asked for a certificate. The connection is still
    /// encrypted and the server still authenticated.
    None,
}

/// A server's certificate chain, private key and client authentication policy.
///
/// ```no_run
/// use quicall_transport::{ClientAuth, ServerTls};
/// let chain = quicall_certs::read_certs("certs/node-1.crt".as_ref())?;
/// let key = quicall_certs::read_key("certs/node-1.key".as_ref())?;
/// let ca = quicall_certs::read_certs("certs/ca.crt".as_ref())?;
/// let tls = ServerTls::new(chain, key, ClientAuth::Required(ca));
/// # Ok::<(), quicall_certs::Error>(())
/// ```
#[derive(Debug)]
pub struct ServerTls {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_auth: ClientAuth,
    crls: Vec<CertificateRevocationListDer<'static>>,
}

impl ServerTls {
    /// A server identity (`chain`, leaf first, and its `key`) with a client
    /// authentication policy.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_auth: ClientAuth,
    ) -> Self {
        Self {
            chain,
            key,
            client_auth,
            crls: Vec::new(),
        }
    }

    /// Refuses client certificates that these revocation lists revoke (the
    /// lists must be signed by the client CA). A client certificate whose
    /// status no list gives is accepted.
    pub fn with_crls(mut self, crls: Vec<CertificateRevocationListDer<'static>>) -> Self {
        self.crls = crls;
        self
    }

    pub(crate) fn quic_config(self) -> Result<Arc<QuicServerConfig>, TransportError> {
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?;
        let builder = match self.client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Required(roots) | ClientAuth::Optional(roots) if roots.is_empty() => {
                return Err(TransportError::Config(
                    "client authentication needs at least one CA certificate".into(),
                ));
            }
            ClientAuth::Required(roots) => {
                builder.with_client_cert_verifier(Arc::new(crate::chain::Bounded(
                    WebPkiClientVerifier::builder_with_provider(root_store(roots)?, provider)
                        .with_crls(self.crls)
                        .allow_unknown_revocation_status()
                        .build()
                        .map_err(|e| TransportError::Config(e.to_string()))?,
                )))
            }
            ClientAuth::Optional(roots) => {
                builder.with_client_cert_verifier(Arc::new(crate::chain::Bounded(
                    WebPkiClientVerifier::builder_with_provider(root_store(roots)?, provider)
                        .with_crls(self.crls)
                        .allow_unknown_revocation_status()
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| TransportError::Config(e.to_string()))?,
                )))
            }
        };
        let mut config = builder
            .with_single_cert(self.chain, self.key)
            .map_err(tls_error)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        // QUIC carries its own 0-RTT rules; calls are not replay-safe, so none.
        config.max_early_data_size = 0;
        let config = QuicServerConfig::try_from(config)
            .map_err(|e| TransportError::Config(e.to_string()))?;
        Ok(Arc::new(config))
    }
}

/// What a client trusts, and the certificate it shows if the server asks.
///
/// ```no_run
/// use quicall_transport::ClientTls;
/// let ca = quicall_certs::read_certs("certs/ca.crt".as_ref())?;
/// let chain = quicall_certs::read_certs("certs/alice.crt".as_ref())?;
/// let key = quicall_certs::read_key("certs/alice.key".as_ref())?;
/// let tls = ClientTls::new(ca).with_identity(chain, key);
/// # Ok::<(), quicall_certs::Error>(())
/// ```
#[derive(Debug)]
pub struct ClientTls {
    roots: Vec<CertificateDer<'static>>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

impl ClientTls {
    /// A client that trusts servers whose certificates chain to one of `roots`,
    /// and has no certificate of its own.
    pub fn new(roots: Vec<CertificateDer<'static>>) -> Self {
        Self {
            roots,
            identity: None,
        }
    }

    /// Adds the client's own certificate chain and key, for mutual TLS.
    pub fn with_identity(
        mut self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Self {
        self.identity = Some((chain, key));
        self
    }

    pub(crate) fn quic_config(self) -> Result<Arc<QuicClientConfig>, TransportError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_root_certificates(root_store(self.roots)?);
        let mut config = match self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(tls_error)?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN.to_vec()];
        config.enable_early_data = false;
        let config = QuicClientConfig::try_from(config)
            .map_err(|e| TransportError::Config(e.to_string()))?;
        Ok(Arc::new(config))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn root_store(roots: Vec<CertificateDer<'static>>) -> Result<Arc<RootCertStore>, TransportError> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root).map_err(tls_error)?;
    }
    if store.is_empty() {
        return Err(TransportError::Config("no trusted CA certificate".into()));
    }
    Ok(Arc::new(store))
}

fn tls_error(e: rustls::Error) -> TransportError {
    TransportError::Config(format!("TLS: {e}"))
}
