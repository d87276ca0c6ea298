//! What goes wrong with a bucket: a missing source, and the emulator going away mid-job.

use crate::*;

/// A trigger naming an object that is not there fails the job with the object's full name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_source_fails_naming_the_object() {
    let gcs = emulator().await;
    let app = spawn_gcs_app(&gcs, &[]).await;
    let answer = app
        .api
        .trigger(&trigger("gcs-missing", "nowhere/clip.mp4"), &[])
        .await;
    assert_eq!(answer.code, 202, "{:?}", answer.body);
    let status = app.api.wait_final("gcs-missing").await;
    assert_eq!(status["state"], "failed", "{status:#}");
    let reason = status["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("gs://{INPUT}")) && reason.contains("nowhere/clip.mp4"),
        "{reason}"
    );
    let in_bucket = gcs.get(CDN, &cdn_key("gcs-missing", "status.json")).await;
    assert!(
        in_bucket.is_some(),
        "the failure is in the bucket's status.json"
    );
    app.stop().await;
}

/// The emulator goes away mid-job and comes back: the storage calls in flight retry with backoff
/// and the job completes, with every rendition in the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bucket_going_away_and_back_mid_job_is_retried_to_ready() {
    let ws = Workspace::new("gcs_outage");
    let clip = std::fs::read(ws.clip("clip.mp4", 1280, 720, 4.0, true)).unwrap();
    let mut gcs = emulator().await;
    gcs.put(INPUT, "clip.mp4", clip).await;
    let app = spawn_gcs_app(&gcs, &["--storage-retry-seconds", "60"]).await;
    let answer = app
        .api
        .trigger(&trigger("gcs-outage", "clip.mp4"), &[])
        .await;
    assert_eq!(answer.code, 202, "{:?}", answer.body);
    app.api
        .wait_for("gcs-outage", |s| s["state"] == "processing")
        .await;

    gcs.stop();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let during = app.api.status("gcs-outage").await;
    assert_ne!(during["state"], "ready", "finished with the bucket down");
    gcs.resume().await;

    let status = app.api.wait_final("gcs-outage").await;
    assert_eq!(status["state"], "ready", "{status:#}");
    for rendition in status["renditions"].as_array().unwrap() {
        let playlist = rendition["playlist"].as_str().unwrap();
        let key = cdn_key("gcs-outage", &format!("manifest/{playlist}"));
        assert!(gcs.get(CDN, &key).await.is_some(), "{key} is missing");
    }
    app.stop().await;
}

/// With the bucket gone for longer than the retry budget the job ends `failed`, saying why,
/// and the service goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_down_past_the_retry_budget_fails_the_job_with_a_reason() {
    let ws = Workspace::new("gcs_down");
    let clip = std::fs::read(ws.clip("clip.mp4", 640, 360, 3.0, false)).unwrap();
    let mut gcs = emulator().await;
    gcs.put(INPUT, "clip.mp4", clip).await;
    let app = spawn_gcs_app(&gcs, &["--storage-retry-seconds", "2"]).await;
    app.hold_encodes();
    let answer = app.api.trigger(&trigger("gcs-down", "clip.mp4"), &[]).await;
    assert_eq!(answer.code, 202, "{:?}", answer.body);
    // Planned (so downloaded and probed) and held before its first encode.
    app.api
        .wait_for("gcs-down", |s| {
            s["renditions"].as_array().is_some_and(|r| !r.is_empty())
        })
        .await;
    gcs.stop();
    app.release_encodes();

    let status = app.api.wait_final("gcs-down").await;
    assert_eq!(status["state"], "failed", "{status:#}");
    let reasons = status.to_string();
    assert!(reasons.contains(&format!("gs://{CDN}")), "{status:#}");
    assert_eq!(app.api.get("/healthz").await.code, 200);
    app.stop().await;
}

/// Refused uploads leave nothing in the input bucket: one over `MAX_VIDEO_SIZE` (cut mid-stream,
/// so the resumable upload is never finalised) and one whose metadata, after the file, is bad
/// (the stored file is deleted again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_uploads_leave_nothing_in_the_bucket() {
    use reqwest::multipart::{Form, Part};
    const LIMIT: usize = 100_000;
    let gcs = emulator().await;
    let app = spawn_gcs_app(&gcs, &["--max-video-size", &LIMIT.to_string()]).await;
    let part = |len: usize| Part::bytes(vec![9u8; len]).file_name("clip.mp4");

    let over = app
        .api
        .upload_form(Form::new().part("file", part(LIMIT + 4096)))
        .await;
    assert_eq!(over.code, 413, "{:?}", over.body);
    let bad_metadata = Form::new()
        .part("file", part(1000))
        .text("metadata", "[1, 2]");
    let refused = app.api.upload_form(bad_metadata).await;
    assert_eq!(refused.code, 400, "{:?}", refused.body);
    assert_eq!(gcs.list(INPUT, "").await, Vec::<String>::new());
    app.stop().await;
}

/// Readiness reads the input bucket and writes the CDN bucket, and says so, quickly, when the
/// bucket is unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_buckets() {
    let mut gcs = emulator().await;
    let app = spawn_gcs_app(&gcs, &["--min-disk-space", "0"]).await;
    let ready = app.api.get("/readyz").await;
    assert_eq!(ready.code, 200, "{:?}", ready.body);
    assert_eq!(ready.body["checks"]["inputStore"], "ok");
    assert_eq!(ready.body["checks"]["outputStore"], "ok");

    gcs.stop();
    let started = std::time::Instant::now();
    let down = app.api.get("/readyz").await;
    assert_eq!(down.code, 503, "{:?}", down.body);
    assert_ne!(down.body["checks"]["outputStore"], "ok", "{:?}", down.body);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(app.api.get("/healthz").await.code, 200);
    app.stop().await;
}
