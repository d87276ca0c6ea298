//! What goes wrong with a bucket: a missing source, and the emulator going away mid-job.

use crate::*;
use std::time::Duration;

use serde_json::Value;

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

/// With the buckets gone for longer than the retry budget the job ends `failed`, saying why,
/// and the service goes on answering. Once the job has left the instance, its status is read
/// from the bucket, which is gone: the poll says so (503), not that there is no such video.
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

    let (status, gone) = final_then_gone(&app.api, "gcs-down").await;
    assert_eq!(status["state"], "failed", "{status:#}");
    assert_eq!(gone.code, 503, "{:?}", gone.body);
    assert_eq!(gone.body["error"]["code"], "unavailable", "{:?}", gone.body);
    // Both buckets are gone: the reason names the one the job met first (its source's, read
    // by ranges while encoding, or the CDN's).
    let reasons = status.to_string();
    let named = [INPUT, CDN].map(|b| reasons.contains(&format!("gs://{b}")));
    assert!(named.contains(&true), "{status:#}");
    assert_eq!(app.api.get("/healthz").await.code, 200);
    app.stop().await;
}

/// Polls the status of a job whose bucket is gone: its last live status (final, shown while the
/// job retries its last write) and the first answer once the job has left the instance.
async fn final_then_gone(api: &Api, id: &str) -> (Value, Answer) {
    let mut last = None;
    let started = std::time::Instant::now();
    loop {
        let answer = api.get(&format!("/video-status/{id}")).await;
        if answer.code != 200 {
            let last = last.unwrap_or_else(|| panic!("{id} left before it was seen final"));
            return (last, answer);
        }
        if !matches!(answer.body["state"].as_str(), Some("queued" | "processing")) {
            last = Some(answer.body);
        }
        assert!(started.elapsed() < JOB_TIMEOUT, "{id} never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A rendition that fails after publishing some segments takes them back: the bucket freezes
/// while the 720p pass encodes, the full upload queue holds the encoder until the watchdog fails
/// the pass as stalled (3 s), and once the bucket answers again the job ends partial with
/// nothing of the 720p rendition left in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rendition_failing_mid_encode_leaves_nothing_in_the_bucket() {
    let ws = Workspace::new("gcs_withdraw");
    // 60 segments (2 s GOPs), far more than the upload queue holds; 10 fps keeps encodes short.
    let clip = ws.clip_with(
        "clip.mp4",
        "testsrc2=size=1280x720:rate=10:duration=120",
        None,
        &["-pix_fmt", "yuv420p"],
    );
    let clip = std::fs::read(clip).unwrap();
    let gcs = emulator().await;
    gcs.put(INPUT, "clip.mp4", clip).await;
    let flags = [
        "--decode-plan",
        "per-tier",
        "--segment-seconds",
        "2",
        "--stall-timeout",
        "3",
        "--storage-retry-seconds",
        "120",
    ];
    let app = spawn_gcs_app(&gcs, &flags).await;
    let answer = app
        .api
        .trigger(&trigger("gcs-withdraw", "clip.mp4"), &[])
        .await;
    assert_eq!(answer.code, 202, "{:?}", answer.body);
    let growing = cdn_key("gcs-withdraw", "manifest/720p/index.m3u8");
    while gcs.get(CDN, &growing).await.is_none() {
        // Queued until the job has read the output store, then processing; never final here.
        let status = app.api.status("gcs-withdraw").await;
        assert!(
            status["state"] == "queued" || status["state"] == "processing",
            "{status:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gcs.freeze();
    // The encoder fills the upload queue and waits; once its frame count has stood still past
    // the stall limit, the watchdog has failed the pass.
    let frames = |s: &Value| {
        let renditions = s["renditions"].as_array().cloned().unwrap_or_default();
        let r = renditions.into_iter().find(|r| r["name"] == "720p");
        r.map(|r| (r["framesDone"].as_u64(), r["framesExpected"].as_u64()))
    };
    let (mut last, mut since) = (None, std::time::Instant::now());
    while since.elapsed() < Duration::from_millis(4500) {
        let now = frames(&app.api.status("gcs-withdraw").await);
        assert!(
            now.is_some_and(|(done, expected)| done < expected),
            "720p encoded to the end with the bucket frozen: {now:?}"
        );
        if now != last {
            (last, since) = (now, std::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gcs.thaw();

    let status = app.api.wait_final("gcs-withdraw").await;
    assert_eq!(status["state"], "partial", "{status:#}");
    let rendition = |name: &str| {
        status["renditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()
            .clone()
    };
    let failed = rendition("720p");
    assert_eq!(failed["state"], "failed", "{status:#}");
    assert!(
        failed["error"].as_str().unwrap_or("").contains("stalled"),
        "{failed:#}"
    );
    assert_eq!(rendition("480p")["state"], "ready", "{status:#}");
    let left = gcs
        .list(CDN, &cdn_key("gcs-withdraw", "manifest/720p/"))
        .await;
    assert_eq!(left, Vec::<String>::new());
    let master = gcs
        .get(CDN, &cdn_key("gcs-withdraw", "manifest/master.m3u8"))
        .await
        .unwrap();
    assert!(!String::from_utf8(master).unwrap().contains("720p"));
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

/// Readiness reads the input bucket and writes the CDN bucket, and says so, within its refresh
/// period (10 s) and the store's patience (3 s), when the bucket is unreachable.
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
    let down = loop {
        let answer = app.api.get("/readyz").await;
        if answer.code != 200 || started.elapsed() > std::time::Duration::from_secs(30) {
            break answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert_eq!(down.code, 503, "{:?}", down.body);
    assert_ne!(down.body["checks"]["outputStore"], "ok", "{:?}", down.body);
    eprintln!(
        "readiness failed {:.1?} after the bucket went away",
        started.elapsed()
    );
    assert_eq!(app.api.get("/healthz").await.code, 200);
    app.stop().await;
}
