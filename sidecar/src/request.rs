//! The Open Inference Protocol v2 request as the sidecar accepts it: checked against the model
//! (name, datatype, shape, batch cap) with checked arithmetic, JSON tensors parsed straight into
//! one `f32` buffer, binary tensors after their JSON header. Pure: the HTTP handler and the fuzz
//! target (`fuzz/`) call the same function.

use serde_json::Value;

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
