//! Reading NumPy `.npy` arrays (format versions 1–3, little-endian, C order), the members of an
//! `.npz` archive. Only the dtypes datasets use: float32 and int64 (int32/uint8 labels widen).

use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NpyError {
    #[error("not a .npy array (bad magic)")]
    Magic,
    #[error("truncated .npy data")]
    Truncated,
    #[error("unreadable .npy header: {0}")]
    Header(String),
    #[error("dtype {0} is not supported here (float32 for images, int64/int32/uint8 for labels)")]
    Dtype(String),
    #[error("Fortran-ordered arrays are not supported; save with np.ascontiguousarray")]
    FortranOrder,
    #[error("shape {shape:?} needs {expected} bytes of data, found {found}")]
    Size {
        shape: Vec<usize>,
        expected: usize,
        found: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Data,
}

pub fn parse(bytes: &[u8]) -> Result<Array, NpyError> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(NpyError::Magic);
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(NpyError::Truncated);
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(NpyError::Header(format!("format version {v}"))),
    };
    let end = start.checked_add(header_len).ok_or(NpyError::Truncated)?;
    let header = bytes.get(start..end).ok_or(NpyError::Truncated)?;
    let header = std::str::from_utf8(header).map_err(|e| NpyError::Header(e.to_string()))?;
    let fields = header_fields(header)?;
    let descr = fields
        .get("descr")
        .ok_or_else(|| NpyError::Header("no descr".into()))?;
    if fields.get("fortran_order").map(String::as_str) == Some("True") {
        return Err(NpyError::FortranOrder);
    }
    let shape = parse_shape(
        fields
            .get("shape")
            .ok_or_else(|| NpyError::Header("no shape".into()))?,
    )?;
    // Checked: a shape whose size wraps around must not match a short body.
    let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let body = &bytes[end..];
    let check = |width: usize| match count.and_then(|c| c.checked_mul(width)) {
        Some(expected) if expected == body.len() => Ok(()),
        Some(expected) => Err(NpyError::Size {
            shape: shape.clone(),
            expected,
            found: body.len(),
        }),
        None => Err(NpyError::Header(format!(
            "shape {shape:?} holds more values than fit in memory"
        ))),
    };
    let data = match descr.as_str() {
        "<f4" => {
            check(4)?;
            Data::F32(
                body.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            )
        }
        "<i8" => {
            check(8)?;
            Data::I64(
                body.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            )
        }
        "<i4" => {
            check(4)?;
            Data::I64(
                body.chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                    .collect(),
            )
        }
        "|u1" => {
            check(1)?;
            Data::I64(body.iter().map(|&b| b as i64).collect())
        }
        other => return Err(NpyError::Dtype(other.into())),
    };
    Ok(Array { shape, data })
}

/// Splits the Python-dict header `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
fn header_fields(header: &str) -> Result<BTreeMap<String, String>, NpyError> {
    let inner = header.trim().trim_start_matches('{').trim_end_matches('}');
    let mut out = BTreeMap::new();
    let mut rest = inner;
    while let Some(key_start) = rest.find('\'') {
        let after = &rest[key_start + 1..];
        let key_end = after
            .find('\'')
            .ok_or_else(|| NpyError::Header(header.into()))?;
        let key = &after[..key_end];
        let value_part = after[key_end + 1..]
            .trim_start()
            .strip_prefix(':')
            .ok_or_else(|| NpyError::Header(header.into()))?;
        let value_part = value_part.trim_start();
        let (value, remaining) = if let Some(tuple) = value_part.strip_prefix('(') {
            let end = tuple
                .find(')')
                .ok_or_else(|| NpyError::Header(header.into()))?;
            (format!("({})", &tuple[..end]), &tuple[end + 1..])
        } else if let Some(quoted) = value_part.strip_prefix('\'') {
            let end = quoted
                .find('\'')
                .ok_or_else(|| NpyError::Header(header.into()))?;
            (quoted[..end].to_string(), &quoted[end + 1..])
        } else {
            let end = value_part.find(',').unwrap_or(value_part.len());
            (value_part[..end].trim().to_string(), &value_part[end..])
        };
        out.insert(key.to_string(), value);
        rest = remaining;
    }
    Ok(out)
}

fn parse_shape(text: &str) -> Result<Vec<usize>, NpyError> {
    text.trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| NpyError::Header(format!("shape {text}")))
        })
        .collect()
}

/// A float32 `.npy` file (used to write datasets and test inputs).
pub fn encode_f32(shape: &[usize], values: &[f32]) -> Vec<u8> {
    encode(
        shape,
        "<f4",
        &values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>(),
    )
}

/// An int64 `.npy` file.
pub fn encode_i64(shape: &[usize], values: &[i64]) -> Vec<u8> {
    encode(
        shape,
        "<i8",
        &values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>(),
    )
}

fn encode(shape: &[usize], descr: &str, body: &[u8]) -> Vec<u8> {
    let dims: Vec<_> = shape.iter().map(ToString::to_string).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_dtypes_datasets_use() {
        let a = parse(&encode_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])).unwrap();
        assert_eq!(a.shape, [2, 3]);
        assert_eq!(a.data, Data::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        let b = parse(&encode_i64(&[3], &[7, 8, 9])).unwrap();
        assert_eq!(b.shape, [3]);
        assert_eq!(b.data, Data::I64(vec![7, 8, 9]));
    }

    #[test]
    fn a_shape_that_wraps_around_does_not_match_an_empty_body() {
        // 2^62 * 4 values of 4 bytes: 2^66 bytes, 0 once wrapped.
        let e = parse(&encode_f32(&[1 << 62, 4], &[])).unwrap_err();
        assert!(e.to_string().contains("more values than fit"), "{e}");
        let e = parse(&encode_f32(&[1 << 61, 2], &[])).unwrap_err();
        assert!(matches!(e, NpyError::Header(_)), "{e}");
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert_eq!(parse(b"PK\x03\x04 not npy"), Err(NpyError::Magic));
        let mut short = encode_f32(&[4], &[1.0, 2.0, 3.0, 4.0]);
        short.truncate(short.len() - 4);
        assert!(matches!(
            parse(&short),
            Err(NpyError::Size {
                expected: 16,
                found: 12,
                ..
            })
        ));
        let f8 = encode(&[1], "<f8", &1.0f64.to_le_bytes());
        assert_eq!(parse(&f8), Err(NpyError::Dtype("<f8".into())));
    }
}
