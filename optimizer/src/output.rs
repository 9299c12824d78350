//! The output directory of a run: `model.onnx` (the winner, only when one passed),
//! `report.json`, `selftest.json` (the device's self-test samples) and, on request,
//! `candidates/`. Every file appears whole or not at all (written beside, then renamed), and a
//! stale winner from an earlier run never survives a run that has none.

use anyhow::{Context as _, Result};
use std::path::{Path, PathBuf};

pub const MODEL: &str = "model.onnx";
pub const REPORT: &str = "report.json";
pub const SELFTEST: &str = "selftest.json";
pub const CANDIDATES: &str = "candidates";

/// An output directory, created when missing.
pub struct OutputDir {
    pub dir: PathBuf,
}

impl OutputDir {
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `name` atomically, or removes it when `bytes` is None (nothing of that kind
    /// this run).
    pub fn put(&self, name: &str, bytes: Option<&[u8]>) -> Result<PathBuf> {
        let path = self.path(name);
        match bytes {
            Some(b) => write_atomic(&path, b)?,
            None => match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
            },
        }
        Ok(path)
    }
}

/// Writes beside the target, then renames onto it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))?;
    Ok(())
}

/// Like [`write_atomic`], readable by its owner only (a private key).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))?;
    Ok(())
}

/// Writes a result file in place. It is read only after this process has ended (in a Job, by
/// the kubelet, as the termination message), so it needs no atomic rename; and it cannot have
/// one there: `/dev/termination-log` lives in a directory a non-root container with a read-only
/// root filesystem cannot write.
pub fn write_result(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_appear_whole_and_a_missing_kind_removes_the_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::create(&dir.path().join("out")).unwrap();
        let p = out.put(MODEL, Some(b"onnx")).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"onnx");
        assert!(!out.path("model.partial").exists());
        out.put(MODEL, None).unwrap();
        assert!(!p.exists());
        // Removing what is not there is fine.
        out.put(SELFTEST, None).unwrap();
    }
}
