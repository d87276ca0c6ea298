//! The player page (`GET /player/{id}`) in a real browser: headless Chromium driven through
//! ChromeDriver's WebDriver HTTP API, hls.js fetched from the npm registry at test time and
//! served from loopback. Needs `chromium`, `chromium-driver` and `curl` (`.ci/setup` installs
//! them); without them the tests fail rather than skip.

#[path = "../common/mod.rs"]
mod common;

mod browser; // ChromeDriver, Chromium and one WebDriver session
mod download; // the MP4 download as a plain <video src>
mod hls_js; // hls.js from the npm registry, served from loopback
mod joins; // a chunked video plays across its joins
mod operator; // the /jobs page
mod pages; // hls.js from the service, poster, quality menu, storyboard, failure message

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use browser::Browser;
use common::*;
use hls_js::{download_hls_js, serve_file};
use serde_json::{Value, json};
use video_transcoder::jobs::scheduler::{decoder_bytes, encoder_bytes};

/// The page plays the first tier while the next one waits, shows the progress, reloads the
/// master playlist when the next tier's first segments are published (keeping the position) and buffers as the
/// product spec says. The second tier is held back by the memory guard until the test lets
/// it go, so the order of events does not depend on encode speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_page_plays_while_tiers_encode() {
    let started = Instant::now();
    let ws = Workspace::new("player");
    // 540p is in the standard tier, 144p in the critical one: two passes, two masters.
    let clip = ws.clip("clip.mp4", 960, 540, 10.0, true);
    let hls_js = download_hls_js(ws.path()).await;
    let script_server = serve_file(&hls_js).await;
    let hls_js_url = format!("{script_server}/hls.min.js");
    let app = spawn_app(&[
        "--hls-js-url",
        &hls_js_url,
        "--ladder",
        "540:1200,144:200",
        "--decode-plan",
        "per-tier",
        "--memory-reserve-mb",
        "0",
    ])
    .await;
    // Memory for the 144p pass but not for the 540p one.
    let critical = decoder_bytes(960, 540) + encoder_bytes(256, 144);
    let standard = decoder_bytes(960, 540) + encoder_bytes(960, 540);
    assert!(critical < standard, "{critical} {standard}");
    app.memory
        .0
        .store((critical + standard) / 2, Ordering::Relaxed);
    // ChromeDriver and Chromium start before the upload, so the page can see the job encode.
    let browser = Browser::start(ws.path()).await;
    eprintln!("set up in {:.1?}", started.elapsed());

    let id = app.api.upload_accepted(&clip).await;
    browser.open(&app.api.url(&format!("/player/{id}"))).await;

    // The first tier plays while the second waits, and the page says so.
    let playing = browser
        .wait_for("playback past 1 s", Duration::from_secs(120), |s| {
            s["time"].as_f64().unwrap_or(0.0) > 1.0
        })
        .await;
    eprintln!("playing at {:.1?}: {playing}", started.elapsed());
    assert_eq!(playing["engine"], "hls.js");
    assert_eq!(playing["levels"], 1);
    assert_eq!(playing["state"], "processing");
    let text = playing["text"].as_str().unwrap();
    assert!(
        text.starts_with("Processing: ")
            && text.contains("/3 renditions")
            && text.ends_with("(playing the renditions ready so far)."),
        "{text}"
    );
    browser.assert_advancing().await;

    // Progress per tier: the critical one done, the standard one not started.
    let tiers = browser
        .wait_for("the critical tier done", Duration::from_secs(30), |s| {
            s["tiers"][0]["percent"] == 100
        })
        .await;
    let tiers = &tiers["tiers"];
    assert_eq!(tiers[0]["tier"], "critical", "{tiers:#}");
    assert_eq!(tiers[1]["tier"], "standard", "{tiers:#}");
    assert_eq!(tiers[1]["percent"], 0, "{tiers:#}");
    assert_eq!(tiers[0]["text"], "critical: 144p, audio ready", "{tiers:#}");
    assert_eq!(tiers[1]["text"], "standard: 540p waiting", "{tiers:#}");

    // Buffer limits for a desktop browser.
    let limits = browser
        .eval(
            "const c = window.player.hls.config; return {mobile: window.player.mobile, \
             back: c.backBufferLength, forward: c.maxBufferLength, max: c.maxMaxBufferLength};",
        )
        .await;
    assert_eq!(
        limits,
        json!({"mobile": false, "back": 30, "forward": 120, "max": 120})
    );

    // Let the second tier encode: the page reloads the master, keeps its place, plays on.
    let before = browser.snapshot().await;
    app.release_encodes();
    let reloaded = browser
        .wait_for("the second tier in hls.js", Duration::from_secs(60), |s| {
            s["levels"] == 2
                && s["reloads"] == 1
                && s["readyState"].as_u64().unwrap_or(0) >= 2
                && s["seeking"] == false
        })
        .await;
    eprintln!("reloaded at {:.1?}: {reloaded}", started.elapsed());
    let (was, now) = (
        before["time"].as_f64().unwrap(),
        reloaded["time"].as_f64().unwrap(),
    );
    assert!(
        now >= was,
        "the reload lost the position: at {now} s, was at {was} s"
    );
    browser.assert_advancing().await;

    // The job ends ready; the page shows it and stops there.
    let status = app.api.wait_final(&id).await;
    assert_eq!(status["state"], "ready", "{status:#}");
    let done = browser
        .wait_for("the final status", Duration::from_secs(10), |s| {
            s["state"] == "ready"
        })
        .await;
    assert_eq!(done["text"], "Ready: 3/3 renditions encoded.");
    assert_eq!(done["notice"], "", "the page reported a problem");
    assert_eq!(done["levels"], 2);
    let history = done["history"].as_array().unwrap();
    let states: Vec<&str> = history.iter().filter_map(|h| h["state"].as_str()).collect();
    eprintln!("states the page showed: {states:?}");
    assert_eq!(states.last(), Some(&"ready"), "{history:#?}");
    for h in history {
        if h["state"] == "processing" {
            let text = h["text"].as_str().unwrap();
            assert!(text.contains(" %, "), "no progress shown: {text}");
        }
    }

    browser.close().await;
    app.stop().await;
    eprintln!("done in {:.1?}", started.elapsed());
}

/// hls.js that does not load is reported on the page, and settings with markup in them stay
/// data: nothing in them runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_page_reports_missing_hls_js() {
    let ws = Workspace::new("player_missing");
    let script_server = serve_file(&ws.path().join("nothing.js")).await;
    let injection = "</script><script>window.injected=1</script><!--";
    let hls_js_url = format!("{script_server}/missing/hls.min.js?\"'{injection}");
    let base = format!("http://127.0.0.1:9/cdn\"'{injection}");
    let app = spawn_app(&["--hls-js-url", &hls_js_url, "--public-base-url", &base]).await;

    let (code, html) = app.api.text("/player/no-such-video").await;
    assert_eq!(code, 200);
    assert!(!html.contains("<script>window.injected"), "{html}");
    let (code, _) = app.api.text("/player/bad%20id").await;
    assert_eq!(code, 400);

    let browser = Browser::start(ws.path()).await;
    browser.open(&app.api.url("/player/no-such-video")).await;
    let shown = browser
        .wait_for("the notice and the status", Duration::from_secs(30), |s| {
            s["notice"] != "" && s["state"] == "missing"
        })
        .await;
    let notice = shown["notice"].as_str().unwrap();
    assert!(
        notice.starts_with(&format!(
            "Could not load the video player library (hls.js) from {hls_js_url}. "
        )),
        "{notice}"
    );
    assert_eq!(shown["text"], "No video no-such-video.");
    let page = browser
        .eval(
            "return {injected: window.injected ?? null, config: JSON.parse(\
             document.getElementById('config').textContent)};",
        )
        .await;
    assert_eq!(
        page,
        json!({"injected": null, "config": {
            "id": "no-such-video", "base": base, "hlsJsUrl": hls_js_url,
            "statusUrl": "../video-status/no-such-video", "statusInStore": false}})
    );
    browser.close().await;
    app.stop().await;
}

/// With `/video-status` closed to the public (`OPEN_STATUS=false`), the page follows the job
/// through status.json in the output store, as public as the playlists, and still plays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_page_follows_status_json_when_the_status_route_is_closed() {
    let ws = Workspace::new("player_closed");
    let clip = ws.clip("clip.mp4", 640, 360, 4.0, true);
    let hls_js = download_hls_js(ws.path()).await;
    let script_server = serve_file(&hls_js).await;
    let hls_js_url = format!("{script_server}/hls.min.js");
    let flags = ["--hls-js-url", &hls_js_url, "--open-status", "false"];
    let app = spawn_app(&[&flags[..], &["--upload-token", "closed-status-token"]].concat()).await;
    app.put_input("clip.mp4", &clip);
    app.hold_encodes();
    let trigger = json!({"videoId": "closed", "inputPath": "clip.mp4"});
    let answer = app.api.trigger(&trigger, &[]).await;
    assert_eq!(answer.code, 202, "{:?}", answer.body);
    assert_eq!(app.api.get("/video-status/closed").await.code, 401);

    let browser = Browser::start(ws.path()).await;
    browser.open(&app.api.url("/player/closed")).await;
    // Held before its first encode: the page shows it processing, read from status.json.
    browser
        .wait_for("the held job", Duration::from_secs(30), |s| {
            s["state"] == "processing"
        })
        .await;
    app.release_encodes();
    let done = browser
        .wait_for("playback of the ready job", Duration::from_secs(120), |s| {
            s["state"] == "ready" && s["time"].as_f64().unwrap_or(0.0) > 1.0
        })
        .await;
    assert_eq!(done["engine"], "hls.js");
    assert_eq!(done["notice"], "", "the page reported a problem");
    browser.close().await;
    app.stop().await;
}

/// What the page shows, read in one script: the job state and text of the status element,
/// the notice, the video element and hls.js.
const SNAPSHOT: &str = "
const p = window.player, s = document.getElementById('status');
const n = document.getElementById('notice');
if (!p) return {state: s && s.dataset.state, text: s && s.textContent, notice: n && n.textContent};
const v = p.video;
return {state: s.dataset.state, text: s.textContent, notice: n.textContent,
  time: v.currentTime, paused: v.paused, ended: v.ended, seeking: v.seeking,
  readyState: v.readyState, engine: p.engine, variants: p.variants, reloads: p.reloads,
  reloadedAt: p.reloadedAt,
  levels: p.hls ? p.hls.levels.length : null, history: p.history,
  tiers: [...document.querySelectorAll('#tiers [data-tier]')].map((t) => ({tier: t.dataset.tier,
    percent: Number(t.dataset.percent), text: t.querySelector('span').textContent}))};";

/// Reading and waiting on what the page shows.
impl Browser {
    async fn snapshot(&self) -> Value {
        self.eval(SNAPSHOT).await
    }

    /// Polls the page until `done(snapshot)`; fails with the page's state and console after
    /// `timeout`.
    async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let snapshot = self.snapshot().await;
            if done(&snapshot) {
                return snapshot;
            }
            if started.elapsed() > timeout {
                panic!(
                    "no {what} after {timeout:?}: {snapshot:#}\nconsole: {:#}",
                    self.console().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The video plays on: two readings 0.5 s apart, with no reload between them, grow.
    async fn assert_advancing(&self) {
        let started = Instant::now();
        loop {
            let a = self.snapshot().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let b = self.snapshot().await;
            let (t0, t1) = (a["time"].as_f64().unwrap(), b["time"].as_f64().unwrap());
            if a["reloads"] == b["reloads"] && t1 > t0 + 0.1 && t0 > 0.0 {
                return;
            }
            if started.elapsed() > Duration::from_secs(15) {
                panic!(
                    "playback does not advance ({t0} s, then {t1} s): {b:#}\nconsole: {:#}",
                    self.console().await
                );
            }
        }
    }
}
