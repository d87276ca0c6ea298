//! Cloud Storage end to end against a real emulator (fake-gcs-server on a loopback address):
//! sources streamed in from an input bucket, HLS and status.json published to a CDN bucket while
//! the encode runs, transient faults, and resume.

#[path = "../common/mod.rs"]
mod common;

mod assembly; // two writers of one run's status.json: no going back
mod direct; // signed URLs: PUT into the input bucket, finalize event, ready
mod events; // object events on a prefixed input store; a ready video stays ready
mod faults; // the emulator stopped mid-job, missing and oversized sources
mod instances; // resume from the bucket's status.json; conditional writes
mod listing; // a folder of a prefixed store, listed
mod publish; // upload → CDN bucket, trigger shapes, master before ready
mod ranged; // sources read in place by ranged reads, never copied into scratch
mod stalls; // a frozen bucket: a stalled download, a shutdown with stuck jobs

use common::*;

/// The input bucket and the CDN bucket (with a prefix, as a shared bucket would have).
pub const INPUT: &str = "vt-input";
pub const CDN: &str = "vt-cdn";
pub const CDN_PREFIX: &str = "media";

/// An emulator with both buckets, and the service's settings for it.
pub async fn emulator() -> Emulator {
    Emulator::start(&[INPUT, CDN]).await
}

/// Command-line settings that point the service at `emulator`.
pub fn gcs_flags(emulator: &Emulator) -> Vec<String> {
    vec![
        "--input-store".into(),
        format!("gs://{INPUT}"),
        "--output-store".into(),
        format!("gs://{CDN}/{CDN_PREFIX}"),
        "--gcs-endpoint".into(),
        emulator.endpoint(),
    ]
}

/// The same settings as environment variables, for `ServerProcess`.
pub fn gcs_env(emulator: &Emulator) -> Vec<(&'static str, String)> {
    vec![
        ("INPUT_STORE", format!("gs://{INPUT}")),
        ("OUTPUT_STORE", format!("gs://{CDN}/{CDN_PREFIX}")),
        ("GCS_ENDPOINT", emulator.endpoint()),
    ]
}

/// Starts the service in-process against `emulator`, with `extra` settings.
pub async fn spawn_gcs_app(emulator: &Emulator, extra: &[&str]) -> TestApp {
    let flags = gcs_flags(emulator);
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    spawn_app(&args).await
}

/// A key of a video's output in the CDN bucket.
pub fn cdn_key(video_id: &str, rest: &str) -> String {
    format!("{CDN_PREFIX}/videos/{video_id}/{rest}")
}

/// The direct trigger for `key` in the input bucket.
pub fn trigger(video_id: &str, key: &str) -> serde_json::Value {
    serde_json::json!({
        "videoId": video_id,
        "inputBucket": INPUT,
        "inputPath": key,
        "outputBucket": CDN,
    })
}
