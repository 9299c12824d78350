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

/// A standby that saw the lease free a moment before another replica took it applies its claim
/// late: the API server must refuse that claim (409) rather than hand the lease over while the
/// holder still believes it leads.
#[tokio::test]
async fn a_late_claim_on_a_taken_lease_is_refused() {
    use edgefleet_operator::leader::{LeaseConfig, acquired, elect, field_manager};
    use kube::api::{Patch, PatchParams};
    with_namespace("leader-claim", |client, ns| async move {
        let config = LeaseConfig {
            name: "claimed".into(),
            namespace: ns.clone(),
            identity: "replica-a".into(),
            duration_seconds: 30,
            grace_seconds: 5,
        };
        let (mut rx, task) = elect(client.clone(), &config).await?;
        ensure!(acquired(&mut rx).await, "replica-a never led");
        let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
        // The claim replica-b's lease manager makes for a lease it last saw without a holder.
        let claim = serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "spec": {"holderIdentity": "replica-b", "leaseDurationSeconds": 30},
        });
        let params = PatchParams {
            field_manager: Some(field_manager("replica-b")),
            ..Default::default()
        };
        let refused = leases
            .patch("claimed", &params, &Patch::Apply(&claim))
            .await;
        ensure!(
            matches!(&refused, Err(kube::Error::Api(e)) if e.code == 409),
            "the late claim was not refused: {refused:?}"
        );
        let holder = leases
            .get("claimed")
            .await?
            .spec
            .and_then(|s| s.holder_identity);
        ensure!(
            holder.as_deref() == Some("replica-a"),
            "holder is now {holder:?}"
        );
        ensure!(*rx.borrow_and_update(), "replica-a lost the lead");
        drop(rx);
        let _ = task.await;
        Ok(())
    })
    .await;
}
