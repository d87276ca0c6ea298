//! A bucket that stops answering (the emulator frozen with SIGSTOP): a source download that
//! stalls, and jobs whose status writes hang while the service shuts down.

use crate::*;
use std::time::{Duration, Instant};

use serde_json::json;

/// A source download that stops making progress ends its job `failed` within STALL_TIMEOUT
/// (2 s here), naming the object and the limit, and frees its place in the queue: with room
/// for one job, the next trigger is taken and runs to ready once the bucket answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_download_fails_and_frees_its_place() {
    let ws = Workspace::new("gcs_stalled_download");
    let clip = std::fs::read(ws.clip("clip.mp4", 320, 240, 1.0, false)).unwrap();
    let gcs = emulator().await;
    gcs.put(INPUT, "clip.mp4", clip).await;
    // HLS and status.json go to a local folder: only the download waits on the frozen bucket.
    let (input, endpoint) = (format!("gs://{INPUT}"), gcs.endpoint());
    let app = spawn_app(&[
        "--input-store",
        &input,
        "--gcs-endpoint",
        &endpoint,
        "--stall-timeout",
        "2",
        "--max-queued-jobs",
        "1",
    ])
    .await;
    let trigger = |id: &str| json!({"videoId": id, "inputBucket": INPUT, "inputPath": "clip.mp4"});

    gcs.freeze();
    let first = app.api.trigger(&trigger("stalled"), &[]).await;
    assert_eq!(first.code, 202, "{:?}", first.body);
    let started = Instant::now();
    let waited = tokio::time::timeout(Duration::from_secs(30), app.api.wait_final("stalled")).await;
    gcs.thaw();
    let status = waited.expect("the job ended while the bucket stayed frozen");
    eprintln!(
        "the stalled download failed after {:.1?}",
        started.elapsed()
    );
    assert_eq!(status["state"], "failed", "{status:#}");
    let reason = status["error"].as_str().unwrap_or_default();
    for part in ["clip.mp4", "stalled", "STALL_TIMEOUT"] {
        assert!(reason.contains(part), "{part} not in: {reason}");
    }

    let next = app.api.trigger(&trigger("next"), &[]).await;
    assert_eq!(next.code, 202, "{:?}", next.body);
    let status = app.api.wait_final("next").await;
    assert_eq!(status["state"], "ready", "{status:#}");
    app.stop().await;
}

/// Several jobs stuck on a frozen bucket when the service stops: it still exits within its
/// grace period (2 s here), writing (or trying to write) their statuses at the same time
/// rather than one second per stuck job after the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_stuck_jobs_ends_within_the_grace_period() {
    const JOBS: usize = 5;
    let ws = Workspace::new("gcs_stuck_shutdown");
    let clip = std::fs::read(ws.clip("clip.mp4", 320, 240, 1.0, false)).unwrap();
    let gcs = emulator().await;
    let app = spawn_gcs_app(&gcs, &["--shutdown-grace", "2"]).await;
    app.hold_encodes();
    for i in 0..JOBS {
        let key = format!("clip-{i}.mp4");
        gcs.put(INPUT, &key, clip.clone()).await;
        let answer = app
            .api
            .trigger(&trigger(&format!("stuck-{i}"), &key), &[])
            .await;
        assert_eq!(answer.code, 202, "{:?}", answer.body);
    }
    // Planned (so downloaded and probed), all waiting for memory.
    for i in 0..JOBS {
        app.api
            .wait_for(&format!("stuck-{i}"), |s| {
                s["renditions"].as_array().is_some_and(|r| !r.is_empty())
            })
            .await;
    }

    gcs.freeze();
    let started = Instant::now();
    app.stop().await;
    let took = started.elapsed();
    gcs.thaw();
    eprintln!("shutdown with {JOBS} stuck jobs took {took:.1?}");
    // One write after another took the grace period plus a second per job (7 s here).
    assert!(
        took < Duration::from_secs(2 + 2),
        "shutdown took {took:?}, past the 2 s grace period"
    );
}
