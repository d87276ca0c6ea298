//! Sources in a bucket are read in place by ranged reads through a bounded window: scratch
//! (memory on Cloud Run) never holds a copy of them, only unpublished output.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::common::*;
use crate::*;

/// A clip with an 8 MiB `free` box after its boxes: larger than the read-ahead window and than
/// anything the job writes, and still the same video.
fn padded_clip(ws: &Workspace, name: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(ws.clip(name, 640, 360, 3.0, true)).unwrap();
    let padding = 8 << 20;
    bytes.extend_from_slice(&(padding as u32).to_be_bytes());
    bytes.extend_from_slice(b"free");
    bytes.resize(bytes.len() + padding - 8, 0);
    bytes
}

/// Watches `dir` until stopped, keeping the size of the largest file seen in it.
fn watch_largest(dir: std::path::PathBuf) -> (Arc<AtomicBool>, Arc<AtomicU64>) {
    let (stop, largest) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let (done, seen) = (stop.clone(), largest.clone());
    std::thread::spawn(move || {
        while !done.load(Ordering::Relaxed) {
            for file in files_under(&dir) {
                let size = std::fs::metadata(dir.join(Path::new(&file))).map_or(0, |m| m.len());
                seen.fetch_max(size, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    (stop, largest)
}

/// A triggered source in the input bucket ends ready, and no file in the job's scratch ever
/// comes near the source's size: it was read by ranges, not downloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_source_is_read_by_ranges_not_copied_to_scratch() {
    let ws = Workspace::new("gcs_ranged_trigger");
    let source = padded_clip(&ws, "clip.mp4");
    let size = source.len() as u64;
    let gcs = emulator().await;
    gcs.put(INPUT, "padded.mp4", source).await;
    let app = spawn_gcs_app(&gcs, &[]).await;
    let (stop, largest) = watch_largest(app.scratch_dir());

    let answer = app.api.trigger(&trigger("ranged", "padded.mp4"), &[]).await;
    assert_eq!(answer.code, 202, "{:?}", answer.body);
    let status = app.api.wait_final("ranged").await;
    stop.store(true, Ordering::Relaxed);
    assert_eq!(status["state"], "ready", "{status:#}");
    assert_eq!(status["source"]["sizeBytes"], size, "{status:#}");
    let largest = largest.load(Ordering::Relaxed);
    assert!(
        largest < size / 2,
        "scratch held a file of {largest} bytes for a source of {size}"
    );
    assert!(
        files_under(&app.scratch_dir()).is_empty(),
        "scratch is empty"
    );
    app.stop().await;
}

/// An upload streamed into the input bucket is probed in place (the answer has a time
/// estimate) and its job reads it back by ranges: no copy of it in scratch at any time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_to_a_bucket_is_probed_and_read_in_place() {
    let ws = Workspace::new("gcs_upload_in_place");
    let source = padded_clip(&ws, "clip.mp4");
    let size = source.len() as u64;
    let path = ws.path().join("padded.mp4");
    std::fs::write(&path, source).unwrap();
    let gcs = emulator().await;
    let app = spawn_gcs_app(&gcs, &[]).await;
    let (stop, largest) = watch_largest(app.scratch_dir());

    let accepted = app.api.upload(&path, None).await;
    assert_eq!(accepted.code, 202, "{:?}", accepted.body);
    let estimate = accepted.body["estimatedTime"].as_f64();
    assert!(estimate.is_some_and(|s| s >= 1.0), "{:?}", accepted.body);
    let id = accepted.body["videoId"].as_str().unwrap().to_string();
    let status = app.api.wait_final(&id).await;
    stop.store(true, Ordering::Relaxed);
    assert_eq!(status["state"], "ready", "{status:#}");
    let largest = largest.load(Ordering::Relaxed);
    assert!(
        largest < size / 2,
        "scratch held a file of {largest} bytes for a source of {size}"
    );
    app.stop().await;
}
