//! Where bytes live: the input store (sources) and the output store (the CDN bucket). One trait,
//! implemented by the local file system (the embedded default) and Google Cloud Storage
//! (`gs://bucket[/prefix]`). Everything above this module names objects by key
//! (`videos/<id>/status.json`), never by path.

mod gcs;
mod local;
mod reader;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use thiserror::Error;

pub use gcs::{GcsOptions, GcsStore};
pub use local::LocalStore;
pub use reader::{ObjectReader, StoreObject};

/// An object's version, for writes that must not overwrite someone else's (GCS's generation).
/// `0` means "no object": a write only if absent.
pub type Version = i64;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("`{0}` does not exist")]
    NotFound(String),
    #[error("`{0}` is not an acceptable object name")]
    BadKey(String),
    #[error("the upload is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("`{0}` was changed by someone else")]
    Changed(String),
    #[error("access denied: {0}")]
    Denied(String),
    #[error("not enough free space for {what}: {needed} bytes needed, {free} free")]
    NoRoom {
        what: String,
        needed: u64,
        free: u64,
    },
    #[error("storage unavailable: {0}")]
    Remote(String),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
}

/// How an object is served to players.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub content_type: &'static str,
    pub cache_control: &'static str,
}

impl ObjectMeta {
    /// The Content-Type and Cache-Control a published file gets, from its name: segments never
    /// change; playlists and status.json change while a job runs, the poster is republished
    /// larger as taller renditions finish, and the MP4 download and the storyboard are made
    /// again by a later run (a resumed partial job may pick a taller rendition).
    pub fn for_key(key: &str) -> Self {
        let extension = key.rsplit_once('.').map_or("", |(_, e)| e);
        let (content_type, cache_control) = match extension {
            _ if key.ends_with("/download.mp4") => ("video/mp4", "no-cache"),
            "m3u8" => ("application/vnd.apple.mpegurl", "no-cache"),
            "m4s" => ("video/iso.segment", IMMUTABLE),
            "mp4" => ("video/mp4", IMMUTABLE),
            "ts" => ("video/mp2t", IMMUTABLE),
            "json" => ("application/json", "no-store"),
            "jpg" => ("image/jpeg", "no-cache"),
            "vtt" => ("text/vtt", "no-cache"),
            _ => ("application/octet-stream", "no-cache"),
        };
        Self {
            content_type,
            cache_control,
        }
    }
}

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// What a direct upload may send: one PUT of at most `max_bytes` with this Content-Type, until
/// `valid_for` has passed.
#[derive(Clone, Debug)]
pub struct UploadTerms {
    pub content_type: String,
    pub max_bytes: u64,
    pub valid_for: std::time::Duration,
}

/// A signed request a client makes to put an object straight into the store: PUT `url` with
/// exactly these headers (they are part of the signature).
#[derive(Clone, Debug)]
pub struct SignedUpload {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

/// A chunked body for `put_stream`; an error item aborts the write.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Where this store is, for logs and errors: a folder, or `gs://bucket/prefix`.
    fn describe(&self) -> String;

    /// The bucket behind this store; `None` for a local folder, which takes any bucket name.
    fn bucket(&self) -> Option<&str>;

    /// The key of the bucket object `name` (an event's whole object name, which includes this
    /// store's prefix); `None` when the object lies outside the prefix, so not in this store.
    fn key_of_object(&self, name: &str) -> Option<String>;

    /// The file behind `key` when the store is a local folder, so sources are read in place.
    fn local_path(&self, key: &str) -> Option<PathBuf>;

    /// The object's bytes, or `None` if it does not exist.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError>;

    /// The object's bytes and version, or `None` if it does not exist.
    async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, Version)>, StoreError>;

    /// Writes a small object whole; readers see the old or the new one, never half.
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError>;

    /// Writes `key` only if it is still at version `only_if` (`0`: only if absent); otherwise
    /// `Changed`. Returns the new version.
    async fn put_if(
        &self,
        key: &str,
        bytes: Bytes,
        only_if: Version,
    ) -> Result<Version, StoreError>;

    /// Streams `body` into `key`, at most `limit` bytes (beyond it: `TooLarge`, nothing kept).
    /// Returns the size written.
    async fn put_stream(&self, key: &str, body: ByteStream, limit: u64) -> Result<u64, StoreError>;

    /// Publishes a finished local file as `key`; the local file is gone afterwards (moved or
    /// uploaded and removed), so scratch, which is memory on Cloud Run, holds only unpublished work.
    async fn put_file(&self, key: &str, file: &Path) -> Result<(), StoreError>;

    /// Copies `key` to the local file `to` and returns its size; refuses, before writing, an
    /// object over `max_bytes` or one the disk holding `to` has no room for.
    async fn download(&self, key: &str, to: &Path, max_bytes: u64) -> Result<u64, StoreError>;

    /// The size of `key` in bytes, or `None` if it does not exist.
    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError>;

    /// At most `len` bytes of `key` from `offset` (fewer at its end, none past it): a ranged
    /// read, so a source is read in place without a copy in scratch.
    async fn read_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError>;

    /// Removes `key`; a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// A URL that lets a client PUT `key` into the store itself, without passing through the
    /// service (a bucket's V4 signed URL). `None`: the store has none (a local folder), and the
    /// service takes the upload itself.
    async fn signed_upload(
        &self,
        _key: &str,
        _terms: &UploadTerms,
    ) -> Result<Option<SignedUpload>, StoreError> {
        Ok(None)
    }

    /// The keys of every object under the folder `folder` (`webhooks/outbox/`, at any depth),
    /// sorted; none if it does not exist. For small folders such as the webhook outbox.
    async fn list(&self, folder: &str) -> Result<Vec<String>, StoreError>;

    /// Proves the store takes writes (for readiness).
    async fn check_writable(&self) -> Result<(), StoreError>;

    /// Proves the store can be read, with a read that finds nothing (for readiness: the service
    /// may read sources from a bucket it is not allowed to write).
    async fn check_readable(&self) -> Result<(), StoreError> {
        self.get(".ready").await.map(drop)
    }
}

/// Opens the store a setting names: `gs://bucket[/prefix]`, or a local folder (created if
/// missing).
pub async fn open(spec: &str, gcs: &GcsOptions) -> Result<Arc<dyn Store>, String> {
    if spec.starts_with("gs://") {
        return Ok(Arc::new(GcsStore::new(spec, gcs).await?));
    }
    let store =
        LocalStore::new(spec).map_err(|e| format!("cannot use `{spec}` as a store: {e}"))?;
    Ok(Arc::new(store))
}

/// Checks, before a download starts, that `size` bytes are allowed and fit on the disk of `to`.
fn check_room(what: String, size: u64, to: &Path, max_bytes: u64) -> Result<(), StoreError> {
    if size > max_bytes {
        return Err(StoreError::TooLarge(max_bytes));
    }
    let folder = to.parent().unwrap_or(Path::new("."));
    match free_disk_bytes(folder) {
        Some(free) if free < size => Err(StoreError::NoRoom {
            what,
            needed: size,
            free,
        }),
        _ => Ok(()),
    }
}

/// Free bytes on the disk holding `path` (the mount point that is its longest prefix).
pub fn free_disk_bytes(path: &Path) -> Option<u64> {
    let path = std::fs::canonicalize(path).ok()?;
    let disks = sysinfo::Disks::new_with_refreshed_list().ok()?;
    disks
        .iter()
        .filter(|d| path.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| d.available_space())
}

/// Checks an object name from outside (a trigger's `inputPath`): relative, no `..`, no
/// backslashes or control characters, at most 1024 bytes (the GCS limit).
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let bad = key.is_empty()
        || key.len() > 1024
        || key.starts_with('/')
        || key.contains('\\')
        || key.chars().any(char::is_control)
        || key
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        Err(StoreError::BadKey(key.chars().take(200).collect()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_from_outside_cannot_escape() {
        assert!(validate_key("pending/abc_clip.mp4").is_ok());
        assert!(validate_key("a/b c (1).MOV").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a/./b",
            "a\\b",
            "a\nb",
            "a/",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
        assert!(validate_key(&"a".repeat(1025)).is_err());
    }

    #[test]
    fn published_files_get_player_friendly_headers() {
        let playlist = ObjectMeta::for_key("videos/x/manifest/720p/index.m3u8");
        assert_eq!(playlist.content_type, "application/vnd.apple.mpegurl");
        assert_eq!(playlist.cache_control, "no-cache");
        let segment = ObjectMeta::for_key("videos/x/manifest/720p/seg_00001.m4s");
        assert!(segment.cache_control.contains("immutable"));
        assert_eq!(ObjectMeta::for_key("a/seg_1.ts").content_type, "video/mp2t");
        let download = ObjectMeta::for_key("videos/x/download.mp4");
        assert_eq!(
            (download.content_type, download.cache_control),
            ("video/mp4", "no-cache")
        );
        assert_eq!(
            ObjectMeta::for_key("videos/x/status.json").cache_control,
            "no-store"
        );
        let poster = ObjectMeta::for_key("videos/x/images/poster.jpg");
        assert_eq!(
            (poster.content_type, poster.cache_control),
            ("image/jpeg", "no-cache")
        );
        let vtt = ObjectMeta::for_key("videos/x/images/storyboard.vtt");
        assert_eq!(vtt.content_type, "text/vtt");
    }
}
