//! Helpers the API tests share: small clips and noise files, the JSON error body, the direct
//! trigger, waiting for a held job, and status.json as the job wrote it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

/// A tiny clip (one 144p rendition plus audio): the cheapest real encode.
pub fn small_clip(ws: &Workspace, name: &str) -> PathBuf {
    ws.clip(name, 256, 144, 2.0, true)
}

/// `len` pseudo-random bytes (xorshift64*): not a video, and not compressible.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `noise(len, seed)` to `path`.
pub fn write_noise(path: &Path, len: usize, seed: u64) -> PathBuf {
    std::fs::write(path, noise(len, seed)).unwrap();
    path.to_path_buf()
}

/// Asserts an error answer: the status code and the body `{"error": {"code", "message"}}`
/// with a non-empty message; returns the message.
pub fn assert_error(answer: &Answer, status: u16, code: &str) -> String {
    assert_eq!(answer.code, status, "{:?}", answer.body);
    let error = &answer.body["error"];
    assert_eq!(error["code"], code, "{:?}", answer.body);
    let message = error["message"].as_str().unwrap_or_default();
    assert!(!message.trim().is_empty(), "no message: {:?}", answer.body);
    assert_eq!(
        answer.body.as_object().map(|o| o.len()),
        Some(1),
        "only `error` at the top: {:?}",
        answer.body
    );
    message.to_string()
}

/// The direct trigger body.
pub fn direct_trigger(video_id: &str, input_path: &str) -> Value {
    json!({
        "videoId": video_id,
        "inputBucket": "in",
        "inputPath": input_path,
        "outputBucket": "cdn",
    })
}

/// Waits until the job is `processing` with its renditions planned and all still pending:
/// with available memory at 0, it stays like this in the scheduler.
pub async fn wait_held(api: &Api, id: &str) -> Value {
    api.wait_for(id, |s| {
        s["state"] == "processing"
            && s["renditions"]
                .as_array()
                .is_some_and(|r| !r.is_empty() && r.iter().all(|r| r["state"] == "pending"))
    })
    .await
}

/// status.json as the job last wrote it to the output store.
pub async fn status_file(app: &TestApp, id: &str) -> Value {
    let path = app.cdn_dir().join(format!("videos/{id}/status.json"));
    let text = tokio::fs::read_to_string(&path)
        .await
        .unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// status.json once it records a final state: the live status a client polls turns final an
/// instant before the job's last write of status.json.
pub async fn final_status_file(app: &TestApp, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let status = status_file(app, id).await;
        if !matches!(status["state"].as_str(), Some("queued" | "processing")) {
            return status;
        }
        assert!(
            started.elapsed() < JOB_TIMEOUT,
            "status.json of {id} never got final: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Files (not folders) under `dir`, which must exist.
pub fn files_in(dir: &Path) -> Vec<String> {
    assert!(dir.is_dir(), "{dir:?} is missing");
    files_under(dir)
}
