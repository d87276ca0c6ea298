//! The operator page `/jobs` (and `/jobs.json`) in the browser: closed like `/metrics`, it
//! shows the jobs of the instance with a progress bar per rendition and the encode pool.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use video_transcoder::jobs::scheduler::{decoder_bytes, encoder_bytes};

use crate::browser::Browser;
use crate::common::*;
use crate::pages::screenshot_path;

const TOKEN: &str = "operator-upload-token";

/// A job whose critical tier encodes while its standard tier waits for memory: `/jobs` shows it
/// with a bar per rendition that the page's polling fills, the pool's figures, and after the
/// job ends, no job listed (ended jobs are read from the store, not kept here). Without the
/// credential the page is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_page_shows_running_jobs_and_the_pool() {
    let ws = Workspace::new("operator");
    let clip = ws.clip("clip.mp4", 960, 540, 4.0, true);
    let app = spawn_app(&[
        "--upload-token",
        TOKEN,
        "--open-metrics",
        "false",
        "--ladder",
        "540:1200,144:200",
        "--decode-plan",
        "per-tier",
        "--memory-reserve-mb",
        "0",
        "--max-parallel-encodes",
        "2",
    ])
    .await;
    // Memory for the 144p pass but not for the 540p one.
    let critical = decoder_bytes(960, 540) + encoder_bytes(256, 144);
    let standard = decoder_bytes(960, 540) + encoder_bytes(960, 540);
    app.memory
        .0
        .store((critical + standard) / 2, Ordering::Relaxed);
    app.put_input("clip.mp4", &clip);
    let answer = app
        .api
        .trigger(&json!({"videoId": "watched", "inputPath": "clip.mp4"}), &[])
        .await;
    assert_eq!(answer.code, 202, "{:?}", answer.body);

    let http = reqwest::Client::new();
    for path in ["/jobs", "/jobs.json"] {
        let refused = http.get(app.api.url(path)).send().await.unwrap();
        assert_eq!(refused.status(), 401, "{path} without the credential");
        let wrong = http.get(app.api.url(path)).bearer_auth("nope").send().await;
        assert_eq!(wrong.unwrap().status(), 401, "{path} with a wrong token");
    }
    let overview: Value = http
        .get(app.api.url("/jobs.json"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(overview["active"][0]["videoId"], "watched", "{overview:#}");
    assert_eq!(overview["pool"]["capacity"], 2, "{overview:#}");

    let browser = Browser::start(ws.path()).await;
    browser.open(&app.api.url("/jobs")).await;
    let refused = browser
        .eval("return {pool: !!document.getElementById('pool'), text: document.body.textContent};")
        .await;
    assert_eq!(refused["pool"], false, "{refused}");
    assert!(
        refused["text"].as_str().unwrap().contains("unauthorized"),
        "{refused}"
    );

    // Through a proxy that adds the credential (as `gcloud run services proxy` adds an ID token).
    browser
        .send_headers(json!({"Authorization": format!("Bearer {TOKEN}")}))
        .await;
    browser.open(&app.api.url("/jobs")).await;
    let held = wait_jobs(&browser, "144p done while 540p waits", |p| {
        p["bars"]["watched/144p"]["state"] == "ready"
            && p["bars"]["watched/540p"]["state"] == "pending"
            && p["figures"]["queue"] == "1"
    })
    .await;
    assert_eq!(held["bars"].as_object().unwrap().len(), 3, "{held:#}");
    let full = &held["bars"]["watched/144p"];
    assert!(
        full["max"].as_f64() > Some(0.0) && full["value"] == full["max"],
        "{held:#}"
    );
    assert_eq!(held["bars"]["watched/540p"]["value"], 0, "{held:#}");
    assert!(held["bars"]["watched/audio"].is_object(), "{held:#}");
    let figures = &held["figures"];
    assert_eq!(figures["jobs"], "1", "{figures}");
    assert!(
        figures["encoders"].as_str().unwrap().ends_with(" of 2"),
        "{figures}"
    );
    assert!(
        figures["memory"].as_str().unwrap().ends_with(" MiB"),
        "{figures}"
    );
    assert!(
        figures["resident"].as_str().unwrap().ends_with(" MiB"),
        "{figures}"
    );
    assert_eq!(held["active"], json!(["watched"]), "{held:#}");
    browser.screenshot(&screenshot_path(&ws, "jobs.png")).await;

    app.release_encodes();
    let done = wait_jobs(&browser, "the job gone from the page", |p| {
        p["active"] == json!([])
    })
    .await;
    assert_eq!(done["figures"]["jobs"], "0", "{done:#}");
    assert!(
        done["text"].as_str().unwrap().contains("/video-status/"),
        "{done:#}"
    );
    browser.close().await;
    app.stop().await;
}

/// The page's jobs, bars and figures, read in one script.
const JOBS: &str = "
const ids = (s) => [...document.querySelectorAll(s + ' [data-video]')].map((e) => e.dataset.video);
const bars = {};
for (const b of document.querySelectorAll('progress[data-rendition]')) {
  bars[b.dataset.rendition] = {value: b.value, max: b.max, state: b.dataset.state};
}
const figures = {};
for (const f of document.querySelectorAll('[data-figure]')) figures[f.dataset.figure] = f.textContent;
return {active: ids('#active'), bars, figures, text: document.body.textContent};";

/// Polls the page until `done`; fails with what it shows and the console after 120 s.
async fn wait_jobs(browser: &Browser, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let shown = browser.eval(JOBS).await;
        if done(&shown) {
            return shown;
        }
        if started.elapsed() > Duration::from_secs(120) {
            panic!(
                "no {what}: {shown:#}\nconsole: {:#}",
                browser.console().await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
