//! Who is calling. A request is authenticated by a bearer token (`authorization: Bearer ...`) or a
//! client certificate verified by the TLS layer; in dev mode a request with neither is the
//! account's root principal. Outside dev mode no request without a principal reaches an operation.

mod certs;
pub mod identity;
mod revoked;
mod tokens;
mod trust;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use serde::Deserialize;
use tonic::transport::CertificateDer;

use crate::error::{KmsError, Result};
pub use certs::CertRule;
pub use identity::IdentityStore;
use revoked::Revoked;
pub use tokens::{token_digest, TokenTable};
pub use trust::{ClientCas, ClientTrust};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Accept unauthenticated requests as the account's root principal. Development only: off
    /// unless set here or by `kms serve --dev`.
    pub dev_mode: bool,
    /// Service-account tokens, configured as SHA-256 digests (hex), never in plaintext.
    pub tokens: Vec<TokenConfig>,
    /// How client certificates map to principals: first matching rule wins.
    pub certificates: Vec<CertRuleConfig>,
    /// TOML file of identity policies (reloaded on SIGHUP).
    pub identity_policies_file: Option<std::path::PathBuf>,
    /// Accept bearer tokens over plaintext on a non-loopback address (TLS terminated by a proxy
    /// on the same host). Off: such a config refuses to start.
    pub allow_tokens_without_tls: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub sha256: String,
    pub principal: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertRuleConfig {
    /// `uri:<SAN URI>`, `dns:<SAN DNS name>` or `cn:<subject common name>`.
    #[serde(rename = "match")]
    pub matches: String,
    pub principal: String,
}

pub struct Authenticator {
    dev_principal: Option<Arc<str>>,
    /// Tokens and certificate rules: replaced whole by `reload` (SIGHUP), so a revoked token or
    /// rule stops working without a restart, and a request sees either the old set or the new.
    credentials: ArcSwap<Credentials>,
}

/// Tokens, certificate rules and revoked certificates, in force together.
pub struct Credentials {
    tokens: TokenTable,
    certs: Vec<CertRule>,
    /// Certificates on the CRLs of `tls.client_crl_file` (read with the rules, on start and SIGHUP).
    revoked: Revoked,
    /// The client CAs of `tls.client_ca_file`, read with the lists.
    cas: Option<ClientCas>,
    /// A CA trusted since start is not among `cas`: a connection's certificate, verified at its
    /// handshake, must then be anchored again (`replace` sets it before these are in force).
    ca_dropped: AtomicBool,
    /// What each client certificate (its DER, verified by rustls before it gets here) maps to
    /// under these rules, and when it expires. Parsing a leaf costs ~5 us and every mTLS request
    /// is authenticated, so a connection's certificate is parsed once, not per call. It goes with
    /// the rules it was computed under. Read without a lock; a new certificate replaces the map
    /// with a copy that holds it, under `cert_fill`. Principals are shared (`Arc<str>`): the
    /// request's audit record holds one without a copy.
    cert_cache: ArcSwap<HashMap<Arc<[u8]>, Arc<CertEntry>>>,
    cert_fill: Mutex<()>,
}

/// A certificate's outcome under the rules, when the certificate expires, whether a CA in force
/// anchors it, whether it is on a revocation list, and when its issuer's list goes out of date.
struct CertEntry {
    outcome: CertOutcome,
    expires: SystemTime,
    unanchored: bool,
    /// The intermediates `unanchored` was found with (none before a CA is dropped).
    anchored_with: Vec<CertificateDer<'static>>,
    revoked: bool,
    list_out_of_date: Option<SystemTime>,
}

impl CertEntry {
    /// Why a connection this certificate opened serves no one at `now`, whatever the caller
    /// presents on it: its CA is no longer trusted, it is revoked, or its issuer's list is out of
    /// date (its status is unknown).
    fn connection_refusal(&self, now: SystemTime) -> Option<&'static str> {
        if self.unanchored {
            Some(UNANCHORED)
        } else if self.revoked {
            Some(certs::REVOKED)
        } else if self.list_out_of_date.is_some_and(|t| now >= t) {
            Some(certs::LIST_OUT_OF_DATE)
        } else {
            None
        }
    }
}

/// A certificate's principal (None: no rule matched), or why it is refused.
type CertOutcome = std::result::Result<Option<Arc<str>>, String>;

/// The refusal of a certificate that no client CA in force anchors (one was removed on SIGHUP).
const UNANCHORED: &str = "The client certificate's CA is no longer trusted";

/// Certificates remembered at most; the cache starts over when full.
const CERT_CACHE_CAPACITY: usize = 1024;

impl Credentials {
    /// `trust`: its CAs are kept, to check connections opened under earlier ones (its lists are
    /// kept as `revoked`).
    fn new(cfg: &AuthConfig, trust: &ClientTrust) -> std::result::Result<Self, String> {
        let tokens = TokenTable::new(&cfg.tokens)?;
        let revoked =
            Revoked::from_file_contents(trust.crls.as_deref()).map_err(|e| format!("tls.client_crl_file: {e}"))?;
        // One name, one principal: with two rules for it the first would win in silence. DNS
        // names are one name whatever their case.
        let mut seen = std::collections::HashSet::new();
        let name = |m: &str| match m.strip_prefix("dns:") {
            Some(dns) => format!("dns:{}", dns.to_ascii_lowercase()),
            None => m.to_string(),
        };
        if let Some(twice) = cfg.certificates.iter().find(|c| !seen.insert(name(&c.matches))) {
            return Err(format!(
                "auth.certificates has two rules matching {:?}: each name may map to one principal",
                twice.matches
            ));
        }
        let certs = cfg
            .certificates
            .iter()
            .map(CertRule::new)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let principals = cfg.tokens.iter().map(|t| t.principal.as_str());
        one_principal_per_name(principals.chain(cfg.certificates.iter().map(|c| c.principal.as_str())))?;
        Ok(Credentials {
            tokens,
            certs,
            revoked,
            cas: trust.cas.clone(),
            ca_dropped: AtomicBool::new(false),
            cert_cache: ArcSwap::default(),
            cert_fill: Mutex::default(),
        })
    }

    /// `chain`: the connection's client certificate, then the intermediates it came with.
    fn certificate_principal(&self, chain: &[CertificateDer<'_>]) -> Result<Option<Arc<str>>> {
        self.certificate_principal_at(chain, SystemTime::now())
    }

    /// Refuses a connection whose certificate no CA in force anchors, is revoked, or whose
    /// issuer's list went out of date: it serves no one, bearer-token callers on it included.
    /// Free while no CA was dropped, no list revokes anything and none is out of date.
    fn check_connection(&self, chain: &[CertificateDer<'_>], now: SystemTime) -> Result<()> {
        if self.revoked.nothing_to_check(now) && !self.ca_dropped.load(Ordering::Relaxed) {
            return Ok(());
        }
        match self.cert_entry(chain)?.connection_refusal(now) {
            Some(refusal) => Err(KmsError::Unauthenticated(refusal.into())),
            None => Ok(()),
        }
    }

    fn certificate_principal_at(&self, chain: &[CertificateDer<'_>], now: SystemTime) -> Result<Option<Arc<str>>> {
        let entry = self.cert_entry(chain)?;
        // TLS checked the validity period and the list at the handshake; a connection can
        // outlive both.
        if now > entry.expires {
            return Err(KmsError::Unauthenticated("The client certificate has expired".into()));
        }
        if let Some(refusal) = entry.connection_refusal(now) {
            return Err(KmsError::Unauthenticated(refusal.into()));
        }
        entry.outcome.clone().map_err(KmsError::Unauthenticated)
    }

    /// The certificate's entry, from the cache or computed into it. Keyed by the leaf; once a CA
    /// is dropped, anchoring depends on the intermediates too, so an entry found with others is
    /// computed again (and replaced).
    fn cert_entry(&self, chain: &[CertificateDer<'_>]) -> Result<Arc<CertEntry>> {
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| KmsError::Unauthenticated("The connection carries no client certificate".into()))?;
        let ca_dropped = self.ca_dropped.load(Ordering::Relaxed);
        let known = self
            .cert_cache
            .load()
            .get(leaf.as_ref())
            .filter(|e| !ca_dropped || e.anchored_with.as_slice() == intermediates)
            .cloned();
        let entry = match known {
            Some(known) => known,
            None => {
                let message = |e: KmsError| match e {
                    KmsError::Unauthenticated(m) => m,
                    other => other.to_string(),
                };
                let cert = certs::parse(leaf)?;
                let o = certs::principal_for(&self.certs, &self.revoked, &cert)
                    .map(|p| p.map(Arc::from))
                    .map_err(message);
                let revoked = matches!(&o, Err(m) if m == certs::REVOKED);
                let validity = &cert.tbs_certificate.validity;
                let expires = validity.not_after.to_system_time();
                // Its chain was verified at the handshake, by CAs that all still are unless one
                // was dropped. Checked at a time the leaf is valid: expiry is refused as such.
                let anchored = || {
                    let at = SystemTime::now().max(validity.not_before.to_system_time()).min(expires);
                    self.cas.as_ref().is_some_and(|cas| cas.anchor(chain, at))
                };
                let entry = Arc::new(CertEntry {
                    outcome: o,
                    expires,
                    unanchored: ca_dropped && !anchored(),
                    anchored_with: match ca_dropped {
                        true => intermediates.iter().map(|c| c.clone().into_owned()).collect(),
                        false => Vec::new(),
                    },
                    revoked,
                    list_out_of_date: self.revoked.list_out_of_date(&cert),
                });
                let _filling = self.cert_fill.lock().unwrap_or_else(|p| p.into_inner());
                let current = self.cert_cache.load();
                let mut next = if current.len() >= CERT_CACHE_CAPACITY {
                    HashMap::new()
                } else {
                    HashMap::clone(&current)
                };
                next.insert(Arc::from(leaf.as_ref()), entry.clone());
                self.cert_cache.store(Arc::new(next));
                entry
            }
        };
        Ok(entry)
    }
}

impl Authenticator {
    /// `trust`: the client CAs and the revocation lists, whose revoked certificates are refused.
    pub fn new(
        cfg: &AuthConfig,
        trust: &ClientTrust,
        partition: &str,
        account: &str,
    ) -> std::result::Result<Self, String> {
        let dev_principal = cfg
            .dev_mode
            .then(|| Arc::from(format!("arn:{partition}:iam::{account}:root")));
        Ok(Authenticator {
            dev_principal,
            credentials: ArcSwap::from_pointee(Credentials::new(cfg, trust)?),
        })
    }

    /// Credentials from `cfg` and the revocation lists, for `replace` once everything else that
    /// reloads with them has loaded too (on an error the current ones stay in force).
    pub fn prepare(cfg: &AuthConfig, trust: &ClientTrust) -> std::result::Result<Arc<Credentials>, String> {
        Credentials::new(cfg, trust).map(Arc::new)
    }

    /// Puts `credentials` in force. Dev mode is not reloaded (it is a start-up decision).
    /// Connections stay open across a reload: once a client CA is dropped, each one's certificate
    /// must be anchored by the CAs in force, for as long as the server runs (a connection opened
    /// under the dropped CA may still be open).
    pub fn replace(&self, credentials: Arc<Credentials>) {
        let before = self.credentials.load();
        let kept = |ca: &CertificateDer<'_>| credentials.cas.as_ref().is_some_and(|cas| cas.includes(ca));
        let dropped = before.ca_dropped.load(Ordering::Relaxed)
            || before.cas.as_ref().is_some_and(|cas| !cas.certs.iter().all(kept));
        credentials.ca_dropped.store(dropped, Ordering::Relaxed);
        self.credentials.store(credentials);
    }

    pub fn dev_mode(&self) -> bool {
        self.dev_principal.is_some()
    }

    /// The caller's principal ARN. A presented credential that matches nothing is refused even in
    /// dev mode: a typo must not silently become root.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        peer_certs: Option<&[CertificateDer<'_>]>,
    ) -> Result<Arc<str>> {
        if let Some(header) = authorization {
            let token = header
                .strip_prefix("Bearer ")
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    KmsError::Unauthenticated("The authorization metadata must be 'Bearer <token>'".into())
                })?;
            let credentials = self.credentials.load();
            let principal = credentials
                .tokens
                .principal_for(token)
                .cloned()
                .ok_or_else(|| KmsError::Unauthenticated("The bearer token is not recognised".into()))?;
            if let Some(chain) = peer_certs.filter(|c| !c.is_empty()) {
                credentials.check_connection(chain, SystemTime::now())?;
            }
            return Ok(principal);
        }
        if let Some(chain) = peer_certs.filter(|c| !c.is_empty()) {
            return self
                .credentials
                .load()
                .certificate_principal(chain)?
                .ok_or_else(|| KmsError::Unauthenticated("The client certificate maps to no principal".into()));
        }
        self.dev_principal
            .clone()
            .ok_or_else(|| KmsError::Unauthenticated("Requests need a bearer token or a client certificate".into()))
    }
}

/// Checks that a principal is an IAM ARN this server understands; returns its account.
pub fn principal_account(arn: &str) -> std::result::Result<String, String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    // A user's or role's path and name: no empty segment (so the name, the last one, is there).
    let named = |resource: &str| {
        let path = resource
            .strip_prefix("user/")
            .or_else(|| resource.strip_prefix("role/"));
        path.is_some_and(|p| p.split('/').all(|segment| !segment.is_empty()))
    };
    match parts.as_slice() {
        ["arn", _, "iam", "", account, resource]
            if account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && (*resource == "root" || named(resource)) =>
        {
            Ok(account.to_string())
        }
        _ => Err(format!(
            "{arn:?} is not an IAM principal ARN (arn:aws:iam::<account>:root|user/<name>|role/<name>)"
        )),
    }
}

/// Refuses two configured principals that are one IAM user or role under two paths
/// (`user/a/Bob`, `user/b/Bob`): IAM names a user or role once in an account, ignoring case, and a
/// key policy names it by partition, account and name (`policy::principal`), so the two would
/// share every key policy's Allow and Deny.
fn one_principal_per_name<'a>(principals: impl Iterator<Item = &'a str>) -> std::result::Result<(), String> {
    let mut seen: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    for arn in principals {
        let Some((prefix, resource)) = arn.rsplit_once(':') else {
            continue;
        };
        let Some((kind, path)) = resource.split_once('/') else {
            continue; // root
        };
        let name = path.rsplit('/').next().unwrap_or(path);
        let identity = format!("{prefix}:{kind}/{}", name.to_lowercase());
        match seen.insert(identity, arn) {
            Some(other) if other != arn => {
                return Err(format!(
                    "{other:?} and {arn:?} are the same IAM {kind} (names are unique in an account, whatever \
                     the path or case); give each principal its own name"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dev: bool) -> AuthConfig {
        AuthConfig {
            dev_mode: dev,
            tokens: vec![TokenConfig {
                sha256: token_digest("s3cret-token"),
                principal: "arn:aws:iam::111122223333:user/svc".into(),
            }],
            ..AuthConfig::default()
        }
    }

    #[test]
    fn tokens_dev_mode_and_refusals() {
        let strict = Authenticator::new(&cfg(false), &ClientTrust::default(), "aws", "111122223333").unwrap();
        assert_eq!(
            &*strict.authenticate(Some("Bearer s3cret-token"), None).unwrap(),
            "arn:aws:iam::111122223333:user/svc"
        );
        assert!(matches!(
            strict.authenticate(Some("Bearer wrong"), None),
            Err(KmsError::Unauthenticated(_))
        ));
        assert!(matches!(
            strict.authenticate(Some("s3cret-token"), None),
            Err(KmsError::Unauthenticated(_))
        ));
        let dev = Authenticator::new(&cfg(true), &ClientTrust::default(), "aws", "111122223333").unwrap();
        for empty in ["Bearer ", "Bearer"] {
            assert!(matches!(
                dev.authenticate(Some(empty), None),
                Err(KmsError::Unauthenticated(m)) if m.contains("'Bearer <token>'")
            ));
        }
        assert!(matches!(
            strict.authenticate(None, None),
            Err(KmsError::Unauthenticated(_))
        ));
        assert_eq!(
            &*dev.authenticate(None, None).unwrap(),
            "arn:aws:iam::111122223333:root"
        );
        assert!(
            dev.authenticate(Some("Bearer wrong"), None).is_err(),
            "a bad token is refused even in dev mode"
        );
    }

    /// A self-signed certificate for CN=dave (SAN URI spiffe://x/y), valid for a day, made with
    /// the openssl command line.
    pub(super) fn dave_certificate() -> CertificateDer<'static> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        let dir = tempfile::tempdir().unwrap();
        crate::test_certs::self_signed(dir.path(), "/O=kms/CN=dave", &["subjectAltName=URI:spiffe://x/y"]);
        CertificateDer::from_pem_file(dir.path().join("cert.pem")).unwrap()
    }

    /// One rule: the certificate with CN=dave is Dave.
    fn dave_rules() -> Credentials {
        Credentials::new(
            &AuthConfig {
                certificates: vec![CertRuleConfig {
                    matches: "cn:dave".into(),
                    principal: "arn:aws:iam::111122223333:user/dave".into(),
                }],
                ..AuthConfig::default()
            },
            &ClientTrust::default(),
        )
        .unwrap()
    }

    /// rustls checks the validity period at the handshake; a connection that outlives the
    /// certificate is refused from then on.
    #[test]
    fn a_certificate_is_refused_once_it_expires_even_on_an_open_connection() {
        let leaf = dave_certificate();
        let rules = dave_rules();
        let now = SystemTime::now();
        let dave: Option<Arc<str>> = Some("arn:aws:iam::111122223333:user/dave".into());
        assert_eq!(
            rules
                .certificate_principal_at(std::slice::from_ref(&leaf), now)
                .unwrap(),
            dave
        );
        let in_two_days = now + std::time::Duration::from_secs(2 * 86_400);
        let refused = rules
            .certificate_principal_at(std::slice::from_ref(&leaf), in_two_days)
            .unwrap_err();
        assert!(refused.to_string().contains("expired"), "{refused}");
        assert_eq!(
            rules
                .certificate_principal_at(std::slice::from_ref(&leaf), now)
                .unwrap(),
            dave,
            "cached, still valid"
        );
    }

    /// A self-signed client certificate (`cn:dave`), usable as its own CA, and that CA.
    fn dave_and_his_ca(dir: &std::path::Path) -> (CertificateDer<'static>, ClientCas) {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        crate::test_certs::self_signed_client(dir, "/CN=dave");
        let cert = dir.join("cert.pem");
        (
            CertificateDer::from_pem_file(&cert).unwrap(),
            ClientCas::read(&cert).unwrap(),
        )
    }

    /// Once a client CA is dropped on SIGHUP, a connection opened under it serves no one, bearer
    /// tokens on it included, and stays checked after later reloads. A reload that drops nothing
    /// checks nothing (every connection was verified at its handshake by CAs still in force);
    /// one that drops another CA leaves the connections of the CAs kept served.
    #[test]
    fn a_connection_whose_ca_was_dropped_is_refused() {
        let (dir, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (leaf, dave_ca) = dave_and_his_ca(dir.path());
        let (other_leaf, _) = dave_and_his_ca(other.path());
        let pems = [dir.path(), other.path()].map(|d| std::fs::read(d.join("cert.pem")).unwrap());
        std::fs::write(dir.path().join("both.pem"), pems.concat()).unwrap();
        let both = ClientCas::read(&dir.path().join("both.pem")).unwrap();
        let trust = |cas: Option<&ClientCas>| ClientTrust {
            cas: cas.cloned(),
            crls: None,
        };
        let mut cfg = cfg(false);
        cfg.certificates = vec![CertRuleConfig {
            matches: "cn:dave".into(),
            principal: "arn:aws:iam::111122223333:user/dave".into(),
        }];
        let auth = Authenticator::new(&cfg, &trust(Some(&both)), "aws", "111122223333").unwrap();
        let chain = std::slice::from_ref(&leaf);
        let served = |auth: &Authenticator, chain: &[CertificateDer<'_>]| {
            let by_cert = auth.authenticate(None, Some(chain));
            let by_token = auth.authenticate(Some("Bearer s3cret-token"), Some(chain));
            (by_cert.map_err(|e| e.to_string()), by_token.map_err(|e| e.to_string()))
        };
        assert!(matches!(served(&auth, chain), (Ok(_), Ok(_))));
        auth.replace(Authenticator::prepare(&cfg, &trust(Some(&both))).unwrap());
        assert!(!auth.credentials.load().ca_dropped.load(Ordering::Relaxed));

        // The other CA dropped: dave's own is kept, so he is served, whatever intermediates he
        // shows; the other CA's certificate is not.
        auth.replace(Authenticator::prepare(&cfg, &trust(Some(&dave_ca))).unwrap());
        assert!(
            matches!(served(&auth, chain), (Ok(_), Ok(_))),
            "refused with its CA kept"
        );
        let longer = [leaf.clone(), other_leaf.clone()];
        assert!(matches!(served(&auth, &longer), (Ok(_), Ok(_))));
        let entry = auth.credentials.load().cert_cache.load().get(leaf.as_ref()).cloned();
        assert_eq!(
            entry.unwrap().anchored_with.len(),
            1,
            "not checked again with other intermediates"
        );
        let refused = served(&auth, std::slice::from_ref(&other_leaf)).1.unwrap_err();
        assert!(refused.contains("no longer trusted"), "{refused}");

        auth.replace(Authenticator::prepare(&cfg, &trust(None)).unwrap());
        let (by_cert, by_token) = served(&auth, chain);
        for refused in [by_cert.unwrap_err(), by_token.unwrap_err()] {
            assert!(refused.contains("no longer trusted"), "{refused}");
        }
        // Dave's CA back: the check goes on (connections of the other one may still be open).
        auth.replace(Authenticator::prepare(&cfg, &trust(Some(&dave_ca))).unwrap());
        assert!(matches!(served(&auth, chain), (Ok(_), Ok(_))));
        let refused = served(&auth, std::slice::from_ref(&other_leaf)).1.unwrap_err();
        assert!(
            refused.contains("no longer trusted"),
            "the next reload forgot the dropped CA: {refused}"
        );
    }

    /// A subject alternative name extension that doesn't parse refuses the certificate, even for
    /// a `cn:` rule its CN satisfies: skipped, it would hide SANs from the one-name-per-kind check.
    #[test]
    fn a_certificate_whose_names_cannot_be_read_is_refused() {
        let leaf = dave_certificate();
        let mut der = leaf.as_ref().to_vec();
        // The SAN's one name, [6] IA5String "spiffe://x/y": a tag no GeneralName has. The
        // extension's value is an opaque OCTET STRING, so the certificate itself still parses.
        let uri = b"spiffe://x/y";
        let at = der.windows(uri.len()).position(|w| w == uri).expect("the SAN URI") - 2;
        assert_eq!(der[at], 0x86, "a URI GeneralName");
        der[at] = 0x1f;
        let broken = CertificateDer::from(der);
        let refused = dave_rules()
            .certificate_principal_at(std::slice::from_ref(&broken), SystemTime::now())
            .unwrap_err();
        assert!(
            refused.to_string().contains("subject alternative names cannot be read"),
            "{refused}"
        );
    }

    /// A full cache starts over rather than grow: clients choose how many certificates they show.
    #[test]
    fn the_certificate_cache_is_bounded() {
        let rules = dave_rules();
        let full: HashMap<Arc<[u8]>, Arc<CertEntry>> = (0..CERT_CACHE_CAPACITY as u32)
            .map(|i| {
                let entry = CertEntry {
                    outcome: Ok(None),
                    expires: SystemTime::now(),
                    unanchored: false,
                    anchored_with: Vec::new(),
                    revoked: false,
                    list_out_of_date: None,
                };
                (Arc::from(&i.to_be_bytes()[..]), Arc::new(entry))
            })
            .collect();
        rules.cert_cache.store(Arc::new(full));
        let leaf = dave_certificate();
        let dave: Option<Arc<str>> = Some("arn:aws:iam::111122223333:user/dave".into());
        assert_eq!(
            rules
                .certificate_principal_at(std::slice::from_ref(&leaf), SystemTime::now())
                .unwrap(),
            dave
        );
        let cache = rules.cert_cache.load();
        assert_eq!(cache.len(), 1, "the full cache was not started over");
        assert!(cache.contains_key(leaf.as_ref()));
    }

    /// Two rules for one name would map it to whichever comes first, silently.
    #[test]
    fn two_certificate_rules_for_one_name_are_refused() {
        let rule = |principal: &str| CertRuleConfig {
            matches: "cn:dave".into(),
            principal: principal.into(),
        };
        let err = Credentials::new(
            &AuthConfig {
                certificates: vec![
                    rule("arn:aws:iam::111122223333:user/dave"),
                    rule("arn:aws:iam::111122223333:user/admin"),
                ],
                ..AuthConfig::default()
            },
            &ClientTrust::default(),
        )
        .err()
        .expect("two rules for cn:dave accepted");
        assert!(err.contains("cn:dave"), "{err}");
        // One DNS name in two cases is one name.
        let dns = |matches: &str, user: &str| CertRuleConfig {
            matches: matches.into(),
            principal: format!("arn:aws:iam::111122223333:user/{user}"),
        };
        let twice = AuthConfig {
            certificates: vec![dns("dns:Host.Example", "dave"), dns("dns:host.example", "admin")],
            ..AuthConfig::default()
        };
        let err = Credentials::new(&twice, &ClientTrust::default())
            .err()
            .expect("one DNS name in two cases accepted");
        assert!(err.contains("host.example"), "{err}");
    }

    #[test]
    fn principal_arns() {
        assert_eq!(
            principal_account("arn:aws:iam::111122223333:user/a").unwrap(),
            "111122223333"
        );
        assert!(principal_account("arn:aws:iam::111122223333:root").is_ok());
        assert!(principal_account("arn:aws:iam::1:user/a").is_err());
        assert!(principal_account("arn:aws:s3:::bucket").is_err());
        assert!(principal_account("arn:aws:iam::111122223333:role/ops/Admin").is_ok());
        // A user or role with no name, or an empty path segment, is no IAM principal.
        for bad in [
            "user/",
            "role/",
            "user/ops/",
            "user//Bob",
            "role/ops//Admin",
            "group/devs",
        ] {
            let arn = format!("arn:aws:iam::111122223333:{bad}");
            assert!(principal_account(&arn).is_err(), "{arn} accepted");
        }
    }

    /// Key policies name users and roles by account and name, whatever the path, so two
    /// configured principals that are one IAM user (or role) under two paths or cases are refused.
    #[test]
    fn one_user_or_role_under_two_paths_is_refused() {
        let config = |principals: &[&str]| AuthConfig {
            tokens: principals
                .iter()
                .enumerate()
                .map(|(i, p)| TokenConfig {
                    sha256: token_digest(&format!("token-{i}")),
                    principal: p.to_string(),
                })
                .collect(),
            certificates: vec![CertRuleConfig {
                matches: "cn:dave".into(),
                principal: "arn:aws:iam::111122223333:user/dave".into(),
            }],
            ..AuthConfig::default()
        };
        for fine in [
            &[
                "arn:aws:iam::111122223333:user/a/Bob",
                "arn:aws:iam::111122223333:user/a/Bob",
            ][..],
            &[
                "arn:aws:iam::111122223333:user/Bob",
                "arn:aws:iam::111122223333:role/Bob",
            ],
            &[
                "arn:aws:iam::111122223333:user/Bob",
                "arn:aws:iam::444455556666:user/Bob",
            ],
            &[
                "arn:aws:iam::111122223333:user/Bob",
                "arn:aws-cn:iam::111122223333:user/Bob",
            ],
            &["arn:aws:iam::111122223333:root", "arn:aws:iam::111122223333:user/root"],
            &["arn:aws:iam::111122223333:user/dave"],
        ] {
            assert!(
                Credentials::new(&config(fine), &ClientTrust::default()).is_ok(),
                "{fine:?} refused"
            );
        }
        for twice in [
            &[
                "arn:aws:iam::111122223333:user/a/Bob",
                "arn:aws:iam::111122223333:user/b/Bob",
            ][..],
            &[
                "arn:aws:iam::111122223333:role/Admin",
                "arn:aws:iam::111122223333:role/ops/Admin",
            ],
            &[
                "arn:aws:iam::111122223333:user/Bob",
                "arn:aws:iam::111122223333:user/bob",
            ],
            &["arn:aws:iam::111122223333:user/ops/dave"],
        ] {
            let err = Credentials::new(&config(twice), &ClientTrust::default())
                .err()
                .expect("accepted");
            assert!(err.contains("are the same IAM"), "{twice:?}: {err}");
        }
    }
}

#[cfg(test)]
mod cost {
    use super::*;

    /// `kms::api` authenticates every request once, before its body is read.
    /// What one call costs: `cargo test --release --lib authenticate_cost -- --ignored --nocapture`.
    /// Measured (release, 2-core VM, session 16): a bearer token with 10 configured tokens 0.51 us;
    /// a client certificate 0.16 us from the lock-free cache (0.19 us the same day under the mutex
    /// it replaced, uncontended; 5.6 us when its DER was parsed on every call).
    #[test]
    #[ignore]
    fn authenticate_cost() {
        let der = super::tests::dave_certificate();
        let cfg = AuthConfig {
            tokens: (0..10)
                .map(|i| TokenConfig {
                    sha256: token_digest(&format!("token-{i}-0123456789abcdef")),
                    principal: "arn:aws:iam::111122223333:user/svc".into(),
                })
                .collect(),
            certificates: vec![CertRuleConfig {
                matches: "cn:dave".into(),
                principal: "arn:aws:iam::111122223333:user/dave".into(),
            }],
            ..AuthConfig::default()
        };
        let auth = Authenticator::new(&cfg, &ClientTrust::default(), "aws", "111122223333").unwrap();
        let n = 200_000u32;
        let header = "Bearer token-9-0123456789abcdef";
        let t = std::time::Instant::now();
        for _ in 0..n {
            assert!(auth.authenticate(Some(std::hint::black_box(header)), None).is_ok());
        }
        eprintln!("token: {:?} per call", t.elapsed() / n);
        let certs = [der];
        let t = std::time::Instant::now();
        for _ in 0..n {
            assert!(auth.authenticate(None, Some(std::hint::black_box(&certs[..]))).is_ok());
        }
        eprintln!("certificate: {:?} per call", t.elapsed() / n);
    }
}
