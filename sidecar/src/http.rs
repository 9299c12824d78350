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
use edgefleet_sidecar::request::{HEADER_LENGTH, parse_request};
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
}
