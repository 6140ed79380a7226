//! Client certificates (already verified against the configured CA by rustls) mapped to principals
//! by a SAN URI, a SAN DNS name or the subject's common name.

use tonic::transport::CertificateDer;
use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
use x509_cert::der::oid::AssociatedOid;
use x509_cert::der::{Decode, Tag, Tagged};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

use super::revoked::Revoked;
use super::{principal_account, CertRuleConfig};
use crate::error::{KmsError, Result};

const CN_OID: &str = "2.5.4.3";

pub enum CertRule {
    Uri(String, String),
    Dns(String, String),
    Cn(String, String),
}

impl CertRule {
    pub fn new(c: &CertRuleConfig) -> std::result::Result<CertRule, String> {
        principal_account(&c.principal).map_err(|e| format!("auth.certificates principal: {e}"))?;
        let p = c.principal.clone();
        match c.matches.split_once(':') {
            Some(("uri", v)) => Ok(CertRule::Uri(v.to_string(), p)),
            // DNS names are case-insensitive (RFC 4343): kept lowercased, compared so.
            Some(("dns", v)) => Ok(CertRule::Dns(v.to_ascii_lowercase(), p)),
            Some(("cn", v)) => Ok(CertRule::Cn(v.to_string(), p)),
            _ => Err(format!(
                "auth.certificates match {:?} must start with uri:, dns: or cn:",
                c.matches
            )),
        }
    }
}

/// The principal of the first rule the leaf certificate satisfies. A rule is only decided on a
/// certificate with exactly one name of its kind (SAN URI, SAN DNS name, subject common name):
/// with several (`CN=someone-else, CN=dave`) which one names the holder is a matter of
/// convention, and a CA that lets a requester add a name would let them pick whichever rule
/// comes first. Such a certificate is refused when a rule of that kind is reached.
/// A certificate on a CRL in `revoked` is refused whatever the rules say.
pub fn principal_for(rules: &[CertRule], revoked: &Revoked, cert: &Certificate) -> Result<Option<String>> {
    if revoked.contains(cert) {
        return Err(KmsError::Unauthenticated(REVOKED.into()));
    }
    principal_of(rules, &Names::of(cert)?)
}

pub fn parse(leaf: &CertificateDer<'_>) -> Result<Certificate> {
    Certificate::from_der(leaf.as_ref())
        .map_err(|_| KmsError::Unauthenticated("The client certificate cannot be parsed".into()))
}

/// The refusal of a certificate on a revocation list.
pub const REVOKED: &str = "The client certificate has been revoked";
/// The refusal of a certificate whose issuer's revocation list is past its nextUpdate.
pub const LIST_OUT_OF_DATE: &str =
    "The revocation list of the client certificate's issuer is out of date, so its status is unknown";

fn principal_of(rules: &[CertRule], names: &Names) -> Result<Option<String>> {
    let only = |found: &[String], what: &str, matches: &dyn Fn(&String) -> bool| {
        if found.len() > 1 {
            return Err(KmsError::Unauthenticated(format!(
                "The client certificate has {} subject alternative name {what}s; a certificate rule \
                 matching {what}s needs exactly one",
                found.len()
            )));
        }
        Ok(found.first().is_some_and(matches))
    };
    for rule in rules {
        let matched = match rule {
            CertRule::Uri(v, _) => only(&names.uris, "URI", &|f| f == v)?,
            CertRule::Dns(v, _) => only(&names.dns, "DNS name", &|f| f.eq_ignore_ascii_case(v))?,
            CertRule::Cn(v, _) => {
                if names.cn_count > 1 {
                    return Err(KmsError::Unauthenticated(
                        "The client certificate's subject has more than one common name".into(),
                    ));
                }
                names.cn.as_ref() == Some(v)
            }
        };
        if matched {
            let (CertRule::Uri(_, p) | CertRule::Dns(_, p) | CertRule::Cn(_, p)) = rule;
            return Ok(Some(p.clone()));
        }
    }
    Ok(None)
}

#[derive(Default)]
struct Names {
    uris: Vec<String>,
    dns: Vec<String>,
    cn: Option<String>,
    /// Common-name attributes in the subject, whatever their string type.
    cn_count: usize,
}

impl Names {
    /// The certificate's names. A subject alternative name extension that doesn't parse refuses
    /// the certificate: skipped, the certificate would look as if it had none, and a `cn:` rule
    /// would decide without the one-name-per-kind check seeing its SANs.
    fn of(cert: &Certificate) -> Result<Names> {
        let mut names = Names::default();
        let tbs = &cert.tbs_certificate;
        for ext in tbs.extensions.iter().flatten() {
            if ext.extn_id == SubjectAltName::OID {
                let san = SubjectAltName::from_der(ext.extn_value.as_bytes()).map_err(|_| {
                    KmsError::Unauthenticated(
                        "The client certificate's subject alternative names cannot be read".into(),
                    )
                })?;
                for n in san.0 {
                    match n {
                        GeneralName::UniformResourceIdentifier(u) => names.uris.push(u.to_string()),
                        GeneralName::DnsName(d) => names.dns.push(d.to_string()),
                        _ => {}
                    }
                }
            }
        }
        for rdn in tbs.subject.0.iter() {
            for atv in rdn.0.iter() {
                if atv.oid.to_string() == CN_OID {
                    names.cn = directory_string(&atv.value);
                    names.cn_count += 1;
                }
            }
        }
        Ok(names)
    }
}

fn directory_string(value: &x509_cert::der::Any) -> Option<String> {
    match value.tag() {
        Tag::Utf8String => Utf8StringRef::try_from(value).ok().map(|s| s.as_str().to_string()),
        Tag::PrintableString => PrintableStringRef::try_from(value).ok().map(|s| s.as_str().to_string()),
        Tag::Ia5String => Ia5StringRef::try_from(value).ok().map(|s| s.as_str().to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(m: &str, user: &str) -> CertRule {
        CertRule::new(&CertRuleConfig {
            matches: m.into(),
            principal: format!("arn:aws:iam::111122223333:user/{user}"),
        })
        .unwrap()
    }

    fn names(uris: &[&str], dns: &[&str]) -> Names {
        Names {
            uris: uris.iter().map(|s| s.to_string()).collect(),
            dns: dns.iter().map(|s| s.to_string()).collect(),
            ..Names::default()
        }
    }

    /// A holder who got a second SAN added must not pick the rule that comes first.
    #[test]
    fn several_sans_of_a_rules_kind_are_refused() {
        let rules = [rule("uri:spiffe://x/bob", "bob"), rule("uri:spiffe://x/alice", "alice")];
        let one = principal_of(&rules, &names(&["spiffe://x/alice"], &[])).unwrap();
        assert_eq!(one.as_deref(), Some("arn:aws:iam::111122223333:user/alice"));
        let two = principal_of(&rules, &names(&["spiffe://x/alice", "spiffe://x/bob"], &[]));
        let Err(KmsError::Unauthenticated(msg)) = two else {
            panic!("{two:?}")
        };
        assert!(msg.contains("2 subject alternative name URIs"), "{msg}");

        let rules = [rule("dns:bob.example", "bob"), rule("dns:alice.example", "alice")];
        assert!(principal_of(&rules, &names(&[], &["alice.example", "bob.example"])).is_err());
        // Several names of another kind don't matter to a rule.
        let ok = principal_of(&rules, &names(&["spiffe://a", "spiffe://b"], &["alice.example"])).unwrap();
        assert_eq!(ok.as_deref(), Some("arn:aws:iam::111122223333:user/alice"));
    }

    /// DNS names match whatever their case, in the rule or the certificate; URIs keep theirs.
    #[test]
    fn dns_rules_ignore_case_and_uri_rules_do_not() {
        let rules = [rule("dns:Alice.Example", "alice"), rule("uri:spiffe://x/Bob", "bob")];
        for dns in ["alice.example", "ALICE.EXAMPLE", "Alice.Example"] {
            let found = principal_of(&rules, &names(&[], &[dns])).unwrap();
            assert_eq!(found.as_deref(), Some("arn:aws:iam::111122223333:user/alice"), "{dns}");
        }
        assert_eq!(principal_of(&rules, &names(&["spiffe://x/bob"], &[])).unwrap(), None);
    }
}
