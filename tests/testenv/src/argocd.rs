//! Runs the Argo CD health check (`examples/argocd/edgemodel-health.lua`) the way Argo CD does:
//! the object as the global `obj` (a Lua table; JSON null is nil), the script's returned table
//! read back. With the Lua 5.1 reference interpreter (`lua5.1`, installed by
//! `hack/install-deps.sh`); Argo CD embeds a Lua 5.1 implementation.

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use std::process::Command;

/// `value` as a Lua table constructor.
pub fn to_lua(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(to_lua).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", quote(k), to_lua(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\{}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `(status, message)` the health check gives `object` (an EdgeModel as JSON).
pub fn health(object: &Value) -> Result<(String, String)> {
    let script = crate::repo_root().join("examples/argocd/edgemodel-health.lua");
    let harness = format!(
        "obj = {}\nlocal hs = dofile({})\nio.write(hs.status, \"\\t\", hs.message or \"\")\n",
        to_lua(object),
        quote(&script.display().to_string())
    );
    let out = Command::new("lua5.1")
        .arg("-e")
        .arg(&harness)
        .output()
        .context("run lua5.1 (hack/install-deps.sh installs it)")?;
    if !out.status.success() {
        bail!(
            "health check failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let (status, message) = text
        .split_once('\t')
        .context("no status from the health check")?;
    capture(object, status)?;
    Ok((status.to_string(), message.to_string()))
}

/// With `EDGEFLEET_CAPTURE_STATUS=DIR`, every object checked is kept in DIR (managed fields
/// dropped) with the health it got and the test that produced it: how the fixtures in
/// `tests/fixtures/edgemodels/` were captured from the end-to-end tests.
fn capture(object: &Value, health: &str) -> Result<()> {
    let Some(dir) = std::env::var_os("EDGEFLEET_CAPTURE_STATUS") else {
        return Ok(());
    };
    let mut object = object.clone();
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("managedFields");
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("unknown")
        .to_string();
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "captured": test, "argocd": health, "object": object,
    }))?;
    let name = format!(
        "{}-{:016x}.json",
        health.to_lowercase(),
        text.bytes()
            .fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64)
                .wrapping_mul(0x100000001b3))
    );
    std::fs::create_dir_all(&dir)?;
    std::fs::write(std::path::Path::new(&dir).join(name), text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model(generation: i64, status: Value) -> Value {
        json!({"apiVersion": "edgefleet.dev/v1alpha1", "kind": "EdgeModel",
               "metadata": {"name": "m", "generation": generation}, "status": status})
    }

    fn condition(t: &str, s: &str, reason: &str, message: &str) -> Value {
        json!({"type": t, "status": s, "reason": reason, "message": message, "lastTransitionTime": "2026-01-01T00:00:00Z"})
    }

    #[test]
    fn lua_literals_keep_strings_intact() {
        assert_eq!(
            to_lua(&json!({"a": "x\"y\\z\n", "b": [1, true], "c": null})),
            r#"{["a"] = "x\"y\\z\n", ["b"] = {1, true}}"#
        );
    }

    #[test]
    fn health_follows_generation_stalled_and_rollout() {
        let (s, m) = health(&json!({"metadata": {"name": "m", "generation": 1}})).unwrap();
        assert_eq!(
            (s.as_str(), m.as_str()),
            ("Progressing", "waiting for the operator")
        );
        let (s, m) = health(&model(2, json!({"observedGeneration": 1}))).unwrap();
        assert_eq!(
            (s.as_str(), m.as_str()),
            (
                "Progressing",
                "waiting for the operator to observe generation 2"
            )
        );
        let stalled = model(
            1,
            json!({"observedGeneration": 1, "conditions": [
            condition("Stalled", "True", "AccuracyFloorNotMet", "cpu-int8: best candidate 84.1% < floor 85%"),
            condition("Ready", "False", "AccuracyFloorNotMet", "x")]}),
        );
        let (s, m) = health(&stalled).unwrap();
        assert_eq!(
            (s.as_str(), m.as_str()),
            ("Degraded", "cpu-int8: best candidate 84.1% < floor 85%")
        );
        let optimizing = model(
            1,
            json!({"observedGeneration": 1, "conditions": [
            condition("Ready", "False", "Optimizing", "Job m-cpu-int8-1 is optimizing")]}),
        );
        let (s, m) = health(&optimizing).unwrap();
        assert_eq!(
            (s.as_str(), m.as_str()),
            ("Progressing", "Job m-cpu-int8-1 is optimizing")
        );
    }
}
