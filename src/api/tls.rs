//! TLS, done here rather than by tonic so that the preface deadline (`opening.rs`) counts the
//! decrypted bytes. With tonic's TLS the deadline could only see the encrypted ones, which a
//! ClientHello already fills: a client that finished its handshake and then said nothing held its
//! connection slot for good. Handshakes run concurrently, each in a task of its own, and must
//! finish, with the HTTP/2 preface after them, within `OPENING_DEADLINE` of the accept.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, CertificateError, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::Stream;

use super::connections::LimitedConnection;
use super::opening::{Opening, OPENING_DEADLINE};
use crate::auth::ClientTrust;
use crate::config::TlsConfig;

/// A connection through its handshake, until its preface has come.
pub type TlsConnection = Opening<TlsStream<LimitedConnection>>;

/// The server's TLS from PEM files. With a client CA, client certificates are verified, and
/// optional unless `require_client_certificate`, so that bearer-token callers need none. HTTP/2
/// is offered by ALPN.
/// `trust`: the client CAs and revocation lists `cfg` names (read once by the caller, for the
/// authenticator too).
/// `validity`: what a server certificate outside its validity period does (refused at start;
/// on SIGHUP only an error in the log, since the reload also carries revocations, which must not
/// wait for a renewed certificate).
pub fn acceptor(cfg: &TlsConfig, trust: &ClientTrust, validity: Validity) -> Result<TlsAcceptor, String> {
    let chain = CertificateDer::pem_slice_iter(&read(&cfg.cert_file)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("TLS: cannot read the certificates in {}: {e}", cfg.cert_file.display()))?;
    if chain.is_empty() {
        return Err(format!("TLS: {} holds no certificate", cfg.cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&cfg.key_file)?)
        .map_err(|e| format!("TLS: cannot read a private key in {}: {e}", cfg.key_file.display()))?;
    let builder = ServerConfig::builder();
    let builder = match cfg.client_ca_file.as_ref().zip(trust.cas.as_ref()) {
        None => builder.with_no_client_auth(),
        Some((ca, cas)) => {
            let mut verifier = WebPkiClientVerifier::builder(cas.roots.clone());
            if !cfg.require_client_certificate {
                verifier = verifier.allow_unauthenticated();
            }
            if let Some(pem) = &trust.crls {
                verifier = verifier
                    .with_crls(revocation_lists(pem, &cas.certs)?)
                    .only_check_end_entity_revocation()
                    // As OpenSSL does: a list past its nextUpdate no longer says who is revoked.
                    .enforce_revocation_expiration();
            }
            let verifier = verifier
                .build()
                .map_err(|e| format!("TLS: client CA {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let leaf = chain[0].clone();
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("TLS: the certificate and private key don't make a server identity: {e}"))?;
    if let Err(e) = check_validity(&leaf, &cfg.cert_file, SystemTime::now()) {
        match validity {
            Validity::Required => return Err(e),
            Validity::Logged => tracing::error!("{e}: new TLS handshakes will fail until it is replaced"),
        }
    }
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The revocation lists in a PEM file, each checked against the client CAs (`crl.rs`). A client
/// certificate whose issuer has none among them is refused (its status is unknown): give the
/// list of every CA that issues client certificates.
fn revocation_lists(
    pem: &[u8],
    cas: &[CertificateDer<'_>],
) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let crls = CertificateRevocationListDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("TLS: cannot read the revocation lists in tls.client_crl_file: {e}"))?;
    if crls.is_empty() {
        return Err("TLS: tls.client_crl_file holds no certificate revocation list".into());
    }
    super::crl::check(&crls, cas, std::time::SystemTime::now())
        .map_err(|e| format!("TLS: tls.client_crl_file: {e}"))?;
    Ok(crls)
}

/// The acceptor in force. SIGHUP replaces it whole, from the files read again (certificate, key,
/// client CA and revocation lists), so a renewed certificate or a new CRL needs no restart; a
/// handshake uses the one in force when its connection was accepted.
pub type Acceptor = Arc<ArcSwap<TlsAcceptor>>;

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Accepted connections, handed on once through their handshake. Those that fail it, or miss
/// the deadline, are closed (and their slot given back).
pub struct TlsIncoming<S> {
    accepted: S,
    accepted_all: bool,
    acceptor: Acceptor,
    handshakes: JoinSet<Option<TlsConnection>>,
}

impl<S> TlsIncoming<S> {
    pub fn new(accepted: S, acceptor: Acceptor) -> Self {
        TlsIncoming {
            accepted,
            accepted_all: false,
            acceptor,
            handshakes: JoinSet::new(),
        }
    }
}

impl<S> Stream for TlsIncoming<S>
where
    S: Stream<Item = io::Result<LimitedConnection>> + Unpin,
{
    type Item = io::Result<TlsConnection>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        while !this.accepted_all {
            match Pin::new(&mut this.accepted).poll_next(cx) {
                Poll::Ready(Some(Ok(connection))) => {
                    let deadline = Instant::now() + OPENING_DEADLINE;
                    this.handshakes.spawn(handshake(
                        TlsAcceptor::clone(&this.acceptor.load()),
                        connection,
                        deadline,
                    ));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => this.accepted_all = true,
                Poll::Pending => break,
            }
        }
        loop {
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(connection)))) => return Poll::Ready(Some(Ok(connection))),
                // A failed handshake (logged) or a task that panicked: the next one.
                Poll::Ready(Some(_)) => continue,
                // None under way: the accept above is waiting (its waker is set), or all is done.
                Poll::Ready(None) if this.accepted_all => return Poll::Ready(None),
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

async fn handshake(acceptor: TlsAcceptor, connection: LimitedConnection, deadline: Instant) -> Option<TlsConnection> {
    match tokio::time::timeout_at(deadline, acceptor.accept(connection)).await {
        Ok(Ok(tls)) => Some(Opening::until(tls, deadline)),
        Ok(Err(e)) => {
            log_failed_handshake(&e);
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake not finished in time");
            None
        }
    }
}

/// A failed handshake is the client's own business (debug level), except when the client's CA's
/// revocation list went out of date: then every client of that CA is refused until a current list
/// is loaded, which the operator must hear of (once a minute at most).
fn log_failed_handshake(e: &io::Error) {
    let out_of_date = e
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::InvalidCertificate(
                    CertificateError::ExpiredRevocationList | CertificateError::ExpiredRevocationListContext { .. }
                )
            )
        });
    if out_of_date && warning_due(&OUT_OF_DATE_WARNED) {
        tracing::warn!(
            "a client certificate was refused because its CA's revocation list in tls.client_crl_file is out of \
             date (past its nextUpdate): that CA's clients are refused until a current list is loaded (SIGHUP)"
        );
    } else {
        tracing::debug!(error = %e, "TLS handshake failed");
    }
}

static OUT_OF_DATE_WARNED: Mutex<Option<std::time::Instant>> = Mutex::new(None);

/// Whether a minute has passed since the last warning (noted as given).
fn warning_due(last: &Mutex<Option<std::time::Instant>>) -> bool {
    let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
    let due = last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60));
    if due {
        *last = Some(std::time::Instant::now());
    }
    due
}

/// What `acceptor` does with a server certificate outside its validity period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Refused: the server does not start with it.
    Required,
    /// Loaded, with an error in the log (a SIGHUP reload).
    Logged,
}

/// How long before its expiry a server certificate gets a warning when it is loaded.
const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);

/// How far ahead of this host's clock a certificate's start may be (a CA whose clock runs ahead).
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// The server certificate's validity period against `now` (a start up to `CLOCK_SKEW` ahead
/// allowed). One that has expired or is not valid yet is an error: every handshake would fail
/// with it. One that expires within a week gets a warning.
fn check_validity(leaf: &CertificateDer<'_>, file: &Path, now: SystemTime) -> Result<(), String> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(leaf.as_ref())
        .map_err(|e| format!("TLS: cannot parse the certificate in {}: {e}", file.display()))?;
    let validity = &cert.tbs_certificate.validity;
    let (from, until) = (
        validity.not_before.to_system_time(),
        validity.not_after.to_system_time(),
    );
    let at = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    if now + CLOCK_SKEW < from {
        return Err(format!(
            "TLS: the certificate in {} is not valid before {}",
            file.display(),
            at(from)
        ));
    }
    if now > until {
        return Err(format!(
            "TLS: the certificate in {} expired at {}",
            file.display(),
            at(until)
        ));
    }
    if until.duration_since(now).is_ok_and(|left| left < EXPIRY_WARNING) {
        tracing::warn!(
            "TLS: the certificate in {} expires at {}: renew it",
            file.display(),
            at(until)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, cert: &[u8], key: &[u8]) -> TlsConfig {
        std::fs::write(dir.join("cert.pem"), cert).unwrap();
        std::fs::write(dir.join("key.pem"), key).unwrap();
        TlsConfig {
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
            client_ca_file: None,
            client_crl_file: None,
            require_client_certificate: false,
        }
    }

    fn refused(cfg: &TlsConfig) -> String {
        match acceptor(cfg, &ClientTrust::default(), Validity::Required) {
            Ok(_) => panic!("a bad TLS configuration was accepted"),
            Err(e) => e,
        }
    }

    /// A certificate valid for a day (made with the openssl command line, as the TLS integration
    /// tests do) is taken now, and refused before its start and after its end.
    #[test]
    fn a_server_certificate_outside_its_validity_period_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        crate::test_certs::self_signed(dir.path(), "/CN=kms", &[]);
        let pem = std::fs::read(dir.path().join("cert.pem")).unwrap();
        let leaf = CertificateDer::from_pem_slice(&pem).unwrap();
        let file = dir.path().join("cert.pem");
        let now = SystemTime::now();
        check_validity(&leaf, &file, now).unwrap();
        let day = Duration::from_secs(24 * 3600);
        let e = check_validity(&leaf, &file, now + 2 * day).unwrap_err();
        assert!(e.contains("expired at") && e.contains("cert.pem"), "{e}");
        let e = check_validity(&leaf, &file, now - day).unwrap_err();
        assert!(e.contains("is not valid before"), "{e}");
        check_validity(&leaf, &file, now - Duration::from_secs(60)).expect("within the clock skew");
        // The acceptor takes it whole (today).
        let key = std::fs::read(dir.path().join("key.pem")).unwrap();
        acceptor(
            &config(dir.path(), &pem, &key),
            &ClientTrust::default(),
            Validity::Required,
        )
        .expect("a valid certificate");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = refused(&config(dir.path(), b"not a certificate", b""));
        assert!(e.contains("holds no certificate") && e.contains("cert.pem"), "{e}");
        let garbled = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let e = refused(&config(dir.path(), garbled, b""));
        assert!(
            e.contains("cannot read the certificates") && e.contains("cert.pem"),
            "{e}"
        );
        let cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let e = refused(&config(dir.path(), cert, b"no key here"));
        assert!(e.contains("private key") && e.contains("key.pem"), "{e}");
        let mut missing = config(dir.path(), cert, b"");
        missing.key_file = dir.path().join("nowhere.pem");
        let e = refused(&missing);
        assert!(e.contains("cannot read") && e.contains("nowhere.pem"), "{e}");
    }
}
