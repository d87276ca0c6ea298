//! The master playlist while renditions still encode: a rendition enters it as soon as its
//! playlist is published with the init segment and a first media segment (critical tier first,
//! the others as their pass starts), and leaves it only if it fails.
//!
//! BANDWIDTH is the measured peak (RFC 8216 §4.3.4.2) of what is published, not a bound from
//! the VBV: x264's VBV caps the encoder's buffer, not a segment's bytes (fMP4 boxes are not in
//! it, a short last segment may carry most of a buffer, and a bound of maxrate + bufsize / 2 s
//! would overstate every rung by about half and push players down the ladder). So the master
//! is republished whenever a named rendition's peak rises, and that rendition's playlist names
//! the new segments only once the master covering them is out: no master ever declares less
//! than the peak of a segment it leads to. Writes keep `SAME_OBJECT_GAP` apart, like
//! status.json and the growing playlists.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use tokio::time::Instant;

use super::publish::{self, Finished, MASTER, SAME_OBJECT_GAP};
use super::tracker::Tracker;
use crate::media::master::{self, AudioVariant, VideoVariant};
use crate::storage::{Store, StoreError};

/// A rendition whose encode is still running, as far as its published segments go.
#[derive(Clone, Debug)]
pub enum Growing {
    Video(VideoVariant),
    Audio(AudioVariant),
}

impl Growing {
    pub fn uri(&self) -> &str {
        match self {
            Growing::Video(v) => &v.uri,
            Growing::Audio(a) => &a.uri,
        }
    }

    pub fn peak(&self) -> u64 {
        match self {
            Growing::Video(v) => v.rates.peak,
            Growing::Audio(a) => a.rates.peak,
        }
    }
}

/// Who may write now: a pass's publisher skips a write that comes too soon (it retries), the
/// job waits for its turn and writes over what is finished even if the audio never came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    Early,
    Settled,
}

/// The one writer of a video's master playlist and of the status fields that say it exists.
pub struct Board {
    video_id: String,
    tracker: Option<Arc<Tracker>>,
    /// Video renditions the plan has (0: an audio-only package).
    videos: usize,
    /// The plan has audio: the master names no video before the audio playlist is out too.
    audio_expected: bool,
    pub finished: Finished,
    /// Growing renditions by URI, with whether their playlist is out (only then listed).
    growing: BTreeMap<String, (Growing, bool)>,
    /// Peak each rendition's entry in the published master declares, by URI.
    declared: HashMap<String, u64>,
    last: Option<(Instant, String)>,
}

impl Board {
    pub fn new(
        video_id: &str,
        tracker: Option<Arc<Tracker>>,
        videos: usize,
        audio_expected: bool,
    ) -> Self {
        Self {
            video_id: video_id.into(),
            tracker,
            videos,
            audio_expected,
            finished: Finished::default(),
            growing: BTreeMap::new(),
            declared: HashMap::new(),
            last: None,
        }
    }

    /// Records what a growing rendition's published segments measure; `out` once its playlist
    /// is published (a rendition enters the master only then).
    pub fn grow(&mut self, rendition: Growing, out: bool) {
        let out = out || self.growing.get(rendition.uri()).is_some_and(|(_, o)| *o);
        self.growing
            .insert(rendition.uri().to_string(), (rendition, out));
    }

    /// Whether the published master declares at least `peak` for `uri`, or does not name it
    /// (so its playlist may name segments of that peak now).
    pub fn covers(&self, uri: &str, peak: u64) -> bool {
        self.declared.get(uri).is_none_or(|&d| d >= peak)
    }

    /// Sets what the plan holds: `videos` video renditions, and audio or not.
    pub fn plan(&mut self, videos: usize, audio_expected: bool) {
        (self.videos, self.audio_expected) = (videos, audio_expected);
    }

    /// Ends the current pass: its growing renditions are in `finished` now, or failed.
    pub fn settle(&mut self) {
        self.growing.clear();
    }

    /// The master over finished and listed growing renditions, or `None` while nothing plays.
    pub fn text(&self, turn: Turn) -> Option<String> {
        let mut videos = self.finished.videos.clone();
        let mut audio = self.finished.audio.clone();
        let mut grows = false;
        for (g, out) in self.growing.values() {
            match g {
                Growing::Video(v) if *out && !videos.iter().any(|f| f.uri == v.uri) => {
                    videos.push(v.clone());
                    grows = true;
                }
                Growing::Audio(a) if *out && audio.is_none() => {
                    audio = Some(a.clone());
                    grows = true;
                }
                _ => {}
            }
        }
        let playable = match self.videos {
            0 => audio.is_some(),
            _ => {
                !videos.is_empty()
                    && (turn == Turn::Settled || !self.audio_expected || audio.is_some())
            }
        };
        playable.then(|| master::render(&videos, audio.as_ref(), grows))
    }

    /// Publishes the master if it changed; `Early` gives up (false) when the last write is
    /// under `SAME_OBJECT_GAP` ago, `Settled` waits. The first write makes the job playable.
    /// True when the published master is current.
    pub async fn write(&mut self, store: &dyn Store, turn: Turn) -> Result<bool, StoreError> {
        let Some(text) = self.text(turn) else {
            return Ok(true);
        };
        if let Some((at, last)) = &self.last {
            if *last == text {
                return Ok(true);
            }
            if at.elapsed() < SAME_OBJECT_GAP {
                match turn {
                    Turn::Early => return Ok(false),
                    Turn::Settled => tokio::time::sleep_until(*at + SAME_OBJECT_GAP).await,
                }
            }
        }
        let key = self.key();
        store.put(&key, Bytes::from(text.clone())).await?;
        self.declared = self.declared_peaks();
        let first = self.last.is_none();
        self.last = Some((Instant::now(), text));
        if first && let Some(tracker) = &self.tracker {
            let now = Utc::now();
            tracker.update(|s| {
                if !s.playable {
                    s.playable = true;
                    // A resumed job keeps the moment its earlier run became playable.
                    s.timestamps.first_playable.get_or_insert(now);
                    tracing::info!("first playable");
                }
                s.master_playlist = Some(key);
            });
        }
        Ok(true)
    }

    /// The master's key once written, `None` before.
    pub fn written(&self) -> Option<String> {
        self.last.as_ref().map(|_| self.key())
    }

    fn key(&self) -> String {
        publish::key(&self.video_id, MASTER)
    }

    fn declared_peaks(&self) -> HashMap<String, u64> {
        let finished = self
            .finished
            .videos
            .iter()
            .map(|v| (v.uri.clone(), v.rates.peak))
            .chain(
                self.finished
                    .audio
                    .iter()
                    .map(|a| (a.uri.clone(), a.rates.peak)),
            );
        let growing = self
            .growing
            .values()
            .filter(|(_, out)| *out)
            .map(|(g, _)| (g.uri().to_string(), g.peak()));
        growing.chain(finished).collect()
    }
}
