//! Getting a job's source as a local file: read in place from a local store, taken from the
//! copy an upload kept, or downloaded once into scratch under the watchdog's limits.

use std::path::{Path, PathBuf};

use super::request::Source;
use super::run::{Job, JobEnd};
use super::watchdog::{self, Stopped};
use crate::storage::StoreError;

impl Job<'_> {
    /// The source as a local file: read in place from a local store, the copy an upload kept,
    /// or else downloaded once into scratch.
    pub(super) async fn fetch_source(&self, scratch: &Path) -> Result<PathBuf, JobEnd> {
        let (store, key) = match &self.request.source {
            Source::File(path) => return Ok(path.clone()),
            Source::Object { store, key } => (store, key),
        };
        // A bucket is named (the operator needs it); a local folder's path is not shown.
        let place = match store.bucket() {
            Some(_) => store.describe(),
            None => "the input store".to_string(),
        };
        let missing = || JobEnd::failed(format!("the source `{key}` does not exist in {place}"));
        if let Some(path) = store.local_path(key) {
            return if path.is_file() {
                Ok(path)
            } else {
                Err(missing())
            };
        }
        let to = scratch.join("source");
        if self.request.prepared.is_some() && to.is_file() {
            return Ok(to);
        }
        let max_bytes = self.settings().max_video_size;
        // Bytes in the scratch copy are the download's progress.
        let progress = || std::fs::metadata(&to).map_or(0, |m| m.len());
        let download = store.download(key, &to, max_bytes);
        let limits = self.engine.limits(0.0);
        let downloaded = match watchdog::watched(download, progress, limits, self.cancel).await {
            Ok(downloaded) => downloaded,
            Err(Stopped::Cancelled) => return Err(JobEnd::interrupted()),
            Err(why) => {
                return Err(JobEnd::failed(format!(
                    "downloading `{key}` from {place} {why}; once the store answers, trigger \
                     the video again"
                )));
            }
        };
        match downloaded {
            Ok(_) => Ok(to),
            Err(StoreError::NotFound(_)) => Err(missing()),
            Err(StoreError::TooLarge(limit)) => Err(JobEnd::failed(format!(
                "the source `{key}` in {place} is larger than MAX_VIDEO_SIZE ({limit} bytes)"
            ))),
            Err(e) => Err(JobEnd::failed(format!(
                "downloading `{key}` from {place}: {e}"
            ))),
        }
    }
}
