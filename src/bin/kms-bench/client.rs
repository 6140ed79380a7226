//! Client connections: K tonic Channels, each its own HTTP/2 connection.

use std::time::Duration;

use kms::proto::key_management_service_client::KeyManagementServiceClient;
use tonic::transport::{Channel, Endpoint};

pub type Client = KeyManagementServiceClient<Channel>;

/// One HTTP/2 connection and the generated client on it.
#[derive(Clone)]
pub struct Conn {
    pub client: Client,
}

/// `k` separate connections to `url`.
pub async fn connect(url: &str, k: usize) -> Result<Vec<Conn>, String> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("bad target {url}: {e}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10));
    let mut conns = Vec::with_capacity(k.max(1));
    for _ in 0..k.max(1) {
        // Each `connect` opens its own connection; clones of a Channel share one.
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        conns.push(Conn {
            client: KeyManagementServiceClient::new(channel).max_decoding_message_size(16 << 20),
        });
    }
    Ok(conns)
}
