//! What in-process mode does at the end of a job, in queue mode: a video queued through the
//! real emulator and settled unit by unit ends with its poster, storyboard and MP4 download
//! listed in status.json, and a webhook receiver is told `video.playable` and `video.ready`
//! once each, also when a finished unit is delivered again and its video settled once more (and
//! that settle finishes what a stopped instance left); one whose planning fails is announced
//! `video.failed`.

use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::receiver::{Answer, Receiver, garbage_fails_with_an_event, playable_and_ready_once};

const SECRET: &str = "whsec_0123456789abcdef";

/// `serve` in queue mode on `topic` of `pubsub`, with stores under `ws`, sending webhooks to
/// `hooks`; Pub/Sub pushes the topic's units to its `/work`.
async fn serve_queued(
    ws: &Workspace,
    pubsub: &PubSubEmulator,
    topic: &str,
    hooks: &Receiver,
) -> ServerProcess {
    let host = pubsub.host();
    let server = ServerProcess::start(
        ws.path(),
        &[
            ("WORK_TOPIC", topic),
            ("PUBSUB_EMULATOR_HOST", host.as_str()),
            ("CHUNK_SECONDS", "4"),
            ("WEBHOOK_URL", hooks.url.as_str()),
            ("WEBHOOK_SECRET", SECRET),
            ("WEBHOOK_ALLOW_PRIVATE", "true"),
            ("WEBHOOK_RETRY_BASE_MS", "200"),
        ],
    );
    let push = Push::to(&server.api.url("/work"));
    pubsub
        .create_push_subscription("work-push", topic, &push)
        .await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_video_gets_its_images_download_and_webhooks_once() {
    let ws = Workspace::new("queue_extras");
    let pubsub = PubSubEmulator::start("vt-extras").await;
    let topic = pubsub.create_topic("work").await;
    // A second subscription keeps a copy of every unit, to deliver one again at the end.
    let copies = pubsub.create_pull_subscription("work-copies", &topic).await;
    let hooks = Receiver::start(|_| Answer::Status(200)).await;
    let server = serve_queued(&ws, &pubsub, &topic, &hooks).await;

    // Two tiers in two chunks each, and the audio: playable (the critical tier and the audio)
    // comes at another settle than ready.
    let clip = ws.clip("clip.mp4", 1280, 720, 6.0, true);
    let id = server.api.upload_accepted(&clip).await;
    let ready = server.api.wait_final(&id).await;
    assert_eq!(ready["state"], "ready", "{ready:#}");
    let status = server
        .api
        .wait_for(&id, |s| !s["images"].is_null() && !s["download"].is_null())
        .await;
    let images = &status["images"];
    assert_eq!(images["poster"], "images/poster.jpg", "{status:#}");
    assert_eq!(images["storyboard"], "images/storyboard.vtt", "{status:#}");
    let video = ws.path().join("cdn/videos").join(&id);
    for file in ["images/poster.jpg", "images/storyboard.jpg", "download.mp4"] {
        let bytes = std::fs::metadata(video.join(file)).map_or(0, |m| m.len());
        assert!(bytes > 0, "{file} is published: {status:#}");
    }
    let download = &status["download"];
    assert_eq!(
        download["bytes"].as_u64(),
        std::fs::metadata(video.join("download.mp4"))
            .ok()
            .map(|m| m.len()),
        "{status:#}"
    );

    hooks
        .wait_until("given ready", |h| h.counts().contains_key("video.ready"))
        .await;
    // A unit delivered again (a lost acknowledgement): its video is settled once more.
    let units = pubsub.pull(&copies, Duration::from_secs(30)).await;
    let again = units.first().expect("the units were published");
    let attributes: Vec<(&str, &str)> = again
        .attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    pubsub.publish(&topic, &again.data, &attributes).await;
    let kept = || async {
        let (_, metrics) = server.api.text("/metrics").await;
        metrics
            .lines()
            .any(|l| l.starts_with("transcoder_work_units_total") && l.contains(r#"result="kept""#))
    };
    let started = std::time::Instant::now();
    while !kept().await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not redelivered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for got in playable_and_ready_once(&hooks, SECRET).await {
        assert_eq!(got.json["videoId"], id.as_str());
        assert_eq!(got.json["playable"], true);
    }
    let event = |kind: &str| -> Value {
        let got = hooks
            .received()
            .into_iter()
            .find(|r| r.json["type"] == kind);
        got.unwrap().json
    };
    let ready = event("video.ready");
    assert_eq!(ready["state"], "ready");
    assert_eq!(
        ready["posterUrl"],
        server.api.url(&format!("/videos/{id}/images/poster.jpg")),
        "{ready:#}"
    );
    assert!(
        files_under(&ws.path().join("cdn/webhooks/outbox")).is_empty(),
        "every event delivered"
    );

    // An instance that stopped between writing `ready` and following it up left status.json
    // without images or download, and the final event unrecorded: the next settle (a unit
    // delivered again) makes and sends what it missed, and nothing it did not.
    let events = video.join("webhooks");
    for name in files_under(&events) {
        if std::fs::read_to_string(events.join(&name)).unwrap() == "video.ready" {
            std::fs::remove_file(events.join(&name)).unwrap();
        }
    }
    let key = video.join("status.json");
    let mut stripped: Value = serde_json::from_slice(&std::fs::read(&key).unwrap()).unwrap();
    for field in ["images", "download"] {
        stripped.as_object_mut().unwrap().remove(field);
    }
    std::fs::write(&key, serde_json::to_vec_pretty(&stripped).unwrap()).unwrap();
    std::fs::remove_file(video.join("images/poster.jpg")).unwrap();
    pubsub.publish(&topic, &again.data, &attributes).await;
    server
        .api
        .wait_for(&id, |s| !s["images"].is_null() && !s["download"].is_null())
        .await;
    assert!(video.join("images/poster.jpg").exists());
    hooks
        .wait_until("given ready again", |h| {
            h.counts().get("video.ready") == Some(&2)
        })
        .await;
    assert_eq!(hooks.counts().get("video.playable"), Some(&1));
}

/// A source that cannot be planned fails in the trigger's request, and that is announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_video_that_cannot_be_planned_sends_video_failed() {
    let ws = Workspace::new("queue_extras_failed");
    let pubsub = PubSubEmulator::start("vt-extras").await;
    let topic = pubsub.create_topic("work").await;
    let hooks = Receiver::start(|_| Answer::Status(204)).await;
    let server = serve_queued(&ws, &pubsub, &topic, &hooks).await;
    garbage_fails_with_an_event(&ws, &server.api, &hooks, SECRET).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(hooks.received().len(), 1, "{:?}", hooks.counts());
}
