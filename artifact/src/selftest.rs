//! Self-test samples shipped inside the artifact: a few preprocessed inputs and the top-1 class
//! the gated model gave for each, so a device can check the model it loaded before serving it.

use crate::{Error, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfTest {
    /// Format version (1).
    pub version: u32,
    /// Input shape of one sample, batch dimension included (e.g. [1, 1, 28, 28]).
    pub shape: Vec<usize>,
    pub samples: Vec<SelfTestSample>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfTestSample {
    /// float32 little-endian, base64.
    pub data: String,
    /// The class the gated model predicted.
    pub top1: usize,
}

impl SelfTest {
    pub fn new(shape: Vec<usize>, samples: &[(Vec<f32>, usize)]) -> Self {
        let samples = samples
            .iter()
            .map(|(x, top1)| SelfTestSample {
                data: STANDARD.encode(x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()),
                top1: *top1,
            })
            .collect();
        SelfTest {
            version: 1,
            shape,
            samples,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("self-test serializes")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let t: SelfTest = serde_json::from_slice(bytes).map_err(|source| Error::Json {
            what: "selftest.json".into(),
            source,
        })?;
        if t.version != 1 {
            return Err(Error::NotAModel {
                reference: "selftest.json".into(),
                reason: format!("version {} is not supported (want 1)", t.version),
            });
        }
        Ok(t)
    }

    /// The samples as floats with their expected top-1; an error names a sample whose data
    /// does not decode or does not fit `shape`.
    pub fn inputs(&self) -> Result<Vec<(Vec<f32>, usize)>> {
        let len: usize = self.shape.iter().product();
        self.samples
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let bad = |reason: String| Error::NotAModel {
                    reference: "selftest.json".into(),
                    reason: format!("samples[{i}].data: {reason}"),
                };
                let bytes = STANDARD
                    .decode(&s.data)
                    .map_err(|e| bad(format!("not base64: {e}")))?;
                if bytes.len() != len * 4 {
                    return Err(bad(format!(
                        "{} bytes, want {} ({} float32 values for shape {:?})",
                        bytes.len(),
                        len * 4,
                        len,
                        self.shape
                    )));
                }
                let x = bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Ok((x, s.top1))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_shape_check() {
        let t = SelfTest::new(vec![1, 2, 2], &[(vec![0.5, -1.0, 3.25, 0.0], 7)]);
        let back = SelfTest::from_json(&t.to_json()).unwrap();
        assert_eq!(
            back.inputs().unwrap(),
            vec![(vec![0.5, -1.0, 3.25, 0.0], 7)]
        );
        let mut wrong = back.clone();
        wrong.shape = vec![1, 3, 3];
        let e = wrong.inputs().unwrap_err().to_string();
        assert!(
            e.contains("samples[0].data") && e.contains("want 36"),
            "{e}"
        );
    }
}
