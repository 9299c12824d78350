//! ImageFolder datasets on real data: Fashion-MNIST test images written as PNG files, one folder
//! per class, read back with the model's preprocessing, give exactly the samples (and so the
//! accuracy) of the `.npz`; a flat folder without labels is gated on agreement with the base.

use edgefleet_api::edgemodel::{ColorMode, Preprocessing, TensorLayout};
use edgefleet_optimizer::dataset::Dataset;
use edgefleet_optimizer::eval::{self, Plan, tract::Tract};
use std::path::Path;
use std::process::Command;

mod support;
use support::{fixture, fixture_path, ort_lib, test_set};

const MEAN: f64 = 0.286;
const STD: f64 = 0.353;
const SAMPLES: usize = 300;

/// Writes the first `SAMPLES` test images as 28x28 grayscale PNGs; returns their labels.
fn write_images(dir: &Path, by_class: bool) -> Vec<i64> {
    let data = test_set();
    let labels = data.labels.clone().unwrap();
    for (i, label) in labels.iter().take(SAMPLES).enumerate() {
        let pixels: Vec<u8> = data
            .sample(i)
            .iter()
            .map(|&v| ((v as f64 * STD + MEAN) * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect();
        let folder = if by_class {
            dir.join(format!("class-{label:02}"))
        } else {
            dir.to_path_buf()
        };
        std::fs::create_dir_all(&folder).unwrap();
        image::GrayImage::from_raw(28, 28, pixels)
            .unwrap()
            .save(folder.join(format!("{i:05}.png")))
            .unwrap();
    }
    labels[..SAMPLES].to_vec()
}

fn preprocessing() -> Preprocessing {
    Preprocessing {
        color_mode: ColorMode::Grayscale,
        resize: Some(28),
        center_crop: Some(28),
        mean: vec![MEAN],
        std: vec![STD],
        layout: TensorLayout::Nchw,
    }
}

#[test]
fn an_image_folder_reproduces_the_npz_samples_and_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    write_images(dir.path(), true);
    let folder = Dataset::open(dir.path(), Some(&preprocessing())).unwrap();
    assert_eq!(folder.len(), SAMPLES);
    assert_eq!(folder.sample_shape, [1, 28, 28]);
    let npz = test_set();
    // Same images in class order: compare each folder sample with its npz original.
    let mut order: Vec<usize> = (0..SAMPLES).collect();
    order.sort_by_key(|&i| (npz.labels.as_ref().unwrap()[i], i));
    for (k, &i) in order.iter().enumerate() {
        let (a, b) = (folder.sample(k), npz.sample(i));
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "sample {i} differs by {worst}");
        assert_eq!(
            folder.labels.as_ref().unwrap()[k],
            npz.labels.as_ref().unwrap()[i]
        );
    }
    let (model, _) = fixture();
    let all: Vec<usize> = (0..SAMPLES).collect();
    let plan = |indices| Plan {
        indices,
        batch: 50,
        latency_runs: 1,
        reference: None,
    };
    let on_folder = eval::evaluate(&Tract, &model, &folder, &plan(&all)).unwrap();
    let on_npz = eval::evaluate(&Tract, &model, &npz, &plan(&all)).unwrap();
    assert_eq!(on_folder.accuracy, on_npz.accuracy);
    assert!(on_folder.accuracy > 0.8, "{}", on_folder.accuracy);
}

#[test]
fn a_flat_folder_without_labels_is_gated_on_agreement() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    write_images(&images, false);
    let out = dir.path().join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_edgefleet-optimizer"))
        .args(["optimize", "--model"])
        .arg(fixture_path())
        .arg("--dataset")
        .arg(&images)
        .args([
            "--color",
            "grayscale",
            "--mean",
            "0.286",
            "--std",
            "0.353",
            "--device-class",
            "cpu-int8",
            "--techniques",
            "int8-dynamic",
            "--max-drop",
            "0.02",
            "--calibration-samples",
            "50",
            "--latency-runs",
            "5",
            "--out",
        ])
        .arg(&out)
        .env("ORT_DYLIB_PATH", ort_lib())
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "{log}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["metric"], "agreement");
    assert_eq!(
        report["base"]["accuracy"], 1.0,
        "the base agrees with itself"
    );
    assert_eq!(report["samples"]["evaluation"], SAMPLES - 50);
    let winner = report["winner"]["accuracy"].as_f64().unwrap();
    assert!((0.98..=1.0).contains(&winner), "{winner}");

    // Without preprocessing a folder is refused with a pointer to the flags.
    let run = Command::new(env!("CARGO_BIN_EXE_edgefleet-optimizer"))
        .args(["evaluate", "--model"])
        .arg(fixture_path())
        .arg("--dataset")
        .arg(&images)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        err.contains("is an image folder: give its preprocessing"),
        "{err}"
    );
}
