//! What the player page shows besides playback: hls.js from the service itself, the poster,
//! the quality menu, storyboard previews on the seek bar and a failed job's reason.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::browser::Browser;
use crate::common::*;

/// The hls.js release build.rs pins.
const HLS_JS_VERSION: &str = "1.7.4";

/// Where a test saves its screenshot: `$SCREENSHOT_DIR/<name>` when set (README's pictures are
/// made with `SCREENSHOT_DIR=docs`), else the test's workspace.
pub fn screenshot_path(ws: &Workspace, name: &str) -> PathBuf {
    match std::env::var_os("SCREENSHOT_DIR") {
        Some(dir) => Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).join(name),
        None => ws.path().join(name),
    }
}

/// With no `HLS_JS_URL`, the page loads the pinned hls.js the service embeds, served with a
/// year-long immutable cache and a version in its URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_is_served_by_the_service_itself() {
    let app = spawn_app(&[]).await;
    let answer = reqwest::get(app.api.url("/assets/hls.min.js"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let header = |name: &str| answer.headers()[name].to_str().unwrap().to_string();
    assert_eq!(header("content-type"), "text/javascript; charset=utf-8");
    assert_eq!(
        header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    let script = answer.text().await.unwrap();
    assert!(script.len() > 100_000, "{} bytes", script.len());
    assert!(
        script.contains(&format!("\"{HLS_JS_VERSION}\"")),
        "not hls.js {HLS_JS_VERSION}"
    );

    let (code, html) = app.api.text("/player/some-video").await;
    assert_eq!(code, 200);
    let expected = format!("\"hlsJsUrl\":\"../assets/hls.min.js?v={HLS_JS_VERSION}\"");
    assert!(html.contains(&expected), "{html}");
    app.stop().await;
}

/// A ready video with images (written here as the images contract says status.json lists
/// them): the page shows the poster, a quality menu with auto and each level, the level
/// playing with its bandwidth, and the storyboard tile for the time under the pointer on the
/// seek bar. hls.js comes from the service (no `HLS_JS_URL`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_page_shows_poster_levels_and_storyboard() {
    let ws = Workspace::new("player_pictures");
    let clip = ws.clip("clip.mp4", 640, 360, 4.0, true);
    let flags = [
        "--open-status",
        "false",
        "--upload-token",
        "pictures-upload-token",
    ];
    let app = spawn_app(&[&flags[..], &["--ladder", "360:800,144:200"]].concat()).await;
    app.put_input("clip.mp4", &clip);
    let answer = app
        .api
        .trigger(
            &json!({"videoId": "pictures", "inputPath": "clip.mp4"}),
            &[],
        )
        .await;
    assert_eq!(answer.code, 202, "{:?}", answer.body);
    let status_file = app.cdn_dir().join("videos/pictures/status.json");
    let status = final_status_in(&status_file).await;
    assert_eq!(status["state"], "ready", "{status:#}");
    add_images(&app.cdn_dir().join("videos/pictures"), &status_file);

    let browser = Browser::start(ws.path()).await;
    browser.open(&app.api.url("/player/pictures")).await;
    let poster = app.api.url("/videos/pictures/images/poster.jpg");
    wait_page(&browser, "the poster", |p| p["poster"] == poster.as_str()).await;
    let shown = wait_page(&browser, "playback with two levels", |p| {
        p["time"].as_f64().unwrap_or(0.0) > 0.5 && p["options"].as_array().unwrap().len() == 3
    })
    .await;
    let options: Vec<&str> = shown["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert_eq!(options[0], "Auto");
    assert!(options[1].starts_with("360p · "), "{options:?}");
    assert!(options[2].starts_with("144p · "), "{options:?}");
    let level = shown["level"].as_str().unwrap();
    assert!(
        level.starts_with("Playing ") && level.contains("p at ") && level.ends_with(" kb/s"),
        "{level}"
    );

    // Pick 144p: hls.js switches to it and the page says so.
    let index = browser
        .eval(
            "const q = document.getElementById('quality'); \
             const o = [...q.options].find((o) => o.textContent.startsWith('144p')); \
             q.value = o.value; q.dispatchEvent(new Event('change')); return Number(o.value);",
        )
        .await;
    let picked = wait_page(&browser, "the 144p level", |p| {
        p["level"]
            .as_str()
            .unwrap_or("")
            .starts_with("Playing 144p at ")
    })
    .await;
    assert_eq!(picked["manual"], index);

    // The pointer at 60 % of the seek bar (2.4 s of 4 s): the third tile (0,90 in the sprite).
    browser.hover("#seekbar", 0.6).await;
    let preview = wait_page(&browser, "the storyboard preview", |p| {
        p["preview"]["hidden"] == false
    })
    .await;
    let preview = &preview["preview"];
    assert!(
        preview["image"]
            .as_str()
            .unwrap()
            .contains("/videos/pictures/images/storyboard.jpg"),
        "{preview}"
    );
    assert_eq!(preview["position"], "0px -90px", "{preview}");
    assert_eq!(preview["size"], "160px 90px", "{preview}");
    browser
        .screenshot(&screenshot_path(&ws, "player.png"))
        .await;
    browser.close().await;
    app.stop().await;
}

/// A job that failed says so in a message that carries the reason from status.json.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_page_explains_a_failed_job() {
    let ws = Workspace::new("player_failed");
    let noise: Vec<u8> = (0..200_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let clip = ws.path().join("noise.mp4");
    std::fs::write(&clip, noise).unwrap();
    let app = spawn_app(&[]).await;
    let id = app.api.upload_accepted(&clip).await;
    let status = app.api.wait_final(&id).await;
    assert_eq!(status["state"], "failed", "{status:#}");
    let reason = status["error"].as_str().unwrap();

    let browser = Browser::start(ws.path()).await;
    browser.open(&app.api.url(&format!("/player/{id}"))).await;
    let shown = wait_page(&browser, "the failure message", |p| {
        p["message"]["hidden"] == false
    })
    .await;
    assert_eq!(shown["message"]["kind"], "failed");
    let text = shown["message"]["text"].as_str().unwrap();
    assert!(
        text.starts_with("This video could not be made.") && text.contains(reason),
        "{text}"
    );
    browser.close().await;
    app.stop().await;
}

/// Polls status.json in the output store until it reaches a final state.
async fn final_status_in(path: &Path) -> Value {
    let started = std::time::Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(status) = serde_json::from_str::<Value>(&text)
            && ["ready", "partial", "failed"].contains(&status["state"].as_str().unwrap_or(""))
        {
            return status;
        }
        assert!(
            started.elapsed() < JOB_TIMEOUT,
            "no final status in {path:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A poster and a 2×2 storyboard of 160×90 tiles, one a second, made with the ffmpeg CLI into
/// `video/images/`, and listed in status.json as the images contract says.
fn add_images(video: &Path, status_file: &Path) {
    let images = video.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let poster = images.join("poster.jpg");
    let sprite = images.join("storyboard.jpg");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360",
        "-frames:v",
        "1",
        poster.to_str().unwrap(),
    ]);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x90:rate=1",
        "-vf",
        "tile=2x2",
        "-frames:v",
        "1",
        sprite.to_str().unwrap(),
    ]);
    let mut vtt = String::from("WEBVTT\n");
    for (i, (x, y)) in [(0, 0), (160, 0), (0, 90), (160, 90)].iter().enumerate() {
        vtt += &format!(
            "\n00:00:0{i}.000 --> 00:00:0{}.000\nstoryboard.jpg#xywh={x},{y},160,90\n",
            i + 1
        );
    }
    std::fs::write(images.join("storyboard.vtt"), vtt).unwrap();
    let mut status: Value = serde_json::from_slice(&std::fs::read(status_file).unwrap()).unwrap();
    status["images"] = json!({
        "poster": "images/poster.jpg", "posterWidth": 640, "posterHeight": 360,
        "storyboard": "images/storyboard.vtt", "storyboardImage": "images/storyboard.jpg",
    });
    std::fs::write(status_file, status.to_string()).unwrap();
}

/// The page's controls, read in one script.
const CONTROLS: &str = "
const v = document.getElementById('video'), q = document.getElementById('quality');
const m = document.getElementById('message'), pv = document.getElementById('preview');
const hls = window.player && window.player.hls;
return {time: v.currentTime, poster: v.getAttribute('poster'), options: q ? [...q.options].map((o) => o.textContent) : [],
  level: (document.getElementById('level') || {}).textContent || '',
  manual: hls ? hls.manualLevel : null,
  message: m ? {hidden: m.hidden, kind: m.dataset.kind || null, text: m.textContent} : null,
  preview: pv ? {hidden: pv.hidden, image: pv.style.backgroundImage,
    position: pv.style.backgroundPosition, size: pv.style.width + ' ' + pv.style.height} : null};";

/// Polls the page's controls until `done`; fails with them and the console after 60 s.
async fn wait_page(browser: &Browser, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = std::time::Instant::now();
    loop {
        let shown = browser.eval(CONTROLS).await;
        if done(&shown) {
            return shown;
        }
        if started.elapsed() > Duration::from_secs(60) {
            panic!(
                "no {what}: {shown:#}\nconsole: {:#}",
                browser.console().await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
