//! Client certificates revoked by the CAs' certificate revocation lists (`tls.client_crl_file`).
//! rustls checks them at the handshake (`api/tls.rs`); this set checks them again when a
//! connection's certificate is mapped to a principal, so that a CRL reloaded on SIGHUP also
//! refuses certificates on connections opened before it. A CRL here can only take access away,
//! so its signature is left to the handshake's check (the same file, read at the same reload).

use std::collections::HashSet;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateRevocationListDer;
use x509_cert::crl::CertificateList;
use x509_cert::der::{Decode, Encode};
use x509_cert::Certificate;

/// (issuer name as DER, serial number): serials are unique per issuer only.
#[derive(Default)]
pub struct Revoked(HashSet<(Vec<u8>, Vec<u8>)>);

impl Revoked {
    /// The certificates revoked by the CRLs in a PEM file's contents (None: no file configured).
    pub fn from_file_contents(pem: Option<&[u8]>) -> Result<Revoked, String> {
        pem.map_or_else(|| Ok(Revoked::default()), Revoked::from_pem)
    }

    fn from_pem(pem: &[u8]) -> Result<Revoked, String> {
        let mut revoked = HashSet::new();
        let mut lists = 0;
        for crl in CertificateRevocationListDer::pem_slice_iter(pem) {
            let crl = crl.map_err(|e| format!("not a PEM certificate revocation list: {e}"))?;
            let list = CertificateList::from_der(crl.as_ref()).map_err(|e| format!("a CRL does not parse: {e}"))?;
            let issuer = list.tbs_cert_list.issuer.to_der().map_err(|e| e.to_string())?;
            for cert in list.tbs_cert_list.revoked_certificates.iter().flatten() {
                revoked.insert((issuer.clone(), cert.serial_number.as_bytes().to_vec()));
            }
            lists += 1;
        }
        if lists == 0 {
            return Err("holds no certificate revocation list".into());
        }
        Ok(Revoked(revoked))
    }

    /// No list revokes anything (or there is no list).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, cert: &Certificate) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let tbs = &cert.tbs_certificate;
        // A name parsed from DER encodes again; if it somehow didn't, refuse rather than pass.
        let Ok(issuer) = tbs.issuer.to_der() else {
            return true;
        };
        self.0.contains(&(issuer, tbs.serial_number.as_bytes().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_a_list_is_refused() {
        for pem in [
            "",
            "not a CRL",
            "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        ] {
            assert!(Revoked::from_pem(pem.as_bytes()).is_err(), "{pem:?}");
        }
        assert!(
            Revoked::from_file_contents(None).unwrap().0.is_empty(),
            "no file, nothing revoked"
        );
    }
}
