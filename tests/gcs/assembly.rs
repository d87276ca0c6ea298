//! Two writers of one run's status.json at once (two assemblies of the same video) against the
//! emulator's generation preconditions: the stored status never goes back to an earlier view.

use std::sync::Arc;

use video_transcoder::jobs::publish::{read_status, write_status};
use video_transcoder::jobs::status::{JobState, JobStatus};
use video_transcoder::storage::{GcsOptions, GcsStore, Store};

use crate::*;

/// The run's view after `done` of its 12 steps (each step one more rendition finished).
fn view(base: &JobStatus, done: usize) -> JobStatus {
    let mut status = base.clone();
    status.state = if done == 12 {
        JobState::Ready
    } else {
        JobState::Processing
    };
    status.progress.completed = done;
    status.progress.total = 12;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_assemblies_never_turn_status_json_back() {
    let gcs = emulator().await;
    let options = GcsOptions {
        endpoint: Some(gcs.endpoint()),
        retry_budget: std::time::Duration::from_secs(5),
    };
    let store: Arc<dyn Store> = Arc::new(
        GcsStore::new(&format!("gs://{CDN}/{CDN_PREFIX}"), &options)
            .await
            .unwrap(),
    );
    let base = JobStatus::queued_from("v", "gs://in/clip.mp4".into());
    // One writer is ahead, the other lags two steps behind it: both write each step at once.
    let ahead = {
        let (store, base) = (store.clone(), base.clone());
        tokio::spawn(async move {
            for done in 0..=12 {
                write_status(store.as_ref(), &view(&base, done)).await;
            }
        })
    };
    let behind = {
        let (store, base) = (store.clone(), base.clone());
        tokio::spawn(async move {
            for done in 0..=12_usize {
                write_status(store.as_ref(), &view(&base, done.saturating_sub(2))).await;
                tokio::task::yield_now().await;
            }
        })
    };
    let mut seen = Vec::new();
    while !(ahead.is_finished() && behind.is_finished()) {
        if let Some(status) = read_status(store.as_ref(), "v").await {
            seen.push(status.progress.completed);
        }
    }
    ahead.await.unwrap();
    behind.await.unwrap();
    let last = read_status(store.as_ref(), "v").await.unwrap();
    assert_eq!(last.state, JobState::Ready, "the later view stands");
    assert_eq!(last.progress.completed, 12);
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "status.json went back: {seen:?}"
    );
    eprintln!("{} reads during the race: {seen:?}", seen.len());

    // A new run of the same video (queued later) is not held back by the finished one.
    let rerun = JobStatus::queued_from("v", "gs://in/clip.mp4".into());
    write_status(store.as_ref(), &rerun).await;
    let stored = read_status(store.as_ref(), "v").await.unwrap();
    assert_eq!(stored.state, JobState::Queued, "a new run starts over");
}
