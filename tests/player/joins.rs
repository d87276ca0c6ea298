//! A video made in time chunks plays through its joins in hls.js: the player page, after the
//! job is ready, plays from the start past two chunk boundaries without a stall or an error.

use std::time::Duration;

use crate::browser::Browser;
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_across_chunk_joins() {
    let ws = Workspace::new("player-joins");
    let clip = ws.clip("clip.mp4", 640, 360, 12.0, true);
    // Three chunks of 4 s: joins at 4 s and 8 s.
    let app = spawn_app(&["--ladder", "360:600,144:200", "--chunk-seconds", "4"]).await;
    let browser = Browser::start(ws.path()).await;
    let id = app.api.upload_accepted(&clip).await;
    let status = app.api.wait_final(&id).await;
    assert_eq!(status["state"], "ready", "{status:#}");
    let marker = app.cdn_dir().join(format!("videos/{id}/units/360p-2.json"));
    assert!(marker.exists(), "made in three chunks: {marker:?}");

    browser.open(&app.api.url(&format!("/player/{id}"))).await;
    let past = browser
        .wait_for("playback past both joins", Duration::from_secs(60), |s| {
            s["time"].as_f64().unwrap_or(0.0) > 9.0
        })
        .await;
    assert_eq!(past["engine"], "hls.js", "{past:#}");
    assert_eq!(past["notice"], "", "the page reported a problem: {past:#}");
    eprintln!("played past the joins: {past}");
    browser.close().await;
    app.stop().await;
}
