//! Validation datasets: an `.npz` with `x` (float32, already in the model's layout) and optional
//! `y` (int64 labels), or an ImageFolder directory (`images.rs`). Calibration and evaluation samples are split deterministically and never
//! overlap: the optimizer must not calibrate on what it evaluates.

use crate::npy::{self, Data};
use edgefleet_api::edgemodel::Preprocessing;
use std::io::Read;
use std::path::{Path, PathBuf};

pub mod images;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("dataset {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("dataset {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub path: PathBuf,
    /// Shape of one sample, e.g. `[1, 28, 28]`.
    pub sample_shape: Vec<usize>,
    x: Vec<f32>,
    /// Labels, when the dataset has them.
    pub labels: Option<Vec<i64>>,
}

/// The largest array an `.npz` may hold, uncompressed (what a Job's memory can take; the
/// archive's own size claims are not trusted).
pub const MAX_ARRAY_BYTES: u64 = 4 << 30;

impl Dataset {
    pub fn load(path: &Path) -> Result<Self, DatasetError> {
        Self::load_limited(path, MAX_ARRAY_BYTES)
    }

    /// [`Dataset::load`] with arrays of at most `max_array_bytes` each.
    pub fn load_limited(path: &Path, max_array_bytes: u64) -> Result<Self, DatasetError> {
        let file = std::fs::File::open(path).map_err(|source| DatasetError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_npz(file, path, max_array_bytes)
    }

    /// An `.npz` read from `reader` (`path` names it in errors), arrays of at most
    /// `max_array_bytes` each.
    pub fn from_npz<R: std::io::Read + std::io::Seek>(
        reader: R,
        path: &Path,
        max_array_bytes: u64,
    ) -> Result<Self, DatasetError> {
        let invalid = |message: String| DatasetError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let mut archive = zip::ZipArchive::new(reader)
            .map_err(|e| invalid(format!("not an .npz archive ({e})")))?;
        let mut member = |name: &str| -> Result<Option<npy::Array>, DatasetError> {
            let mut entry = match archive.by_name(&format!("{name}.npy")) {
                Ok(entry) => entry,
                Err(zip::result::ZipError::FileNotFound) => return Ok(None),
                Err(e) => return Err(invalid(format!("{name}.npy: {e}"))),
            };
            let too_large = |size: u64| {
                invalid(format!(
                    "{name}.npy: {size} bytes uncompressed is over the limit of {max_array_bytes}"
                ))
            };
            if entry.size() > max_array_bytes {
                return Err(too_large(entry.size()));
            }
            // Read no further than the limit, whatever the archive claims; preallocate the claim
            // only up to 64 MiB.
            let mut bytes = Vec::with_capacity(entry.size().min(64 << 20) as usize);
            (&mut entry)
                .take(max_array_bytes.saturating_add(1))
                .read_to_end(&mut bytes)
                .map_err(|source| DatasetError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
            if bytes.len() as u64 > max_array_bytes {
                return Err(too_large(bytes.len() as u64));
            }
            npy::parse(&bytes)
                .map(Some)
                .map_err(|e| invalid(format!("{name}.npy: {e}")))
        };
        let x = member("x")?
            .ok_or_else(|| invalid("has no array `x` (float32 samples in model layout)".into()))?;
        let y = member("y")?;
        let Data::F32(values) = x.data else {
            return Err(invalid("`x` must be float32".into()));
        };
        let Some((&count, sample_shape)) = x.shape.split_first() else {
            return Err(invalid("`x` must have a sample dimension first".into()));
        };
        if count == 0 {
            return Err(invalid("is empty: `x` holds no samples".into()));
        }
        let labels = match y {
            None => None,
            Some(y) => {
                let Data::I64(labels) = y.data else {
                    return Err(invalid("`y` must hold integer labels".into()));
                };
                if y.shape != [count] {
                    return Err(invalid(format!(
                        "`y` has shape {:?} but `x` has {count} samples",
                        y.shape
                    )));
                }
                if let Some(bad) = labels.iter().find(|&&l| l < 0) {
                    return Err(invalid(format!("`y` holds a negative label ({bad})")));
                }
                Some(labels)
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            sample_shape: sample_shape.to_vec(),
            x: values,
            labels,
        })
    }

    /// A dataset from samples already in model layout (used by the ImageFolder reader).
    pub fn from_parts(
        path: PathBuf,
        sample_shape: Vec<usize>,
        x: Vec<f32>,
        labels: Option<Vec<i64>>,
    ) -> Result<Self, DatasetError> {
        let sample_len: usize = sample_shape.iter().product();
        if sample_len == 0 || x.is_empty() || !x.len().is_multiple_of(sample_len) {
            return Err(DatasetError::Invalid {
                path,
                message: format!(
                    "{} values do not make samples of shape {sample_shape:?}",
                    x.len()
                ),
            });
        }
        if let Some(l) = &labels
            && l.len() != x.len() / sample_len
        {
            return Err(DatasetError::Invalid {
                path,
                message: format!("{} labels for {} samples", l.len(), x.len() / sample_len),
            });
        }
        Ok(Self {
            path,
            sample_shape,
            x,
            labels,
        })
    }

    /// An `.npz` file, or an ImageFolder directory preprocessed with `pre` (required for one).
    pub fn open(path: &Path, pre: Option<&Preprocessing>) -> Result<Self, DatasetError> {
        if path.is_dir() {
            let pre = pre.ok_or_else(|| DatasetError::Invalid {
                path: path.to_path_buf(),
                message: "is an image folder: give its preprocessing (--preprocessing FILE or --color/--resize/--center-crop/--mean/--std/--layout)".into(),
            })?;
            images::load(path, pre)
        } else {
            Self::load(path)
        }
    }

    pub fn len(&self) -> usize {
        self.x.len() / self.sample_len()
    }

    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }

    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    pub fn sample(&self, i: usize) -> &[f32] {
        let n = self.sample_len();
        &self.x[i * n..(i + 1) * n]
    }

    /// Number of classes the labels imply (largest label + 1).
    pub fn num_classes(&self) -> Option<usize> {
        self.labels
            .as_ref()
            .and_then(|l| l.iter().max())
            .map(|&m| m as usize + 1)
    }

    /// Samples `indices` stacked into one batch tensor (shape `[len, ..sample_shape]`).
    pub fn batch(&self, indices: &[usize]) -> (Vec<usize>, Vec<f32>) {
        let mut shape = vec![indices.len()];
        shape.extend(&self.sample_shape);
        let mut data = Vec::with_capacity(indices.len() * self.sample_len());
        for &i in indices {
            data.extend_from_slice(self.sample(i));
        }
        (shape, data)
    }
}

/// Disjoint calibration and evaluation samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub calibration: Vec<usize>,
    pub evaluation: Vec<usize>,
}

/// Takes `calibration` samples (at most half the dataset) by a seeded shuffle; the rest are for
/// evaluation, in their original order.
pub fn split(len: usize, calibration: usize, seed: u64) -> Split {
    let calibration = calibration.min(len / 2);
    let mut order: Vec<usize> = (0..len).collect();
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    for i in (1..len).rev() {
        // xorshift64*: deterministic across platforms, no dependency.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let j = (state.wrapping_mul(0x2545_F491_4F6C_DD1D) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let mut calib: Vec<usize> = order[..calibration].to_vec();
    calib.sort_unstable();
    let mut taken = vec![false; len];
    for &i in &calib {
        taken[i] = true;
    }
    let evaluation = (0..len).filter(|&i| !taken[i]).collect();
    Split {
        calibration: calib,
        evaluation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn arrays_over_the_limit_are_refused_before_they_are_read_whole() {
        let x = npy::encode_f32(&[4, 256], &vec![0.5; 1024]);
        let file = write_npz(&[("x", x)]);
        let e = Dataset::load_limited(file.path(), 1000)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.npy") && e.contains("over the limit of 1000"),
            "{e}"
        );
        assert_eq!(
            Dataset::load_limited(file.path(), 1 << 20).unwrap().len(),
            4
        );
    }

    fn write_npz(members: &[(&str, Vec<u8>)]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut zip = zip::ZipWriter::new(file.reopen().unwrap());
        for (name, bytes) in members {
            zip.start_file(
                format!("{name}.npy"),
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
        file
    }

    #[test]
    fn loads_samples_and_labels() {
        let f = write_npz(&[
            (
                "x",
                npy::encode_f32(
                    &[3, 1, 2, 2],
                    &(0..12).map(|v| v as f32).collect::<Vec<_>>(),
                ),
            ),
            ("y", npy::encode_i64(&[3], &[0, 2, 1])),
        ]);
        let d = Dataset::load(f.path()).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d.sample_shape, [1, 2, 2]);
        assert_eq!(d.sample(1), &[4.0, 5.0, 6.0, 7.0]);
        assert_eq!(d.num_classes(), Some(3));
        let (shape, data) = d.batch(&[2, 0]);
        assert_eq!(shape, [2, 1, 2, 2]);
        assert_eq!(data[..4], [8.0, 9.0, 10.0, 11.0]);
    }

    #[test]
    fn clear_errors_for_bad_datasets() {
        let empty = write_npz(&[("x", npy::encode_f32(&[0, 1, 2, 2], &[]))]);
        assert!(
            Dataset::load(empty.path())
                .unwrap_err()
                .to_string()
                .contains("is empty")
        );
        let mismatch = write_npz(&[
            ("x", npy::encode_f32(&[2, 1], &[1.0, 2.0])),
            ("y", npy::encode_i64(&[3], &[0, 1, 2])),
        ]);
        assert!(
            Dataset::load(mismatch.path())
                .unwrap_err()
                .to_string()
                .contains("`y` has shape [3] but `x` has 2 samples")
        );
        let no_x = write_npz(&[("y", npy::encode_i64(&[1], &[0]))]);
        assert!(
            Dataset::load(no_x.path())
                .unwrap_err()
                .to_string()
                .contains("has no array `x`")
        );
        let not_zip = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(not_zip.path(), b"hello").unwrap();
        let err = Dataset::load(not_zip.path()).unwrap_err().to_string();
        assert!(
            err.contains("not an .npz archive")
                && err.contains(&not_zip.path().display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn calibration_and_evaluation_never_overlap() {
        let s = split(1000, 200, 7);
        assert_eq!(s.calibration.len(), 200);
        assert_eq!(s.evaluation.len(), 800);
        assert!(
            s.calibration
                .iter()
                .all(|i| s.evaluation.binary_search(i).is_err())
        );
        assert_eq!(s, split(1000, 200, 7), "the split is deterministic");
        assert_ne!(s.calibration, split(1000, 200, 8).calibration);
        assert_eq!(
            split(10, 200, 1).calibration.len(),
            5,
            "at most half the samples calibrate"
        );
    }
}
