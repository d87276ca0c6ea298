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
