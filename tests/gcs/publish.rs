//! Sources in from the input bucket, HLS out to the CDN bucket: `/upload`, the three trigger
//! shapes, headers on every object, and the master published before the job is ready.

use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::*;

/// Upload → input bucket → job → CDN bucket, read back from the emulator by ffprobe through the
/// master playlist's public URL; every object has its Content-Type and Cache-Control.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_lands_in_the_input_bucket_and_plays_from_the_cdn_bucket() {
    let ws = Workspace::new("gcs_upload");
    let clip = ws.clip("holiday clip.mp4", 640, 360, 3.0, true);
    let gcs = emulator().await;
    let app = spawn_gcs_app(&gcs, &[]).await;

    let id = app.api.upload_accepted(&clip).await;
    let status = app.api.wait_final(&id).await;
    assert_eq!(status["state"], "ready", "{status:#}");

    let sources = gcs.list(INPUT, "pending/").await;
    // The source, and the upload's record (its metadata, for whoever plans the video).
    assert_eq!(
        sources,
        [
            format!("pending/{id}.json"),
            format!("pending/{id}_holiday_clip.mp4")
        ]
    );
    let stored = gcs.get(INPUT, &sources[1]).await.unwrap();
    assert_eq!(
        stored,
        std::fs::read(&clip).unwrap(),
        "stored byte for byte"
    );

    let published = gcs.list(CDN, &cdn_key(&id, "")).await;
    for rest in [
        "status.json",
        "manifest/master.m3u8",
        "manifest/360p/index.m3u8",
        "manifest/360p/init.mp4",
        "manifest/360p/seg_00000.m4s",
        "manifest/audio/index.m3u8",
        "download.mp4",
        "images/poster.jpg",
        "images/storyboard.jpg",
        "images/storyboard.vtt",
    ] {
        assert!(
            published.contains(&cdn_key(&id, rest)),
            "{rest}: {published:#?}"
        );
    }
    for (rest, content_type, cache) in [
        (
            "manifest/master.m3u8",
            "application/vnd.apple.mpegurl",
            "no-cache",
        ),
        (
            "manifest/360p/index.m3u8",
            "application/vnd.apple.mpegurl",
            "no-cache",
        ),
        ("manifest/360p/init.mp4", "video/mp4", "immutable"),
        (
            "manifest/360p/seg_00000.m4s",
            "video/iso.segment",
            "immutable",
        ),
        ("status.json", "application/json", "no-store"),
        ("download.mp4", "video/mp4", "no-cache"),
        ("images/poster.jpg", "image/jpeg", "no-cache"),
        ("images/storyboard.vtt", "text/vtt", "no-cache"),
    ] {
        let meta = gcs.metadata(CDN, &cdn_key(&id, rest)).await.unwrap();
        // fake-gcs-server is wrong here: for a resumable upload it records the Content-Type of
        // the final data request instead of the `contentType` in the object's metadata, which
        // the client sends beside `cacheControl` (real Cloud Storage keeps the metadata's). So
        // the emulator shows the Cache-Control we set, and the Content-Type only if it kept it.
        // status.json is written in one single-shot request with a generation precondition,
        // for which the emulator records no Content-Type at all.
        let cache_control = meta["cacheControl"].as_str().unwrap_or_default();
        assert!(cache_control.contains(cache), "{rest}: {meta:#}");
        let recorded = meta["contentType"].as_str().unwrap_or_default();
        let dropped = rest == "status.json" && recorded.is_empty();
        assert!(
            recorded == content_type || recorded == "application/octet-stream" || dropped,
            "{rest}: {meta:#}"
        );
    }
    let in_bucket: Value =
        serde_json::from_slice(&gcs.get(CDN, &cdn_key(&id, "status.json")).await.unwrap()).unwrap();
    assert_eq!(in_bucket["state"], "ready");
    assert_eq!(in_bucket["videoId"], id.as_str());
    // The pictures, made from the segments in the bucket, as the bucket serves them.
    assert_eq!(
        in_bucket["images"]["poster"], "images/poster.jpg",
        "{in_bucket:#}"
    );
    assert_eq!(in_bucket["images"]["posterWidth"], 640);
    let poster = gcs
        .get(CDN, &cdn_key(&id, "images/poster.jpg"))
        .await
        .unwrap();
    assert!(poster.starts_with(&[0xff, 0xd8, 0xff]), "not a JPEG");
    let vtt = gcs
        .get(CDN, &cdn_key(&id, "images/storyboard.vtt"))
        .await
        .unwrap();
    assert!(
        String::from_utf8(vtt)
            .unwrap()
            .contains("storyboard.jpg#xywh=0,0,160,90")
    );
    let thumbnail = app
        .api
        .http
        .get(
            app.api
                .url(&format!("/thumbnail/{id}.jpg?time=1.5&width=320")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(thumbnail.status(), 200);
    assert_eq!(thumbnail.headers()["content-type"], "image/jpeg");

    // A real client plays the package from the bucket's public URLs.
    let master_url = gcs.public_url(CDN, &cdn_key(&id, "manifest/master.m3u8"));
    let (probe, stderr) = tokio::task::spawn_blocking(move || {
        ffprobe(&["-show_streams"], std::path::Path::new(&master_url))
    })
    .await
    .unwrap();
    let streams = probe["streams"].as_array().cloned().unwrap_or_default();
    assert!(
        streams.iter().any(|s| s["codec_type"] == "video")
            && streams.iter().any(|s| s["codec_type"] == "audio"),
        "ffprobe read {streams:?}: {stderr}"
    );
    // The MP4 download, remuxed from the segments in the bucket, as the bucket serves it.
    assert_eq!(in_bucket["download"]["rendition"], "360p", "{in_bucket:#}");
    let download = ws.path().join("download.mp4");
    std::fs::write(
        &download,
        gcs.get(CDN, &cdn_key(&id, "download.mp4")).await.unwrap(),
    )
    .unwrap();
    assert_eq!(
        in_bucket["download"]["bytes"].as_u64(),
        Some(std::fs::metadata(&download).unwrap().len())
    );
    let probed = crate::common::probe(&download);
    assert!(stream(&probed, "video").is_some() && stream(&probed, "audio").is_some());
    let duration = num(&probed["format"]["duration"]).unwrap();
    assert!((duration - 3.0).abs() < 0.05, "download lasts {duration} s");
    assert!(
        files_under(&app.scratch_dir()).is_empty(),
        "scratch is empty"
    );
    app.stop().await;
}

/// A direct trigger, a Pub/Sub push and an Eventarc CloudEvent, each naming an object in the
/// input bucket, each end `ready` with output in the CDN bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_trigger_shape_reads_its_source_from_the_bucket() {
    let ws = Workspace::new("gcs_triggers");
    let clip = std::fs::read(ws.clip("clip.mp4", 256, 144, 2.0, true)).unwrap();
    let gcs = emulator().await;
    for name in ["direct.mp4", "incoming/pubsub.mp4", "incoming/event.mp4"] {
        gcs.put(INPUT, name, clip.clone()).await;
    }
    let app = spawn_gcs_app(&gcs, &[]).await;
    let api = &app.api;

    let direct = api.trigger(&trigger("gcs-direct", "direct.mp4"), &[]).await;
    assert_eq!(direct.code, 202, "{:?}", direct.body);
    let object = gcs_object(INPUT, "incoming/pubsub.mp4", "5");
    let pushed = api
        .trigger(&pubsub_push(&object, "OBJECT_FINALIZE"), &[])
        .await;
    assert_eq!(pushed.code, 202, "{:?}", pushed.body);
    let object = gcs_object(INPUT, "incoming/event.mp4", "6");
    let event = cloud_event(api, "google.cloud.storage.object.v1.finalized", &object).await;
    assert_eq!(event.code, 202, "{:?}", event.body);

    for answer in [direct, pushed, event] {
        let id = answer.body["videoId"].as_str().unwrap().to_string();
        let status = api.wait_final(&id).await;
        assert_eq!(status["state"], "ready", "{status:#}");
        let input = status["input"].as_str().unwrap_or_default();
        assert!(input.starts_with(&format!("gs://{INPUT}/")), "{status:#}");
        let master = gcs.get(CDN, &cdn_key(&id, "manifest/master.m3u8")).await;
        assert!(master.is_some(), "{id}: no master in the CDN bucket");
    }

    // A trigger naming another bucket than the service reads is refused.
    let mut elsewhere = trigger("gcs-elsewhere", "direct.mp4");
    elsewhere["inputBucket"] = "someone-elses-bucket".into();
    assert_eq!(api.trigger(&elsewhere, &[]).await.code, 400);
    app.stop().await;
}

/// On a source with a premium (1440p) tier, a player can start from the bucket before the job
/// is ready: the master is there, lists what is finished, and later gains the premium rung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_is_in_the_bucket_before_the_job_is_ready() {
    let ws = Workspace::new("gcs_early_master");
    let clip = std::fs::read(ws.clip("tall.mp4", 2560, 1440, 2.0, false)).unwrap();
    let gcs = emulator().await;
    gcs.put(INPUT, "tall.mp4", clip).await;
    let app = spawn_gcs_app(&gcs, &[]).await;
    let answer = app
        .api
        .trigger(&trigger("gcs-early", "tall.mp4"), &[])
        .await;
    assert_eq!(answer.code, 202, "{:?}", answer.body);
    let master_key = cdn_key("gcs-early", "manifest/master.m3u8");

    let early = loop {
        let status = app.api.status("gcs-early").await;
        let state = status["state"].as_str().unwrap_or_default().to_string();
        assert!(state == "queued" || state == "processing", "{status:#}");
        if let Some(master) = gcs.get(CDN, &master_key).await {
            // Read the status again: the master must have come first.
            let after = app.api.status("gcs-early").await;
            assert_ne!(
                after["state"], "ready",
                "ready before the poll saw the master"
            );
            break String::from_utf8(master).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!early.contains("1440p"), "premium listed early:\n{early}");
    assert!(early.contains("#EXT-X-STREAM-INF"), "{early}");

    let status = app.api.wait_final("gcs-early").await;
    assert_eq!(status["state"], "ready", "{status:#}");
    let last = String::from_utf8(gcs.get(CDN, &master_key).await.unwrap()).unwrap();
    assert!(last.contains("1440p/index.m3u8"), "{last}");
    app.stop().await;
}

/// Segments, and a playlist growing with them, reach the bucket while their rendition is still
/// encoding; segments leave scratch once uploaded. The final playlist is VOD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_are_in_the_bucket_while_their_rendition_encodes() {
    let ws = Workspace::new("gcs_segments");
    let clip = std::fs::read(ws.clip("long.mp4", 1280, 720, 12.0, false)).unwrap();
    let gcs = emulator().await;
    gcs.put(INPUT, "long.mp4", clip).await;
    let app = spawn_gcs_app(&gcs, &["--segment-seconds", "2"]).await;
    let answer = app
        .api
        .trigger(&trigger("gcs-segments", "long.mp4"), &[])
        .await;
    assert_eq!(answer.code, 202, "{:?}", answer.body);
    let first = cdn_key("gcs-segments", "manifest/720p/seg_00000.m4s");
    let variant = cdn_key("gcs-segments", "manifest/720p/index.m3u8");

    let growing = loop {
        // In this order, so that what was seen in the bucket and scratch was seen while the
        // rendition still encoded. The segment is visible in the bucket a moment before the
        // uploader hears back and removes the file, hence the polling for both.
        let playlist = gcs.get(CDN, &variant).await.map(String::from_utf8);
        let in_scratch = files_under(&app.scratch_dir())
            .iter()
            .any(|f| f.ends_with("720p/seg_00000.m4s"));
        let status = app.api.status("gcs-segments").await;
        let encoding = status["renditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["name"] == "720p" && r["state"] == "encoding");
        if let (true, false, Some(Ok(playlist))) = (encoding, in_scratch, playlist) {
            assert!(gcs.metadata(CDN, &first).await.is_some());
            break playlist;
        }
        assert!(
            status["state"] == "processing" || status["state"] == "queued",
            "no 720p playlist in the bucket (and segment gone from scratch) while it encoded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // A growing playlist, naming only segments already in the bucket.
    assert!(
        growing.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !growing.contains("#EXT-X-ENDLIST"),
        "{growing}"
    );
    check_target_duration("the growing playlist", &growing);
    for line in growing.lines().filter(|l| !l.starts_with('#')) {
        let key = cdn_key("gcs-segments", &format!("manifest/720p/{line}"));
        assert!(gcs.metadata(CDN, &key).await.is_some(), "{key} missing");
    }
    let status = app.api.wait_final("gcs-segments").await;
    assert_eq!(status["state"], "ready", "{status:#}");
    let playlist = gcs
        .get(CDN, &cdn_key("gcs-segments", "manifest/720p/index.m3u8"))
        .await
        .unwrap();
    let playlist = String::from_utf8(playlist).unwrap();
    assert!(
        playlist.contains("#EXT-X-PLAYLIST-TYPE:VOD") && playlist.contains("#EXT-X-ENDLIST"),
        "{playlist}"
    );
    check_target_duration("the final playlist", &playlist);
    for line in playlist.lines().filter(|l| l.ends_with(".m4s")) {
        let key = cdn_key("gcs-segments", &format!("manifest/720p/{line}"));
        assert!(gcs.metadata(CDN, &key).await.is_some(), "{key} missing");
    }
    app.stop().await;
}
