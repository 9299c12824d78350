//! Two replicas, one lease: only the leader reconciles, and the standby takes over within the
//! lease duration when the leader is killed without a chance to release it.

mod support;

use anyhow::{bail, ensure};
use edgefleet_api::EdgeModel;
use edgefleet_testenv::{eventually, with_namespace};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use std::time::{Duration, Instant};
use support::{Operator, model};

const RECONCILES: &str = r#"edgefleet_operator_reconciles_total{controller="edgemodel"}"#;

async fn observed(models: &Api<EdgeModel>, name: &str) -> anyhow::Result<()> {
    let m = models.get(name).await?;
    ensure!(
        m.status.and_then(|s| s.observed_generation) == Some(1),
        "{name} not reconciled yet"
    );
    Ok(())
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    with_namespace("leader", |client, ns| async move {
        let a = Operator::start(&ns, &format!("{ns}-a"));
        let b = Operator::start(&ns, &format!("{ns}-b"));
        let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
        let holder = eventually(Duration::from_secs(30), || async {
            let lease = leases.get("edgefleet-operator").await?;
            match lease.spec.and_then(|s| s.holder_identity) {
                Some(h) if !h.is_empty() => Ok(h),
                _ => bail!("lease has no holder yet"),
            }
        })
        .await?;
        let (mut leader, standby) = if holder.ends_with("-a") {
            (a, b)
        } else {
            (b, a)
        };

        let models: Api<EdgeModel> = Api::namespaced(client.clone(), &ns);
        models
            .create(&PostParams::default(), &model("first", &["nowhere"]))
            .await?;
        eventually(Duration::from_secs(30), || observed(&models, "first")).await?;
        assert!(leader.metric(RECONCILES).unwrap_or(0.0) >= 1.0);
        assert_eq!(
            standby.metric(RECONCILES),
            None,
            "the standby must not reconcile"
        );
        assert_eq!(leader.metric("edgefleet_operator_leader"), Some(1.0));
        assert_eq!(standby.metric("edgefleet_operator_leader"), Some(0.0));

        // Kill the leader hard: it cannot release the lease, so the standby waits for expiry.
        let killed = Instant::now();
        leader.process.signal("KILL")?;
        leader.process.wait_timeout(Duration::from_secs(5))?;
        eventually(Duration::from_secs(20), || async {
            ensure!(
                standby.metric("edgefleet_operator_leader") == Some(1.0),
                "standby not leading yet"
            );
            Ok(())
        })
        .await?;
        let takeover = killed.elapsed();
        // Lease duration is 4 s in these tests; allow one renew period of slack on top.
        assert!(
            takeover < Duration::from_secs(10),
            "takeover took {takeover:?}"
        );

        models
            .create(&PostParams::default(), &model("second", &["nowhere"]))
            .await?;
        eventually(Duration::from_secs(30), || observed(&models, "second")).await?;
        assert!(standby.metric(RECONCILES).unwrap_or(0.0) >= 1.0);
        let lease = leases.get("edgefleet-operator").await?;
        assert_eq!(
            lease.spec.and_then(|s| s.holder_identity),
            Some(standby.process.name.clone())
        );
        Ok(())
    })
    .await;
}
