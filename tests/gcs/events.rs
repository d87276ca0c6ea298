//! Object events (Pub/Sub push, Eventarc CloudEvent) on an input store with a prefix: an event
//! names the bucket's whole object name, prefix included.

use serde_json::Value;

use crate::common::*;
use crate::*;

const FINALIZED: &str = "google.cloud.storage.object.v1.finalized";

/// The input store's prefix in these tests.
const INPUT_PREFIX: &str = "uploads";

/// With `INPUT_STORE=gs://bucket/uploads`, a Pub/Sub push and an Eventarc CloudEvent for
/// `uploads/incoming/…` each read that object (not `uploads/uploads/…`) and end ready; an event
/// for an object outside the prefix is acknowledged and ignored, and no job is made for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_events_on_a_prefixed_input_store_read_the_object_they_name() {
    let ws = Workspace::new("gcs_prefixed_events");
    let clip = std::fs::read(ws.clip("clip.mp4", 256, 144, 1.0, true)).unwrap();
    let gcs = emulator().await;
    for name in ["incoming/pubsub.mp4", "incoming/event.mp4"] {
        gcs.put(INPUT, &format!("{INPUT_PREFIX}/{name}"), clip.clone())
            .await;
    }
    gcs.put(INPUT, "elsewhere/outside.mp4", clip.clone()).await;
    let app = spawn_prefixed_app(&gcs).await;
    let api = &app.api;

    let object = gcs_object(INPUT, "uploads/incoming/pubsub.mp4", "5");
    let pushed = api
        .trigger(&pubsub_push(&object, "OBJECT_FINALIZE"), &[])
        .await;
    assert_eq!(pushed.code, 202, "{:?}", pushed.body);
    let object = gcs_object(INPUT, "uploads/incoming/event.mp4", "6");
    let event = cloud_event(api, FINALIZED, &object).await;
    assert_eq!(event.code, 202, "{:?}", event.body);
    for (answer, name) in [(pushed, "pubsub.mp4"), (event, "event.mp4")] {
        let id = answer.body["videoId"].as_str().unwrap().to_string();
        let status = api.wait_final(&id).await;
        assert_eq!(status["state"], "ready", "{status:#}");
        assert_eq!(
            status["input"],
            format!("gs://{INPUT}/{INPUT_PREFIX}/incoming/{name}"),
            "{status:#}"
        );
    }

    let outside = gcs_object(INPUT, "elsewhere/outside.mp4", "7");
    let pushed = api
        .trigger(&pubsub_push(&outside, "OBJECT_FINALIZE"), &[])
        .await;
    let event = cloud_event(api, FINALIZED, &outside).await;
    for answer in [pushed, event] {
        assert_eq!(answer.code, 200, "{:?}", answer.body);
        let why = answer.body["ignored"].as_str().unwrap_or_default();
        assert!(
            why.contains("elsewhere/outside.mp4") && why.contains(INPUT_PREFIX),
            "{:?}",
            answer.body
        );
    }
    app.stop().await;
}

/// A video that is ready stays ready whatever is delivered for it: the bucket's own
/// notifications for an upload's object (Pub/Sub and Eventarc, each twice) find the upload's
/// job, and a direct trigger naming the same video with another source is refused (409);
/// status.json in the bucket is never rewritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_for_a_ready_video_never_turn_it_failed() {
    let ws = Workspace::new("gcs_ready_stays");
    let clip = ws.clip("clip.mp4", 256, 144, 1.0, true);
    let gcs = emulator().await;
    let app = spawn_prefixed_app(&gcs).await;
    let api = &app.api;
    let id = api.upload_accepted(&clip).await;
    let status = api.wait_final(&id).await;
    assert_eq!(status["state"], "ready", "{status:#}");
    let stored = gcs.list(INPUT, &format!("{INPUT_PREFIX}/pending/")).await;
    let name = stored
        .iter()
        .find(|n| n.contains(&format!("{id}_")))
        .unwrap_or_else(|| panic!("the upload is not in the input bucket: {stored:?}"));
    let before = bucket_status(&gcs, &id).await;

    let object = gcs_object(INPUT, name, "9");
    for _ in 0..2 {
        let pushed = api
            .trigger(&pubsub_push(&object, "OBJECT_FINALIZE"), &[])
            .await;
        let event = cloud_event(api, FINALIZED, &object).await;
        for answer in [pushed, event] {
            assert_eq!(answer.code, 200, "{:?}", answer.body);
            assert_eq!(answer.body["videoId"], id.as_str());
            assert_eq!(answer.body["status"], "ready", "{:?}", answer.body);
        }
    }
    gcs.put(INPUT, "uploads/other.mp4", std::fs::read(&clip).unwrap())
        .await;
    let mut other = trigger(&id, "other.mp4");
    other["outputBucket"] = CDN.into();
    let answer = api.trigger(&other, &[]).await;
    assert_eq!(answer.code, 409, "{:?}", answer.body);

    // A job started by any of them would have written status.json by now (queued first).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(api.status(&id).await["state"], "ready");
    let after = bucket_status(&gcs, &id).await;
    assert_eq!(after, before, "status.json was rewritten");
    app.stop().await;
}

/// The service on `gcs` with the input store under the prefix `uploads`.
async fn spawn_prefixed_app(gcs: &Emulator) -> TestApp {
    let mut flags = gcs_flags(gcs);
    let input = flags.iter().position(|f| f == "--input-store").unwrap() + 1;
    flags[input] = format!("gs://{INPUT}/{INPUT_PREFIX}");
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    spawn_app(&args).await
}

async fn bucket_status(gcs: &Emulator, id: &str) -> Value {
    let bytes = gcs.get(CDN, &cdn_key(id, "status.json")).await;
    serde_json::from_slice(&bytes.expect("status.json in the CDN bucket")).unwrap()
}
