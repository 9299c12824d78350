//! Encoded image bodies (`/v1/models/{name}/classify`, ImageFolder datasets) through the decode
//! limits and preprocessing, with two preprocessing settings.
//!
//! One function, run by the libFuzzer binary of the same name (fuzz/fuzz_targets, `make fuzz`)
//! and by the corpus replay in `make test` (sidecar/tests/fuzz_corpus.rs).

use edgefleet_runtime::image::{ColorMode, Layout, Preprocessing, preprocess};

pub fn run(data: &[u8]) {
    let gray = Preprocessing {
        color_mode: ColorMode::Grayscale,
        resize: None,
        center_crop: None,
        mean: vec![0.286],
        std: vec![0.353],
        layout: Layout::Nchw,
    };
    let rgb = Preprocessing {
        color_mode: ColorMode::Rgb,
        resize: Some(32),
        center_crop: Some(32),
        mean: vec![0.5, 0.5, 0.5],
        std: vec![0.25, 0.25, 0.25],
        layout: Layout::Nhwc,
    };
    for pre in [gray, rgb] {
        if let Ok((x, shape)) = preprocess(data, &pre) {
            assert_eq!(x.len(), shape.iter().product::<usize>());
        }
    }
}
