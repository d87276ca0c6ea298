//! Signed webhooks end to end: a real service (in-process, on 127.0.0.1) encodes short clips and
//! real HTTP receivers on 127.0.0.1 get the events, answer as scripted, and check signatures.

#[path = "../common/mod.rs"]
mod common;
mod receiver;

use std::time::Duration;

use common::*;
use receiver::{Answer, Receiver, garbage_fails_with_an_event, playable_and_ready_once, verify};

const SECRET: &str = "whsec_0123456789abcdef";

/// Service flags sending webhooks to `urls` (loopback allowed) with 200 ms as the first wait.
fn hook_flags(urls: &[&str]) -> Vec<String> {
    [
        "--webhook-url",
        &urls.join(","),
        "--webhook-secret",
        SECRET,
        "--webhook-allow-private",
        "true",
        "--webhook-retry-base-ms",
        "200",
    ]
    .map(str::to_string)
    .to_vec()
}

async fn spawn_with_hooks(urls: &[&str], extra: &[&str]) -> TestApp {
    let flags = hook_flags(urls);
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    spawn_app(&args).await
}

/// Uploads a 1 s clip and waits for its job to end; returns the video id and its status.
async fn encode_one(ws: &Workspace, app: &TestApp) -> (String, serde_json::Value) {
    let clip = ws.clip("clip.mp4", 320, 180, 1.0, true);
    let id = app.api.upload_accepted(&clip).await;
    let status = app.api.wait_final(&id).await;
    (id, status)
}

fn outbox(app: &TestApp) -> Vec<String> {
    files_under(&app.cdn_dir().join("webhooks/outbox"))
}

/// A job's receiver gets `video.playable` and `video.ready` once each, signed with the
/// secret, naming the video and its URLs; the outbox is empty afterwards and /metrics counts
/// the deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_sends_playable_and_ready_once_each_signed() {
    let ws = Workspace::new("hooks_signed");
    let hooks = Receiver::start(|_| Answer::Status(200)).await;
    let app = spawn_with_hooks(&[&hooks.url], &[]).await;
    let (id, status) = encode_one(&ws, &app).await;
    assert_eq!(status["state"], "ready", "{status:#}");
    hooks
        .wait_until("given ready", |h| h.counts().contains_key("video.ready"))
        .await;
    for got in playable_and_ready_once(&hooks, SECRET).await {
        let body = &got.json;
        assert_eq!(body["videoId"], id.as_str());
        assert_eq!(
            body["playbackUrl"],
            app.api.url(&format!("/videos/{id}/manifest/master.m3u8"))
        );
        assert_eq!(
            body["statusUrl"],
            app.api.url(&format!("/videos/{id}/status.json"))
        );
        // The poster is made once the first tier is ready: ready always names it, playable may.
        let poster = app.api.url(&format!("/videos/{id}/images/poster.jpg"));
        match body["type"].as_str() {
            Some("video.ready") => assert_eq!(body["posterUrl"], poster.as_str(), "{body:#}"),
            _ => assert!(
                body["posterUrl"].is_null() || body["posterUrl"] == poster.as_str(),
                "{body:#}"
            ),
        }
        assert!(
            body["id"].as_str().is_some_and(|i| i.len() == 36),
            "{body:#}"
        );
        assert_eq!(body["playable"], true);
    }
    let ready = hooks
        .received()
        .into_iter()
        .find(|r| r.json["type"] == "video.ready")
        .unwrap();
    assert_eq!(ready.json["state"], "ready");
    let (_, playback) = app
        .api
        .text(&format!("/videos/{id}/manifest/master.m3u8"))
        .await;
    assert!(
        playback.starts_with("#EXTM3U"),
        "the playback URL serves the master"
    );
    assert!(outbox(&app).is_empty(), "{:?}", outbox(&app));
    let (_, metrics) = app.api.text("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("transcoder_webhook_deliveries_total")
                && l.contains(r#"event="video.ready""#)
                && l.contains(r#"result="delivered""#)),
        "{metrics}"
    );
    app.stop().await;
}

/// A receiver that answers 500 twice gets each event on the third attempt, the same event
/// (id and body) every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_twice_gets_each_event_on_the_third_attempt() {
    let ws = Workspace::new("hooks_retry");
    let hooks = Receiver::start(|n| Answer::Status(if n <= 2 { 500 } else { 200 })).await;
    let app = spawn_with_hooks(&[&hooks.url], &[]).await;
    let (_, status) = encode_one(&ws, &app).await;
    assert_eq!(status["state"], "ready", "{status:#}");
    hooks
        .wait_until("given each event thrice", |h| {
            let c = h.counts();
            c.get("video.ready") == Some(&3) && c.get("video.playable") == Some(&3)
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = hooks.counts();
    assert_eq!(
        counts.get("video.ready"),
        Some(&3),
        "no attempt after the 200: {counts:?}"
    );
    let ready: Vec<_> = hooks
        .received()
        .into_iter()
        .filter(|r| r.json["type"] == "video.ready")
        .collect();
    assert!(
        ready.iter().all(|r| r.body == ready[0].body),
        "the same body every attempt"
    );
    for got in &ready {
        verify(got, SECRET).unwrap();
    }
    assert!(outbox(&app).is_empty(), "{:?}", outbox(&app));
    app.stop().await;
}

/// A 410 stops the retries of that event: one attempt each, nothing left in the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_stops_retries() {
    let ws = Workspace::new("hooks_gone");
    let hooks = Receiver::start(|_| Answer::Status(410)).await;
    let app = spawn_with_hooks(&[&hooks.url], &[]).await;
    let (_, status) = encode_one(&ws, &app).await;
    assert_eq!(status["state"], "ready", "{status:#}");
    hooks
        .wait_until("given ready", |h| h.counts().contains_key("video.ready"))
        .await;
    // With 200 ms as the first wait, a retry would come within this.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let counts = hooks.counts();
    assert_eq!(counts.get("video.ready"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("video.playable"), Some(&1), "{counts:?}");
    assert!(outbox(&app).is_empty(), "{:?}", outbox(&app));
    app.stop().await;
}

/// A redirect is not followed: the target never hears of the event, and the redirecting
/// receiver is tried again (a redirect is not a delivery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed() {
    let ws = Workspace::new("hooks_redirect");
    let target = Receiver::start(|_| Answer::Status(200)).await;
    let port = target.port;
    let redirecting = Receiver::start(move |_| Answer::RedirectTo(port)).await;
    let app = spawn_with_hooks(&[&redirecting.url], &[]).await;
    let (_, status) = encode_one(&ws, &app).await;
    assert_eq!(status["state"], "ready", "{status:#}");
    redirecting
        .wait_until("asked twice for ready", |h| {
            h.counts().get("video.ready") >= Some(&2)
        })
        .await;
    assert!(target.received().is_empty(), "{:?}", target.counts());
    app.stop().await;
}

/// Receivers that answer with 10 MB or never answer do not hold up jobs or requests: a job
/// ends ready while they are being tried, the service answers, and the hanging receiver's
/// attempts end (it is asked again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_receivers_do_not_stall_the_service() {
    let ws = Workspace::new("hooks_hostile");
    let huge = Receiver::start(|_| Answer::Huge).await;
    let hanging = Receiver::start(|_| Answer::Hang).await;
    let app = spawn_with_hooks(&[&huge.url, &hanging.url], &[]).await;
    let (_, status) = encode_one(&ws, &app).await;
    assert_eq!(status["state"], "ready", "{status:#}");
    hanging
        .wait_until("asked for ready", |h| {
            h.counts().contains_key("video.ready")
        })
        .await;
    let clip = ws.clip("second.mp4", 320, 180, 1.0, false);
    let second = app.api.upload_accepted(&clip).await;
    assert_eq!(app.api.wait_final(&second).await["state"], "ready");
    assert_eq!(app.api.get("/healthz").await.code, 200);
    // A 10 MB answer is a 200: delivered once per event, its body dropped after 64 KiB.
    huge.wait_until("given both videos' ready", |h| {
        h.counts().get("video.ready") == Some(&2)
    })
    .await;
    // An attempt that never gets an answer ends after 10 s and is retried.
    hanging
        .wait_until("asked again after the 10 s limit", |h| {
            h.received().len() > h.counts().len() * 2
        })
        .await;
    app.stop().await;
}

/// An event whose receiver was down is still in the outbox when the service stops; the next
/// start delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_delivers_what_the_outbox_holds() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let ws = Workspace::new("hooks_restart");
    let up = Arc::new(AtomicBool::new(false));
    let is_up = up.clone();
    let hooks = Receiver::start(move |_| {
        Answer::Status(if is_up.load(Ordering::SeqCst) {
            200
        } else {
            503
        })
    })
    .await;
    let output = ws.path().join("cdn");
    let output_flag = output.to_string_lossy().into_owned();
    let app = spawn_with_hooks(&[&hooks.url], &["--output-store", &output_flag]).await;
    let (_, status) = encode_one(&ws, &app).await;
    assert_eq!(status["state"], "ready", "{status:#}");
    hooks
        .wait_until("asked for ready", |h| {
            h.counts().contains_key("video.ready")
        })
        .await;
    app.stop().await;
    let left = files_under(&output.join("webhooks/outbox"));
    assert_eq!(
        left.len(),
        2,
        "playable and ready wait in the outbox: {left:?}"
    );

    up.store(true, Ordering::SeqCst);
    let before = hooks.received().len();
    let restarted = spawn_with_hooks(&[&hooks.url], &["--output-store", &output_flag]).await;
    hooks
        .wait_until("given both events after the restart", |h| {
            let after = &h.received()[before..];
            ["video.playable", "video.ready"]
                .iter()
                .all(|kind| after.iter().any(|r| r.json["type"] == *kind))
        })
        .await;
    let outbox_empty = || files_under(&output.join("webhooks/outbox")).is_empty();
    for _ in 0..50 {
        if outbox_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(outbox_empty(), "delivered events leave the outbox");
    restarted.stop().await;
}

/// A receiver on loopback or the metadata server is refused at start-up unless private
/// receivers are allowed, with a message that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_receiver_is_refused_at_start_up() {
    for url in [
        "http://127.0.0.1:9/hooks",
        "http://169.254.169.254/computeMetadata/v1/",
        "http://metadata.google.internal/",
        "http://localhost:8080/",
    ] {
        let root = tempfile::tempdir().unwrap();
        let args = ["--webhook-url", url, "--webhook-secret", SECRET];
        let settings = settings(root.path(), &args);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let memory = std::sync::Arc::new(video_transcoder::jobs::scheduler::FixedMemory(
            std::sync::atomic::AtomicU64::new(PLENTY_OF_MEMORY),
        ));
        let served =
            video_transcoder::server::serve(listener, settings, memory, std::future::pending());
        let error = tokio::time::timeout(Duration::from_secs(30), served)
            .await
            .expect("refused at once")
            .expect_err("a private receiver is refused")
            .to_string();
        assert!(
            error.contains("WEBHOOK_URL") && error.contains("WEBHOOK_ALLOW_PRIVATE"),
            "{url}: {error}"
        );
    }
}

/// A job that fails sends `video.failed` with the reason, and no `video.playable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_sends_video_failed_with_the_reason() {
    let ws = Workspace::new("hooks_failed");
    let hooks = Receiver::start(|_| Answer::Status(204)).await;
    let app = spawn_with_hooks(&[&hooks.url], &[]).await;
    garbage_fails_with_an_event(&ws, &app.api, &hooks, SECRET).await;
    assert!(
        !hooks.counts().contains_key("video.playable"),
        "{:?}",
        hooks.counts()
    );
    app.stop().await;
}
