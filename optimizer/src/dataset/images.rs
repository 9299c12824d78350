//! ImageFolder datasets: a directory with one subdirectory per class (sorted names give class
//! indices 0, 1, …) of PNG or JPEG files, or a flat directory of images without labels (the
//! metric is then top-1 agreement with the base model). Each image is preprocessed the way the
//! model expects: grayscale or RGB, resize of the shorter side, center crop, scale to [0, 1],
//! per-channel mean/std, NCHW or NHWC.

use super::{Dataset, DatasetError};
use edgefleet_api::edgemodel::{ColorMode, Preprocessing};
use std::path::{Path, PathBuf};

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Class names of an ImageFolder (sorted subdirectories), empty for a flat folder.
pub fn classes(dir: &Path) -> Result<Vec<String>, DatasetError> {
    let mut names: Vec<String> = read_dir(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    Ok(names)
}

pub fn load(dir: &Path, pre: &Preprocessing) -> Result<Dataset, DatasetError> {
    let invalid = |message: String| DatasetError::Invalid {
        path: dir.to_path_buf(),
        message,
    };
    let classes = classes(dir)?;
    let mut files: Vec<(PathBuf, Option<i64>)> = Vec::new();
    if classes.is_empty() {
        files.extend(images_in(dir)?.into_iter().map(|p| (p, None)));
    } else {
        for (label, class) in classes.iter().enumerate() {
            files.extend(
                images_in(&dir.join(class))?
                    .into_iter()
                    .map(|p| (p, Some(label as i64))),
            );
        }
    }
    if files.is_empty() {
        return Err(invalid(format!(
            "holds no images ({} files, in one subdirectory per class)",
            EXTENSIONS.join("/")
        )));
    }
    let channels = match pre.color_mode {
        ColorMode::Grayscale => 1,
        ColorMode::Rgb => 3,
    };
    for (name, v) in [("mean", &pre.mean), ("std", &pre.std)] {
        if !v.is_empty() && v.len() != channels {
            return Err(invalid(format!(
                "preprocessing {name} has {} values but {:?} images have {channels} channel(s)",
                v.len(),
                pre.color_mode
            )));
        }
    }
    if pre.std.contains(&0.0) {
        return Err(invalid("preprocessing std must not be 0".into()));
    }
    let mut x = Vec::new();
    let mut labels = Vec::new();
    let mut shape: Option<Vec<usize>> = None;
    for (path, label) in &files {
        let (sample, sample_shape) = preprocess(path, pre)?;
        match &shape {
            None => shape = Some(sample_shape),
            Some(s) if *s != sample_shape => {
                return Err(invalid(format!(
                    "{} becomes {sample_shape:?} after preprocessing but earlier images became {s:?}; set resize and centerCrop so every image ends up the same size",
                    path.display()
                )));
            }
            Some(_) => {}
        }
        x.extend(sample);
        labels.extend(*label);
    }
    Dataset::from_parts(
        dir.to_path_buf(),
        shape.expect("at least one image"),
        x,
        (!classes.is_empty()).then_some(labels),
    )
}

/// One image as a float sample in the model's layout, and its shape (the shared
/// `edgefleet_runtime::image::preprocess`, which the sidecar uses too).
pub fn preprocess(
    path: &Path,
    pre: &Preprocessing,
) -> Result<(Vec<f32>, Vec<usize>), DatasetError> {
    let invalid = |message: String| DatasetError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| invalid(format!("cannot read: {e}")))?;
    let pre: edgefleet_runtime::image::Preprocessing =
        serde_json::from_value(serde_json::to_value(pre).expect("preprocessing serializes"))
            .expect("the API's preprocessing and the runtime's share their JSON");
    edgefleet_runtime::image::preprocess(&bytes, &pre).map_err(invalid)
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DatasetError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for e in entries {
        out.push(
            e.map_err(|source| DatasetError::Io {
                path: dir.to_path_buf(),
                source,
            })?
            .path(),
        );
    }
    out.sort();
    Ok(out)
}

fn images_in(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    Ok(read_dir(dir)?
        .into_iter()
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_api::edgemodel::TensorLayout;

    fn pre(color_mode: ColorMode, layout: TensorLayout) -> Preprocessing {
        Preprocessing {
            color_mode,
            resize: None,
            center_crop: None,
            mean: vec![],
            std: vec![],
            layout,
        }
    }

    fn write_rgb(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) {
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)))
            .save(path)
            .unwrap();
    }

    #[test]
    fn rgb_images_become_nchw_or_nhwc_with_mean_and_std() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        write_rgb(&path, 2, 1, |x, _| {
            if x == 0 { [255, 0, 51] } else { [0, 255, 102] }
        });
        let (nchw, shape) = preprocess(&path, &pre(ColorMode::Rgb, TensorLayout::Nchw)).unwrap();
        assert_eq!(shape, [3, 1, 2]);
        assert_eq!(nchw, [1.0, 0.0, 0.0, 1.0, 0.2, 0.4]);
        let (nhwc, shape) = preprocess(&path, &pre(ColorMode::Rgb, TensorLayout::Nhwc)).unwrap();
        assert_eq!(shape, [1, 2, 3]);
        assert_eq!(nhwc, [1.0, 0.0, 0.2, 0.0, 1.0, 0.4]);
        let mut p = pre(ColorMode::Rgb, TensorLayout::Nchw);
        p.mean = vec![0.5, 0.5, 0.5];
        p.std = vec![0.5, 0.5, 0.25];
        let (v, _) = preprocess(&path, &p).unwrap();
        assert!((v[0] - 1.0).abs() < 1e-6 && (v[1] + 1.0).abs() < 1e-6);
        assert!((v[4] - (0.2 - 0.5) / 0.25).abs() < 1e-6);
    }

    #[test]
    fn resize_then_center_crop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wide.png");
        // 8x4: left half black, right half white
        write_rgb(&path, 8, 4, |x, _| if x < 4 { [0; 3] } else { [255; 3] });
        let mut p = pre(ColorMode::Grayscale, TensorLayout::Nchw);
        p.resize = Some(2);
        p.center_crop = Some(2);
        let (v, shape) = preprocess(&path, &p).unwrap();
        assert_eq!(shape, [1, 2, 2]);
        assert!(v[0] < 0.5 && v[1] > 0.5, "{v:?}");
        p.center_crop = Some(3);
        let err = preprocess(&path, &p).unwrap_err().to_string();
        assert!(
            err.contains("center crop 3 is larger than the image (4x2)"),
            "{err}"
        );
    }

    #[test]
    fn folders_give_labels_and_bad_folders_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        for (class, value) in [("cat", 10u8), ("dog", 200u8)] {
            std::fs::create_dir(dir.path().join(class)).unwrap();
            for i in 0..2 {
                write_rgb(
                    &dir.path().join(class).join(format!("{i}.png")),
                    3,
                    3,
                    |_, _| [value; 3],
                );
            }
        }
        std::fs::write(dir.path().join("dog").join("notes.txt"), "ignored").unwrap();
        let data = load(dir.path(), &pre(ColorMode::Grayscale, TensorLayout::Nchw)).unwrap();
        assert_eq!(data.len(), 4);
        assert_eq!(data.sample_shape, [1, 3, 3]);
        assert_eq!(data.labels.as_deref(), Some(&[0, 0, 1, 1][..]));
        assert!((data.sample(3)[0] - 200.0 / 255.0).abs() < 1e-6);

        write_rgb(&dir.path().join("dog").join("big.png"), 4, 4, |_, _| [0; 3]);
        let err = load(dir.path(), &pre(ColorMode::Grayscale, TensorLayout::Nchw))
            .unwrap_err()
            .to_string();
        assert!(err.contains("big.png becomes [1, 4, 4]"), "{err}");

        let empty = tempfile::tempdir().unwrap();
        let err = load(empty.path(), &pre(ColorMode::Rgb, TensorLayout::Nchw))
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no images"), "{err}");
        std::fs::write(empty.path().join("broken.png"), "not a png").unwrap();
        let err = load(empty.path(), &pre(ColorMode::Rgb, TensorLayout::Nchw))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("broken.png") && err.contains("cannot decode"),
            "{err}"
        );
    }
}
