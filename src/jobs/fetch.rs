//! Finding a job's source: a local store's file read in place, or a bucket's object read in
//! place by ranged reads, never copied into scratch (memory on Cloud Run).

use std::sync::Arc;

use super::request::Source;
use super::run::{Job, JobEnd};
use super::watchdog::{self, Stopped};
use crate::media::input::Origin;
use crate::storage::{StoreError, StoreObject};

impl Job<'_> {
    /// The source: read in place from a local store, or else opened for ranged reads from its bucket (its size checked against MAX_VIDEO_SIZE first).
    pub(super) async fn fetch_source(&self) -> Result<Origin, JobEnd> {
        let (store, key) = match &self.request.source {
            Source::File(path) => return Ok(Origin::File(path.clone())),
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
                Ok(Origin::File(path))
            } else {
                Err(missing())
            };
        }
        let open = StoreObject::open(store.clone(), key);
        let limits = self.engine.limits(0.0);
        let opened = match watchdog::watched(open, || 0, limits, self.cancel).await {
            Ok(opened) => opened,
            Err(Stopped::Cancelled) => return Err(JobEnd::interrupted()),
            Err(why) => {
                return Err(JobEnd::failed(format!(
                    "reading `{key}` from {place} {why}; once the store answers, trigger the \
                     video again"
                )));
            }
        };
        let max_bytes = self.settings().max_video_size;
        match opened {
            Ok(object) if object.size() > max_bytes => Err(JobEnd::failed(format!(
                "the source `{key}` in {place} is larger than MAX_VIDEO_SIZE ({max_bytes} bytes)"
            ))),
            Ok(object) => {
                let object = Arc::new(object);
                tracing::info!(
                    size = object.size(),
                    "reading the source in place by ranged reads"
                );
                Ok(Origin::Object(object))
            }
            Err(StoreError::NotFound(_)) => Err(missing()),
            Err(e) => Err(JobEnd::failed(format!("reading `{key}` from {place}: {e}"))),
        }
    }
}
