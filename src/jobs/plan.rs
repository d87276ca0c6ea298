//! Which renditions a job makes and how they are grouped into decode passes.

use ffmpeg_next::Rational;

use super::publish::Finished;
use super::status::{RenditionKind, RenditionState, RenditionStatus};
use crate::config::TranscodeSettings;
use crate::media::filters::output_frame_rate;
use crate::media::gop_frames;
use crate::media::ladder::{self, Tier, VideoRendition};
use crate::media::master::{AudioVariant, VideoVariant};
use crate::media::mux::{PLAYLIST, SegmentType, segment_frames};
use crate::media::pass::FrameRange;
use crate::media::playlist::Rates;
use crate::media::source::SourceInfo;

/// Audio samples per AAC frame, for progress accounting.
const AAC_FRAME: f64 = 1024.0;

pub struct Plan {
    /// Every rendition, smallest video first, audio last.
    pub statuses: Vec<RenditionStatus>,
    /// The video rendition behind each status; `None` for the audio rendition.
    pub videos: Vec<Option<VideoRendition>>,
    /// Constant output frame rate of every video rendition.
    pub fps: Rational,
    /// Renditions kept from an earlier, unfinished run; no pass encodes them again.
    pub done: Vec<bool>,
    /// The settings every rendition is encoded with, in words: codec and preset, frame rate,
    /// GOP, segment type and length, audio bit rate. Renditions made under another string do
    /// not fit in one master with these (status.json keeps it for the next run to compare).
    pub encoding: String,
    /// Output frames per video segment.
    pub(super) segment_frames: u64,
    /// `CHUNK_SECONDS` (see [`default_chunk_seconds`] when unset).
    chunk_seconds: Option<u32>,
}

/// Chunk length of a tier when `CHUNK_SECONDS` is unset: about 4 minutes of work for one unit
/// on a 4-vCPU instance, from the worst case of each tier, a 2160p source (its decode dominates
/// the low tiers). On this project's 2-core machine a 1080p source's ≤480p tier encodes at
/// about 2.5× real time and its 720p/1080p tier at about 2×; a 2160p source decodes 4× the
/// pixels, so with twice the cores about 1× for the first two tiers, and its 1440p/2160p tier
/// at about 0.2×: 240, 120 (two renditions at up to 1080p share the decode) and 48 s.
pub fn default_chunk_seconds(tier: Tier) -> u32 {
    match tier {
        Tier::Critical => 240,
        Tier::Standard => 120,
        Tier::Premium => 48,
    }
}

impl Plan {
    pub fn new(info: &SourceInfo, settings: &TranscodeSettings) -> Self {
        let mut statuses = Vec::new();
        let mut videos = Vec::new();
        let fps = info.video.as_ref().map_or(Rational::new(30, 1), |v| {
            output_frame_rate(v, settings.max_fps)
        });
        if let Some(v) = &info.video {
            let mut picked = ladder::select(&settings.ladder, v.display_width, v.display_height);
            picked.reverse(); // smallest first: the order they become playable in
            for r in picked {
                // Every rendition runs the source's whole length (see `media::pass`).
                let frames =
                    (info.duration_seconds.max(v.duration_seconds) * f64::from(fps)).ceil() as u64;
                statuses.push(pending(
                    &r.name,
                    RenditionKind::Video,
                    r.tier,
                    r.kbps,
                    frames,
                ));
                let last = statuses.last_mut().expect("just pushed");
                (last.width, last.height) = (Some(r.width), Some(r.height));
                videos.push(Some(r));
            }
        }
        if !info.audio.is_empty() {
            let frames = (info.duration_seconds * 48_000.0 / AAC_FRAME).ceil() as u64;
            let kbps = settings.audio_bitrate_kbps;
            statuses.push(pending(
                "audio",
                RenditionKind::Audio,
                Tier::Critical,
                kbps,
                frames,
            ));
            videos.push(None);
        }
        let done = vec![false; statuses.len()];
        Self {
            statuses,
            videos,
            fps,
            done,
            encoding: encoding(settings, fps),
            segment_frames: u64::from(segment_frames(fps, settings.segment_seconds)),
            chunk_seconds: settings.chunk_seconds,
        }
    }

    /// Output frames of every video rendition (0 without video).
    pub(super) fn video_frames(&self) -> u64 {
        self.statuses
            .iter()
            .find(|s| s.kind == RenditionKind::Video)
            .map_or(0, |s| s.frames_expected)
    }

    /// The time chunks the video renditions of a pass at `tier` are made in: whole segments
    /// each, covering every output frame; one chunk (`None`: the whole length) when the video
    /// fits in one or chunking is off. With `lead`, the first chunk is one segment long (see
    /// [`Plan::units`]).
    pub fn chunks(&self, tier: Tier, lead: bool) -> Vec<Option<FrameRange>> {
        let total = self.video_frames();
        let seconds = self
            .chunk_seconds
            .unwrap_or_else(|| default_chunk_seconds(tier));
        let segment_seconds = self.segment_frames as f64 / f64::from(self.fps);
        let segments = (f64::from(seconds) / segment_seconds).round().max(1.0) as u64;
        let size = segments * self.segment_frames;
        let first = if lead { self.segment_frames } else { size };
        if seconds == 0 || total <= first {
            return vec![None];
        }
        let starts: Vec<u64> = std::iter::once(0)
            .chain((first..total).step_by(size as usize))
            .collect();
        (starts.iter().enumerate())
            .map(|(k, &start)| {
                Some(FrameRange {
                    index: k as u32,
                    start,
                    // The last runs to the end of the source, as a single run does.
                    end: starts.get(k + 1).copied().unwrap_or(u64::MAX),
                })
            })
            .collect()
    }

    /// Takes over renditions an earlier run of the same source published (`kept`, all ready),
    /// when they match what this plan would make; they are listed in `finished` and skipped by
    /// every pass. Returns how many were kept.
    pub fn carry_over(&mut self, kept: &[RenditionStatus], finished: &mut Finished) -> usize {
        let mut count = 0;
        for (i, status) in self.statuses.iter_mut().enumerate() {
            let same = |k: &&RenditionStatus| {
                k.state == RenditionState::Ready
                    && (&k.name, k.kind, k.width, k.height, k.target_bitrate_kbps)
                        == (
                            &status.name,
                            status.kind,
                            status.width,
                            status.height,
                            status.target_bitrate_kbps,
                        )
            };
            let Some(old) = kept.iter().find(same) else {
                continue;
            };
            let rates = Rates {
                peak: old.peak_bitrate_kbps.unwrap_or(0) * 1000,
                average: old.bitrate_kbps.unwrap_or(0) * 1000,
                bytes: old.size_bytes.unwrap_or(0),
            };
            match (&self.videos[i], &old.codecs) {
                (Some(r), Some(codecs)) => finished.videos.push(VideoVariant {
                    uri: status.playlist.clone(),
                    width: r.width,
                    height: r.height,
                    frame_rate: f64::from(self.fps),
                    codecs: codecs.clone(),
                    rates,
                }),
                (None, _) => {
                    finished.audio = Some(AudioVariant {
                        uri: status.playlist.clone(),
                        rates,
                    })
                }
                (Some(_), None) => continue,
            }
            *status = RenditionStatus {
                frames_done: status.frames_expected,
                ..old.clone()
            };
            self.done[i] = true;
            count += 1;
        }
        count
    }

    pub fn video_count(&self) -> usize {
        self.videos.iter().flatten().count()
    }

    /// Video renditions still to encode.
    pub fn videos_to_encode(&self) -> usize {
        self.videos
            .iter()
            .zip(&self.done)
            .filter(|(v, done)| v.is_some() && !**done)
            .count()
    }

    /// Decode passes in order, as indices into `statuses`: one per tier (lowest first), the
    /// audio riding with the first. With `merge`, a single pass for everything.
    pub fn passes(&self, merge: bool) -> Vec<Vec<usize>> {
        let mut passes: Vec<(Tier, Vec<usize>)> = Vec::new();
        for (i, s) in self.statuses.iter().enumerate() {
            if s.kind == RenditionKind::Audio || self.done[i] {
                continue;
            }
            let tier = if merge { Tier::Critical } else { s.tier };
            match passes.iter_mut().find(|(t, _)| *t == tier) {
                Some((_, members)) => members.push(i),
                None => passes.push((tier, vec![i])),
            }
        }
        passes.sort_by_key(|(t, _)| *t);
        let mut passes: Vec<Vec<usize>> = passes.into_iter().map(|(_, m)| m).collect();
        if let Some(audio) = self
            .statuses
            .iter()
            .position(|s| s.kind == RenditionKind::Audio)
            .filter(|&i| !self.done[i])
        {
            match passes.first_mut() {
                Some(first) => first.push(audio),
                None => passes.push(vec![audio]),
            }
        }
        passes
    }
}

/// See [`Plan::encoding`].
fn encoding(settings: &TranscodeSettings, fps: Rational) -> String {
    let segments = match settings.segment_type {
        SegmentType::Fmp4 => "fmp4",
        SegmentType::Ts => "ts",
    };
    format!(
        "h264 preset {}, {}, {}/{} fps, GOP {} frames, {segments} segments of {} s, AAC {} kb/s",
        settings.preset,
        settings.rate_control.name(),
        fps.numerator(),
        fps.denominator(),
        gop_frames(fps),
        settings.segment_seconds,
        settings.audio_bitrate_kbps,
    )
}

fn pending(name: &str, kind: RenditionKind, tier: Tier, kbps: u32, frames: u64) -> RenditionStatus {
    RenditionStatus {
        name: name.into(),
        kind,
        tier,
        width: None,
        height: None,
        target_bitrate_kbps: kbps,
        state: RenditionState::Pending,
        playlist: format!("{name}/{PLAYLIST}"),
        size_bytes: None,
        bitrate_kbps: None,
        peak_bitrate_kbps: None,
        frames_done: 0,
        frames_expected: frames,
        error: None,
        codecs: None,
        started: None,
        finished: None,
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
