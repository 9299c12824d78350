//! Sub-byte weight codes in the transport form of a model.
//!
//! Low-bit weights are int8 codes behind a standard `DequantizeLinear`, but a 3-bit layer only
//! uses 7 or 8 of the 256 values a byte holds, and zstd's entropy stage (one Huffman table for
//! the whole model) then spends well over 3 bits on each. Over the air such a code tensor
//! travels packed: each code, minus the tensor's smallest code, in exactly as many bits as its
//! range needs, most significant bit first, with the int8 tensor rebuilt by one
//! `dev.edgefleet.UnpackCodes` node (format: `docs/artifact.md`). [`unpack`] turns that back
//! into the standard model before anything else reads it, and refuses what it cannot read
//! exactly; [`pack`] is its inverse, used by the optimizer when it writes a candidate.

use prost::Message as _;
use tract_onnx::pb;

/// The operator set of the unpacking node.
pub const DOMAIN: &str = "dev.edgefleet";
/// The unpacking node's operator.
pub const UNPACK: &str = "UnpackCodes";
/// The version of [`DOMAIN`] this module reads and writes.
pub const VERSION: i64 = 1;

/// Bytes a tensor must save to be packed: the unpacking node costs about 150 bytes before zstd,
/// most of which repeat the tensor's name.
pub const MIN_SAVING: usize = 64;

const UINT8: i32 = 2;
const INT8: i32 = 3;
const ATTR_INT: i32 = 2;
const ATTR_INTS: i32 = 7;

/// Whether a model's bytes use the packed transport form (they import [`DOMAIN`]).
pub fn is_packed(proto: &pb::ModelProto) -> bool {
    proto.opset_import.iter().any(|o| o.domain == DOMAIN)
}

/// The bytes of `values` (each below `2^bits`), `bits` each, most significant bit first; the
/// last byte is padded with zero bits.
pub fn pack_bits(values: &[u8], bits: u32) -> Vec<u8> {
    assert!((1..=8).contains(&bits), "{bits} bits per code");
    let mut out = Vec::with_capacity((values.len() * bits as usize).div_ceil(8));
    let (mut acc, mut filled) = (0u32, 0u32);
    for &v in values {
        debug_assert!(u32::from(v) < 1 << bits, "{v} does not fit in {bits} bits");
        acc = (acc << bits) | u32::from(v);
        filled += bits;
        while filled >= 8 {
            filled -= 8;
            out.push((acc >> filled) as u8);
            acc &= (1 << filled) - 1;
        }
    }
    if filled > 0 {
        out.push((acc << (8 - filled)) as u8);
    }
    out
}

/// The inverse of [`pack_bits`]: `count` values of `bits` bits. Refuses a byte count that is
/// not exactly what `count` values take.
pub fn unpack_bits(bytes: &[u8], bits: u32, count: usize) -> Result<Vec<u8>, String> {
    if !(1..=8).contains(&bits) {
        return Err(format!("{bits} bits per code (want 1 to 8)"));
    }
    let want = count
        .checked_mul(bits as usize)
        .map(|b| b.div_ceil(8))
        .ok_or_else(|| format!("{count} codes of {bits} bits overflow"))?;
    if bytes.len() != want {
        return Err(format!(
            "{} packed bytes, but {count} codes of {bits} bits take {want}",
            bytes.len()
        ));
    }
    let mut out = Vec::with_capacity(count);
    let (mut acc, mut filled) = (0u32, 0u32);
    let mut next = bytes.iter();
    while out.len() < count {
        while filled < bits {
            acc = (acc << 8) | u32::from(*next.next().expect("length checked"));
            filled += 8;
        }
        filled -= bits;
        out.push((acc >> filled) as u8 & ((1u16 << bits) - 1) as u8);
        acc &= (1 << filled) - 1;
    }
    Ok(out)
}

/// Packs every int8 initializer that feeds a `DequantizeLinear` and whose codes span fewer than
/// 128 values, where that saves at least [`MIN_SAVING`] bytes. Returns how many were packed (the
/// model is unchanged when none).
pub fn pack(proto: &mut pb::ModelProto) -> usize {
    let Some(graph) = proto.graph.as_mut() else {
        return 0;
    };
    let codes: Vec<String> = graph
        .node
        .iter()
        .filter(|n| {
            n.op_type == "DequantizeLinear" && (n.domain.is_empty() || n.domain == "ai.onnx")
        })
        .filter_map(|n| n.input.first().cloned())
        .collect();
    let taken = |graph: &pb::GraphProto, name: &str| {
        graph.initializer.iter().any(|t| t.name == name)
            || graph
                .node
                .iter()
                .any(|n| n.output.iter().any(|o| o == name))
            || graph
                .input
                .iter()
                .chain(&graph.output)
                .any(|v| v.name == name)
    };
    let mut packed = 0;
    for name in codes {
        let Some(i) = graph.initializer.iter().position(|t| t.name == name) else {
            continue;
        };
        let t = &graph.initializer[i];
        let is_graph_value = graph
            .input
            .iter()
            .chain(&graph.output)
            .any(|v| v.name == name);
        if t.data_type != INT8 || t.raw_data.is_empty() || is_graph_value {
            continue;
        }
        let (lo, hi) = t.raw_data.iter().fold((i8::MAX, i8::MIN), |(lo, hi), &b| {
            (lo.min(b as i8), hi.max(b as i8))
        });
        let span = (i16::from(hi) - i16::from(lo)) as u32 + 1;
        let bits = (u32::BITS - (span - 1).leading_zeros()).max(1);
        let packed_name = format!("{name}.packed");
        let saving = t.raw_data.len() - (t.raw_data.len() * bits as usize).div_ceil(8);
        if bits >= 8 || saving < MIN_SAVING || taken(graph, &packed_name) {
            continue;
        }
        let offsets: Vec<u8> = t
            .raw_data
            .iter()
            .map(|&b| (i16::from(b as i8) - i16::from(lo)) as u8)
            .collect();
        let bytes = pack_bits(&offsets, bits);
        let t = std::mem::replace(
            &mut graph.initializer[i],
            pb::TensorProto {
                name: packed_name.clone(),
                dims: vec![bytes.len() as i64],
                data_type: UINT8,
                raw_data: bytes,
                ..Default::default()
            },
        );
        let int = |name: &str, i: i64| pb::AttributeProto {
            name: name.into(),
            r#type: ATTR_INT,
            i,
            ..Default::default()
        };
        graph.node.insert(
            packed,
            pb::NodeProto {
                name: format!("{name}.unpack"),
                op_type: UNPACK.into(),
                domain: DOMAIN.into(),
                input: vec![packed_name],
                output: vec![name],
                attribute: vec![
                    int("bits", i64::from(bits)),
                    int("offset", i64::from(lo)),
                    pb::AttributeProto {
                        name: "shape".into(),
                        r#type: ATTR_INTS,
                        ints: t.dims.clone(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
        );
        packed += 1;
    }
    if packed > 0 {
        proto.opset_import.push(pb::OperatorSetIdProto {
            domain: DOMAIN.into(),
            version: VERSION,
        });
    }
    packed
}

/// Rebuilds the int8 initializer of every `UnpackCodes` node and removes the nodes, the packed
/// initializers and the [`DOMAIN`] import. Returns how many were unpacked; an error names the
/// node and what is wrong with it, and a model with an error is not half-changed.
pub fn unpack(proto: &mut pb::ModelProto) -> Result<usize, String> {
    let imports: Vec<i64> = proto
        .opset_import
        .iter()
        .filter(|o| o.domain == DOMAIN)
        .map(|o| o.version)
        .collect();
    match imports.as_slice() {
        [] => return Ok(0),
        [VERSION] => {}
        other => {
            return Err(format!(
                "operator set {DOMAIN} version {other:?} (this build reads version {VERSION})"
            ));
        }
    }
    let Some(graph) = proto.graph.as_ref() else {
        return Ok(0);
    };
    let mut unpacked = Vec::new();
    for node in graph.node.iter().filter(|n| n.domain == DOMAIN) {
        let tensor = unpack_node(graph, node).map_err(|e| format!("node {:?}: {e}", node.name))?;
        unpacked.push(tensor);
    }
    let graph = proto.graph.as_mut().expect("checked above");
    let inputs: Vec<String> = graph
        .node
        .iter()
        .filter(|n| n.domain == DOMAIN)
        .flat_map(|n| n.input.clone())
        .collect();
    graph.node.retain(|n| n.domain != DOMAIN);
    let still_used = |name: &String, graph: &pb::GraphProto| {
        graph.node.iter().any(|n| n.input.contains(name))
            || graph.output.iter().any(|o| &o.name == name)
    };
    let unused: Vec<String> = inputs
        .into_iter()
        .filter(|name| !still_used(name, graph))
        .collect();
    graph.initializer.retain(|t| !unused.contains(&t.name));
    let count = unpacked.len();
    graph.initializer.extend(unpacked);
    proto.opset_import.retain(|o| o.domain != DOMAIN);
    Ok(count)
}

fn unpack_node(graph: &pb::GraphProto, node: &pb::NodeProto) -> Result<pb::TensorProto, String> {
    if node.op_type != UNPACK {
        return Err(format!("unknown operator {DOMAIN}.{}", node.op_type));
    }
    let ([input], [output]) = (node.input.as_slice(), node.output.as_slice()) else {
        return Err("want one input and one output".into());
    };
    if graph.initializer.iter().any(|t| &t.name == output) {
        return Err(format!("its output {output:?} is also an initializer"));
    }
    let packed = graph
        .initializer
        .iter()
        .find(|t| &t.name == input)
        .ok_or_else(|| format!("its input {input:?} is not an initializer"))?;
    if packed.data_type != UINT8 || packed.dims.len() != 1 {
        return Err(format!("its input {input:?} is not a 1-D uint8 tensor"));
    }
    let attr = |name: &str, kind: i32| {
        node.attribute
            .iter()
            .find(|a| a.name == name && a.r#type == kind)
            .ok_or_else(|| format!("attribute {name:?} is missing or of the wrong type"))
    };
    let bits = attr("bits", ATTR_INT)?.i;
    let offset = attr("offset", ATTR_INT)?.i;
    let shape = &attr("shape", ATTR_INTS)?.ints;
    if !(1..=7).contains(&bits) {
        return Err(format!("attribute bits is {bits} (want 1 to 7)"));
    }
    if offset < i64::from(i8::MIN) || offset + (1 << bits) - 1 > i64::from(i8::MAX) {
        return Err(format!(
            "attribute offset {offset} with {bits} bits leaves the int8 range"
        ));
    }
    let count = shape.iter().try_fold(1usize, |n, &d| {
        usize::try_from(d).ok().and_then(|d| n.checked_mul(d))
    });
    let count = count.ok_or_else(|| format!("attribute shape {shape:?} is not a tensor shape"))?;
    let values = unpack_bits(&packed.raw_data, bits as u32, count)?;
    Ok(pb::TensorProto {
        name: output.clone(),
        dims: shape.clone(),
        data_type: INT8,
        raw_data: values
            .into_iter()
            .map(|v| (i64::from(v) + offset) as i8 as u8)
            .collect(),
        ..Default::default()
    })
}

/// The transport form of a model's bytes: [`pack`] applied to a copy.
pub fn packed_bytes(proto: &pb::ModelProto) -> Vec<u8> {
    let mut copy = proto.clone();
    if pack(&mut copy) == 0 {
        return proto.encode_to_vec();
    }
    copy.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_at_every_width_and_length() {
        for bits in 1..=8u32 {
            for len in [0usize, 1, 2, 3, 7, 8, 9, 100] {
                let values: Vec<u8> = (0..len)
                    .map(|i| ((i * 37 + 11) % (1usize << bits)) as u8)
                    .collect();
                let packed = pack_bits(&values, bits);
                assert_eq!(packed.len(), (len * bits as usize).div_ceil(8));
                assert_eq!(
                    unpack_bits(&packed, bits, len).unwrap(),
                    values,
                    "{bits} bits, {len}"
                );
            }
        }
        // Most significant bit first: 3-bit codes 5, 1, 7 are 101 001 11|1 0000000.
        assert_eq!(pack_bits(&[5, 1, 7], 3), vec![0b1010_0111, 0b1000_0000]);
    }

    #[test]
    fn a_byte_count_that_does_not_match_is_refused() {
        assert!(unpack_bits(&[0; 2], 3, 3).is_ok());
        assert!(unpack_bits(&[0; 3], 3, 3).unwrap_err().contains("take 2"));
        assert!(unpack_bits(&[0; 1], 3, 3).is_err());
        assert!(unpack_bits(&[], 9, 0).is_err());
        assert!(
            unpack_bits(&[], 7, usize::MAX)
                .unwrap_err()
                .contains("overflow")
        );
    }

    fn model(codes: Vec<i8>, dims: &[i64]) -> pb::ModelProto {
        pb::ModelProto {
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(pb::GraphProto {
                node: vec![pb::NodeProto {
                    op_type: "DequantizeLinear".into(),
                    input: vec!["w.int8".into(), "w.scale".into()],
                    output: vec!["w".into()],
                    ..Default::default()
                }],
                initializer: vec![
                    pb::TensorProto {
                        name: "w.int8".into(),
                        dims: dims.to_vec(),
                        data_type: INT8,
                        raw_data: codes.iter().map(|&c| c as u8).collect(),
                        ..Default::default()
                    },
                    pb::TensorProto {
                        name: "w.scale".into(),
                        data_type: 1,
                        raw_data: 0.5f32.to_le_bytes().to_vec(),
                        ..Default::default()
                    },
                ],
                output: vec![pb::ValueInfoProto {
                    name: "w".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn codes_of(proto: &pb::ModelProto) -> Vec<i8> {
        let g = proto.graph.as_ref().unwrap();
        let t = g.initializer.iter().find(|t| t.name == "w.int8").unwrap();
        t.raw_data.iter().map(|&b| b as i8).collect()
    }

    #[test]
    fn low_bit_codes_travel_in_their_width_and_come_back_exactly() {
        let codes: Vec<i8> = (0..600).map(|i| (i % 7) as i8 - 3).collect();
        let original = model(codes.clone(), &[20, 30]);
        let mut m = original.clone();
        assert_eq!(pack(&mut m), 1);
        assert!(is_packed(&m));
        let g = m.graph.as_ref().unwrap();
        let packed = g
            .initializer
            .iter()
            .find(|t| t.name == "w.int8.packed")
            .unwrap();
        assert_eq!(
            packed.raw_data.len(),
            600 * 3 / 8,
            "-3..3 is 7 values: 3 bits"
        );
        assert!(!g.initializer.iter().any(|t| t.name == "w.int8"));
        // 375 bytes fewer codes, less the unpacking node.
        let (p, o) = (
            packed_bytes(&original).len(),
            original.encode_to_vec().len(),
        );
        assert!(p + 200 < o, "{p} packed vs {o}");

        assert_eq!(unpack(&mut m).unwrap(), 1);
        assert!(!is_packed(&m));
        assert_eq!(codes_of(&m), codes);
        let g = m.graph.as_ref().unwrap();
        assert_eq!(g.node.len(), 1);
        assert_eq!(g.initializer.len(), 2);
        assert_eq!(
            g.initializer
                .iter()
                .find(|t| t.name == "w.int8")
                .unwrap()
                .dims,
            vec![20, 30]
        );
    }

    #[test]
    fn full_width_and_constant_codes() {
        let mut wide = model((-128..=127).collect(), &[256]);
        assert_eq!(pack(&mut wide), 0, "256 values need all 8 bits");
        assert!(!is_packed(&wide));
        let mut constant = model(vec![-5; 100], &[100]);
        assert_eq!(pack(&mut constant), 1);
        unpack(&mut constant).unwrap();
        assert_eq!(codes_of(&constant), vec![-5; 100]);
        let mut small = model(vec![1, 0, -1, 0], &[4]);
        assert_eq!(pack(&mut small), 0, "saving 3 bytes is not worth a node");
    }

    fn packed_model() -> pb::ModelProto {
        let mut m = model((0..256).map(|i| (i % 4) as i8 - 2).collect(), &[16, 16]);
        pack(&mut m);
        m
    }

    fn set_attr(m: &mut pb::ModelProto, name: &str, f: impl Fn(&mut pb::AttributeProto)) {
        let g = m.graph.as_mut().unwrap();
        let a = g.node[0]
            .attribute
            .iter_mut()
            .find(|a| a.name == name)
            .unwrap();
        f(a);
    }

    #[test]
    fn hostile_packed_nodes_are_refused_with_the_node_and_field() {
        let refused = |m: &mut pb::ModelProto| {
            let before = m.clone();
            let e = unpack(m).unwrap_err();
            assert_eq!(*m, before, "a refused model is left as it was");
            e
        };
        let mut m = packed_model();
        set_attr(&mut m, "bits", |a| a.i = 9);
        assert!(refused(&mut m).contains("bits is 9"));
        let mut m = packed_model();
        set_attr(&mut m, "offset", |a| a.i = 125);
        assert!(refused(&mut m).contains("int8 range"));
        let mut m = packed_model();
        set_attr(&mut m, "shape", |a| a.ints = vec![1 << 20, 1 << 20]);
        assert!(refused(&mut m).contains("packed bytes"));
        let mut m = packed_model();
        set_attr(&mut m, "shape", |a| a.ints = vec![i64::MAX, i64::MAX]);
        assert!(refused(&mut m).contains("not a tensor shape"));
        let mut m = packed_model();
        set_attr(&mut m, "shape", |a| a.ints = vec![-8, -8]);
        assert!(refused(&mut m).contains("not a tensor shape"));
        let mut m = packed_model();
        m.graph.as_mut().unwrap().node[0].op_type = "Explode".into();
        let e = refused(&mut m);
        assert!(
            e.contains("w.int8.unpack") && e.contains("dev.edgefleet.Explode"),
            "{e}"
        );
        let mut m = packed_model();
        m.opset_import.last_mut().unwrap().version = 2;
        assert!(refused(&mut m).contains("version [2]"));
        let mut m = packed_model();
        m.graph.as_mut().unwrap().initializer[0].data_type = INT8;
        assert!(refused(&mut m).contains("uint8"));
    }
}
