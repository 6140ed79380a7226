//! Runs the gRPC server: the KMS service, the standard health service and reflection.

use std::future::Future;
use std::sync::Arc;

use cryptoki::types::AuthPin;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use super::grpc::GrpcService;
use super::run_to_end::RunToEnd;
use crate::auth::Authenticator;
use crate::config::{Config, TlsConfig};
use crate::ops::{spawn_deletion_task, spawn_material_sweep, Kms};
use crate::proto::key_management_service_server::KeyManagementServiceServer;

/// Opens everything, binds, prints `kms listening on ADDR` on stdout, and serves until `shutdown`.
pub async fn serve(config: Config, pin: AuthPin, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let listen = config.listen;
    let (auth_config, tls) = (config.auth.clone(), config.tls.clone());
    let (partition, account) = (config.partition.clone(), config.account_id.clone());
    let kms = tokio::task::spawn_blocking(move || Kms::open(&config, pin))
        .await
        .map_err(|e| format!("startup panicked: {e}"))??;
    let auth = Arc::new(Authenticator::new(&auth_config, &partition, &account)?);
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
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("reflection: {e}"))?;

    let deletion = spawn_deletion_task(kms.clone());
    let sweep = spawn_material_sweep(kms.clone());
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            let _ = stream.set_nodelay(true); // small request/response messages: don't wait for Nagle
        }
        conn
    });
    println!("kms listening on {addr}");
    tracing::info!(%addr, "serving");
    let mut builder = Server::builder();
    if let Some(tls) = &tls {
        builder = builder.tls_config(tls_config(tls)?).map_err(|e| format!("TLS: {e}"))?;
    }
    let reload = spawn_reload_on_sighup(kms.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(RunToEnd(KeyManagementServiceServer::new(GrpcService::new(
            kms,
            auth,
            tls.is_some(),
        ))))
        .serve_with_incoming_shutdown(incoming, async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|s| *s).await;
        });
    tokio::pin!(server);
    // Graceful shutdown waits for open connections; idle clients may never close theirs, so
    // in-flight requests get a bounded grace period.
    let result = tokio::select! {
        r = &mut server => r,
        () = shutdown => {
            let _ = stop.send(true);
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            }
        }
    };
    deletion.abort();
    reload.abort();
    if let Some(sweep) = sweep {
        sweep.abort();
    }
    result.map_err(|e| format!("server error: {e}"))
}

const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Server TLS from PEM files; with a client CA, client certificates are verified (and optional,
/// so bearer-token callers need none).
fn tls_config(cfg: &TlsConfig) -> Result<ServerTlsConfig, String> {
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(&cfg.cert_file)?, read(&cfg.key_file)?));
    if let Some(ca) = &cfg.client_ca_file {
        tls = tls
            .client_ca_root(Certificate::from_pem(read(ca)?))
            .client_auth_optional(true);
    }
    Ok(tls)
}

/// SIGHUP reloads the identity policies; a bad file keeps the old ones and says why.
fn spawn_reload_on_sighup(kms: Arc<Kms>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            match kms.reload_identity_policies() {
                Ok(()) => tracing::info!("identity policies reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "identity policies not reloaded; the previous ones stay in force")
                }
            }
        }
    })
}
