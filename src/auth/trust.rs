//! What client certificates are checked against: the client CAs (`tls.client_ca_file`) and their
//! revocation lists (`tls.client_crl_file`). Read once, at start and on each SIGHUP, for both the
//! handshake and the authenticator, so that the two never hold different CAs or lists.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, UnixTime};
use tokio_rustls::rustls::server::danger::ClientCertVerifier;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::RootCertStore;

use crate::config::TlsConfig;

#[derive(Default)]
pub struct ClientTrust {
    /// None: no client CA, so no client certificate is accepted.
    pub cas: Option<ClientCas>,
    /// The contents of `tls.client_crl_file`.
    pub crls: Option<Vec<u8>>,
}

#[derive(Clone)]
pub struct ClientCas {
    pub certs: Vec<CertificateDer<'static>>,
    pub roots: Arc<RootCertStore>,
    /// Chains to `roots` for client authentication, every certificate in date at the time asked
    /// (revocation is checked apart).
    chains: Arc<dyn ClientCertVerifier>,
}

impl ClientTrust {
    /// The files `tls` names, with TLS on; nothing without.
    pub fn read(tls: Option<&TlsConfig>) -> Result<ClientTrust, String> {
        let cas = match tls.and_then(|t| t.client_ca_file.as_deref()) {
            None => None,
            Some(file) => Some(ClientCas::read(file)?),
        };
        Ok(ClientTrust {
            cas,
            crls: ClientTrust::lists_only(tls)?.crls,
        })
    }

    /// Only the revocation lists: enough to check the credentials that go with them.
    pub fn lists_only(tls: Option<&TlsConfig>) -> Result<ClientTrust, String> {
        let crls = match tls.and_then(|t| t.client_crl_file.as_deref()) {
            None => None,
            Some(file) => Some(
                std::fs::read(file).map_err(|e| format!("tls.client_crl_file: cannot read {}: {e}", file.display()))?,
            ),
        };
        Ok(ClientTrust { cas: None, crls })
    }
}

impl ClientCas {
    pub(super) fn read(file: &std::path::Path) -> Result<ClientCas, String> {
        let pem = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("TLS: cannot read the certificates in {}: {e}", file.display()))?;
        let mut roots = RootCertStore::empty();
        for cert in &certs {
            roots
                .add(cert.clone())
                .map_err(|e| format!("TLS: a certificate in {} cannot be a trust anchor: {e}", file.display()))?;
        }
        let roots = Arc::new(roots);
        let chains = WebPkiClientVerifier::builder(roots.clone())
            .build()
            .map_err(|e| format!("TLS: client CA {}: {e}", file.display()))?;
        Ok(ClientCas { certs, roots, chains })
    }

    /// Whether `chain` (leaf first, as the client presented it) leads to one of these CAs, at
    /// `at` (a time inside the leaf's validity period: its expiry is refused as such elsewhere;
    /// an intermediate out of date fails, as it would a new handshake).
    pub fn anchor(&self, chain: &[CertificateDer<'_>], at: SystemTime) -> bool {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return false;
        };
        let at = UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).unwrap_or_default());
        self.chains.verify_client_cert(leaf, intermediates, at).is_ok()
    }

    /// Whether `ca` is one of these CAs.
    pub fn includes(&self, ca: &CertificateDer<'_>) -> bool {
        self.certs.iter().any(|c| c.as_ref() == ca.as_ref())
    }
}
