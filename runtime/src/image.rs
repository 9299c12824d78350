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

/// Widest or tallest image decoded.
pub const MAX_SIDE: u32 = 8192;
/// Most memory one decode may allocate (whatever the header claims).
pub const MAX_DECODE_BYTES: u64 = 64 << 20;
/// Most pixels after resizing (a 1-pixel-wide image resized to a 224 short side would grow
/// without bound).
pub const MAX_PIXELS: u64 = 16 << 20;

/// One encoded image as a float sample in the model's layout, and its shape (no batch).
/// Images over [`MAX_SIDE`] or needing more than [`MAX_DECODE_BYTES`] are refused before they
/// are decoded.
pub fn preprocess(bytes: &[u8], pre: &Preprocessing) -> Result<(Vec<f32>, Vec<usize>), String> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read image: {e}"))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| format!("cannot decode image (at most {MAX_SIDE}x{MAX_SIDE}, {MAX_DECODE_BYTES} bytes decoded): {e}"))?;
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
        if nw as u64 * nh as u64 > MAX_PIXELS {
            return Err(format!(
                "resizing {w}x{h} to a short side of {side} makes {nw}x{nh}, over {MAX_PIXELS} pixels"
            ));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([((x + y) % 251) as u8]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn gray(resize: Option<u32>) -> Preprocessing {
        Preprocessing {
            color_mode: ColorMode::Grayscale,
            resize,
            center_crop: None,
            mean: Vec::new(),
            std: Vec::new(),
            layout: Layout::Nchw,
        }
    }

    #[test]
    fn images_beyond_the_decode_limits_are_refused_before_they_cost_memory() {
        let (x, shape) = preprocess(&png(28, 28), &gray(None)).unwrap();
        assert_eq!((x.len(), shape), (784, vec![1, 28, 28]));
        // A few KiB of PNG that claims more width than allowed.
        let wide = png(MAX_SIDE + 1, 1);
        assert!(wide.len() < 64 << 10, "{}", wide.len());
        let e = preprocess(&wide, &gray(None)).unwrap_err();
        assert!(e.contains("cannot decode image (at most 8192x8192"), "{e}");
        // Small enough to decode, but a resize would make it enormous.
        let e = preprocess(&png(1, 8000), &gray(Some(224))).unwrap_err();
        assert!(e.contains("over 16777216 pixels"), "{e}");
        assert!(preprocess(b"not an image", &gray(None)).is_err());
    }
}
