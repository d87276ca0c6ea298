//! Triggering a video again after a run that did not finish everything: a `partial` video gets
//! its failed renditions redone and keeps the ready ones, a retry that cannot even start leaves
//! the earlier output as it was, and renditions made under other encoding settings are never
//! mixed with new ones.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::common::*;
use crate::support::*;

/// Two rungs in two tiers, so the memory guard can admit one pass and not the other.
const LADDER: &str = "720:1500,240:300";

/// Settings for the partial run: one pass per tier, no reserve, and a memory wait of 10 s.
const PARTIAL_RUN: [&str; 8] = [
    "--ladder",
    LADDER,
    "--decode-plan",
    "per-tier",
    "--memory-reserve-mb",
    "0",
    "--rendition-timeout",
    "10",
];

/// Triggers `id` from `path` and lets memory fit the critical pass (240p and audio) but not the
/// 720p one, which fails for a passing reason (not enough memory); returns the final status,
/// `partial`.
async fn partial_run(app: &TestApp, id: &str, path: &str) -> Value {
    app.hold_encodes();
    let answer = app.api.trigger(&trigger(id, path), &[]).await;
    assert_eq!(answer.code, 202, "{:?}", answer.body);
    let status = app.api.wait_for(id, |s| planned(s) || is_final(s)).await;
    assert!(planned(&status), "{status:#}");
    let (critical, standard) = (
        pass_bytes(&status, "critical"),
        pass_bytes(&status, "standard"),
    );
    assert!(critical < standard, "{critical} vs {standard}");
    app.memory.0.store(
        (critical + standard) / 2,
        std::sync::atomic::Ordering::Relaxed,
    );
    let status = app.api.wait_final(id).await;
    assert_eq!(status["state"], "partial", "{status:#}");
    let failed = rendition(&status, "720p");
    assert_eq!(failed["state"], "failed", "{status:#}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("not enough memory")),
        "{failed:#}"
    );
    for name in ["240p", "audio"] {
        assert_eq!(rendition(&status, name)["state"], "ready", "{status:#}");
    }
    status
}

fn trigger(id: &str, path: &str) -> Value {
    json!({"videoId": id, "inputPath": path})
}

/// Every published file of a rendition with its modification time (a re-encode rewrites them).
fn file_times(dir: &Path) -> Vec<(String, SystemTime)> {
    let files = files_under(dir);
    assert!(!files.is_empty(), "nothing in {}", dir.display());
    files
        .into_iter()
        .map(|f| {
            let time = std::fs::metadata(dir.join(&f)).unwrap().modified().unwrap();
            (f, time)
        })
        .collect()
}

fn manifest(cdn: &Path, id: &str) -> PathBuf {
    cdn.join("videos").join(id).join("manifest")
}

/// A `partial` video (its 720p failed waiting for memory) triggered again: with the source gone,
/// the retry ends `partial` with the earlier output as it was; with the source back, it answers
/// 202, a duplicate delivery while it runs finds that job (200), the 720p is encoded, and the
/// ready 240p and audio are kept untouched (same files, same start times).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_video_triggered_again_redoes_only_what_failed() {
    let ws = Workspace::new("retry_partial");
    let clip = ws.clip("clip.mp4", 1280, 720, 1.0, true);
    let app = spawn_app(&PARTIAL_RUN).await;
    app.put_input("incoming/clip.mp4", &clip);
    let (id, api) = ("retry-partial", &app.api);
    let first = partial_run(&app, id, "incoming/clip.mp4").await;
    // Partial: the download holds the tallest rendition that finished.
    assert_eq!(first["download"]["rendition"], "240p", "{first:#}");
    let dirs = ["240p", "audio"].map(|n| manifest(&app.cdn_dir(), id).join(n));
    let files = dirs.clone().map(|d| file_times(&d));
    app.release_encodes();

    // The source is gone: the retry cannot start, and what the first run made stands.
    let source = app.input_dir().join("incoming/clip.mp4");
    std::fs::remove_file(&source).unwrap();
    let answer = api.trigger(&trigger(id, "incoming/clip.mp4"), &[]).await;
    assert_eq!(answer.code, 202, "{:?}", answer.body);
    let status = api.wait_final(id).await;
    assert_eq!(status["state"], "partial", "{status:#}");
    assert_eq!(status["playable"], true, "{status:#}");
    assert_eq!(status["renditions"], first["renditions"], "{status:#}");
    assert_eq!(status["encoding"], first["encoding"], "{status:#}");
    assert_eq!(status["download"], first["download"], "{status:#}");
    assert!(
        status["error"]
            .as_str()
            .is_some_and(|e| e.contains("does not exist")),
        "{status:#}"
    );
    assert_eq!(master_variants(api, id).await, ["240p"]);

    // The source is back: the failed rendition is redone, once.
    app.put_input("incoming/clip.mp4", &clip);
    let answer = api.trigger(&trigger(id, "incoming/clip.mp4"), &[]).await;
    assert_eq!(answer.code, 202, "{:?}", answer.body);
    let again = api.trigger(&trigger(id, "incoming/clip.mp4"), &[]).await;
    assert_eq!(again.code, 200, "{:?}", again.body);
    let state = again.body["status"].as_str().unwrap_or_default();
    assert!(matches!(state, "queued" | "processing"), "{:?}", again.body);

    let done = api.wait_final(id).await;
    assert_eq!(done["state"], "ready", "{done:#}");
    assert_eq!(done["encoding"], first["encoding"], "{done:#}");
    for name in ["240p", "audio"] {
        assert_eq!(
            rendition(&done, name)["started"],
            rendition(&first, name)["started"],
            "{name} was encoded again: {done:#}"
        );
    }
    assert_eq!(
        dirs.map(|d| file_times(&d)),
        files,
        "kept files were rewritten"
    );
    let mut variants = master_variants(api, id).await;
    variants.sort();
    assert_eq!(variants, ["240p", "720p"]);
    // The resumed run remade the download from the 720p it encoded and the audio it kept.
    assert_eq!(done["download"]["rendition"], "720p", "{done:#}");
    let download = app.cdn_dir().join(format!("videos/{id}/download.mp4"));
    let probed = probe(&download);
    assert_eq!(
        num(&stream(&probed, "video").unwrap()["height"]),
        Some(720.0)
    );
    assert!(stream(&probed, "audio").is_some(), "{probed:#}");
    assert_eq!(
        done["download"]["bytes"].as_u64(),
        Some(std::fs::metadata(&download).unwrap().len())
    );
    app.stop().await;
}

/// Renditions an earlier run published under other encoding settings are not resumed: after a
/// partial run with fMP4 segments, an instance set to MPEG-TS segments withdraws the master at
/// once, encodes every rendition again, and every playlist the new master lists is TS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_under_changed_settings_encodes_every_rendition_again() {
    let ws = Workspace::new("retry_settings");
    let clip = ws.clip("clip.mp4", 1280, 720, 1.0, true);
    let stores = tempfile::tempdir().unwrap();
    let (input, cdn) = (stores.path().join("input"), stores.path().join("cdn"));
    std::fs::create_dir_all(input.join("incoming")).unwrap();
    std::fs::copy(&clip, input.join("incoming/clip.mp4")).unwrap();
    let (input_arg, cdn_arg) = (input.to_str().unwrap(), cdn.to_str().unwrap());
    let stores_args = ["--input-store", input_arg, "--output-store", cdn_arg];
    let id = "retry-settings";

    let mut args = PARTIAL_RUN.to_vec();
    args.extend(stores_args);
    let first_app = spawn_app(&args).await;
    let first = partial_run(&first_app, id, "incoming/clip.mp4").await;
    first_app.stop().await;

    args.extend(["--segment-type", "ts"]);
    let app = spawn_app(&args).await;
    app.hold_encodes();
    let answer = app
        .api
        .trigger(&trigger(id, "incoming/clip.mp4"), &[])
        .await;
    assert_eq!(answer.code, 202, "{:?}", answer.body);
    // Before anything is re-encoded, no master lists the fMP4 renditions being replaced.
    let held = app.api.wait_for(id, |s| planned(s) || is_final(s)).await;
    assert!(planned(&held), "{held:#}");
    assert_eq!(held["playable"], false, "{held:#}");
    assert!(!manifest(&cdn, id).join("master.m3u8").exists());
    app.release_encodes();
    let done = app.api.wait_final(id).await;
    assert_eq!(done["state"], "ready", "{done:#}");
    assert!(done["encoding"].is_string(), "{done:#}");
    assert_ne!(done["encoding"], first["encoding"], "{done:#}");
    for name in ["240p", "audio"] {
        assert_ne!(
            rendition(&done, name)["started"],
            rendition(&first, name)["started"],
            "{name} was kept from the fMP4 run: {done:#}"
        );
    }
    let mut variants = master_variants(&app.api, id).await;
    variants.sort();
    assert_eq!(variants, ["240p", "720p"]);
    for name in ["240p", "720p", "audio"] {
        let playlist = manifest(&cdn, id).join(name).join("index.m3u8");
        let text = std::fs::read_to_string(&playlist).unwrap();
        assert!(
            text.contains(".ts") && !text.contains("#EXT-X-MAP") && !text.contains(".m4s"),
            "{name}: {text}"
        );
    }
    app.stop().await;
}
