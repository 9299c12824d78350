//! `kubeconform-schemas --swagger SWAGGER.json --crd CRD.yaml… --out DIR`: the JSON schemas
//! kubeconform validates against, made here from local sources instead of downloaded: every kind
//! of the Kubernetes OpenAPI v2 document (`api/openapi-spec/swagger.json` of the pinned
//! `k8s.io/kubernetes` module) and every version of the given CRDs. Written in kubeconform's
//! layout, `DIR/<file>.json` named `<kind>-<group>-<version>.json`, "strict": objects refuse
//! properties their schema does not name. Test-only; never shipped.

use anyhow::{Context as _, Result, bail};
use serde_json::{Map, Value, json};
use std::path::PathBuf;

fn main() -> Result<()> {
    let (mut swagger, mut crds, mut out) = (None, Vec::new(), None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--swagger" => swagger = args.next().map(PathBuf::from),
            "--crd" => crds.push(PathBuf::from(args.next().context("--crd FILE")?)),
            "--out" => out = args.next().map(PathBuf::from),
            other => {
                bail!("unknown argument {other:?}; usage: --swagger FILE --crd FILE… --out DIR")
            }
        }
    }
    let out = out.context("--out DIR is required")?;
    std::fs::create_dir_all(&out)?;
    let mut written = 0;
    if let Some(path) = swagger {
        let doc: Value = serde_json::from_slice(&std::fs::read(&path)?)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let defs = doc["definitions"]
            .as_object()
            .context("swagger without definitions")?;
        for (name, def) in defs {
            let Some(gvks) = def["x-kubernetes-group-version-kind"].as_array() else {
                continue;
            };
            let mut schema = inline(def, defs, &mut vec![name.clone()]);
            strict(&mut schema);
            for gvk in gvks {
                let (group, version, kind) = (
                    gvk["group"].as_str().unwrap_or_default(),
                    gvk["version"].as_str().unwrap_or_default(),
                    gvk["kind"].as_str().unwrap_or_default(),
                );
                write(&out, &file_name(kind, group, version), &schema)?;
                written += 1;
            }
        }
    }
    for path in crds {
        let text = std::fs::read_to_string(&path)?;
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let crd: Value = serde::Deserialize::deserialize(doc)
                .with_context(|| format!("{} is not YAML", path.display()))?;
            let (group, kind) = (
                crd["spec"]["group"]
                    .as_str()
                    .context("CRD without spec.group")?,
                crd["spec"]["names"]["kind"]
                    .as_str()
                    .context("CRD without a kind")?,
            );
            for v in crd["spec"]["versions"].as_array().into_iter().flatten() {
                let mut schema = v["schema"]["openAPIV3Schema"].clone();
                if schema.is_null() {
                    continue;
                }
                // The API server gives every object these; a CRD's schema need not name them.
                if let Some(props) = schema["properties"].as_object_mut() {
                    for (field, s) in [
                        ("apiVersion", json!({"type": "string"})),
                        ("kind", json!({"type": "string"})),
                        ("metadata", json!({"type": "object"})),
                    ] {
                        props.entry(field).or_insert(s);
                    }
                }
                strict(&mut schema);
                let version = v["name"].as_str().unwrap_or_default();
                write(&out, &file_name(kind, group, version), &schema)?;
                written += 1;
            }
        }
    }
    eprintln!("wrote {written} schemas to {}", out.display());
    Ok(())
}

/// kubeconform's name: `deployment-apps-v1`, `pod-v1`, `edgemodel-edgefleet-v1alpha1`.
fn file_name(kind: &str, group: &str, version: &str) -> String {
    let kind = kind.to_lowercase();
    match group.split('.').next().unwrap_or_default() {
        "" => format!("{kind}-{version}.json"),
        g => format!("{kind}-{}-{version}.json", g.to_lowercase()),
    }
}

fn write(dir: &std::path::Path, name: &str, schema: &Value) -> Result<()> {
    std::fs::write(dir.join(name), serde_json::to_vec(schema)?)?;
    Ok(())
}

/// `$ref`s replaced by their definitions (a reference back into its own path, e.g. the
/// recursive JSONSchemaProps, becomes "anything"); the two string formats that also take numbers
/// say so, as the API server accepts them.
fn inline(schema: &Value, defs: &Map<String, Value>, path: &mut Vec<String>) -> Value {
    match schema {
        Value::Object(o) => {
            if let Some(r) = o.get("$ref").and_then(Value::as_str) {
                let name = r.trim_start_matches("#/definitions/").to_string();
                if path.contains(&name) {
                    return json!({});
                }
                let Some(def) = defs.get(&name) else {
                    return json!({});
                };
                path.push(name);
                let v = inline(def, defs, path);
                path.pop();
                return v;
            }
            match o.get("format").and_then(Value::as_str) {
                Some("int-or-string") => {
                    return json!({"oneOf": [{"type": "string"}, {"type": "integer"}]});
                }
                _ if path
                    .last()
                    .is_some_and(|p| p.ends_with("api.resource.Quantity"))
                    && o.get("type") == Some(&json!("string")) =>
                {
                    return json!({"oneOf": [{"type": "string"}, {"type": "number"}]});
                }
                _ => {}
            }
            Value::Object(
                o.iter()
                    .filter(|(k, _)| k.as_str() != "x-kubernetes-group-version-kind")
                    .map(|(k, v)| (k.clone(), inline(v, defs, path)))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| inline(v, defs, path)).collect()),
        other => other.clone(),
    }
}

/// Every object schema that names its properties refuses others (unless it keeps unknown
/// fields); `x-kubernetes-int-or-string` takes both. Walks schemas only: the keys of
/// `properties` are field names, whatever they are called.
fn strict(schema: &mut Value) {
    let Value::Object(o) = schema else {
        return;
    };
    if o.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
        o.remove("type");
        o.insert(
            "oneOf".into(),
            json!([{"type": "string"}, {"type": "integer"}]),
        );
    }
    let keeps_unknown = o.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    if o.contains_key("properties") && !o.contains_key("additionalProperties") && !keeps_unknown {
        o.insert("additionalProperties".into(), json!(false));
    }
    for (key, v) in o.iter_mut() {
        match (key.as_str(), v) {
            ("properties" | "patternProperties", Value::Object(fields)) => {
                fields.values_mut().for_each(strict)
            }
            ("items" | "additionalProperties" | "not", v) => strict(v),
            ("allOf" | "anyOf" | "oneOf", Value::Array(a)) => a.iter_mut().for_each(strict),
            _ => {}
        }
    }
}
