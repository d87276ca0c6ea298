//! The embedded default store: a folder on the local file system.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{ByteStream, Store, StoreError, Version, validate_key};

#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root`, which is created if missing.
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(Self {
            root: std::path::absolute(&root)?,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    /// The path for writing `key`, with its folder created.
    async fn prepare(&self, key: &str) -> Result<PathBuf, StoreError> {
        let path = self.path(key)?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        Ok(path)
    }
}

/// A temporary file beside `path`, renamed over it when complete and deleted if dropped first
/// (a failed write, or a request that went away mid-upload, leaves nothing behind). Readable by
/// all like any published file (a web server in front of the folder may run as another user).
fn temporary_beside(path: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    tempfile::Builder::new()
        .prefix(".partial-")
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
}

/// A temporary file beside `path` holding `bytes`, ready to be renamed over it.
async fn written_beside(path: &Path, bytes: &[u8]) -> std::io::Result<tempfile::NamedTempFile> {
    let tmp = temporary_beside(path)?;
    let mut file = tokio::fs::File::from_std(tmp.reopen()?);
    file.write_all(bytes).await?;
    file.flush().await?;
    Ok(tmp)
}

/// A local file's version (never 0 for a file that exists): every write renames a new file
/// into place, so its inode with its modification time tells writes apart even within the
/// clock's granularity (a few milliseconds), which the time alone does not.
fn version_from(meta: &std::fs::Metadata) -> Result<Version, StoreError> {
    use std::os::unix::fs::MetadataExt;
    let nanos = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos()) as u64;
    let mixed = nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ meta.ino();
    Ok(((mixed >> 1) as i64).max(1))
}

async fn version_of(path: &Path) -> Result<Version, StoreError> {
    version_from(&tokio::fs::metadata(path).await?)
}

/// Renames a finished temporary file to `path`.
fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> std::io::Result<()> {
    tmp.persist(path).map(|_| ()).map_err(|e| e.error)
}

#[async_trait]
impl Store for LocalStore {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn bucket(&self) -> Option<&str> {
        None
    }

    /// A folder has no prefix of its own: an object's name is its key.
    fn key_of_object(&self, name: &str) -> Option<String> {
        Some(name.to_string())
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path(key).ok()
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        match tokio::fs::read(self.path(key)?).await {
            Ok(bytes) => Ok(Some(bytes.into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, Version)>, StoreError> {
        use tokio::io::AsyncReadExt;
        // Bytes and version of the same file, even if another write renames a new one in.
        let mut file = match tokio::fs::File::open(self.path(key)?).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let version = version_from(&file.metadata().await?)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).await?;
        Ok(Some((bytes.into(), version)))
    }

    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = self.prepare(key).await?;
        let tmp = written_beside(&path, &bytes).await?;
        persist(tmp, &path)?;
        Ok(())
    }

    /// Atomic when the object must be absent (a hard link that fails if the name exists); a
    /// replacement checks the version and renames under a lock shared by the folder's
    /// processes (one host's: the folder is not for several hosts).
    async fn put_if(
        &self,
        key: &str,
        bytes: Bytes,
        only_if: Version,
    ) -> Result<Version, StoreError> {
        let path = self.prepare(key).await?;
        let tmp = written_beside(&path, &bytes).await?;
        let changed = || StoreError::Changed(key.to_string());
        if only_if == 0 {
            tmp.persist_noclobber(&path)
                .map_err(|e| match e.error.kind() {
                    std::io::ErrorKind::AlreadyExists => changed(),
                    _ => e.error.into(),
                })?;
        } else {
            let target = path.clone();
            // The check and the rename happen under an exclusive lock on the object's folder,
            // shared by every process using this store: of two writers on one version, one wins.
            let replaced = tokio::task::spawn_blocking(move || -> Result<bool, StoreError> {
                let folder = target.parent().expect("an object lies in a folder");
                let lock = std::fs::File::open(folder)?;
                lock.lock()?; // released when the handle closes
                match std::fs::metadata(&target).map(|m| version_from(&m)) {
                    Ok(Ok(current)) if current == only_if => persist(tmp, &target)?,
                    _ => return Ok(false),
                }
                Ok(true)
            })
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
            if !replaced {
                return Err(changed());
            }
        }
        version_of(&path).await
    }

    async fn put_stream(
        &self,
        key: &str,
        mut body: ByteStream,
        limit: u64,
    ) -> Result<u64, StoreError> {
        let path = self.prepare(key).await?;
        let tmp = temporary_beside(&path)?;
        let mut file = tokio::fs::File::from_std(tmp.reopen()?);
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(StoreError::TooLarge(limit));
            }
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        file.sync_all().await?;
        persist(tmp, &path)?;
        Ok(size)
    }

    async fn put_file(&self, key: &str, file: &Path) -> Result<(), StoreError> {
        let path = self.prepare(key).await?;
        if tokio::fs::rename(file, &path).await.is_err() {
            // Scratch on another file system: copy beside, then rename into place.
            let tmp = temporary_beside(&path)?;
            tokio::fs::copy(file, tmp.path()).await?;
            persist(tmp, &path)?;
            tokio::fs::remove_file(file).await?;
        }
        Ok(())
    }

    async fn download(&self, key: &str, to: &Path, max_bytes: u64) -> Result<u64, StoreError> {
        let from = self.path(key)?;
        let size = match tokio::fs::metadata(&from).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(key.into()));
            }
            other => other?.len(),
        };
        super::check_room(key.to_string(), size, to, max_bytes)?;
        Ok(tokio::fs::copy(from, to).await?)
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match tokio::fs::metadata(self.path(key)?).await {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn read_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let path = self.path(key)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(key.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        let mut bytes = Vec::new();
        file.take(len).read_to_end(&mut bytes).await?;
        Ok(bytes.into())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn list(&self, folder: &str) -> Result<Vec<String>, StoreError> {
        let folder = folder.trim_end_matches('/');
        let start = self.path(folder)?;
        let root = self.root.clone();
        let walk = move || {
            let mut keys = Vec::new();
            let mut dirs = vec![start];
            while let Some(dir) = dirs.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    entries => entries?,
                };
                for entry in entries {
                    let path = entry?.path();
                    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if path.is_dir() {
                        dirs.push(path);
                    } else if !name.starts_with(".partial-") {
                        // Writes in progress are not objects yet.
                        let key = path.strip_prefix(&root).expect("under the root");
                        keys.extend(key.to_str().map(str::to_string));
                    }
                }
            }
            keys.sort();
            Ok::<_, std::io::Error>(keys)
        };
        Ok(tokio::task::spawn_blocking(walk)
            .await
            .map_err(std::io::Error::other)??)
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        let probe = format!(".ready-{}", uuid::Uuid::new_v4().simple());
        self.put(&probe, Bytes::from_static(b"ok")).await?;
        self.delete(&probe).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_folder_lists_its_files_at_any_depth_and_nothing_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        for key in ["out/b.json", "out/a.json", "out/deep/c.json", "outer.json"] {
            store.put(key, Bytes::from_static(b"{}")).await.unwrap();
        }
        std::fs::write(dir.path().join("out/.partial-x"), "half").unwrap();
        let listed = store.list("out/").await.unwrap();
        assert_eq!(listed, ["out/a.json", "out/b.json", "out/deep/c.json"]);
        assert!(store.list("missing/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn stream_past_the_limit_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let chunks = vec![
            Ok(Bytes::from(vec![1u8; 600])),
            Ok(Bytes::from(vec![2u8; 600])),
        ];
        let body = futures_util::stream::iter(chunks).boxed();
        let err = store.put_stream("in/a.mp4", body, 1000).await.unwrap_err();
        assert!(matches!(err, StoreError::TooLarge(1000)));
        assert_eq!(std::fs::read_dir(dir.path().join("in")).unwrap().count(), 0);

        let body = futures_util::stream::iter(vec![Ok(Bytes::from_static(b"abc"))]).boxed();
        assert_eq!(store.put_stream("in/a.mp4", body, 1000).await.unwrap(), 3);
        assert_eq!(store.get("in/a.mp4").await.unwrap().unwrap(), "abc");
        assert!(store.get("in/none").await.unwrap().is_none());
        assert!(store.get("../escape").await.is_err());
        store.check_writable().await.unwrap();
    }

    #[tokio::test]
    async fn an_upload_abandoned_midway_leaves_nothing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        // One chunk, then a client that never sends more and goes away.
        let body = futures_util::stream::iter(vec![Ok(Bytes::from(vec![7u8; 4096]))])
            .chain(futures_util::stream::pending())
            .boxed();
        let write = store.put_stream("pending/x.mp4", body, 1 << 20);
        let dropped = tokio::time::timeout(std::time::Duration::from_millis(200), write).await;
        assert!(dropped.is_err(), "the write was still waiting for data");
        assert_eq!(
            std::fs::read_dir(dir.path().join("pending"))
                .unwrap()
                .count(),
            0
        );

        for body in [&b"{}"[..], br#"{"a":1}"#] {
            store
                .put("videos/v/status.json", Bytes::copy_from_slice(body))
                .await
                .unwrap();
        }
        let back = store.get("videos/v/status.json").await.unwrap().unwrap();
        assert_eq!(back, r#"{"a":1}"#);
        let files = std::fs::read_dir(dir.path().join("videos/v"))
            .unwrap()
            .count();
        assert_eq!(files, 1, "replaced in place, no temporary file left");
        let mode = std::fs::metadata(dir.path().join("videos/v/status.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "published files are readable by all");
    }
}
