//! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager). Only the holder runs
//! the controllers; a standby takes over once the holder stops renewing for `duration`. The
//! holder releases the lease on clean shutdown so a standby takes over at once.

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, Result};
use tokio::sync::watch;

pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration_seconds: u64,
    pub grace_seconds: u64,
}

/// The field manager a replica writes the Lease with: one per replica, so that a standby's
/// server-side apply of `holderIdentity` (made when it last saw the lease free) conflicts with
/// the holder's instead of silently co-owning and overwriting it. With one manager shared by all
/// replicas, two replicas racing for a free lease could both believe they had won.
pub fn field_manager(identity: &str) -> String {
    format!("{}-lease-{identity}", edgefleet_api::OPERATOR_MANAGER)
}

/// Leadership as a channel: `true` while this replica holds the lease. Dropping the receiver
/// releases the lease; the returned task finishes after that.
pub async fn elect(
    client: Client,
    config: &LeaseConfig,
) -> Result<(
    watch::Receiver<bool>,
    tokio::task::JoinHandle<Result<kube_lease_manager::LeaseManager>>,
)> {
    let manager = LeaseManagerBuilder::new(client, &config.name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(config.duration_seconds)
        .with_grace(config.grace_seconds)
        .with_field_manager(field_manager(&config.identity))
        .build()
        .await?;
    Ok(manager.watch().await)
}

/// Waits until the channel says we lead. Returns false if the election task ended first.
pub async fn acquired(rx: &mut watch::Receiver<bool>) -> bool {
    rx.wait_for(|leader| *leader).await.is_ok()
}

/// Resolves when leadership is lost (or the election task ended).
pub async fn lost(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|leader| !*leader).await;
}
