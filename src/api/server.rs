//! Runs the gRPC server: the KMS service, the standard health service and reflection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use cryptoki::types::AuthPin;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use super::budget::{Charging, RequestBudget};
use super::connections::{self, ConnectionLimits, Limited};
use super::deadline::Deadline;
use super::grpc::GrpcService;
use super::health_watch::{EndingWatches, WatchCaps};
use super::opening::{Opening, OPENING_DEADLINE};
use super::panics::CatchPanic;
use super::preauth::PreAuth;
use super::refusals::{self, RefusalRecords};
use super::run_to_end::{Detached, RunToEnd};
use super::tls::{self, TlsIncoming};
use crate::auth::{Authenticator, ClientTrust, Credentials};
use crate::config::Config;
use crate::ops::{spawn_deletion_task, spawn_material_sweep, Kms};
use crate::proto::key_management_service_server::KeyManagementServiceServer;

/// Opens everything, binds, prints `kms listening on ADDR` on stdout, and serves until `shutdown`.
/// `hup`: SIGHUP, registered by the caller as early as it could; one received before the server
/// is up makes it reload once it is. `shutdown` likewise: registered before, so that one
/// received at any time is seen; during start-up it stops the server before it listens.
pub async fn serve(
    config: Config,
    pin: AuthPin,
    hup: tokio::signal::unix::Signal,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let listen = config.listen;
    let (auth_config, tls) = (config.auth.clone(), config.tls.clone());
    let (partition, account) = (config.partition.clone(), config.account_id.clone());
    let serve_reflection = config.reflection;
    let budget = RequestBudget::new(
        config.limits.max_request_bytes_in_flight,
        config.limits.max_request_bytes_per_principal,
        limits::MAX_REQUEST_BYTES,
    );
    // Credentials and TLS first: a mistake there is reported before a slow HSM start-up.
    let trust = ClientTrust::read(config.tls.as_ref())?;
    let auth = Arc::new(Authenticator::new(&auth_config, &trust, &partition, &account)?);
    let request_timeout = Duration::from_secs(config.limits.request_timeout_seconds);
    let max_age = Some(Duration::from_secs(config.limits.max_connection_age_seconds)).filter(|age| !age.is_zero());
    // The request timeout is applied per service: `PreAuth` times the KMS service's requests and
    // answers and audits the ones that run out of time, `Deadline` the others. No tonic server
    // timeout, which would time every request a second time. tonic still applies a client's
    // `grpc-timeout`: a client past its own deadline has stopped waiting, and tonic answers it
    // CANCELLED, unaudited, as a stream the client reset.
    let mut builder = limits::apply(Server::builder());
    if let Some(max_age) = max_age {
        // Past its age a connection gets GOAWAY and closes once its requests in flight are done
        // (the request timeout bounds them). No max_connection_age_grace: in tonic 0.14 setting
        // one replaces the GOAWAY with a hard close at age + grace.
        builder = builder.max_connection_age(max_age);
    }
    let acceptor: Option<tls::Acceptor> = tls
        .as_ref()
        .map(|t| tls::acceptor(t, &trust, tls::Validity::Required))
        .transpose()?
        .map(|a| Arc::new(ArcSwap::from_pointee(a)));
    let connection_limits = connection_limits(&config)?;
    let reload_config = config.clone();
    let drain = detached_drain(&config);
    let grace = shutdown_grace(&config);
    // A slow HSM can take a while to open: a shutdown signal meanwhile stops here, not after.
    let mut shutdown = std::pin::pin!(shutdown);
    let opening = tokio::task::spawn_blocking(move || Kms::open(&config, pin));
    let kms = tokio::select! {
        opened = opening => opened.map_err(|e| format!("startup panicked: {e}"))??,
        () = &mut shutdown => {
            tracing::info!("stopped during start-up");
            return Ok(());
        }
    };
    // Identity policies are loaded: from here a SIGHUP reloads them.
    let reload = spawn_reload_on_sighup(kms.clone(), auth.clone(), acceptor.clone(), reload_config, hup);
    if auth.dev_mode() {
        tracing::warn!("DEV MODE: requests without credentials act as arn:{partition}:iam::{account}:root. Never use this in production (set auth.dev_mode = false).");
        eprintln!("kms: WARNING: dev mode is on: unauthenticated requests are accepted as the account root");
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<KeyManagementServiceServer<GrpcService>>().await;
    // Health and reflection answer anyone (load balancers, grpcurl) and run no operation, but
    // their messages are read before any check: small caps, not tonic's 4 MiB default.
    // Charged against the request budget too: 512 streams of 4 KiB on each of thousands of
    // connections would still add up.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let audit_follower = spawn_health_follows_audit(&kms, health.clone(), stopped.clone());
    // Watch streams end at the connection age limit and when the server stops, so that they
    // don't keep their connections open (`health_watch.rs`).
    let health_service = EndingWatches::new(
        Deadline::new(
            Charging::new(
                health_service.max_decoding_message_size(limits::MAX_HEALTH_REQUEST_BYTES),
                budget.clone(),
            ),
            request_timeout,
        ),
        max_age,
        stopped.clone(),
        WatchCaps::for_connections(&connection_limits),
    );
    let reflection = if serve_reflection {
        let service = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| format!("reflection: {e}"))?;
        let service = service.max_decoding_message_size(limits::MAX_HEALTH_REQUEST_BYTES);
        Some(Deadline::new(Charging::new(service, budget.clone()), request_timeout))
    } else {
        None
    };

    let deletion = spawn_deletion_task(kms.clone());
    let refusals = Arc::new(RefusalRecords::default());
    let (stop_summaries, summaries_stop) = tokio::sync::oneshot::channel();
    let refusal_summaries = refusals::spawn_summaries(refusals.clone(), kms.clone(), summaries_stop);
    let sweep = spawn_material_sweep(kms.clone());
    // Small request/response messages: don't wait for Nagle. TCP keepalive finds peers that
    // vanished without a FIN (HTTP/2 pings below find the ones whose stack still answers).
    let incoming = Limited::new(
        BackOffOnError::new(
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(limits::TCP_KEEPALIVE))
                .with_keepalive_interval(Some(limits::TCP_KEEPALIVE_INTERVAL))
                .with_keepalive_retries(Some(limits::TCP_KEEPALIVE_RETRIES)),
        ),
        connection_limits,
    );
    println!("kms listening on {addr}");
    tracing::info!(%addr, "serving");
    let detached = Detached::default();
    let router = builder
        .add_service(health_service)
        .add_optional_service(reflection)
        .add_service(PreAuth::new(
            CatchPanic::new(RunToEnd::new(
                KeyManagementServiceServer::new(GrpcService::new(kms.clone()))
                    .max_decoding_message_size(limits::MAX_REQUEST_BYTES),
                detached.clone(),
            )),
            auth,
            kms.clone(),
            tls.is_some(),
            refusals.clone(),
            budget,
            request_timeout,
        ));
    let stopping = async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|s| *s).await;
    };
    // Each connection must send its preface within OPENING_DEADLINE of the accept: over TLS the
    // decrypted preface, after the handshake, which `TlsIncoming` does within the same deadline.
    let mut server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> = match acceptor {
        Some(acceptor) => Box::pin(router.serve_with_incoming_shutdown(TlsIncoming::new(incoming, acceptor), stopping)),
        None => {
            let incoming = incoming
                .map(|accepted| accepted.map(|c| Opening::until(c, tokio::time::Instant::now() + OPENING_DEADLINE)));
            Box::pin(router.serve_with_incoming_shutdown(incoming, stopping))
        }
    };
    // Graceful shutdown waits for open connections; idle clients may never close theirs, so
    // in-flight requests get a bounded grace period.
    let result = tokio::select! {
        r = &mut server => r,
        () = &mut shutdown => {
            // Watchers hear NOT_SERVING before their streams end.
            health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            health.set_not_serving::<KeyManagementServiceServer<GrpcService>>().await;
            let _ = stop.send(true);
            wind_down(&mut server, &kms, grace).await
        }
    };
    // Changes already under way finish, audit record included, before the runtime goes. Those
    // that don't may have changed the store without their outcome record: not a clean stop.
    let drained = detached.drained(drain).await;
    let running = if drained { 0 } else { detached.running() };
    if !drained {
        tracing::error!(
            running,
            "state changes still running {drain:?} after the server stopped; exiting anyway"
        );
    }
    deletion.abort();
    reload.abort();
    audit_follower.abort();
    // The refusals counted since the last summary are written before the runtime goes.
    let _ = stop_summaries.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), refusal_summaries).await;
    kms.report_refused_audit_records();
    if let Some(sweep) = sweep {
        sweep.abort();
    }
    result.map_err(|e| format!("server error: {e}"))?;
    if drained {
        Ok(())
    } else {
        Err(format!(
            "{running} state changes were still running {drain:?} after the server stopped: their outcome records may be missing from the audit log (each has its Started record)"
        ))
    }
}

/// The connection caps, the total lowered to fit under the open-files limit.
fn connection_limits(config: &Config) -> Result<Arc<ConnectionLimits>, String> {
    let configured = config.limits.max_connections;
    let open_files = connections::raise_open_files_limit();
    let max = ConnectionLimits::effective_max(configured, open_files).ok_or_else(|| {
        format!(
            "the open-files limit (ulimit -n {}) leaves no room for connections: raise it",
            open_files.unwrap_or(0)
        )
    })?;
    if max < configured {
        tracing::warn!(
            "limits.max_connections lowered from {configured} to {max}: the process may open {} files (ulimit -n)",
            open_files.unwrap_or(0)
        );
    }
    Ok(ConnectionLimits::new(max, config.limits.max_connections_per_ip))
}

/// How long a stopping server gives open connections, at least: requests in flight get their
/// answers, unless one waits on the HSM (`shutdown_grace`).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The longest a stopping server waits for requests in flight: `SHUTDOWN_GRACE`, or longer with a
/// long `hsm.timeout_ms`, so that a read waiting on the HSM when the server stops (the key was
/// used there) still gets its answer and its audit record. Two HSM calls (ReEncrypt with the
/// cache off), and no longer than the request timeout, by which every request is answered anyway.
fn shutdown_grace(config: &Config) -> Duration {
    let hsm_calls = 2 * Duration::from_millis(config.hsm.timeout_ms);
    let answered_by = Duration::from_secs(config.limits.request_timeout_seconds);
    SHUTDOWN_GRACE.max(hsm_calls.min(answered_by) + Duration::from_secs(1))
}

/// After the last HSM call or audit record a request waited for, the time left for its answer
/// (and for a request between two HSM calls, as ReEncrypt is).
const AFTER_LAST_WAIT: Duration = Duration::from_secs(1);

/// Lets the server finish its requests in flight after GOAWAY: `SHUTDOWN_GRACE`, then on while
/// an HSM call or an audit record a request waits for is under way (and `AFTER_LAST_WAIT` after
/// it), up to `longest`. Idle clients may keep their connections open for good, so the server
/// doesn't wait for them to close: with nothing under way the wait ends after `SHUTDOWN_GRACE`.
async fn wind_down(
    server: &mut Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>,
    kms: &Kms,
    longest: Duration,
) -> Result<(), tonic::transport::Error> {
    let started = tokio::time::Instant::now();
    let mut last_busy: Option<tokio::time::Instant> = None;
    loop {
        let now = tokio::time::Instant::now();
        if kms.requests_waiting_on_hsm_or_audit() {
            last_busy = Some(now);
        }
        let quiet = last_busy.is_none_or(|t| now - t >= AFTER_LAST_WAIT);
        let waited = now - started;
        if (waited >= SHUTDOWN_GRACE && quiet) || waited >= longest {
            return Ok(());
        }
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(50), &mut *server).await {
            return r;
        }
    }
}

/// How long a stopping server waits for state changes under way: the longest one can take from
/// its start, short of a disk that never answers: its `Started` record and its outcome record
/// (each refused once the audit writer has stalled for `audit::STALLED`), a store write waiting
/// for the database lock (5 s), and an HSM call's timeout.
fn detached_drain(config: &Config) -> Duration {
    2 * crate::audit::STALLED + Duration::from_secs(5) + Duration::from_millis(config.hsm.timeout_ms)
}

/// Transport limits: what one client (or many) can make the server hold.
pub mod limits {
    use std::time::Duration;

    use tonic::transport::Server;

    /// Largest encoded request message accepted (larger: OUT_OF_RANGE "decoded message length too large",
    /// before any decoding).
    /// The largest valid requests are about 110 KB: Encrypt/ReEncrypt with a 6144-byte ciphertext
    /// or plaintext, two 8 KiB encryption contexts and 10 grant tokens of 8192 characters
    /// (6144 + 16384 + 81920 = 104448 bytes plus framing); CreateKey with a 32 KiB policy, an
    /// 8 KiB description and 50 tags of 128 + 256 characters is about 61 KB. 512 KiB leaves
    /// room for framing and growth of those limits, and stays far below tonic's 4 MiB default.
    pub const MAX_REQUEST_BYTES: usize = 512 * 1024;
    /// The same for the health and reflection services (a service name, a symbol to describe).
    pub const MAX_HEALTH_REQUEST_BYTES: usize = 4 * 1024;
    /// HTTP/2 streams in flight per connection. The benchmark keeps 256 in flight over two
    /// connections; gRPC clients usually multiplex everything on one.
    pub const MAX_CONCURRENT_STREAMS: u32 = 512;
    /// Streams a connection may make the server reset for protocol errors before it is closed
    /// with GOAWAY (the "MadeYouReset" class, CVE-2025-8671; tonic 0.14's default is no limit).
    pub const MAX_LOCAL_ERROR_RESETS: usize = 1024;
    /// HTTP/2 PING on connections idle this long; a peer that doesn't answer within
    /// `HTTP2_KEEPALIVE_TIMEOUT` is dropped.
    pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
    pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
    /// TCP keepalive: first probe after this idle time, then every interval, given up after the
    /// retries.
    pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
    pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
    pub const TCP_KEEPALIVE_RETRIES: u32 = 6;
    /// After a failed accept (EMFILE, ENFILE, ENOBUFS...), wait this long before the next one
    /// instead of retrying at once in a loop that would take a whole core.
    pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

    pub fn apply<L>(builder: Server<L>) -> Server<L> {
        builder
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
            .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
    }
}

/// Accepted connections; after an accept error (typically EMFILE: out of file descriptors) the
/// stream waits `ACCEPT_ERROR_BACKOFF` before accepting again. tonic's accept loop skips errors
/// and polls again at once, and the listener stays readable while the backlog is full, so
/// without the pause it spins at 100% CPU until a descriptor is freed.
struct BackOffOnError<S> {
    inner: S,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> BackOffOnError<S> {
    fn new(inner: S) -> Self {
        BackOffOnError { inner, pause: None }
    }
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM: the process or the system is out of something.
fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12)) || e.kind() == std::io::ErrorKind::OutOfMemory
}

impl<S> Stream for BackOffOnError<S>
where
    S: Stream<Item = std::io::Result<TcpStream>> + Unpin,
{
    type Item = std::io::Result<TcpStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(pause) = &mut self.pause {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.pause = None;
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            // Out of descriptors or memory: the next accept would fail the same way at once.
            // (A connection reset before it was accepted is that connection's problem only.)
            Poll::Ready(Some(Err(e))) if is_resource_exhaustion(&e) => {
                tracing::warn!(error = %e, "accept failed; pausing before the next accept");
                self.pause = Some(Box::pin(tokio::time::sleep(limits::ACCEPT_ERROR_BACKOFF)));
                Poll::Ready(Some(Err(e)))
            }
            other => other,
        }
    }
}

/// A server whose audit writer has ended refuses every request (none can be recorded): health
/// says NOT_SERVING from then on, so that load balancers send requests elsewhere.
fn spawn_health_follows_audit(
    kms: &Kms,
    health: tonic_health::server::HealthReporter,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let writer_ended = kms.audit_writer_ended();
    let mut stopped = stopped;
    let stopping = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    tokio::spawn(async move {
        tokio::select! {
            () = writer_ended => {
                tracing::error!("the audit writer has stopped: every request is refused until the server is restarted");
                health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
                health.set_not_serving::<KeyManagementServiceServer<GrpcService>>().await;
            }
            // At shutdown the writer ends last, with nothing to report.
            () = stopping => {}
        }
    })
}

/// SIGHUP reloads the identity policies, the TLS files and revocation lists, and (with a config
/// file) the tokens and certificate rules: a leaked token or certificate is revoked, and a renewed
/// certificate served, without a restart. A bad file keeps what is in force and says why.
fn spawn_reload_on_sighup(
    kms: Arc<Kms>,
    auth: Arc<Authenticator>,
    acceptor: Option<tls::Acceptor>,
    config: Config,
    mut hup: tokio::signal::unix::Signal,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let config = Arc::new(config);
        while hup.recv().await.is_some() {
            // The files are read on the blocking pool: a slow file system must not stall a
            // runtime thread.
            let (kms, auth, acceptor, config) = (kms.clone(), auth.clone(), acceptor.clone(), config.clone());
            let reloaded = tokio::task::spawn_blocking(move || reload(&kms, &auth, acceptor.as_ref(), &config)).await;
            if let Err(e) = reloaded {
                tracing::error!(error = %e, "the reload did not run");
            }
        }
    })
}

/// Reads and checks every file the configuration names besides the HSM's: the revocation lists,
/// the credentials they go with, the TLS files and the identity policies. `main` runs it before it
/// touches the data directory or the HSM, so a mistake in one stops the server before anything is
/// created (a data directory, a token, a root key). `serve` loads them again to use them.
pub fn check_files(config: &Config) -> Result<(), String> {
    let trust = ClientTrust::read(config.tls.as_ref())?;
    Authenticator::prepare(&config.auth, &trust)?;
    if let Some(t) = &config.tls {
        tls::acceptor(t, &trust, tls::Validity::Required)?;
    }
    crate::auth::identity::IdentityStore::open(config.auth.identity_policies_file.clone())?;
    Ok(())
}

/// The credentials (tokens and certificate rules from the config file, if there is one) and the
/// TLS acceptor (with TLS on), from the files as they are now, with the revocation lists read
/// once for both.
fn load_credentials_and_tls(config: &Config) -> Result<(Arc<Credentials>, Option<TlsAcceptor>), String> {
    let auth_config = match config.file {
        Some(_) => {
            let (reread, edited) = config.with_reread_credentials()?;
            if !edited.names.is_empty() {
                let names = edited.names.join(", ");
                match &edited.invalid {
                    None => tracing::warn!(
                        settings = names,
                        "the config file's edits to these settings take effect at the next restart, not on SIGHUP"
                    ),
                    Some(e) => tracing::warn!(
                        settings = names,
                        error = %e,
                        "the config file's edits to these settings wait for a restart, which the file as it is now would fail"
                    ),
                }
            }
            reread.auth
        }
        None => config.auth.clone(),
    };
    let trust = ClientTrust::read(config.tls.as_ref())?;
    let credentials = Authenticator::prepare(&auth_config, &trust)?;
    let tls = config
        .tls
        .as_ref()
        // Revocations and credentials must not wait for a renewed certificate: one out of its
        // validity period is loaded with an error in the log.
        .map(|t| tls::acceptor(t, &trust, tls::Validity::Logged))
        .transpose()?;
    Ok((credentials, tls))
}

/// Reads identity policies, then the TLS files, the revocation lists and, with a config file,
/// tokens and certificate rules again. The second group is applied together or not at all: the
/// handshake's revocation check and the authenticator's must never hold different lists, and a
/// list read once serves both.
fn reload(kms: &Kms, auth: &Authenticator, acceptor: Option<&tls::Acceptor>, config: &Config) {
    match kms.reload_identity_policies() {
        Ok(()) => tracing::info!("identity policies reloaded"),
        Err(e) => {
            tracing::error!(error = %e, "identity policies not reloaded; the previous ones stay in force")
        }
    }
    match load_credentials_and_tls(config) {
        Ok((credentials, tls)) => {
            if let Some((acceptor, reloaded)) = acceptor.zip(tls) {
                acceptor.store(Arc::new(reloaded));
            }
            auth.replace(credentials);
            tracing::info!("credentials, TLS certificate, client CAs and revocation lists reloaded");
        }
        Err(e) => tracing::error!(
            error = %e,
            "credentials and TLS files not reloaded; the previous ones stay in force"
        ),
    }
}
