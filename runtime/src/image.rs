//! Encoded images (PNG, JPEG) to model input, the way the EdgeModel's `preprocessing` says:
//! grayscale or RGB, resize of the shorter side, center crop, scale to [0, 1], per-channel
//! mean/std, NCHW or NHWC. The optimizer uses it for ImageFolder datasets and the sidecar for its
//! image endpoint, so a device sees exactly the inputs the gate saw.

use image::imageops::FilterType;
use serde::{Deserialize, Serialize};

/// The EdgeModel's `accuracy.preprocessing` (same JSON field names), as carried in an
/// artifact's `dev.edgefleet.preprocessing` annotation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preprocessing {
    #[serde(default)]
    pub color_mode: ColorMode,
    #[serde(default)]
    pub resize: Option<u32>,
    #[serde(default)]
    pub center_crop: Option<u32>,
    #[serde(default)]
    pub mean: Vec<f64>,
    #[serde(default)]
    pub std: Vec<f64>,
    #[serde(default)]
    pub layout: Layout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ColorMode {
    #[default]
    Rgb,
    Grayscale,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Layout {
    #[default]
    #[serde(rename = "NCHW")]
    Nchw,
    #[serde(rename = "NHWC")]
    Nhwc,
}

/// One encoded image as a float sample in the model's layout, and its shape (no batch).
pub fn preprocess(bytes: &[u8], pre: &Preprocessing) -> Result<(Vec<f32>, Vec<usize>), String> {
    let img = image::load_from_memory(bytes).map_err(|e| format!("cannot decode image: {e}"))?;
    let mut img = match pre.color_mode {
        ColorMode::Grayscale => image::DynamicImage::ImageLuma8(img.to_luma8()),
        ColorMode::Rgb => image::DynamicImage::ImageRgb8(img.to_rgb8()),
    };
    if let Some(side) = pre.resize {
        let (w, h) = (img.width(), img.height());
        let (nw, nh) = if w <= h {
            (
                side,
                ((h as u64 * side as u64) / w.max(1) as u64).max(1) as u32,
            )
        } else {
            (
                ((w as u64 * side as u64) / h.max(1) as u64).max(1) as u32,
                side,
            )
        };
        if (nw, nh) != (w, h) {
            img = img.resize_exact(nw, nh, FilterType::Triangle);
        }
    }
    if let Some(side) = pre.center_crop {
        let (w, h) = (img.width(), img.height());
        if side > w || side > h {
            return Err(format!(
                "center crop {side} is larger than the image ({w}x{h})"
            ));
        }
        img = img.crop_imm((w - side) / 2, (h - side) / 2, side, side);
    }
    let channels = match pre.color_mode {
        ColorMode::Grayscale => 1,
        ColorMode::Rgb => 3,
    };
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = match &img {
        image::DynamicImage::ImageLuma8(b) => b.as_raw().clone(),
        other => other.to_rgb8().into_raw(),
    };
    let norm = |c: usize, v: u8| {
        let v = v as f64 / 255.0;
        let mean = pre.mean.get(c).copied().unwrap_or(0.0);
        let std = pre.std.get(c).copied().unwrap_or(1.0);
        ((v - mean) / std) as f32
    };
    let mut out = vec![0f32; raw.len()];
    for (i, &v) in raw.iter().enumerate() {
        let (pixel, c) = (i / channels, i % channels);
        let at = match pre.layout {
            Layout::Nhwc => i,
            Layout::Nchw => c * w * h + pixel,
        };
        out[at] = norm(c, v);
    }
    let shape = match pre.layout {
        Layout::Nchw => vec![channels, h, w],
        Layout::Nhwc => vec![h, w, channels],
    };
    Ok((out, shape))
}
