//! Runs the gRPC server: the KMS service, the standard health service and reflection.

use std::future::Future;
use std::sync::Arc;

use cryptoki::types::AuthPin;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::transport::Server;

use super::grpc::GrpcService;
use crate::config::Config;
use crate::ops::{spawn_deletion_task, Kms};
use crate::proto::key_management_service_server::KeyManagementServiceServer;

/// Opens everything, binds, prints `kms listening on ADDR` on stdout, and serves until `shutdown`.
pub async fn serve(config: Config, pin: AuthPin, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let listen = config.listen;
    let kms = tokio::task::spawn_blocking(move || Kms::open(&config, pin))
        .await
        .map_err(|e| format!("startup panicked: {e}"))??;
    let kms = Arc::new(kms);
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
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            let _ = stream.set_nodelay(true); // small request/response messages: don't wait for Nagle
        }
        conn
    });
    println!("kms listening on {addr}");
    tracing::info!(%addr, "serving");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(KeyManagementServiceServer::new(GrpcService::new(kms)))
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
    result.map_err(|e| format!("server error: {e}"))
}

const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);
