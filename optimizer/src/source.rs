//! Where the optimizer's inputs come from: a local file or directory, an OCI artifact pinned by
//! digest (`oci://registry/repo@sha256:…`), or an HTTPS URL with its sha256. Remote inputs land
//! in the verified artifact cache; an ImageFolder dataset shipped as a tar is unpacked beside it.

use anyhow::{Context as _, Result, bail};
use edgefleet_artifact::{Cache, Digest, Registry, media};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Oci(String),
    Url { url: String, sha256: Digest },
}

/// What an input is, for the media types its artifact may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Model,
    Dataset,
}

/// Reads a `--model`/`--dataset` value. `sha256` is the matching `--…-sha256` flag, required
/// for URLs and refused otherwise.
pub fn parse(flag: &str, value: &str, sha256: Option<&str>) -> Result<Source> {
    if let Some(reference) = value.strip_prefix("oci://") {
        if sha256.is_some() {
            bail!("{flag}-sha256 is only for https:// URLs; an OCI reference carries its digest");
        }
        if !reference.contains("@sha256:") {
            bail!(
                "{flag} {value}: OCI inputs are pulled by digest only (oci://registry/repository@sha256:…)"
            );
        }
        return Ok(Source::Oci(reference.into()));
    }
    if value.starts_with("https://") || value.starts_with("http://") {
        let Some(hex) = sha256 else {
            bail!(
                "{flag} {value}: a URL needs {flag}-sha256 <64 hex> (the digest of the file it serves)"
            );
        };
        let sha256 = format!("sha256:{hex}")
            .parse()
            .map_err(|e| anyhow::anyhow!("{flag}-sha256: {e}"))?;
        return Ok(Source::Url {
            url: value.into(),
            sha256,
        });
    }
    if sha256.is_some() {
        bail!("{flag}-sha256 is only for https:// URLs");
    }
    Ok(Source::File(value.into()))
}

/// Makes the input available as a local path.
pub async fn fetch(
    source: &Source,
    kind: Kind,
    registry: &Registry,
    cache: &Cache,
    ca_files: &[PathBuf],
) -> Result<PathBuf> {
    let path = match source {
        Source::File(p) => return Ok(p.clone()),
        Source::Oci(reference) => {
            let accepted: &[&str] = match kind {
                Kind::Model => &[media::WEIGHT_RAW, media::WEIGHT_RAW_ZSTD],
                Kind::Dataset => &[media::DATASET_RAW],
            };
            let (_, lease, _) = registry
                .pull_file(reference, accepted, cache)
                .await
                .with_context(|| format!("fetching {reference}"))?;
            lease.path().to_path_buf()
        }
        Source::Url { url, sha256 } => {
            edgefleet_artifact::url::fetch_url(url, sha256, cache, ca_files, false)
                .await
                .with_context(|| format!("fetching {url}"))?
                .path()
                .to_path_buf()
        }
    };
    if kind == Kind::Dataset && is_tar(&path)? {
        return unpack_tar(&path, cache);
    }
    Ok(path)
}

fn is_tar(path: &Path) -> Result<bool> {
    use std::io::Read as _;
    let mut header = [0u8; 512];
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let n = f.read(&mut header)?;
    Ok(n == 512 && &header[257..262] == b"ustar")
}

/// Unpacks a tar of class folders next to the cache (once per digest; atomic rename).
fn unpack_tar(path: &Path, cache: &Cache) -> Result<PathBuf> {
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let dest = cache.root().join("unpacked").join(&name);
    if dest.is_dir() {
        return Ok(dest);
    }
    let tmp = cache
        .root()
        .join("unpacked")
        .join(format!(".{name}.{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    if let Err(e) = unpack_entries(path, &tmp, MAX_TAR_BYTES) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!("unpacking {} (an ImageFolder tar)", path.display())));
    }
    // A tar of one top-level directory holding the class folders is unwrapped.
    let entries: Vec<_> = std::fs::read_dir(&tmp)?.flatten().collect();
    let root = match entries.as_slice() {
        [only] if only.path().is_dir() && has_subdirs(&only.path()) => only.path(),
        _ => tmp.clone(),
    };
    if root != tmp {
        let inner = tmp.with_extension("inner");
        std::fs::rename(&root, &inner)?;
        std::fs::remove_dir_all(&tmp)?;
        std::fs::rename(&inner, &dest)?;
    } else {
        std::fs::rename(&tmp, &dest)?;
    }
    Ok(dest)
}

/// The most an ImageFolder tar may unpack to.
pub const MAX_TAR_BYTES: u64 = 8 << 30;

/// Unpacks regular files and directories only, inside `dest`, at most `max_bytes` in all: a
/// link, a device or a path that leaves `dest` is refused by name.
fn unpack_entries(path: &Path, dest: &Path, max_bytes: u64) -> Result<()> {
    let file = std::fs::File::open(path)?;
    let mut archive = tar::Archive::new(file);
    let mut total = 0u64;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.display().to_string();
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            bail!("entry {name:?} is a {kind:?}: only files and directories are accepted");
        }
        total = total.saturating_add(entry.size());
        if total > max_bytes {
            bail!("entry {name:?}: the archive unpacks to more than {max_bytes} bytes");
        }
        if !entry.unpack_in(dest)? {
            bail!("entry {name:?} would land outside the dataset directory");
        }
    }
    Ok(())
}

fn has_subdirs(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|it| it.flatten().any(|e| e.path().is_dir()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> tempfile::NamedTempFile {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), b.into_inner().unwrap()).unwrap();
        file
    }

    fn file_entry(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    }

    #[test]
    fn image_folder_tars_hold_files_and_directories_only_and_are_bounded() {
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(cache_dir.path()).unwrap();
        let link = tar_with(|b| {
            file_entry(b, "cat/1.png", b"png");
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_cksum();
            b.append_link(&mut h, "cat/2.png", "/etc/shadow").unwrap();
        });
        let e = format!("{:#}", unpack_tar(link.path(), &cache).unwrap_err());
        assert!(e.contains("\"cat/2.png\" is a Symlink"), "{e}");
        let unpacked = cache.root().join("unpacked");
        assert_eq!(
            std::fs::read_dir(&unpacked).unwrap().count(),
            0,
            "nothing left behind"
        );

        let big = tar_with(|b| {
            file_entry(b, "cat/1.png", &[0; 600]);
            file_entry(b, "dog/1.png", &[0; 600]);
        });
        let tmp = tempfile::tempdir().unwrap();
        let e = unpack_entries(big.path(), tmp.path(), 1000)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"dog/1.png\"") && e.contains("more than 1000 bytes"),
            "{e}"
        );
        let dest = unpack_tar(big.path(), &cache).unwrap();
        assert!(dest.join("dog/1.png").is_file());
    }

    #[test]
    fn parse_rules() {
        let d = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(
            parse("--model", "m.onnx", None).unwrap(),
            Source::File("m.onnx".into())
        );
        assert_eq!(
            parse("--model", &format!("oci://r:5000/m@sha256:{d}"), None).unwrap(),
            Source::Oci(format!("r:5000/m@sha256:{d}"))
        );
        let e = parse("--model", "oci://r:5000/m:v1", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("by digest only"), "{e}");
        let e = parse("--dataset", "https://h/x.npz", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--dataset-sha256"), "{e}");
        assert!(matches!(
            parse("--dataset", "https://h/x.npz", Some(d)).unwrap(),
            Source::Url { .. }
        ));
        assert!(parse("--dataset", "https://h/x.npz", Some("xyz")).is_err());
        assert!(parse("--dataset", "x.npz", Some(d)).is_err());
    }
}
