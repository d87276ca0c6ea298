//! The MP4 download in a real browser: a plain `<video src>` (no hls.js, no MSE) on a page of
//! the service itself plays `videos/<id>/download.mp4` as the local output store serves it.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::browser::Browser;
use crate::common::*;

/// Adds a muted, autoplaying `<video src>` of the download to the page, once.
const PLAY: &str = "
const url = arguments[0];
let v = document.getElementById('download');
if (!v) {
  v = document.createElement('video');
  v.id = 'download'; v.muted = true; v.autoplay = true; v.src = url;
  document.body.appendChild(v);
  v.play().catch(() => {});
}
return {time: v.currentTime, readyState: v.readyState, duration: v.duration,
  error: v.error && v.error.message, width: v.videoWidth, height: v.videoHeight};";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_plays_as_a_plain_video_src() {
    let ws = Workspace::new("player-download");
    let clip = ws.clip("clip.mp4", 640, 360, 4.0, true);
    let app = spawn_app(&[
        "--ladder",
        "360:600,144:200",
        "--download-rendition",
        "360p",
    ])
    .await;
    let browser = Browser::start(ws.path()).await;
    let id = app.api.upload_accepted(&clip).await;
    let status = app.api.wait_final(&id).await;
    assert_eq!(status["state"], "ready", "{status:#}");
    let path = status["download"]["path"].as_str().expect("a download");
    assert_eq!(status["download"]["rendition"], "360p");

    // A page of the service, so the video is same-origin; the element is the plain one.
    browser.open(&app.api.url("/healthz")).await;
    let url = app.api.url(&format!("/{path}"));
    let started = Instant::now();
    let playing = loop {
        let state: Value = browser.eval_with(PLAY, &[Value::from(url.as_str())]).await;
        assert!(state["error"].is_null(), "the video failed: {state:#}");
        if state["time"].as_f64().unwrap_or(0.0) > 0.0 && state["readyState"] == 4 {
            break state;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the download does not play: {state:#}\nconsole: {:#}",
            browser.console().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("playing: {playing}");
    assert_eq!(
        (playing["width"].as_u64(), playing["height"].as_u64()),
        (Some(640), Some(360))
    );
    let duration = playing["duration"].as_f64().unwrap();
    assert!((duration - 4.0).abs() < 0.05, "duration {duration}");
    browser.close().await;
    app.stop().await;
}
