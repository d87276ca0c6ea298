//! Shutdown and resume on the real binary: SIGTERM mid-encode then a new trigger, a SIGKILLed
//! instance whose job reads interrupted and resumes, and SIGTERM with an upload in flight.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::common::*;
use crate::support::*;

/// The real binary in a blocking thread (it polls its log until it serves).
async fn start_server(root: &Path) -> ServerProcess {
    let root = root.to_owned();
    tokio::task::spawn_blocking(move || {
        ServerProcess::start(
            &root,
            &[
                ("MAX_PARALLEL_ENCODES", "1"),
                ("DECODE_PLAN", "per-tier"),
                ("SHUTDOWN_GRACE", "8"),
            ],
        )
    })
    .await
    .unwrap()
}

/// SIGTERM and its exit code, from a blocking thread.
async fn terminate(mut server: ServerProcess) -> (Option<i32>, ServerProcess) {
    tokio::task::spawn_blocking(move || (server.terminate(), server))
        .await
        .unwrap()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", path.display()))
}

/// Uploads `clip` (720p) and waits until the critical tier is playable and the 720p is encoding.
async fn upload_until_720p_encodes(api: &Api, clip: &Path) -> String {
    let id = api.upload_accepted(clip).await;
    let seen = api
        .wait_for(&id, |s| {
            let encoding_720 = find(s, "720p").is_some_and(|r| r["state"] == "encoding");
            (s["playable"] == true && encoding_720) || is_final(s)
        })
        .await;
    assert_eq!(seen["state"], "processing", "{seen:#}");
    id
}

/// The resumed run kept the critical renditions of `before` (same start times) and encoded the
/// 720p after `restarted`.
fn assert_only_720p_encoded_again(before: &Value, after: &Value, restarted: DateTime<Utc>) {
    for old in of_tier(before, "critical") {
        let name = old["name"].as_str().unwrap();
        assert_eq!(
            rendition(after, name)["started"],
            old["started"],
            "{name} was encoded again: {after:#}"
        );
    }
    let started_720 = at(&rendition(after, "720p")["started"]);
    assert!(started_720 > restarted, "720p started {started_720}");
}

/// SIGTERM mid-encode stops cleanly (exit 0, status.json `interrupted` with the critical tier
/// ready, scratch removed); triggering the same source again on a new process resumes: the
/// critical renditions are kept (not encoded again) and only the 720p is encoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_interrupts_and_a_new_trigger_encodes_only_what_is_missing() {
    let ws = Workspace::new("sched_resume");
    let clip = ws.clip("clip.mp4", 1280, 720, 8.0, true);
    let root = ws.subdir("root");

    let server = start_server(&root).await;
    let id = upload_until_720p_encodes(&server.api, &clip).await;
    let (code, server) = terminate(server).await;
    let log = server.log_text();
    assert_eq!(code, Some(0), "log:\n{log}");
    assert_eq!(
        decode_passes(&log),
        [
            r#"["144p", "240p", "360p", "480p", "audio"]"#,
            r#"["720p"]"#
        ],
        "passes before SIGTERM; log:\n{log}"
    );

    let before = read_json(&root.join(format!("cdn/videos/{id}/status.json")));
    assert_eq!(before["state"], "interrupted", "{before:#}");
    for r in of_tier(&before, "critical") {
        assert_eq!(r["state"], "ready", "{before:#}");
    }
    assert_ne!(rendition(&before, "720p")["state"], "ready", "{before:#}");
    let scratch_left: Vec<_> = std::fs::read_dir(root.join("scratch"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(scratch_left.is_empty(), "scratch left: {scratch_left:?}");

    let key = std::fs::read_dir(root.join("input/pending"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with(&format!("{id}_")))
        .map(|name| format!("pending/{name}"))
        .expect("the upload under input/pending");

    let restarted = Utc::now();
    let server = start_server(&root).await;
    let accepted = server
        .api
        .trigger(&json!({"videoId": id, "inputPath": key}), &[])
        .await;
    assert!(
        matches!(accepted.code, 200 | 202),
        "{}: {:?}",
        accepted.code,
        accepted.body
    );
    let again = server
        .api
        .trigger(&json!({"videoId": id, "inputPath": key}), &[])
        .await;
    assert_eq!(again.code, 200, "a duplicate trigger: {:?}", again.body);
    let after = server.api.wait_final(&id).await;
    assert_eq!(after["state"], "ready", "{after:#}");
    let done = server
        .api
        .trigger(&json!({"videoId": id, "inputPath": key}), &[])
        .await;
    assert_eq!(done.code, 200, "a trigger once ready: {:?}", done.body);
    assert_eq!(done.body["status"], "ready", "{:?}", done.body);
    assert_only_720p_encoded_again(&before, &after, restarted);
    let variants = master_variants(&server.api, &id).await;
    assert!(variants.iter().any(|v| v == "720p"), "{variants:?}");
    let (code, server) = terminate(server).await;
    let log = server.log_text();
    assert_eq!(code, Some(0), "log:\n{log}");
    let passes = decode_passes(&log);
    assert_eq!(
        passes,
        ["[\"720p\"]"],
        "passes of the resumed run; log:\n{log}"
    );
}

/// A process killed outright (no shutdown grace) leaves status.json saying `processing`; once
/// nobody has rewritten it for a minute, the status endpoint reports it `interrupted` with what
/// to do, and a new trigger resumes it: the critical renditions published before the kill are
/// kept, the 720p is encoded again. The new process removes the dead one's scratch folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_leaves_a_job_that_reads_interrupted_and_resumes() {
    let ws = Workspace::new("sched_killed");
    let clip = ws.clip("clip.mp4", 1280, 720, 8.0, true);
    let root = ws.subdir("root");

    let mut server = start_server(&root).await;
    let id = upload_until_720p_encodes(&server.api, &clip).await;
    // status.json is written at most once a second: the kill comes once it has the 720p start.
    let path = root.join(format!("cdn/videos/{id}/status.json"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while find(&read_json(&path), "720p").is_none_or(|r| r["state"] != "encoding") {
        assert!(std::time::Instant::now() < deadline, "status.json lags");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.child.kill().unwrap(); // SIGKILL: no chance to record anything
    server.child.wait().unwrap();

    // What the status file looks like a minute later: nobody has written it since.
    let mut left = read_json(&path);
    assert_eq!(left["state"], "processing", "{left:#}");
    let stale = (Utc::now() - chrono::Duration::minutes(2)).to_rfc3339();
    left["timestamps"]["updated"] = json!(stale);
    std::fs::write(&path, serde_json::to_vec_pretty(&left).unwrap()).unwrap();

    let scratch = |root: &Path| std::fs::read_dir(root.join("scratch")).unwrap().count();
    assert_eq!(
        scratch(&root),
        1,
        "the killed process left its scratch folder"
    );

    let restarted = Utc::now();
    let server = start_server(&root).await;
    assert_eq!(
        scratch(&root),
        0,
        "the new process removed the dead one's scratch"
    );
    let shown = server.api.status(&id).await;
    assert_eq!(shown["state"], "interrupted", "{shown:#}");
    let reason = shown["error"].as_str().unwrap_or_default();
    assert!(reason.contains("trigger it again"), "{reason}");

    let key = format!(
        "pending/{}",
        left["input"].as_str().unwrap().rsplit('/').next().unwrap()
    );
    let accepted = server
        .api
        .trigger(&json!({"videoId": id, "inputPath": key}), &[])
        .await;
    assert_eq!(accepted.code, 202, "{:?}", accepted.body);
    let after = server.api.wait_final(&id).await;
    assert_eq!(after["state"], "ready", "{after:#}");
    for old in of_tier(&left, "critical") {
        assert_eq!(old["state"], "ready", "{left:#}");
    }
    assert_only_720p_encoded_again(&left, &after, restarted);
    let (code, server) = terminate(server).await;
    assert_eq!(code, Some(0), "log:\n{}", server.log_text());
    assert_eq!(decode_passes(&server.log_text()), ["[\"720p\"]"]);
}

/// SIGTERM with an upload still arriving: the server lets the request finish and answers it
/// (503, shutting down: the file is not kept and no job starts), then exits 0 within its grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_an_upload_in_flight() {
    let ws = Workspace::new("sched_inflight");
    let root = ws.subdir("root");
    let server = start_server(&root).await;

    // 2 MiB sent in 20 slow chunks: about 2 s on the wire.
    let chunks = futures_util::stream::iter(0..20).then(|_| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<_, std::io::Error>(vec![0u8; 100 * 1024])
    });
    let part =
        reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(chunks)).file_name("slow.mp4");
    let form = reqwest::multipart::Form::new().part("file", part);
    let api = server.api.clone();
    let upload = tokio::spawn(async move { api.try_upload_form(form).await });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (code, server) = terminate(server).await;
    let answer = upload
        .await
        .unwrap()
        .expect("the upload in flight got an answer");
    assert_eq!(answer.code, 503, "{:?}", answer.body);
    assert_eq!(
        answer.body["error"]["code"], "unavailable",
        "{:?}",
        answer.body
    );
    assert_eq!(code, Some(0), "log:\n{}", server.log_text());
    let kept = files_under(&root.join("input"));
    assert!(kept.is_empty(), "the refused upload was kept: {kept:?}");
}

/// The `renditions` of every "decode pass started" line of a JSON server log.
fn decode_passes(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "decode pass started")
        .map(|l| match &l["renditions"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}
