//! ONNX Runtime through `ort` with `load-dynamic`: the shared library comes from the
//! `onnxruntime` PyPI wheel (`onnxruntime/capi/libonnxruntime.so.*`) named by `ORT_DYLIB_PATH`.
//! Never downloaded at build time.

use crate::{ModelInfo, Runtime, Session};
use ort::session::builder::GraphOptimizationLevel;
use std::sync::OnceLock;

pub struct OnnxRuntime {
    /// Intra-op threads per session.
    pub threads: usize,
    /// libonnxruntime.so to load; `ORT_DYLIB_PATH` when None. Only the first load in a process
    /// counts.
    pub library: Option<std::path::PathBuf>,
}

/// Loads the library and creates the process's one ONNX Runtime environment; the error says how
/// to provide the library.
pub fn environment(
    library: Option<&std::path::Path>,
) -> Result<&'static ort::environment::Environment, String> {
    static ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
            let path = library.map(|p| p.display().to_string()).ok_or(()).or_else(|_| std::env::var("ORT_DYLIB_PATH")).map_err(|_| {
                "ONNX Runtime is not available: set ORT_DYLIB_PATH to libonnxruntime.so \
                 (from `pip install onnxruntime`: site-packages/onnxruntime/capi/libonnxruntime.so.<version>)"
                    .to_string()
            })?;
            ort::init_from(&path)
                .map_err(|e| format!("cannot load ONNX Runtime from {path}: {e}"))?
                .with_name("edgefleet")
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime from {path}: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

struct OrtSession {
    session: ort::session::Session,
    input: String,
    sample_shape: Vec<usize>,
    input_q: Option<(f32, f32)>,
    output_q: Option<(f32, f32)>,
}

impl Runtime for OnnxRuntime {
    fn name(&self) -> &'static str {
        "onnxruntime"
    }

    fn load(
        &self,
        model: &ModelInfo<'_>,
        sample_shape: &[usize],
        _batch: usize,
    ) -> Result<Box<dyn Session>, String> {
        let env = environment(self.library.as_deref())?;
        let input = model.input.clone();
        let form = crate::decode::runtime_form(model.bytes)?;
        let session = ort::session::Session::builder(env)
            .and_then(|b| {
                b.with_optimization_level(GraphOptimizationLevel::Level3)
                    .map_err(Into::into)
            })
            .and_then(|b| {
                b.with_intra_threads(self.threads.max(1))
                    .map_err(Into::into)
            })
            .and_then(|mut b| b.commit_from_memory(&form.bytes))
            .map_err(|e| e.to_string())?;
        Ok(Box::new(OrtSession {
            session,
            input,
            sample_shape: sample_shape.to_vec(),
            input_q: model.input_q,
            output_q: model.output_q,
        }))
    }
}

impl Session for OrtSession {
    fn run(&mut self, batch: usize, data: &[f32]) -> Result<Vec<f32>, String> {
        let mut shape = vec![batch as i64];
        shape.extend(self.sample_shape.iter().map(|&d| d as i64));
        let outputs = match self.input_q {
            Some(q) => {
                let tensor =
                    ort::value::Tensor::from_array((shape, crate::quantize_input(data, q)))
                        .map_err(|e| e.to_string())?;
                self.session
                    .run(ort::inputs![self.input.as_str() => tensor])
            }
            None => {
                let tensor = ort::value::Tensor::from_array((shape, data.to_vec()))
                    .map_err(|e| e.to_string())?;
                self.session
                    .run(ort::inputs![self.input.as_str() => tensor])
            }
        }
        .map_err(|e| e.to_string())?;
        if let Some(q) = self.output_q {
            let (_, values) = outputs[0]
                .try_extract_tensor::<i8>()
                .map_err(|e| format!("output is not int8: {e}"))?;
            return Ok(crate::dequantize_output(values, q));
        }
        let (_, values) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| format!("output is not float32: {e}"))?;
        Ok(values.to_vec())
    }
}
