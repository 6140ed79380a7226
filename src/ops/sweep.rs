//! The material sweep: unwrapped key material leaves memory once its TTL has passed.

use std::sync::Arc;
use std::time::Duration;

use super::Kms;

/// Drops unwrapped key material once its TTL (`cache.material_ttl_seconds`) has passed, whether or
/// not it is asked for again: material of a key used once, disabled or pending deletion doesn't
/// stay in memory until capacity evicts it. An entry lives at most TTL + min(max(TTL / 2, 1 s), 60 s).
pub fn spawn_material_sweep(kms: Arc<Kms>) -> Option<tokio::task::JoinHandle<()>> {
    let ttl = kms.materials.ttl()?;
    let every = (ttl / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            kms.materials.purge_expired();
        }
    }))
}
