//! The tract runtime (pure Rust; the sidecar's default).

use crate::{ModelInfo, Runtime, Session};
use tract_onnx::prelude::*;

pub struct Tract;

struct TractSession {
    plan: std::sync::Arc<TypedSimplePlan>,
    shape: Vec<usize>,
    /// Int8 input and output grids of a full-integer model.
    input_q: Option<(f32, f32)>,
    output_q: Option<(f32, f32)>,
}

impl Runtime for Tract {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn load(
        &self,
        model: &ModelInfo<'_>,
        sample_shape: &[usize],
        batch: usize,
    ) -> Result<Box<dyn Session>, String> {
        let mut shape = vec![batch];
        shape.extend(sample_shape);
        // Shapes declared inside the graph (value_info, often with a symbolic batch written by
        // other tools) are hints; the fixed input fact below is what tract should trust.
        let input_q = model.input_q;
        let fact = match input_q {
            Some(_) => i8::fact(&shape),
            None => f32::fact(&shape),
        };
        let form = crate::decode::runtime_form(model.bytes)?;
        let plan = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .with_ignore_output_shapes(true)
            .model_for_read(&mut &*form.bytes)
            .and_then(|m| m.with_input_fact(0, fact.into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| format!("{e:#}"))?;
        Ok(Box::new(TractSession {
            plan,
            shape,
            input_q,
            output_q: model.output_q,
        }))
    }
}

impl Session for TractSession {
    fn run(&mut self, batch: usize, data: &[f32]) -> Result<Vec<f32>, String> {
        let mut shape = self.shape.clone();
        shape[0] = batch;
        let input = match self.input_q {
            Some(q) => Tensor::from_shape(&shape, &crate::quantize_input(data, q)),
            None => Tensor::from_shape(&shape, data),
        }
        .map_err(|e| format!("{e:#}"))?;
        let outputs = self
            .plan
            .run(tvec!(input.into()))
            .map_err(|e| format!("{e:#}"))?;
        if let Some(q) = self.output_q {
            let view = outputs[0]
                .to_plain_array_view::<i8>()
                .map_err(|e| format!("output is not int8: {e:#}"))?;
            let values: Vec<i8> = view.iter().copied().collect();
            return Ok(crate::dequantize_output(&values, q));
        }
        let view = outputs[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| format!("output is not float32: {e:#}"))?;
        Ok(view.iter().copied().collect())
    }
}
