//! The HTTP service end to end: a real server on 127.0.0.1, real uploads, real encodes.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_plays_over_http_once_ready() {
    let ws = Workspace::new("api_upload");
    let clip = ws.clip("clip.mp4", 640, 360, 3.0, true);
    let app = spawn_app(&[]).await;

    let accepted = app.api.upload(&clip, Some(r#"{"title": "Holiday"}"#)).await;
    assert_eq!(accepted.code, 202, "{:?}", accepted.body);
    let id = accepted.body["videoId"].as_str().unwrap().to_string();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    assert_eq!(accepted.body["status"], "queued");
    assert_eq!(accepted.body["statusUrl"], format!("/video-status/{id}"));
    assert_eq!(
        accepted.body["playbackUrl"],
        app.api.url(&format!("/videos/{id}/manifest/master.m3u8"))
    );
    let estimate = accepted.body["estimatedTime"].as_f64().unwrap();
    assert!(estimate >= 1.0, "estimate {estimate}");

    let status = app.api.wait_final(&id).await;
    assert_eq!(status["state"], "ready", "{status:#}");
    assert_eq!(status["metadata"]["title"], "Holiday");

    let (code, master) = app
        .api
        .text(&format!("/videos/{id}/manifest/master.m3u8"))
        .await;
    assert_eq!(code, 200);
    assert!(master.contains("360p/index.m3u8"), "{master}");
    let segment = app
        .api
        .http
        .get(
            app.api
                .url(&format!("/videos/{id}/manifest/360p/seg_00000.m4s")),
        )
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(segment.status().as_u16(), 206);
    assert_eq!(segment.headers()["content-type"], "video/iso.segment");
    assert_eq!(segment.bytes().await.unwrap().len(), 100);

    // A real client reads the whole package over HTTP.
    let master_url = app.api.url(&format!("/videos/{id}/manifest/master.m3u8"));
    let (probe, stderr) = tokio::task::spawn_blocking(move || {
        ffprobe(&["-show_streams"], std::path::Path::new(&master_url))
    })
    .await
    .unwrap();
    assert!(
        probe["streams"].as_array().is_some_and(|s| !s.is_empty()),
        "ffprobe read nothing: {stderr}"
    );
    app.stop().await;
}
