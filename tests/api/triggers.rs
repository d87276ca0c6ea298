//! `POST /transcode`: the direct, Pub/Sub push and Eventarc CloudEvent shapes, and redelivery
//! finding the existing job.

use serde_json::Value;

use crate::common::*;
use crate::support::*;

/// The three trigger shapes start jobs for objects in the input store: a direct JSON trigger
/// (202, its own videoId), a Pub/Sub push of a GCS OBJECT_FINALIZE notification (202, a videoId
/// derived from the object), and an Eventarc binary CloudEvent for the same object (200, the
/// same videoId: the existing job). Events of other types are acknowledged with 200 and
/// `ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_shapes_direct_pubsub_and_cloudevent() {
    let ws = Workspace::new("api_triggers");
    let clip = small_clip(&ws, "clip.mp4");
    let app = spawn_app(&[]).await;
    app.put_input("incoming/a.mp4", &clip);
    app.put_input("incoming/b.mp4", &clip);
    let api = &app.api;

    let direct = api
        .trigger(&direct_trigger("shape-direct", "incoming/a.mp4"), &[])
        .await;
    assert_eq!(direct.code, 202, "{:?}", direct.body);
    assert_eq!(direct.body["videoId"], "shape-direct");
    assert_eq!(direct.body["statusUrl"], "/video-status/shape-direct");
    assert!(
        direct.body["estimatedTime"]
            .as_f64()
            .is_some_and(|t| t >= 1.0)
    );

    let object = gcs_object("in", "incoming/b.mp4", "17");
    let pushed = api
        .trigger(&pubsub_push(&object, "OBJECT_FINALIZE"), &[])
        .await;
    assert_eq!(pushed.code, 202, "{:?}", pushed.body);
    let derived = pushed.body["videoId"].as_str().unwrap().to_string();
    uuid::Uuid::parse_str(&derived).expect("a derived videoId is a UUID");
    assert_ne!(derived, "shape-direct");
    assert_eq!(
        pushed.body["playbackUrl"],
        api.url(&format!("/videos/{derived}/manifest/master.m3u8"))
    );

    for id in ["shape-direct", derived.as_str()] {
        let status = api.wait_final(id).await;
        assert_eq!(status["state"], "ready", "{id}: {status:#}");
    }
    let input = api.status(&derived).await["input"].clone();
    assert!(
        input
            .as_str()
            .is_some_and(|i| i.ends_with("incoming/b.mp4")),
        "{input}"
    );

    let event = cloud_event(api, "google.cloud.storage.object.v1.finalized", &object).await;
    assert_eq!(event.code, 200, "{:?}", event.body);
    assert_eq!(event.body["videoId"], derived.as_str());
    assert_eq!(event.body["status"], "ready");
    assert_eq!(api.status(&derived).await["state"], "ready");

    let deleted = cloud_event(api, "google.cloud.storage.object.v1.deleted", &object).await;
    assert_eq!(deleted.code, 200, "{:?}", deleted.body);
    assert!(
        deleted.body["ignored"]
            .as_str()
            .is_some_and(|why| !why.is_empty()),
        "{:?}",
        deleted.body
    );
    let deleted = api
        .trigger(&pubsub_push(&object, "OBJECT_DELETE"), &[])
        .await;
    assert_eq!(deleted.code, 200, "{:?}", deleted.body);
    assert!(deleted.body["ignored"].is_string(), "{:?}", deleted.body);
    app.stop().await;
}

/// Redelivery is idempotent: while a job is queued or held in the scheduler, the same direct
/// trigger or Pub/Sub message again answers 200 with the same videoId and a live state; the
/// same videoId from another inputPath is 409; after `ready`, another delivery answers 200
/// `ready` and encodes nothing again (rendition start times in status.json unchanged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_triggers_find_the_existing_job() {
    let ws = Workspace::new("api_idempotent");
    let clip = small_clip(&ws, "clip.mp4");
    let app = spawn_app(&[]).await;
    app.put_input("incoming/c.mp4", &clip);
    app.put_input("incoming/d.mp4", &clip);
    let api = &app.api;
    app.hold_encodes();

    let direct = direct_trigger("idem-direct", "incoming/c.mp4");
    let push = pubsub_push(&gcs_object("in", "incoming/d.mp4", "42"), "OBJECT_FINALIZE");
    let mut ids = Vec::new();
    for body in [&direct, &push] {
        let first = api.trigger(body, &[]).await;
        assert_eq!(first.code, 202, "{:?}", first.body);
        let id = first.body["videoId"].as_str().unwrap().to_string();
        let again = api.trigger(body, &[]).await;
        assert_eq!(again.code, 200, "{:?}", again.body);
        assert_eq!(again.body["videoId"], id.as_str());
        let state = again.body["status"].as_str().unwrap();
        assert!(matches!(state, "queued" | "processing"), "{state}");
        ids.push(id);
    }
    for (id, body) in ids.iter().zip([&direct, &push]) {
        wait_held(api, id).await;
        let again = api.trigger(body, &[]).await;
        assert_eq!(
            (again.code, again.body["status"].as_str()),
            (200, Some("processing"))
        );
    }

    let other_source = direct_trigger("idem-direct", "incoming/d.mp4");
    let message = assert_error(&api.trigger(&other_source, &[]).await, 409, "conflict");
    assert!(message.contains("idem-direct"), "{message}");

    app.release_encodes();
    for (id, body) in ids.iter().zip([&direct, &push]) {
        let status = api.wait_final(id).await;
        assert_eq!(status["state"], "ready", "{status:#}");
        let before = final_status_file(&app, id).await;
        assert_eq!(before["state"], "ready", "{before:#}");
        let starts = rendition_starts(&before);

        let again = api.trigger(body, &[]).await;
        assert_eq!(again.code, 200, "{:?}", again.body);
        assert_eq!(again.body["videoId"], id.as_str());
        assert_eq!(again.body["status"], "ready");
        // A second job would show as queued here, then rewrite status.json.
        assert_eq!(api.status(id).await["state"], "ready");
        let after = status_file(&app, id).await;
        assert_eq!(rendition_starts(&after), starts, "{id} was encoded again");
        assert_eq!(after["timestamps"], before["timestamps"]);
    }
    app.stop().await;
}

/// Every rendition's name and `started` time, which a second encode would change.
fn rendition_starts(status: &Value) -> Vec<(String, String)> {
    let renditions = status["renditions"].as_array().expect("renditions");
    assert!(!renditions.is_empty(), "{status:#}");
    renditions
        .iter()
        .map(|r| {
            let started = r["started"].as_str().unwrap_or_else(|| panic!("{r}"));
            (r["name"].as_str().unwrap().to_string(), started.to_string())
        })
        .collect()
}

/// In-process mode is one process, with no other instance to claim a video against: a running
/// job writes nothing beside status.json to hold the video.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_claims_nothing_beside_its_status() {
    let ws = Workspace::new("api_no_claim");
    let clip = small_clip(&ws, "clip.mp4");
    let app = spawn_app(&[]).await;
    app.put_input("incoming/e.mp4", &clip);
    app.hold_encodes();
    let accepted = app
        .api
        .trigger(&direct_trigger("unclaimed", "incoming/e.mp4"), &[])
        .await;
    assert_eq!(accepted.code, 202, "{:?}", accepted.body);
    wait_held(&app.api, "unclaimed").await;
    let folder = app.cdn_dir().join("videos/unclaimed");
    // The live status is ahead of status.json's first write by a moment.
    let started = std::time::Instant::now();
    while !folder.join("status.json").exists() && started.elapsed().as_secs() < 10 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(files_under(&folder), ["status.json"], "only status.json");
    app.release_encodes();
    assert_eq!(app.api.wait_final("unclaimed").await["state"], "ready");
    app.stop().await;
}

/// Once a job has ended, a poll reads status.json from the output store rather than a copy this
/// instance kept, so a later write there (a rerun, another process) is what the poll sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_job_is_read_from_the_store() {
    let ws = Workspace::new("api_store_status");
    let clip = small_clip(&ws, "clip.mp4");
    let app = spawn_app(&[]).await;
    app.put_input("incoming/f.mp4", &clip);
    let api = &app.api;
    let accepted = api
        .trigger(&direct_trigger("from-store", "incoming/f.mp4"), &[])
        .await;
    assert_eq!(accepted.code, 202, "{:?}", accepted.body);
    assert_eq!(api.wait_final("from-store").await["state"], "ready");
    let mut stored = final_status_file(&app, "from-store").await;
    stored["metadata"] = serde_json::json!({"title": "written later by another process"});
    let path = app.cdn_dir().join("videos/from-store/status.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&stored).unwrap()).unwrap();
    // The job leaves this instance's live jobs just after its last write of status.json.
    api.wait_for("from-store", |s| s["metadata"] == stored["metadata"])
        .await;
    app.stop().await;
}
