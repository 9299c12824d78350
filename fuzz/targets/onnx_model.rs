//! ONNX model bytes as the sidecar and the optimizer load them: the model's input and int8
//! grids (`ModelInfo`), the optimizer's protobuf load, and tract building a runnable plan from
//! what parsed (sample shape from the model's own input, batch 1). A panic inside tract is
//! caught here as the sidecar catches it (its loads run on their own task and a panic refuses
//! the model); what remains a finding is an abort, a hang or memory over the limit.
//!
//! One function, run by the libFuzzer binary of the same name (fuzz/fuzz_targets, `make fuzz`)
//! and by the corpus replay in `make test` (sidecar/tests/fuzz_corpus.rs).

use edgefleet_runtime::Runtime as _;

pub fn run(data: &[u8]) {
    let _ = edgefleet_optimizer::model::Model::from_bytes(
        std::path::Path::new("fuzz.onnx"),
        data.to_vec(),
    );
    let Ok(info) = edgefleet_runtime::ModelInfo::parse(data) else {
        return;
    };
    let Some(sample) = info
        .input_dims
        .iter()
        .skip(1)
        .map(|d| d.filter(|&n| n <= 64))
        .collect::<Option<Vec<usize>>>()
    else {
        return;
    };
    if sample.iter().product::<usize>() > 1 << 12 {
        return;
    }
    // libFuzzer's panic hook aborts; around tract alone, a panic unwinds as in the sidecar.
    let abort_on_panic = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        edgefleet_runtime::tract::Tract.load(&info, &sample, 1)
    }));
    std::panic::set_hook(abort_on_panic);
}
