//! A content-addressed blob cache on local disk, shared safely by several processes on a node.
//!
//! Layout under the root: `blobs/sha256/<hex>` holds verified blobs only; `partial/<hex>` holds
//! a download in progress (the writer holds an exclusive lock on it, so two processes never
//! write the same file, and whoever comes second resumes or finds the finished blob); `tmp/`
//! holds whole-file writes before their rename. A blob enters `blobs/` only by an atomic rename
//! after its sha256 was checked. Readers hold a [`Lease`] (a shared lock on the blob file); the
//! garbage collector deletes only what it can lock exclusively, so a blob in use is never
//! deleted.

use crate::{Digest, Error, Result};
use sha2::{Digest as _, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// A blob held for use: while it lives the garbage collector leaves the blob alone.
#[derive(Debug)]
pub struct Lease {
    file: File,
    path: PathBuf,
    digest: Digest,
    size: u64,
}

impl Lease {
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn read(&self) -> Result<Vec<u8>> {
        let mut f = &self.file;
        let mut out = Vec::with_capacity(self.size as usize);
        f.seek(SeekFrom::Start(0))
            .and_then(|_| f.read_to_end(&mut out))
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(out)
    }
}

/// What [`Cache::lease_verified`] found.
#[derive(Debug)]
pub enum Cached {
    /// Present and intact.
    Hit(Lease),
    Missing,
    /// Present but its content no longer matches its digest; it has been removed.
    Corrupt,
}

/// A download in progress, locked by this process.
#[derive(Debug)]
pub struct Partial {
    file: File,
    path: PathBuf,
    digest: Digest,
    len: u64,
}

impl Partial {
    /// Bytes already on disk (where a resumed download starts).
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn truncate(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .and_then(|_| self.file.seek(SeekFrom::Start(0)).map(|_| ()))
            .map_err(|e| Error::io(&self.path, e))?;
        self.len = 0;
        Ok(())
    }
    pub fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(|e| Error::io(&self.path, e))?;
        self.len += bytes.len() as u64;
        Ok(())
    }
    fn discard(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Limits for [`Cache::gc`].
#[derive(Debug, Clone, Copy)]
pub struct GcPolicy {
    /// Delete least recently used blobs until the cache holds at most this many bytes.
    pub max_bytes: u64,
    /// Delete blobs not used for this long (and abandoned partial downloads as old).
    pub max_age: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub deleted: Vec<Digest>,
    pub freed_bytes: u64,
    /// Blobs that would have been deleted but are leased.
    pub kept_in_use: Vec<Digest>,
    pub remaining_bytes: u64,
}

fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| Error::io(path, e))
}

impl Cache {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for sub in ["blobs/sha256", "partial", "tmp"] {
            let p = root.join(sub);
            io(&p, fs::create_dir_all(&p))?;
        }
        Ok(Cache { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path_of(digest).is_file()
    }

    /// Holds the blob for use, or `None` when the cache does not have it.
    pub fn lease(&self, digest: &Digest) -> Result<Option<Lease>> {
        let path = self.path_of(digest);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        io(&path, file.lock_shared())?;
        // The collector may have unlinked the file between open and lock: only a file that is
        // still the one at `path` counts.
        let held = io(&path, file.metadata())?;
        match fs::metadata(&path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {}
            _ => return Ok(None),
        }
        // Record the use for the collector's least-recently-used order.
        let _ = file.set_modified(SystemTime::now());
        Ok(Some(Lease {
            size: held.len(),
            file,
            path,
            digest: digest.clone(),
        }))
    }

    /// Like [`Cache::lease`], and re-checks the blob's sha256 first: a blob altered on disk
    /// (bit rot, a stray write) is removed and reported as [`Cached::Corrupt`] so the caller
    /// fetches it again instead of loading it.
    pub fn lease_verified(&self, digest: &Digest) -> Result<Cached> {
        let Some(lease) = self.lease(digest)? else {
            return Ok(Cached::Missing);
        };
        let actual = sha256_of(&lease.file, &lease.path)?;
        if &actual == digest {
            return Ok(Cached::Hit(lease));
        }
        tracing::warn!(path = %lease.path.display(), %digest, %actual, "corrupt cache entry removed; it will be fetched again");
        let _ = fs::remove_file(&lease.path);
        Ok(Cached::Corrupt)
    }

    /// Verifies `bytes` against `digest` and stores them (temp file + rename).
    pub fn put(&self, digest: &Digest, bytes: &[u8], what: &str) -> Result<Lease> {
        let actual = Digest::of(bytes);
        if &actual != digest {
            return Err(Error::DigestMismatch {
                what: what.into(),
                expected: digest.clone(),
                actual,
            });
        }
        if let Some(lease) = self.lease(digest)? {
            return Ok(lease);
        }
        let tmp = self.tmp_path(digest);
        let written = File::create(&tmp)
            .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
            .and_then(|_| fs::rename(&tmp, self.path_of(digest)));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(&tmp, e));
        }
        self.lease(digest)?
            .ok_or_else(|| Error::io(self.path_of(digest), std::io::ErrorKind::NotFound.into()))
    }

    fn tmp_path(&self, digest: &Digest) -> PathBuf {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        self.root.join("tmp").join(format!(
            "{}.{}.{}",
            digest.hex(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Takes the download slot for `digest`: `None` while another process holds it.
    pub fn try_partial(&self, digest: &Digest) -> Result<Option<Partial>> {
        let path = self.root.join("partial").join(digest.hex());
        let mut file = io(
            &path,
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path),
        )?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        let len = io(&path, file.seek(SeekFrom::End(0)))?;
        Ok(Some(Partial {
            file,
            path,
            digest: digest.clone(),
            len,
        }))
    }

    /// Checks a finished download's sha256 and size and moves it into place. A mismatch
    /// deletes the partial file: those bytes are never used.
    pub fn finish(&self, partial: Partial, size: u64, what: &str) -> Result<Lease> {
        if partial.len != size {
            let actual = partial.len;
            partial.discard();
            return Err(Error::SizeMismatch {
                what: what.into(),
                expected: size,
                actual,
            });
        }
        let actual = sha256_of(&partial.file, &partial.path)?;
        if actual != partial.digest {
            let expected = partial.digest.clone();
            partial.discard();
            return Err(Error::DigestMismatch {
                what: what.into(),
                expected,
                actual,
            });
        }
        io(&partial.path, partial.file.sync_all())?;
        io(
            &partial.path,
            fs::rename(&partial.path, self.path_of(&partial.digest)),
        )?;
        let digest = partial.digest.clone();
        drop(partial);
        self.lease(&digest)?
            .ok_or_else(|| Error::io(self.path_of(&digest), std::io::ErrorKind::NotFound.into()))
    }

    /// Releases a download slot whose blob turned out to be present already.
    pub fn abandon(&self, partial: Partial) {
        partial.discard();
    }

    /// Bytes held in `blobs/`.
    pub fn usage(&self) -> Result<u64> {
        Ok(self.entries()?.iter().map(|e| e.size).sum())
    }

    fn entries(&self) -> Result<Vec<Entry>> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for item in io(&dir, fs::read_dir(&dir))? {
            let item = io(&dir, item)?;
            let Ok(digest) = format!("sha256:{}", item.file_name().to_string_lossy()).parse()
            else {
                continue;
            };
            let meta = io(&item.path(), item.metadata())?;
            out.push(Entry {
                digest,
                size: meta.len(),
                used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        Ok(out)
    }

    /// Deletes blobs by age and least-recent use until the policy holds, never one that is
    /// leased; removes abandoned partial downloads older than `max_age`.
    pub fn gc(&self, policy: &GcPolicy, now: SystemTime) -> Result<GcReport> {
        let mut entries = self.entries()?;
        entries.sort_by_key(|e| e.used);
        let mut total: u64 = entries.iter().map(|e| e.size).sum();
        let mut report = GcReport::default();
        for e in entries {
            let old = now.duration_since(e.used).unwrap_or_default() > policy.max_age;
            if !old && total <= policy.max_bytes {
                continue;
            }
            let path = self.path_of(&e.digest);
            let Ok(file) = File::open(&path) else {
                continue;
            };
            match file.try_lock() {
                Ok(()) => {
                    io(&path, fs::remove_file(&path))?;
                    total -= e.size;
                    report.freed_bytes += e.size;
                    report.deleted.push(e.digest);
                }
                Err(_) => report.kept_in_use.push(e.digest),
            }
        }
        let partial = self.root.join("partial");
        for item in io(&partial, fs::read_dir(&partial))?.flatten() {
            let path = item.path();
            let old = item
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() > policy.max_age)
                .unwrap_or(false);
            if old
                && let Ok(f) = File::open(&path)
                && f.try_lock().is_ok()
            {
                let _ = fs::remove_file(&path);
            }
        }
        report.remaining_bytes = total;
        Ok(report)
    }
}

struct Entry {
    digest: Digest,
    size: u64,
    used: SystemTime,
}

/// The sha256 of a whole open file, read from its start.
fn sha256_of(mut file: &File, path: &Path) -> Result<Digest> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    io(path, file.seek(SeekFrom::Start(0)))?;
    loop {
        let n = io(path, file.read(&mut buf))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Digest::from_hasher(hasher))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: usize, seed: u8) -> (Digest, Vec<u8>) {
        let b: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(seed)).collect();
        (Digest::of(&b), b)
    }

    #[test]
    fn put_verifies_and_lease_reads() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let (d, b) = blob(1000, 3);
        let e = cache.put(&Digest::of(b"other"), &b, "layer x").unwrap_err();
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
        assert!(!cache.contains(&Digest::of(b"other")));
        let lease = cache.put(&d, &b, "layer x").unwrap();
        assert_eq!(lease.read().unwrap(), b);
        assert_eq!(cache.usage().unwrap(), 1000);
        assert!(
            fs::read_dir(dir.path().join("tmp"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn partial_downloads_resume_lock_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let (d, b) = blob(5000, 7);
        let mut p = cache.try_partial(&d).unwrap().unwrap();
        assert!(
            cache.try_partial(&d).unwrap().is_none(),
            "second writer waits"
        );
        p.append(&b[..2000]).unwrap();
        drop(p);
        let mut p = cache.try_partial(&d).unwrap().unwrap();
        assert_eq!(p.len(), 2000, "resumes where the last writer stopped");
        p.append(&b[2000..]).unwrap();
        let lease = cache.finish(p, 5000, "blob").unwrap();
        assert_eq!(lease.read().unwrap(), b);

        // Tampered bytes are refused and dropped.
        let (d2, mut b2) = blob(3000, 11);
        b2[10] ^= 0xff;
        let mut p = cache.try_partial(&d2).unwrap().unwrap();
        p.append(&b2).unwrap();
        let e = cache.finish(p, 3000, "layer y").unwrap_err().to_string();
        assert!(
            e.contains("layer y") && e.contains("sha256 mismatch"),
            "{e}"
        );
        assert!(!cache.contains(&d2));
        assert_eq!(cache.try_partial(&d2).unwrap().unwrap().len(), 0);
    }

    #[test]
    fn gc_keeps_leased_blobs_and_respects_limits() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let (a, ab) = blob(1000, 1);
        let (b, bb) = blob(1000, 2);
        let (c, cb) = blob(1000, 5);
        let now = SystemTime::now();
        let age = |d: &Digest, secs: u64| {
            File::options()
                .write(true)
                .open(cache.path_of(d))
                .unwrap()
                .set_modified(now - Duration::from_secs(secs))
                .unwrap()
        };
        let held = cache.put(&a, &ab, "a").unwrap();
        drop(cache.put(&b, &bb, "b").unwrap());
        drop(cache.put(&c, &cb, "c").unwrap());
        age(&a, 300);
        age(&b, 200);
        age(&c, 100);
        // 3000 bytes against a 1500-byte budget: the oldest (a) is leased and stays; b, then c,
        // go until the cache fits.
        let policy = GcPolicy {
            max_bytes: 1500,
            max_age: Duration::from_secs(3600),
        };
        let r = cache.gc(&policy, now).unwrap();
        assert_eq!(r.kept_in_use, vec![a.clone()]);
        assert_eq!(r.deleted, vec![b.clone(), c.clone()]);
        assert_eq!(r.remaining_bytes, 1000);
        assert!(cache.contains(&a) && !cache.contains(&b) && !cache.contains(&c));
        drop(held);
        // Age limit alone.
        age(&a, 7200);
        let r = cache
            .gc(
                &GcPolicy {
                    max_bytes: u64::MAX,
                    max_age: Duration::from_secs(3600),
                },
                now,
            )
            .unwrap();
        assert_eq!(r.deleted, vec![a.clone()]);
        assert_eq!(cache.usage().unwrap(), 0);
    }
}
