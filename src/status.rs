//! `kubectl edgefleet status NAME`: an EdgeModel at a glance, rendered from its status (pure;
//! the plugin binary only fetches the object).

use edgefleet_api::conditions;
use edgefleet_api::edgemodel::EdgeModel;
use kube::ResourceExt;
use std::fmt::Write;

fn percent(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

pub fn render(model: &EdgeModel) -> String {
    let mut out = String::new();
    let status = model.status.clone().unwrap_or_default();
    let _ = writeln!(
        out,
        "EdgeModel {}/{}  phase {}  revision {}",
        model.namespace().unwrap_or_default(),
        model.name_any(),
        status.phase.map(|p| p.as_str()).unwrap_or("-"),
        status
            .revision
            .map(|r| r.to_string())
            .unwrap_or_else(|| "-".into())
    );
    for c in ["Ready", "RolledOut", "Stalled"] {
        if let Some(c) = conditions::find(&status.conditions, c) {
            let _ = writeln!(
                out,
                "  {:<10} {:<5} {}{}",
                c.type_,
                c.status,
                c.reason,
                if c.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", c.message)
                }
            );
        }
    }
    for name in &model.spec.device_classes {
        let _ = writeln!(out, "\ndevice class {name}");
        let pipeline = status.device_classes.iter().find(|c| &c.name == name);
        match pipeline.and_then(|p| p.artifact.as_ref()) {
            Some(a) => {
                let _ = writeln!(
                    out,
                    "  artifact  {} ({}, {})\n            {} over the air ({} unpacked)\n  accuracy  {} (base {}, drop {})",
                    a.reference,
                    a.technique,
                    a.runtime,
                    size(a.bytes_compressed),
                    size(a.bytes),
                    percent(a.accuracy),
                    percent(a.base_accuracy),
                    percent(a.accuracy_drop)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "  artifact  none yet ({})",
                    pipeline
                        .and_then(|p| p.message.clone().or(p.phase.map(|p| p.to_string())))
                        .unwrap_or_else(|| "pending".into())
                );
            }
        }
        match status.rollouts.iter().find(|r| &r.device_class == name) {
            Some(r) => {
                let _ = writeln!(
                    out,
                    "  rollout   revision {} {}  step {}/{}\n  pods      {} total  {} updated  {} ready  {} failed  {} offline",
                    r.revision,
                    r.state,
                    r.step,
                    r.steps,
                    r.total,
                    r.updated,
                    r.ready,
                    r.failed,
                    r.offline
                );
                if let Some(m) = &r.message {
                    let _ = writeln!(out, "  waiting   {m}");
                }
                if let Some(s) = &r.stable_digest {
                    let _ = writeln!(
                        out,
                        "  stable    revision {} {s}",
                        r.stable_revision.unwrap_or_default()
                    );
                }
            }
            None => {
                let _ = writeln!(out, "  rollout   not started");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_artifact_accuracy_rollout_and_pods_per_class() {
        let model: EdgeModel = serde_json::from_value(serde_json::json!({
            "apiVersion": "edgefleet.dev/v1alpha1", "kind": "EdgeModel",
            "metadata": {"name": "fashion", "namespace": "vision"},
            "spec": {
                "source": {"oci": "r.example/base:v1"},
                "deviceClasses": ["cpu-int8", "nvidia-fp16"],
                "accuracy": {"floor": 0.85, "dataset": {"source": {"oci": "r.example/data:v1"}}},
                "publish": {"repository": "r.example/models"},
            },
            "status": {
                "phase": "Ready", "revision": 3,
                "conditions": [{"type": "RolledOut", "status": "False", "reason": "RolloutWaiting", "message": "cpu-int8: pause", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "deviceClasses": [{"name": "cpu-int8", "phase": "Published", "artifact": {
                    "digest": "sha256:aa", "reference": "r.example/models@sha256:aa", "technique": "int8-static",
                    "runtime": "tract", "bytes": 45000, "bytesCompressed": 32257,
                    "accuracy": 0.8912, "baseAccuracy": 0.8946, "accuracyDrop": 0.0034}}],
                "rollouts": [{"deviceClass": "cpu-int8", "revision": 3, "digest": "sha256:aa", "state": "Waiting",
                    "step": 1, "steps": 3, "total": 5, "updated": 1, "ready": 1, "failed": 0, "offline": 0,
                    "message": "pause after step 1 (20%): 4s left", "stableDigest": "sha256:bb", "stableRevision": 2}],
            }
        }))
        .unwrap();
        let text = render(&model);
        assert!(
            text.starts_with("EdgeModel vision/fashion  phase Ready  revision 3\n"),
            "{text}"
        );
        assert!(
            text.contains("RolledOut  False RolloutWaiting: cpu-int8: pause"),
            "{text}"
        );
        assert!(
            text.contains("artifact  r.example/models@sha256:aa (int8-static, tract)"),
            "{text}"
        );
        assert!(text.contains("31.5 KiB over the air"), "{text}");
        assert!(
            text.contains("accuracy  89.12% (base 89.46%, drop 0.34%)"),
            "{text}"
        );
        assert!(
            text.contains("rollout   revision 3 Waiting  step 1/3"),
            "{text}"
        );
        assert!(
            text.contains("pods      5 total  1 updated  1 ready  0 failed  0 offline"),
            "{text}"
        );
        assert!(text.contains("stable    revision 2 sha256:bb"), "{text}");
        assert!(
            text.contains(
                "device class nvidia-fp16\n  artifact  none yet (pending)\n  rollout   not started"
            ),
            "{text}"
        );
    }
}
