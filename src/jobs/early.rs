//! Publishing segments while their pass still encodes: the muxers hand over each finished file
//! through a bounded queue (an encoder waits when it is full, so a slow bucket slows encoding
//! instead of filling scratch, which is memory on Cloud Run), a few uploads run at once, and each
//! uploaded file leaves scratch. Playlists are published with their rendition, after this.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::publish;
use crate::media::mux::SegmentSink;
use crate::storage::Store;

/// Finished files waiting for upload, at most.
const QUEUE: usize = 8;
/// Uploads at once.
const UPLOADS: usize = 4;

/// What was published while the pass ran.
#[derive(Default)]
pub struct Early {
    pub keys: Vec<String>,
    /// Sizes of the published files, which are gone from scratch (the rates need them).
    pub sizes: HashMap<PathBuf, u64>,
}

/// Starts publishing the files handed to the returned sink: `<scratch>/<name>/<file>` becomes
/// `videos/<id>/manifest/<name>/<file>`. The task ends once `pass_over` fires and what was
/// already queued is uploaded. A file whose upload fails stays in scratch, for the rendition's
/// own publish to try again (and fail the rendition if it cannot).
pub fn start(
    store: Arc<dyn Store>,
    video_id: &str,
    scratch: &Path,
    pass_over: CancellationToken,
) -> (SegmentSink, JoinHandle<Early>) {
    let (sender, mut queue) = mpsc::channel::<PathBuf>(QUEUE);
    // Called on the encoder threads, never in async context, so blocking is right.
    let sink: SegmentSink = Arc::new(move |path: &Path| {
        let _ = sender.blocking_send(path.to_path_buf());
    });
    let (video_id, scratch) = (video_id.to_string(), scratch.to_path_buf());
    let task = async move {
        let mut early = Early::default();
        let mut uploads = JoinSet::new();
        let mut closing = false;
        loop {
            tokio::select! {
                next = queue.recv(), if uploads.len() < UPLOADS => match next {
                    Some(path) => {
                        let Some(key) = key_for(&video_id, &scratch, &path) else { continue };
                        uploads.spawn(upload(store.clone(), key, path).in_current_span());
                    }
                    None => break,
                },
                Some(done) = uploads.join_next() => early.add(done),
                // A pass left running by the watchdog may still hold the sink: stop taking files.
                () = pass_over.cancelled(), if !closing => {
                    closing = true;
                    queue.close();
                }
            }
        }
        while let Some(done) = uploads.join_next().await {
            early.add(done);
        }
        early
    };
    (sink, tokio::spawn(task.in_current_span()))
}

impl Early {
    fn add(&mut self, done: Result<Option<(String, PathBuf, u64)>, tokio::task::JoinError>) {
        if let Ok(Some((key, path, size))) = done {
            self.keys.push(key);
            self.sizes.insert(path, size);
        }
    }
}

/// The output key of a file in a rendition folder of `scratch`.
fn key_for(video_id: &str, scratch: &Path, path: &Path) -> Option<String> {
    let rest = path.strip_prefix(scratch).ok()?.to_str()?;
    Some(publish::key(video_id, &format!("manifest/{rest}")))
}

async fn upload(
    store: Arc<dyn Store>,
    key: String,
    path: PathBuf,
) -> Option<(String, PathBuf, u64)> {
    let size = tokio::fs::metadata(&path).await.ok()?.len();
    match store.put_file(&key, &path).await {
        Ok(()) => Some((key, path, size)),
        Err(e) => {
            tracing::warn!("publishing {key} early failed; its rendition will retry: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handed_over_files_are_published_and_leave_scratch() {
        let scratch = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(out.path()).unwrap());
        let folder = scratch.path().join("360p");
        std::fs::create_dir_all(&folder).unwrap();
        let over = CancellationToken::new();
        let (sink, task) = start(store, "v", scratch.path(), over.clone());
        let files: Vec<PathBuf> = (0..20)
            .map(|n| folder.join(format!("seg_{n:05}.m4s")))
            .collect();
        for (n, file) in files.iter().enumerate() {
            std::fs::write(file, vec![7u8; n + 1]).unwrap();
        }
        // As an encoder thread would, including waiting when the queue is full.
        let handed = files.clone();
        std::thread::spawn(move || handed.iter().for_each(|f| sink(f)))
            .join()
            .unwrap();
        over.cancel();
        let early = task.await.unwrap();

        assert_eq!(early.keys.len(), 20);
        for (n, file) in files.iter().enumerate() {
            assert!(!file.exists(), "{file:?} left scratch");
            assert_eq!(early.sizes[file], n as u64 + 1);
            let published = out
                .path()
                .join(format!("videos/v/manifest/360p/seg_{n:05}.m4s"));
            assert_eq!(std::fs::read(published).unwrap().len(), n + 1);
        }
    }
}
