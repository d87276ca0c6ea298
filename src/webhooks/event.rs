//! What a receiver gets: the event's JSON body and the `Transcoder-Signature` header over it.

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::jobs::{JobState, JobStatus};

/// The name of the signature header.
pub const SIGNATURE_HEADER: &str = "Transcoder-Signature";

/// The kinds of events, as their `type` is spelt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// The master playlist names a first rendition: players can start.
    Playable,
    /// Every rendition finished.
    Ready,
    /// Some renditions finished, others failed.
    Partial,
    /// Nothing playable; `error` says why.
    Failed,
    /// The job was stopped (a shutdown) before it finished; a new trigger resumes it.
    Interrupted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Playable => "video.playable",
            EventType::Ready => "video.ready",
            EventType::Partial => "video.partial",
            EventType::Failed => "video.failed",
            EventType::Interrupted => "video.interrupted",
        }
    }

    /// The event a final state is announced with; `None` for a state that is not final.
    pub fn of_final(state: JobState) -> Option<Self> {
        match state {
            JobState::Ready => Some(EventType::Ready),
            JobState::Partial => Some(EventType::Partial),
            JobState::Failed => Some(EventType::Failed),
            JobState::Interrupted => Some(EventType::Interrupted),
            JobState::Queued | JobState::Processing => None,
        }
    }
}

/// The JSON body of one event. Its `id` is the same for every delivery attempt and every
/// receiver, so a receiver can drop duplicates (delivery is at least once).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub created: DateTime<Utc>,
    pub video_id: String,
    pub state: &'static str,
    pub playable: bool,
    /// Why the job failed or stopped (as status.json's `error`).
    pub error: Option<String>,
    pub status_url: String,
    pub playback_url: String,
    /// `videos/<id>/images/poster.jpg` once status.json lists a poster; else null.
    pub poster_url: Option<String>,
    /// The uploader's metadata, as given.
    pub metadata: Option<serde_json::Value>,
}

impl Event {
    /// The `kind` event of the job whose status is `status`, with URLs under `base` (the
    /// public base of the output store).
    pub fn new(kind: EventType, status: &JobStatus, base: &str) -> Self {
        let id = &status.video_id;
        let has_poster = serde_json::to_value(status)
            .ok()
            .is_some_and(|s| !s["images"]["poster"].is_null());
        Self {
            id: event_id(kind, status).to_string(),
            kind: kind.as_str(),
            created: Utc::now(),
            video_id: id.clone(),
            state: status.state.as_str(),
            playable: status.playable,
            error: status.error.clone(),
            status_url: format!("{base}/videos/{id}/status.json"),
            playback_url: format!("{base}/videos/{id}/manifest/master.m3u8"),
            poster_url: has_poster.then(|| format!("{base}/videos/{id}/images/poster.jpg")),
            metadata: status.metadata.clone(),
        }
    }
}

/// The event's id: a UUID v5 of the video, the event type and when this run of the job was
/// queued. The same for a re-sent event, another for the next run of the same video.
pub(super) fn event_id(kind: EventType, status: &JobStatus) -> uuid::Uuid {
    let name = format!(
        "video-transcoder/webhook/{}/{}/{}",
        status.video_id,
        kind.as_str(),
        status.timestamps.queued.timestamp_nanos_opt().unwrap_or(0)
    );
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes())
}

/// The `Transcoder-Signature` value for `body` sent at `t` (Unix seconds):
/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, as Stripe and Mux sign theirs.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // Against a value computed by another implementation:
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
        let signed = signature(b"whsec_test", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            signed,
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }

    #[test]
    fn an_event_id_is_stable_for_one_run_and_differs_by_type_and_run() {
        let mut status = JobStatus::queued("clip");
        let first = event_id(EventType::Ready, &status);
        assert_eq!(first, event_id(EventType::Ready, &status));
        assert_ne!(first, event_id(EventType::Playable, &status));
        status.timestamps.queued += chrono::Duration::seconds(1);
        assert_ne!(first, event_id(EventType::Ready, &status));
    }

    #[test]
    fn the_body_names_the_video_its_urls_and_no_poster_without_one() {
        let mut status = JobStatus::queued("clip");
        status.state = JobState::Failed;
        status.error = Some("the source cannot be used".into());
        status.metadata = Some(serde_json::json!({"title": "t"}));
        let event = Event::new(EventType::Failed, &status, "https://cdn.example.com");
        let body = serde_json::to_value(&event).unwrap();
        assert_eq!(body["type"], "video.failed");
        assert_eq!(body["videoId"], "clip");
        assert_eq!(body["state"], "failed");
        assert_eq!(body["error"], "the source cannot be used");
        assert_eq!(
            body["playbackUrl"],
            "https://cdn.example.com/videos/clip/manifest/master.m3u8"
        );
        assert_eq!(
            body["statusUrl"],
            "https://cdn.example.com/videos/clip/status.json"
        );
        assert!(body["posterUrl"].is_null());
        assert_eq!(body["metadata"]["title"], "t");
    }
}
