//! The HTTP API: the KServe Open Inference Protocol v2 (JSON tensors), a model-repository load
//! endpoint for over-the-air updates by hand, and `/metrics`. Every error is a JSON
//! `{"error": "..."}` with a 4xx status for the caller's mistakes and 5xx for ours.

use crate::app::App;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use edgefleet_artifact::Digest;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

/// What one request may ask for.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body (`--max-body-bytes`).
    pub max_body_bytes: usize,
    /// Largest batch in one inference request (`--max-batch`).
    pub max_batch: usize,
    /// Inference requests held at once (reading, waiting for a session, running); one more
    /// gets a 503 with `Retry-After` instead of memory (`--max-in-flight`).
    pub max_in_flight: usize,
    /// Who may change the model over HTTP: nobody by default, and never a sidecar that follows
    /// a ModelAssignment.
    pub load: LoadEndpoint,
}

/// The model-repository load endpoint's state.
#[derive(Clone, Debug, Default)]
pub enum LoadEndpoint {
    /// Refused (403): the model changes only through the ModelAssignment, or not at all.
    #[default]
    Off,
    /// Standalone use on loopback: a request must carry `Authorization: Bearer <token>`.
    Token(String),
}

pub fn router(app: Arc<App>, limits: Limits) -> Router {
    let Limits {
        max_body_bytes,
        max_in_flight,
        ..
    } = limits.clone();
    let counted = app.clone();
    let busy = app.clone();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1)));
    let inference = Router::new()
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v1/models/{name}/classify", post(classify))
        .route_layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let (app, in_flight) = (busy.clone(), in_flight.clone());
                async move {
                    match in_flight.try_acquire_owned() {
                        Ok(_held) => next.run(req).await,
                        Err(_) => {
                            app.metrics.error("busy");
                            let mut r = error(
                                StatusCode::SERVICE_UNAVAILABLE,
                                format!("{max_in_flight} inference requests are in flight (--max-in-flight); retry shortly"),
                            );
                            r.headers_mut().insert(
                                axum::http::header::RETRY_AFTER,
                                axum::http::HeaderValue::from_static("1"),
                            );
                            r
                        }
                    }
                }
            },
        ));
    Router::new()
        .merge(inference)
        .route(
            "/v2/health/live",
            get(|| async { json_ok(json!({"live": true})) }),
        )
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/repository/models/{name}/load", post(load))
        .route("/v2/sidecar/status", get(status))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::Extension(limits))
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let app = counted.clone();
                async move {
                // A declared length over the limit is refused before any byte is read; a body
                // without a length is cut by the limit above while it streams.
                let declared = req
                    .headers()
                    .get(axum::http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<usize>().ok());
                match declared {
                    Some(n) if n > max_body_bytes => {
                        app.metrics.error("bad_request");
                        error(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("request body of {n} bytes is over the limit of {max_body_bytes} (--max-body-bytes)"),
                        )
                    }
                    _ => next.run(req).await,
                }
                }
            },
        ))
        .with_state(app)
}

/// A body that could not be read (too large, cut off): its status, with a JSON message.
fn body_error(app: &App, e: BytesRejection) -> Response {
    app.metrics.error("bad_request");
    error(
        e.status(),
        format!(
            "request body: {} (at most --max-body-bytes bytes are accepted)",
            e.body_text()
        ),
    )
}

fn json_ok(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

async fn ready(State(app): State<Arc<App>>) -> Response {
    match model(&app, &app.name) {
        Ok(_) => json_ok(json!({"ready": true})),
        Err((status, message)) => error(status, message),
    }
}

/// The served model when `name` is its name.
fn model(app: &App, name: &str) -> Result<Arc<crate::model::Loaded>, (StatusCode, String)> {
    if name != app.name {
        return Err((
            StatusCode::NOT_FOUND,
            format!("unknown model {name:?}; this sidecar serves {:?}", app.name),
        ));
    }
    let m = app.slot.current().ok_or_else(|| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("model {name:?} is not loaded yet"),
        )
    })?;
    if !m.answering() {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "model {name:?} ({}) has no session left that can answer",
                m.origin.digest
            ),
        ));
    }
    Ok(m)
}

async fn metadata(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let m = match model(&app, &name) {
        Ok(m) => m,
        Err((status, message)) => return error(status, message),
    };
    let mut input_shape = vec![-1i64];
    input_shape.extend(m.sample_shape.iter().map(|&d| d as i64));
    json_ok(json!({
        "name": m.name,
        "versions": [m.origin.digest],
        "platform": format!("onnx_{}", m.runtime),
        "inputs": [{"name": m.input, "datatype": "FP32", "shape": input_shape}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, m.classes as i64]}],
    }))
}

async fn model_ready(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    match model(&app, &name) {
        Ok(m) => json_ok(json!({"name": m.name, "ready": true})),
        Err((status, message)) => error(status, message),
    }
}

/// Flattens nested JSON arrays of numbers (OIP allows both flat and nested `data`).
/// An OIP request as sent: parsed straight into these types (tensor values into one `f32`
/// buffer), so a request costs its body plus 4 bytes per value, never a JSON tree.
#[derive(serde::Deserialize)]
struct InferBody {
    #[serde(default)]
    id: Option<RequestId>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    parameters: RequestParameters,
    #[serde(default)]
    outputs: Vec<OutputSpec>,
}

/// A request id: a string (the protocol), or a number (echoed as sent).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum RequestId {
    Text(String),
    Number(serde_json::Number),
}

#[derive(serde::Deserialize)]
struct InputTensor {
    #[serde(default)]
    name: String,
    #[serde(default)]
    datatype: String,
    shape: Vec<u64>,
    #[serde(default)]
    parameters: TensorParameters,
    #[serde(default)]
    data: Option<Values>,
}

#[derive(serde::Deserialize, Default)]
struct TensorParameters {
    #[serde(default)]
    binary_data_size: Option<u64>,
}

#[derive(serde::Deserialize, Default)]
struct RequestParameters {
    #[serde(default)]
    binary_data_output: Option<bool>,
}

#[derive(serde::Deserialize, Default)]
struct OutputSpec {
    #[serde(default)]
    parameters: OutputParameters,
}

#[derive(serde::Deserialize, Default)]
struct OutputParameters {
    #[serde(default)]
    binary_data: Option<bool>,
}

/// Tensor values, flat or nested to any depth (JSON's own nesting limit applies), in order.
struct Values(Vec<f32>);

impl<'de> serde::Deserialize<'de> for Values {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = Vec::new();
        serde::de::DeserializeSeed::deserialize(FlatInto(&mut out), d)?;
        Ok(Values(out))
    }
}

/// Appends every number of a (nested) array to the buffer.
struct FlatInto<'a>(&'a mut Vec<f32>);

impl<'de> serde::de::DeserializeSeed<'de> for FlatInto<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FlatInto<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("data to hold numbers (or arrays of numbers)")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let out = self.0;
        while seq.next_element_seed(FlatInto(&mut *out))?.is_some() {}
        Ok(())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.0.push(v as f32);
        Ok(())
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.0.push(v as f32);
        Ok(())
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push(v as f32);
        Ok(())
    }
}

/// The header of the binary tensor data extension: the JSON part's length.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// A checked inference request.
#[derive(Debug, PartialEq)]
pub struct Request {
    pub id: Value,
    pub batch: usize,
    pub data: Vec<f32>,
    /// The caller asked for the output as binary data (`parameters.binary_data_output` or the
    /// output's `parameters.binary_data`).
    pub binary_output: bool,
}

/// Checks an OIP request against the model. With `header_length` (the binary tensor data
/// extension) the body is that many bytes of JSON followed by the raw little-endian tensor
/// that `inputs[0].parameters.binary_data_size` announces. The batch is at most `max_batch`
/// and every size is computed with checked arithmetic: no shape can wrap to match the data.
pub fn parse_request(
    body: &[u8],
    header_length: Option<usize>,
    input: &str,
    sample_shape: &[usize],
    max_batch: usize,
) -> Result<Request, String> {
    let (json_part, binary) = match header_length {
        Some(n) if n > body.len() => {
            return Err(format!(
                "Inference-Header-Content-Length is {n} but the body holds {} bytes",
                body.len()
            ));
        }
        Some(n) => body.split_at(n),
        None => (body, &[][..]),
    };
    let req: InferBody = serde_json::from_slice(json_part).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            format!("the request is not an OIP inference request: {e}")
        }
        _ => format!("malformed JSON: {e}"),
    })?;
    let binary_output = req.parameters.binary_data_output == Some(true)
        || req
            .outputs
            .first()
            .is_some_and(|o| o.parameters.binary_data == Some(true));
    let id = match req.id {
        None => Value::Null,
        Some(RequestId::Text(t)) => Value::String(t),
        Some(RequestId::Number(n)) => Value::Number(n),
    };
    if req.inputs.len() != 1 {
        return Err(format!(
            "the model takes one input, the request has {}",
            req.inputs.len()
        ));
    }
    let tensor = req.inputs.into_iter().next().expect("one input");
    let name = tensor.name.as_str();
    if name != input {
        return Err(format!(
            "inputs[0].name is {name:?}; the model's input is {input:?}"
        ));
    }
    let datatype = tensor.datatype.as_str();
    if datatype != "FP32" {
        return Err(format!(
            "inputs[0].datatype is {datatype:?}; the model takes \"FP32\""
        ));
    }
    let shape: Vec<usize> = tensor
        .shape
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<_>>()
        .ok_or("inputs[0].shape must hold non-negative integers that fit a machine word")?;
    if shape.len() != sample_shape.len() + 1 || shape[1..] != *sample_shape || shape[0] == 0 {
        let mut want = vec!["N".to_string()];
        want.extend(sample_shape.iter().map(usize::to_string));
        return Err(format!(
            "inputs[0].shape is {shape:?}; the model takes [{}] with N >= 1",
            want.join(", ")
        ));
    }
    if shape[0] > max_batch {
        return Err(format!(
            "inputs[0].shape asks for a batch of {}; this sidecar takes at most {max_batch} samples per request (--max-batch)",
            shape[0]
        ));
    }
    // With the batch capped, these cannot overflow; checked anyway, for any sample shape.
    let too_large =
        || format!("inputs[0].shape {shape:?}: the tensor's size does not fit a machine word");
    let expected = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(too_large)?;
    let expected_bytes = expected.checked_mul(4).ok_or_else(too_large)?;
    let data = match tensor.parameters.binary_data_size {
        Some(size) => {
            let size = usize::try_from(size)
                .map_err(|_| "inputs[0].parameters.binary_data_size must be a byte count")?;
            if size != expected_bytes {
                return Err(format!(
                    "inputs[0].parameters.binary_data_size is {size}; shape {shape:?} of FP32 needs {expected_bytes} bytes"
                ));
            }
            if binary.len() != size {
                return Err(format!(
                    "inputs[0] announces {size} bytes of binary data; the body carries {} after the JSON header{}",
                    binary.len(),
                    if header_length.is_none() {
                        " (set Inference-Header-Content-Length)"
                    } else {
                        ""
                    }
                ));
            }
            binary
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        }
        None => {
            if !binary.is_empty() {
                return Err(format!(
                    "{} bytes follow the JSON header but inputs[0].parameters.binary_data_size is not set",
                    binary.len()
                ));
            }
            let data = match tensor.data {
                Some(Values(v)) => v,
                None => {
                    return Err("inputs[0] has neither data nor parameters.binary_data_size".into());
                }
            };
            if data.len() != expected {
                return Err(format!(
                    "inputs[0].data holds {} values; shape {shape:?} needs {expected}",
                    data.len()
                ));
            }
            data
        }
    };
    Ok(Request {
        id,
        batch: shape[0],
        data,
        binary_output,
    })
}

async fn infer(
    State(app): State<Arc<App>>,
    axum::Extension(limits): axum::Extension<Limits>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(b) => b,
        Err(e) => return body_error(&app, e),
    };
    let m = match model(&app, &name) {
        Ok(m) => m,
        Err((status, message)) => {
            app.metrics.error("unknown_model");
            return error(status, message);
        }
    };
    let header_length = match headers
        .get(HEADER_LENGTH)
        .map(|v| v.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok()))
    {
        None => None,
        Some(Some(n)) => Some(n),
        Some(None) => {
            app.metrics.error("bad_request");
            return error(
                StatusCode::BAD_REQUEST,
                "Inference-Header-Content-Length must be a byte count",
            );
        }
    };
    let request = match parse_request(
        &body,
        header_length,
        &m.input,
        &m.sample_shape,
        limits.max_batch,
    ) {
        Ok(x) => x,
        Err(message) => {
            app.metrics.error("bad_request");
            return error(StatusCode::BAD_REQUEST, message);
        }
    };
    let (id, batch) = (request.id, request.batch);
    let outputs = match m.infer(batch, request.data).await {
        Ok(o) => o,
        Err(message) => {
            app.metrics.error("runtime");
            return error(StatusCode::INTERNAL_SERVER_ERROR, message);
        }
    };
    app.metrics.inferences.inc_by(batch as u64);
    let mut response = json!({
        "model_name": m.name,
        "model_version": m.origin.digest,
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [batch, m.classes]}],
    });
    if !id.is_null() {
        response["id"] = id;
    }
    if !request.binary_output {
        response["outputs"][0]["data"] = json!(outputs);
        app.metrics.answered(started.elapsed().as_secs_f64());
        return json_ok(response);
    }
    response["outputs"][0]["parameters"] = json!({"binary_data_size": outputs.len() * 4});
    let mut body = serde_json::to_vec(&response).expect("serializes");
    let header = body.len();
    body.extend(outputs.iter().flat_map(|v| v.to_le_bytes()));
    app.metrics.answered(started.elapsed().as_secs_f64());
    (
        StatusCode::OK,
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/octet-stream".to_string(),
            ),
            (
                axum::http::HeaderName::from_static(HEADER_LENGTH),
                header.to_string(),
            ),
        ],
        body,
    )
        .into_response()
}

/// Softmax scores of one output row, the `k` best first.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(usize, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    let mut scored: Vec<(usize, f32)> = exp.iter().map(|e| e / sum).enumerate().collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}

/// An encoded image (PNG/JPEG body) in, the top-k classes with softmax scores out.
async fn classify(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(b) => b,
        Err(e) => return body_error(&app, e),
    };
    let m = match model(&app, &name) {
        Ok(m) => m,
        Err((status, message)) => {
            app.metrics.error("unknown_model");
            return error(status, message);
        }
    };
    let Some(pre) = m.preprocessing.clone() else {
        app.metrics.error("bad_request");
        return error(
            StatusCode::BAD_REQUEST,
            "this model carries no preprocessing (start with --preprocessing); send tensors to /v2/models/{name}/infer",
        );
    };
    let k = q
        .get("top")
        .and_then(|t| t.parse().ok())
        .unwrap_or(5usize)
        .max(1);
    let (x, shape) = match edgefleet_runtime::image::preprocess(&body, &pre) {
        Ok(x) => x,
        Err(message) => {
            app.metrics.error("bad_request");
            return error(StatusCode::BAD_REQUEST, message);
        }
    };
    if shape != m.sample_shape {
        app.metrics.error("bad_request");
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "the preprocessed image has shape {shape:?}; the model takes {:?} (check the image size against resize/centerCrop)",
                m.sample_shape
            ),
        );
    }
    let out = match m.infer(1, x).await {
        Ok(o) => o,
        Err(message) => {
            app.metrics.error("runtime");
            return error(StatusCode::INTERNAL_SERVER_ERROR, message);
        }
    };
    app.metrics.inferences.inc();
    app.metrics.answered(started.elapsed().as_secs_f64());
    let top: Vec<Value> = top_k(&out, k)
        .into_iter()
        .map(|(class, score)| json!({"class": class, "score": score}))
        .collect();
    json_ok(json!({"model_name": m.name, "model_version": m.origin.digest, "top": top}))
}

async fn load(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    axum::Extension(limits): axum::Extension<Limits>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match &limits.load {
        LoadEndpoint::Off => {
            return error(
                StatusCode::FORBIDDEN,
                "this sidecar does not change its model over HTTP: it follows its ModelAssignment \
                 (or serves the --model it was started with); standalone, start it with \
                 --load-token-file on a loopback --listen address",
            );
        }
        LoadEndpoint::Token(token) => {
            let given = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            // Compared as digests: the time taken says nothing about the token.
            if Digest::of(given.as_bytes()) != Digest::of(token.as_bytes()) {
                app.metrics.error("unauthorized");
                return error(
                    StatusCode::UNAUTHORIZED,
                    "load needs Authorization: Bearer <the --load-token-file token>",
                );
            }
        }
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => return body_error(&app, e),
    };
    if name != app.name {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown model {name:?}; this sidecar serves {:?}", app.name),
        );
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
    };
    let Some(source) = req["parameters"]["source"].as_str() else {
        return error(
            StatusCode::BAD_REQUEST,
            "parameters.source is required: oci://registry/repo@sha256:… or a path",
        );
    };
    match app.load(source, None).await {
        Ok(swapped) => json_ok(serde_json::to_value(swapped).expect("serializes")),
        Err(reason) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "refused {source}: {reason}; still serving {}",
                app.slot
                    .current()
                    .map(|m| m.origin.digest.clone())
                    .unwrap_or_else(|| "nothing".into())
            ),
        ),
    }
}

async fn status(State(app): State<Arc<App>>) -> Response {
    let current = app.slot.current();
    let s = app.slot.status();
    json_ok(json!({
        "name": app.name,
        "digest": current.as_ref().map(|m| m.origin.digest.clone()),
        "source": current.as_ref().map(|m| m.origin.source.clone()),
        "runtime": current.as_ref().map(|m| m.runtime),
        "loadMs": current.as_ref().map(|m| m.load_time.as_secs_f64() * 1e3),
        "selftestPassed": current.as_ref().map(|m| m.selftest_passed),
        "previous": s.previous.map(|p| p.digest),
        "lastRefusal": s.last_refusal,
        "swaps": s.swaps,
    }))
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        StatusCode::OK,
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_softmax_best_first() {
        let t = top_k(&[1.0, 3.0, 2.0], 2);
        assert_eq!(t.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2]);
        let all: f32 = top_k(&[1.0, 3.0, 2.0], 3).iter().map(|x| x.1).sum();
        assert!((all - 1.0).abs() < 1e-6);
    }

    #[test]
    fn requests_are_checked_against_the_model() {
        let ok = br#"{"id": "a", "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 1, 2], "data": [[1, 2], [3, 4.5]]}]}"#;
        let r = parse_request(ok, None, "x", &[1, 2], 8).unwrap();
        assert_eq!(
            (r.id, r.batch, r.data, r.binary_output),
            (json!("a"), 2, vec![1.0, 2.0, 3.0, 4.5], false)
        );
        let bad = |body: &str| parse_request(body.as_bytes(), None, "x", &[1, 2], 8).unwrap_err();
        assert!(bad("{").contains("malformed JSON"));
        assert!(bad(r#"{"inputs": []}"#).contains("one input"));
        assert!(bad(r#"{"inputs": [{"name": "y", "datatype": "FP32", "shape": [1,1,2], "data": [1,2]}]}"#).contains("the model's input is \"x\""));
        assert!(bad(r#"{"inputs": [{"name": "x", "datatype": "INT64", "shape": [1,1,2], "data": [1,2]}]}"#).contains("\"FP32\""));
        assert!(bad(r#"{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1,2,2], "data": [1,2,3,4]}]}"#).contains("[N, 1, 2]"));
        assert!(
            bad(
                r#"{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1,1,2], "data": [1]}]}"#
            )
            .contains("holds 1 values")
        );
        assert!(bad(r#"{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1,1,2], "data": [1, "a"]}]}"#).contains("numbers"));
        assert!(
            bad(r#"{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1,1,2]}]}"#)
                .contains("neither data")
        );
        assert!(
            bad(
                r#"{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1,1,2], "data": []}]}"#
            )
            .contains("not an OIP inference request")
        );
        // An id is a string or a number, echoed as sent; anything else is refused, not stored.
        let with_id = |id: &str| {
            format!(
                r#"{{"id": {id}, "inputs": [{{"name": "x", "datatype": "FP32", "shape": [1,1,2], "data": [[[1]], [2]]}}]}}"#
            )
        };
        let r = parse_request(with_id("7").as_bytes(), None, "x", &[1, 2], 8).unwrap();
        assert_eq!((r.id, r.data), (json!(7), vec![1.0, 2.0]));
        assert!(bad(&with_id(r#"[[1, 2], {"a": 3}]"#)).contains("not an OIP inference request"));
    }

    #[test]
    fn binary_tensors_follow_the_json_header() {
        let header = br#"{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1, 2], "parameters": {"binary_data_size": 8}}], "outputs": [{"name": "output", "parameters": {"binary_data": true}}]}"#;
        let mut body = header.to_vec();
        body.extend([1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()));
        let r = parse_request(&body, Some(header.len()), "x", &[1, 2], 8).unwrap();
        assert_eq!(
            (r.batch, r.data, r.binary_output),
            (1, vec![1.5, -2.0], true)
        );
        let err = |body: &[u8], len: Option<usize>| {
            parse_request(body, len, "x", &[1, 2], 8).unwrap_err()
        };
        assert!(err(&body[..body.len() - 1], Some(header.len())).contains("carries 7"));
        assert!(err(&body, None).contains("malformed JSON"));
        assert!(err(header, None).contains("set Inference-Header-Content-Length"));
        assert!(err(&body, Some(body.len() + 1)).contains("holds"));
        let wrong_size = br#"{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1, 2], "parameters": {"binary_data_size": 4}}]}"#;
        assert!(err(wrong_size, Some(wrong_size.len())).contains("needs 8 bytes"));
        let json_only = br#"{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1, 2], "data": [1, 2]}]}"#;
        let mut trailing = json_only.to_vec();
        trailing.extend([0u8; 8]);
        assert!(err(&trailing, Some(json_only.len())).contains("binary_data_size is not set"));
    }

    #[test]
    fn no_shape_wraps_around_and_the_batch_is_capped() {
        let req = |shape: &str, data: &str| {
            format!(
                r#"{{"inputs": [{{"name": "x", "datatype": "FP32", "shape": {shape}, {data}}}]}}"#
            )
        };
        let err = |body: String, len: Option<usize>| {
            parse_request(body.as_bytes(), len, "x", &[1, 2], 8).unwrap_err()
        };
        // 2^63 * 2 wraps to 0 values (and 0 bytes): empty data must not match it.
        for shape in [
            "[9223372036854775808, 1, 2]",
            "[18446744073709551615, 1, 2]",
            "[9, 1, 2]",
        ] {
            let e = err(req(shape, r#""data": []"#), None);
            assert!(e.contains("at most 8 samples per request"), "{shape}: {e}");
            let binary = req(shape, r#""parameters": {"binary_data_size": 0}"#);
            let n = binary.len();
            assert!(err(binary, Some(n)).contains("--max-batch"), "{shape}");
        }
        // A sample shape the model could never have still cannot wrap.
        let e = parse_request(
            req("[2, 4294967296, 4294967296]", r#""data": []"#).as_bytes(),
            None,
            "x",
            &[1 << 32, 1 << 32],
            8,
        )
        .unwrap_err();
        assert!(e.contains("does not fit a machine word"), "{e}");
        let ok = parse_request(
            req(
                "[8, 1, 2]",
                r#""data": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]"#,
            )
            .as_bytes(),
            None,
            "x",
            &[1, 2],
            8,
        )
        .unwrap();
        assert_eq!(ok.batch, 8);
    }
}
