//! A job interrupted on one instance resumes on the next from the bucket's status.json, and the
//! conditional writes that leases and status.json updates rest on. (Several in-process instances
//! sharing one bucket are no longer a supported set-up: queue mode runs several instances.)

use serde_json::Value;

use crate::common::*;
use crate::*;

/// A job stopped on one instance (shutdown mid-encode) is triggered again on the next one started
/// (a restart, or a new Cloud Run instance): that one reads status.json from the bucket, keeps
/// the renditions already published and encodes only the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_job_resumes_on_another_instance_from_the_bucket() {
    let ws = Workspace::new("gcs_resume");
    let clip = std::fs::read(ws.clip("clip.mp4", 1280, 720, 3.0, false)).unwrap();
    let gcs = emulator().await;
    gcs.put(INPUT, "resume.mp4", clip).await;
    let body = trigger("gcs-resume", "resume.mp4");

    // The first instance finishes the critical tier, then stops before the 720p pass can start.
    let first = spawn_gcs_app(&gcs, &[]).await;
    assert_eq!(first.api.trigger(&body, &[]).await.code, 202);
    let playable = first
        .api
        .wait_for("gcs-resume", |s| s["playable"] == true)
        .await;
    first.hold_encodes();
    first.stop().await;
    let stopped: Value = serde_json::from_slice(
        &gcs.get(CDN, &cdn_key("gcs-resume", "status.json"))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stopped["state"], "interrupted", "{stopped:#}");
    let kept = ready_renditions(&stopped);
    assert!(!kept.is_empty(), "{playable:#}");

    let second = spawn_gcs_app(&gcs, &[]).await;
    let answer = second.api.trigger(&body, &[]).await;
    assert_eq!(answer.code, 202, "{:?}", answer.body);
    let done = second.api.wait_final("gcs-resume").await;
    assert_eq!(done["state"], "ready", "{done:#}");
    let all = ready_renditions(&done);
    for rendition in &kept {
        assert!(
            all.contains(rendition),
            "{rendition:?} was encoded again: {done:#}"
        );
    }
    assert!(all.len() > kept.len(), "the rest was encoded: {done:#}");
    assert_eq!(
        done["timestamps"]["firstPlayable"],
        stopped["timestamps"]["firstPlayable"]
    );
    second.stop().await;
}

/// Ready renditions with their start times (a re-encode would change them).
fn ready_renditions(status: &Value) -> Vec<(String, String)> {
    status["renditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["state"] == "ready")
        .map(|r| (r["name"].to_string(), r["started"].to_string()))
        .collect()
}

/// The primitive queue mode's unit leases and status.json updates rest on: of two creates of one
/// object, one wins and the other is told the object changed; a replace must name the version it
/// read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_create_has_exactly_one_winner() {
    use video_transcoder::storage::{GcsOptions, GcsStore, Store, StoreError};
    let gcs = emulator().await;
    let options = GcsOptions {
        endpoint: Some(gcs.endpoint()),
        retry_budget: std::time::Duration::from_secs(5),
    };
    let store = GcsStore::new(&format!("gs://{CDN}/{CDN_PREFIX}"), &options)
        .await
        .unwrap();
    let first = store.put_if("leases/a", "one".into(), 0).await;
    eprintln!(
        "STORED {:?} {:?}",
        first,
        gcs.get(CDN, "media/leases/a").await.map(String::from_utf8)
    );
    let first = first.unwrap();
    let second = store.put_if("leases/a", "two".into(), 0).await;
    assert!(matches!(second, Err(StoreError::Changed(_))), "{second:?}");
    let stale = store.put_if("leases/a", "three".into(), first + 1).await;
    assert!(matches!(stale, Err(StoreError::Changed(_))), "{stale:?}");
    let (bytes, version) = store.get_versioned("leases/a").await.unwrap().unwrap();
    assert_eq!((bytes.as_ref(), version), (&b"one"[..], first));
    let replaced = store
        .put_if("leases/a", "four".into(), first)
        .await
        .unwrap();
    assert_ne!(replaced, first);
}
