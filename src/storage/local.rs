//! The embedded default store: a folder on the local file system.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{ByteStream, Store, StoreError, validate_key};

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

/// A sibling name for writing before the atomic rename.
fn partial(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".partial-{}", uuid::Uuid::new_v4().simple()));
    PathBuf::from(name)
}

#[async_trait]
impl Store for LocalStore {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn bucket(&self) -> Option<&str> {
        None
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

    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = self.prepare(key).await?;
        let tmp = partial(&path);
        tokio::fs::write(&tmp, &bytes).await?;
        tokio::fs::rename(&tmp, &path).await?;
        Ok(())
    }

    async fn put_stream(
        &self,
        key: &str,
        mut body: ByteStream,
        limit: u64,
    ) -> Result<u64, StoreError> {
        let path = self.prepare(key).await?;
        let tmp = partial(&path);
        let written = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
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
            Ok(size)
        }
        .await;
        match written {
            Ok(size) => {
                tokio::fs::rename(&tmp, &path).await?;
                Ok(size)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    async fn put_file(&self, key: &str, file: &Path) -> Result<(), StoreError> {
        let path = self.prepare(key).await?;
        if tokio::fs::rename(file, &path).await.is_err() {
            // Scratch on another file system: copy beside, then rename into place.
            let tmp = partial(&path);
            tokio::fs::copy(file, &tmp).await?;
            tokio::fs::rename(&tmp, &path).await?;
        }
        Ok(())
    }

    async fn download(&self, key: &str, to: &Path) -> Result<u64, StoreError> {
        match tokio::fs::copy(self.path(key)?, to).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(key.into()))
            }
            other => Ok(other?),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
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
}
