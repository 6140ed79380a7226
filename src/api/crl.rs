//! The client CAs' revocation lists, checked as they are loaded (at start and on SIGHUP). rustls
//! only parses a list when it builds the verifier and checks the list's signature at each
//! handshake: a list signed by another key, by a CA whose key may not sign lists, or by a CA that
//! is not a client CA would load without a word and then refuse every client of that CA at the
//! handshake (logged at debug level only). So each list must be signed (verified with ring) by a
//! CA of `tls.client_ca_file` whose key usage allows cRLSign, and be the only list of its CA:
//! rustls uses the first list it finds for an issuer, `auth/revoked.rs` would read them all.
//! A list must also be in date (before its nextUpdate), as the handshake requires.

use std::collections::HashSet;
use std::time::SystemTime;

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use tokio_rustls::rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use x509_cert::crl::CertificateList;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::oid::db::{rfc5912, rfc8410};
use x509_cert::der::oid::AssociatedOid;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::KeyUsage;
use x509_cert::Certificate;

/// Checks every list against the client CAs; the error names the list's issuer and what is wrong.
/// A list past its nextUpdate at `now` is refused.
pub fn check(
    crls: &[CertificateRevocationListDer<'_>],
    cas: &[CertificateDer<'_>],
    now: SystemTime,
) -> Result<(), String> {
    let cas = cas
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).map_err(|e| format!("a client CA certificate does not parse: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut issuers = HashSet::new();
    for crl in crls {
        let list =
            CertificateList::from_der(crl.as_ref()).map_err(|e| format!("a revocation list does not parse: {e}"))?;
        let issuer = &list.tbs_cert_list.issuer;
        let issuer_der = issuer.to_der().map_err(|e| e.to_string())?;
        if !issuers.insert(issuer_der.clone()) {
            return Err(format!("two revocation lists of {issuer}: give only its current one"));
        }
        let ca = cas
            .iter()
            .find(|ca| ca.tbs_certificate.subject.to_der().is_ok_and(|s| s == issuer_der))
            .ok_or_else(|| format!("the revocation list of {issuer} is not from a CA in tls.client_ca_file"))?;
        if !may_sign_lists(ca) {
            return Err(format!(
                "the CA {issuer} may not sign revocation lists (its key usage lacks cRLSign)"
            ));
        }
        let signed = list.tbs_cert_list.to_der().map_err(|e| e.to_string())?;
        let signature = list.signature.raw_bytes();
        let algorithm = verification_algorithm(&list.signature_algorithm.oid, ca)
            .ok_or_else(|| format!("the revocation list of {issuer} has a signature algorithm kms does not check"))?;
        let key = ca
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes();
        UnparsedPublicKey::new(algorithm, key)
            .verify(&signed, signature)
            .map_err(|_| format!("the revocation list of {issuer} is not signed by that CA's key"))?;
        // Past its nextUpdate a list refuses its CA's every client (at the handshake and in
        // `auth/revoked.rs`): say so now rather than load a list that locks everyone out.
        let next_update = list
            .tbs_cert_list
            .next_update
            .ok_or_else(|| format!("the revocation list of {issuer} has no nextUpdate (when it goes out of date)"))?;
        if next_update.to_system_time() <= now {
            return Err(format!(
                "the revocation list of {issuer} went out of date at {next_update} (its nextUpdate): give its \
                 current list"
            ));
        }
    }
    Ok(())
}

/// Whether the CA's key usage (if it has one) allows signing revocation lists.
fn may_sign_lists(ca: &Certificate) -> bool {
    let Some(ext) = ca
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == KeyUsage::OID)
    else {
        return true;
    };
    KeyUsage::from_der(ext.extn_value.as_bytes()).is_ok_and(|u| u.crl_sign())
}

/// ring's algorithm for a list signed with `signed_with` by `ca`'s key (ECDSA: the key's curve).
fn verification_algorithm(
    signed_with: &ObjectIdentifier,
    ca: &Certificate,
) -> Option<&'static dyn VerificationAlgorithm> {
    let spki = &ca.tbs_certificate.subject_public_key_info;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    let p256 = curve == Some(rfc5912::SECP_256_R_1);
    let p384 = curve == Some(rfc5912::SECP_384_R_1);
    Some(match *signed_with {
        rfc5912::ECDSA_WITH_SHA_256 if p256 => &signature::ECDSA_P256_SHA256_ASN1,
        rfc5912::ECDSA_WITH_SHA_256 if p384 => &signature::ECDSA_P384_SHA256_ASN1,
        rfc5912::ECDSA_WITH_SHA_384 if p256 => &signature::ECDSA_P256_SHA384_ASN1,
        rfc5912::ECDSA_WITH_SHA_384 if p384 => &signature::ECDSA_P384_SHA384_ASN1,
        rfc5912::SHA_256_WITH_RSA_ENCRYPTION => &signature::RSA_PKCS1_2048_8192_SHA256,
        rfc5912::SHA_384_WITH_RSA_ENCRYPTION => &signature::RSA_PKCS1_2048_8192_SHA384,
        rfc5912::SHA_512_WITH_RSA_ENCRYPTION => &signature::RSA_PKCS1_2048_8192_SHA512,
        rfc8410::ID_ED_25519 => &signature::ED25519,
        _ => return None,
    })
}
