//! Client certificates revoked by the CAs' certificate revocation lists (`tls.client_crl_file`).
//! rustls checks them at the handshake (`api/tls.rs`); this set checks them again when a
//! connection's certificate is mapped to a principal, so that a CRL reloaded on SIGHUP also
//! refuses certificates on connections opened before it. A CRL here can only take access away,
//! so its signature is left to the handshake's check (the same file, read at the same reload).
//! A list past its nextUpdate no longer says who is revoked: its CA's certificates are refused
//! from then on, as the handshake refuses them (`enforce_revocation_expiration` in `api/tls.rs`).

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateRevocationListDer;
use x509_cert::crl::CertificateList;
use x509_cert::der::{Decode, Encode};
use x509_cert::Certificate;

#[derive(Default)]
pub struct Revoked {
    /// (issuer name as DER, serial number): serials are unique per issuer only.
    serials: HashSet<(Vec<u8>, Vec<u8>)>,
    /// When each issuer's list goes out of date (its nextUpdate).
    out_of_date: HashMap<Vec<u8>, SystemTime>,
    /// The earliest of those: until then no list is out of date.
    first_out_of_date: Option<SystemTime>,
}

impl Revoked {
    /// The certificates revoked by the CRLs in a PEM file's contents (None: no file configured).
    pub fn from_file_contents(pem: Option<&[u8]>) -> Result<Revoked, String> {
        pem.map_or_else(|| Ok(Revoked::default()), Revoked::from_pem)
    }

    fn from_pem(pem: &[u8]) -> Result<Revoked, String> {
        let mut revoked = Revoked::default();
        let mut lists = 0;
        for crl in CertificateRevocationListDer::pem_slice_iter(pem) {
            let crl = crl.map_err(|e| format!("not a PEM certificate revocation list: {e}"))?;
            let list = CertificateList::from_der(crl.as_ref()).map_err(|e| format!("a CRL does not parse: {e}"))?;
            let issuer = list.tbs_cert_list.issuer.to_der().map_err(|e| e.to_string())?;
            for cert in list.tbs_cert_list.revoked_certificates.iter().flatten() {
                revoked
                    .serials
                    .insert((issuer.clone(), cert.serial_number.as_bytes().to_vec()));
            }
            // No nextUpdate: refused by the TLS configuration's check (`api/crl.rs`).
            if let Some(next_update) = list.tbs_cert_list.next_update {
                let at = next_update.to_system_time();
                revoked.out_of_date.insert(issuer, at);
                revoked.first_out_of_date = Some(revoked.first_out_of_date.map_or(at, |t| t.min(at)));
            }
            lists += 1;
        }
        if lists == 0 {
            return Err("holds no certificate revocation list".into());
        }
        Ok(revoked)
    }

    /// Nothing to check at `now`: no list revokes anything and none is out of date.
    pub fn nothing_to_check(&self, now: SystemTime) -> bool {
        self.serials.is_empty() && self.first_out_of_date.is_none_or(|t| now < t)
    }

    pub fn contains(&self, cert: &Certificate) -> bool {
        if self.serials.is_empty() {
            return false;
        }
        let tbs = &cert.tbs_certificate;
        // A name parsed from DER encodes again; if it somehow didn't, refuse rather than pass.
        let Ok(issuer) = tbs.issuer.to_der() else {
            return true;
        };
        self.serials.contains(&(issuer, tbs.serial_number.as_bytes().to_vec()))
    }

    /// When the list of the certificate's issuer goes out of date (None: no list for it).
    pub fn list_out_of_date(&self, cert: &Certificate) -> Option<SystemTime> {
        let issuer = cert.tbs_certificate.issuer.to_der().ok()?;
        self.out_of_date.get(&issuer).copied()
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
            Revoked::from_file_contents(None)
                .unwrap()
                .nothing_to_check(SystemTime::now()),
            "no file, nothing revoked"
        );
    }
}
