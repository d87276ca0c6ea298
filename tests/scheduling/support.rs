//! Helpers the scheduling tests share: status.json timestamps and renditions, final states,
//! and the variants of a served master playlist.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::Value;

use video_transcoder::jobs::scheduler::{decoder_bytes, encoder_bytes};

use crate::common::*;

/// An RFC 3339 timestamp from status.json.
pub fn at(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

pub fn renditions(status: &Value) -> &[Value] {
    status["renditions"].as_array().map_or(&[], Vec::as_slice)
}

pub fn find<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    renditions(status).iter().find(|r| r["name"] == name)
}

pub fn rendition<'a>(status: &'a Value, name: &str) -> &'a Value {
    find(status, name).unwrap_or_else(|| panic!("no rendition {name}: {status:#}"))
}

/// The renditions of `tier`, which must exist.
pub fn of_tier<'a>(status: &'a Value, tier: &str) -> Vec<&'a Value> {
    let found: Vec<&Value> = renditions(status)
        .iter()
        .filter(|r| r["tier"] == tier)
        .collect();
    assert!(!found.is_empty(), "no {tier} renditions: {status:#}");
    found
}

pub fn is_final(status: &Value) -> bool {
    !matches!(status["state"].as_str(), Some("queued" | "processing"))
}

/// The variant folder names (`360p`) of a master playlist served over HTTP.
pub async fn master_variants(api: &Api, id: &str) -> Vec<String> {
    let (code, text) = api
        .text(&format!("/videos/{id}/manifest/master.m3u8"))
        .await;
    assert_eq!(code, 200, "master of {id}: {text}");
    MasterPlaylist::parse(Path::new("master.m3u8"), &text)
        .variants
        .iter()
        .map(|v| v.name().to_owned())
        .collect()
}

/// Processing, with the source probed and the renditions planned (so its first pass waits in
/// the scheduler's queue).
pub fn planned(status: &Value) -> bool {
    status["state"] == "processing" && !status["source"].is_null() && !renditions(status).is_empty()
}

/// The memory guard's estimate of one pass of `tier` for a planned job, as `pass_memory`
/// (src/jobs/run.rs) computes it: one decoder of the source plus one encoder per video rendition
/// of the tier.
pub fn pass_bytes(status: &Value, tier: &str) -> u64 {
    let size = |v: &Value, w: &str, h: &str| {
        (v[w].as_u64().unwrap() as u32, v[h].as_u64().unwrap() as u32)
    };
    let (w, h) = size(&status["source"]["video"], "codedWidth", "codedHeight");
    let encoders: u64 = of_tier(status, tier)
        .iter()
        .filter(|r| r["kind"] == "video")
        .map(|r| {
            let (w, h) = size(r, "width", "height");
            encoder_bytes(w, h)
        })
        .sum();
    decoder_bytes(w, h) + encoders
}
