//! status.json: what a player or operator polls. Rewritten atomically on every change.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::cost::Cost;
use crate::media::ladder::Tier;
use crate::media::pass::DamagedPackets;
use crate::media::source::SourceInfo;

/// How every warning about undecodable source packets starts.
const DAMAGED: &str = "the source is damaged: ";

/// Encoding cost of one AAC frame in "pixels", for the ETA: about a hundredth of a 144p frame.
const AUDIO_FRAME_WEIGHT: f64 = 400.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Processing,
    /// Every rendition finished.
    Ready,
    /// Some renditions finished, others failed (listed with their errors).
    Partial,
    /// Nothing playable; `error` says why.
    Failed,
    /// Stopped from outside (shutdown, Ctrl-C) before finishing.
    Interrupted,
}

impl JobState {
    /// The state as status.json spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Processing => "processing",
            JobState::Ready => "ready",
            JobState::Partial => "partial",
            JobState::Failed => "failed",
            JobState::Interrupted => "interrupted",
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Processing)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RenditionState {
    Pending,
    Encoding,
    Ready,
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RenditionKind {
    Video,
    Audio,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenditionStatus {
    pub name: String,
    pub kind: RenditionKind,
    pub tier: Tier,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub target_bitrate_kbps: u32,
    pub state: RenditionState,
    /// Media playlist, relative to the master's folder.
    pub playlist: String,
    pub size_bytes: Option<u64>,
    pub bitrate_kbps: Option<u64>,
    pub peak_bitrate_kbps: Option<u64>,
    pub frames_done: u64,
    pub frames_expected: u64,
    pub error: Option<String>,
    /// RFC 6381 codecs string of a finished video rendition (kept so a resumed job can list
    /// it in the master playlist without re-reading it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codecs: Option<String>,
    /// When its encode started and when it ended (ready or failed).
    #[serde(default)]
    pub started: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Renditions finished (ready or failed) out of `total`.
    pub completed: usize,
    pub total: usize,
    /// Frames done across all renditions, 0–100.
    pub percent: f64,
    pub eta_seconds: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timestamps {
    pub queued: DateTime<Utc>,
    pub started: Option<DateTime<Utc>>,
    pub first_playable: Option<DateTime<Utc>>,
    pub finished: Option<DateTime<Utc>>,
    /// Last time the instance working on the job wrote it (every second while it runs): a
    /// `queued` or `processing` status that stopped changing has no instance behind it.
    #[serde(default)]
    pub updated: Option<DateTime<Utc>>,
}

/// `videos/<id>/download.mp4`: one rendition and the audio in a faststart MP4.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Download {
    /// Path inside the output store, like `masterPlaylist`.
    pub path: String,
    /// The video rendition it holds (`720p`).
    pub rendition: String,
    pub bytes: u64,
}

/// Pictures published beside the manifest, paths relative to `videos/<id>/` (like
/// `masterPlaylist`); each key appears once its file is published.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Images {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poster_width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poster_height: Option<u32>,
    /// WebVTT whose cues point at `storyboard.jpg#xywh=x,y,w,h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storyboard: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storyboard_image: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub video_id: String,
    /// The source this job encodes (`file:` path or `<store>/<key>`): a trigger naming the same
    /// source for the same video returns this job instead of starting another.
    #[serde(default)]
    pub input: Option<String>,
    /// The encoding settings every rendition of this video shares (see `Plan::encoding`); a
    /// resumed job keeps earlier renditions only when it is the same. `None` until planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// The uploader's `metadata` object, kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    pub state: JobState,
    /// True once the master playlist exists: it names a rendition from its first published segment.
    pub playable: bool,
    pub error: Option<String>,
    /// What the viewer should know about an output that is ready anyway (a damaged source
    /// decoded with skips); absent when there is nothing to say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub progress: Progress,
    pub source: Option<SourceInfo>,
    pub renditions: Vec<RenditionStatus>,
    /// Master playlist path inside the output store, once written.
    pub master_playlist: Option<String>,
    /// The MP4 download, once published (with the final state); absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<Download>,
    /// Poster and storyboard, once the first is published; absent before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Images>,
    pub timestamps: Timestamps,
    /// What this run of the job cost (see `jobs::cost`); absent until processing starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
}

impl JobStatus {
    /// A queued job of `video_id`, to be made from `input`.
    pub fn queued_from(video_id: &str, input: String) -> Self {
        Self {
            input: Some(input),
            ..Self::queued(video_id)
        }
    }

    pub fn queued(video_id: &str) -> Self {
        Self {
            video_id: video_id.into(),
            input: None,
            encoding: None,
            metadata: None,
            state: JobState::Queued,
            playable: false,
            error: None,
            warnings: Vec::new(),
            progress: Progress::default(),
            source: None,
            renditions: Vec::new(),
            master_playlist: None,
            download: None,
            images: None,
            timestamps: Timestamps {
                queued: Utc::now(),
                started: None,
                first_playable: None,
                finished: None,
                updated: None,
            },
            cost: None,
        }
    }

    /// Recomputes `progress`: `percent` counts frames done across renditions; the ETA weighs
    /// each rendition's frames by its pixel count, since a 1080p frame costs far more to encode
    /// than a 144p one and the tiers run smallest first.
    pub fn refresh_progress(&mut self, now: DateTime<Utc>) {
        let finished =
            |r: &RenditionStatus| matches!(r.state, RenditionState::Ready | RenditionState::Failed);
        let fraction = |weight: &dyn Fn(&RenditionStatus) -> f64| {
            let (mut done, mut expected) = (0.0, 0.0);
            for r in &self.renditions {
                let frames = r.frames_expected.max(1);
                let frames_done = if finished(r) {
                    frames
                } else {
                    r.frames_done.min(frames)
                };
                done += frames_done as f64 * weight(r);
                expected += frames as f64 * weight(r);
            }
            match self.state {
                JobState::Ready | JobState::Partial => 1.0,
                _ if expected == 0.0 => 0.0,
                // An interrupted or failed job says how far it got.
                state if state.is_final() => done / expected,
                // Never claim 100 % before the job really ends.
                _ => (done / expected).min(0.999),
            }
        };
        let frames = fraction(&|_| 1.0);
        let work = fraction(&|r| match (r.width, r.height) {
            (Some(w), Some(h)) => f64::from(w) * f64::from(h),
            _ => AUDIO_FRAME_WEIGHT,
        });
        let eta_seconds = match self.timestamps.started {
            _ if self.state.is_final() => Some(0.0),
            Some(started) if work > 0.0 => {
                let elapsed = (now - started).num_milliseconds() as f64 / 1000.0;
                Some((elapsed * (1.0 - work) / work * 10.0).round() / 10.0)
            }
            _ => None,
        };
        self.progress = Progress {
            completed: self.renditions.iter().filter(|r| finished(r)).count(),
            total: self.renditions.len(),
            percent: (frames * 1000.0).round() / 10.0,
            eta_seconds,
        };
    }

    /// States in `warnings` how much of the source could not be decoded (the job's worst
    /// pass), replacing what an earlier pass said.
    pub fn report_damage(&mut self, damaged: DamagedPackets) {
        self.warnings.retain(|w| !w.starts_with(DAMAGED));
        let packets = |n: u64, kind: &str| match n {
            1 => format!("1 {kind} packet could not be decoded"),
            n => format!("{n} {kind} packets could not be decoded"),
        };
        if damaged.video > 0 {
            self.warnings.push(format!(
                "{DAMAGED}{}; the output may show glitches or skips there",
                packets(damaged.video, "video")
            ));
        }
        if damaged.audio > 0 {
            self.warnings.push(format!(
                "{DAMAGED}{}; the sound may drop out briefly there",
                packets(damaged.audio, "audio")
            ));
        }
    }

    /// A `queued` or `processing` status not written for `after` belongs to an instance that
    /// stopped (crashed, or killed without its shutdown grace): shown as `interrupted`, since a
    /// new trigger resumes it.
    pub fn orphaned(mut self, now: DateTime<Utc>, after: chrono::Duration) -> Self {
        let last = self.last_written();
        if self.is_stale(now, after) {
            self.state = JobState::Interrupted;
            self.error = Some(format!(
                "the instance working on this job stopped at {}; trigger it again to resume",
                last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
        self
    }

    /// Ended `ready` or `partial`: a finished package that plays.
    /// A later view of the same run (same source, same queued time) than `other`: finished
    /// where `other` is not, or, both finished or both not, with more renditions done or more
    /// frames encoded. A writer holding `other` must not put it over this.
    pub fn supersedes(&self, other: &JobStatus) -> bool {
        let same_run =
            self.input == other.input && self.timestamps.queued == other.timestamps.queued;
        let frames = |s: &JobStatus| s.renditions.iter().map(|r| r.frames_done).sum::<u64>();
        let rank = |s: &JobStatus| (s.state.is_final(), s.progress.completed, frames(s));
        same_run && rank(self) > rank(other)
    }

    pub fn is_made(&self) -> bool {
        matches!(self.state, JobState::Ready | JobState::Partial)
    }

    /// Not finished, yet not rewritten for `after`: no instance is working on it.
    pub fn is_stale(&self, now: DateTime<Utc>, after: chrono::Duration) -> bool {
        !self.state.is_final() && now - self.last_written() > after
    }

    fn last_written(&self) -> DateTime<Utc> {
        self.timestamps.updated.unwrap_or(self.timestamps.queued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendition(state: RenditionState, done: u64, expected: u64) -> RenditionStatus {
        RenditionStatus {
            name: "x".into(),
            kind: RenditionKind::Video,
            tier: Tier::Critical,
            width: None,
            height: None,
            target_bitrate_kbps: 1,
            state,
            playlist: "x/index.m3u8".into(),
            size_bytes: None,
            bitrate_kbps: None,
            peak_bitrate_kbps: None,
            frames_done: done,
            frames_expected: expected,
            error: None,
            codecs: None,
            started: None,
            finished: None,
        }
    }

    #[test]
    fn progress_counts_frames_and_finished_renditions() {
        let mut s = JobStatus::queued("v");
        s.state = JobState::Processing;
        let start = Utc::now();
        s.timestamps.started = Some(start);
        s.renditions = vec![
            rendition(RenditionState::Ready, 10, 100),
            rendition(RenditionState::Encoding, 50, 100),
            rendition(RenditionState::Pending, 0, 100),
            rendition(RenditionState::Failed, 3, 100),
        ];
        s.refresh_progress(start + chrono::Duration::seconds(25));
        assert_eq!((s.progress.completed, s.progress.total), (2, 4));
        assert_eq!(s.progress.percent, 62.5);
        assert_eq!(s.progress.eta_seconds, Some(15.0));
        // A big pending rendition weighs more in the ETA than in the frame percentage.
        (s.renditions[2].width, s.renditions[2].height) = (Some(1920), Some(1080));
        s.refresh_progress(start + chrono::Duration::seconds(25));
        assert_eq!(s.progress.percent, 62.5);
        assert!(s.progress.eta_seconds.unwrap() > 1000.0);
        s.state = JobState::Interrupted;
        s.refresh_progress(start);
        assert_eq!(s.progress.percent, 62.5);
        s.state = JobState::Partial;
        s.refresh_progress(start);
        assert_eq!(s.progress.percent, 100.0);
    }

    #[test]
    fn a_status_nobody_writes_any_more_reads_as_interrupted() {
        let now = Utc::now();
        let mut s = JobStatus::queued("v");
        s.state = JobState::Processing;
        s.timestamps.updated = Some(now - chrono::Duration::seconds(5));
        let minute = chrono::Duration::seconds(60);
        assert_eq!(s.clone().orphaned(now, minute).state, JobState::Processing);
        s.timestamps.updated = Some(now - chrono::Duration::seconds(120));
        let orphan = s.clone().orphaned(now, minute);
        assert_eq!(orphan.state, JobState::Interrupted);
        assert!(orphan.error.unwrap().contains("trigger it again"));
        s.state = JobState::Ready;
        assert_eq!(s.orphaned(now, minute).state, JobState::Ready);
    }

    #[test]
    fn damaged_packets_become_one_warning_per_stream_and_none_without_damage() {
        let mut s = JobStatus::queued("v");
        s.report_damage(DamagedPackets::default());
        let json = serde_json::to_value(&s).unwrap();
        assert!(json.get("warnings").is_none(), "{json}");
        s.report_damage(DamagedPackets { video: 1, audio: 0 });
        let one = "the source is damaged: 1 video packet could not be decoded; \
                   the output may show glitches or skips there";
        assert_eq!(s.warnings, [one]);
        // A later pass's report replaces the earlier one instead of adding to it.
        s.report_damage(DamagedPackets {
            video: 37,
            audio: 3,
        });
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
        assert!(s.warnings[0].contains("37 video packets"));
        assert!(s.warnings[1].contains("3 audio packets"));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["warnings"].as_array().map(Vec::len), Some(2));
    }
}
