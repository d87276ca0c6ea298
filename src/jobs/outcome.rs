//! How a job ends up: each rendition published or failed, the master playlist over what is
//! finished, and the job's final state.

use std::path::Path;

use chrono::Utc;

use super::plan::Plan;
use super::progressive::{Growing, Turn};
use super::publish;
use super::run::{Job, JobEnd};
use super::status::{JobState, RenditionKind, RenditionState, RenditionStatus};
use crate::media::MediaError;
use crate::media::master::{AudioVariant, VideoVariant};
use crate::media::playlist::{MediaPlaylist, Rates};
use crate::media::source::SourceInfo;
use crate::storage::StoreError;

/// A rendition published by this run, not yet marked ready.
pub(super) struct Done {
    index: usize,
    codecs: Option<String>,
    rates: Rates,
}

impl Job<'_> {
    /// Publishes rendition `i` (or records its failure) and adds it to `finished` and `done`;
    /// true if it was cancelled. `codecs` is the video's RFC 6381 string, `None` for audio.
    /// Its status turns ready in `publish_master`, once the master playlist lists it.
    pub(super) async fn record(
        &self,
        plan: &Plan,
        i: usize,
        result: Result<Option<String>, MediaError>,
        seconds: f64,
        scratch: &Path,
        done: &mut Vec<Done>,
    ) -> bool {
        let status = &plan.statuses[i];
        let from = scratch.join(&status.name);
        let published = match result {
            Ok(codecs) => {
                let prefix = self.key(&format!("manifest/{}", status.name));
                publish::rendition(self.store(), &from, &prefix, &self.early_sizes)
                    .await
                    .map(|(rates, keys)| {
                        self.published.lock().expect("lock").extend(keys);
                        (codecs, rates)
                    })
            }
            Err(e) => Err(e),
        };
        let (codecs, rates) = match published {
            Ok(done) => done,
            Err(e) => {
                self.fail_rendition(plan, i, &e.to_string(), scratch);
                return matches!(e, MediaError::Cancelled);
            }
        };
        let tier = status.tier.as_str();
        metrics::counter!("transcoder_renditions_total", "state" => "ready", "tier" => tier)
            .increment(1);
        metrics::histogram!("transcoder_encode_seconds", "tier" => tier, "rendition" => status.name.clone())
            .record(seconds);
        let finished = &mut self.board.lock().await.finished;
        match variant(plan, i, codecs.as_deref(), rates) {
            Growing::Video(v) => finished.videos.push(v),
            Growing::Audio(a) => finished.audio = Some(a),
        }
        done.push(Done {
            index: i,
            codecs,
            rates,
        });
        false
    }

    /// Before the final playlists of a pass's encoded renditions (`finals`: index and codecs)
    /// name their last segments: if the master names one of them below its final peak, it is
    /// republished first, once for all of them.
    pub(super) async fn cover_finals<'c>(
        &self,
        plan: &Plan,
        finals: impl Iterator<Item = (usize, Option<&'c str>)>,
        scratch: &Path,
    ) -> Result<(), MediaError> {
        let mut board = self.board.lock().await;
        let mut short = false;
        for (i, codecs) in finals {
            let from = scratch.join(&plan.statuses[i].name);
            let moved = self.early_sizes.lock().expect("lock").clone();
            let rates = MediaPlaylist::read_with(&from, &moved)?.rates();
            let final_variant = variant(plan, i, codecs, rates);
            if !board.covers(final_variant.uri(), rates.peak) {
                board.grow(final_variant, false);
                short = true;
            }
        }
        if short {
            board
                .write(self.store(), Turn::Settled)
                .await
                .map_err(|e| MediaError::Publish(format!("republishing the master: {e}")))?;
        }
        Ok(())
    }

    pub(super) fn fail_rendition(&self, plan: &Plan, i: usize, reason: &str, scratch: &Path) {
        let status = &plan.statuses[i];
        if reason != MediaError::Cancelled.to_string() {
            tracing::warn!(rendition = %status.name, "rendition failed: {reason}");
            metrics::counter!("transcoder_renditions_total", "state" => "failed", "tier" => status.tier.as_str())
                .increment(1);
        }
        let _ = std::fs::remove_dir_all(scratch.join(&status.name));
        let cancelled = reason == MediaError::Cancelled.to_string();
        self.tracker.update(|s| {
            // A cancelled rendition is not a failed one: it is still to do, by a resumed run.
            let r = &mut s.renditions[i];
            (r.state, r.error, r.started, r.finished) = match cancelled {
                true => (RenditionState::Pending, None, None, None),
                false => (
                    RenditionState::Failed,
                    Some(reason.to_string()),
                    r.started,
                    Some(Utc::now()),
                ),
            };
        });
    }

    /// (Re)writes master.m3u8 over the finished renditions (those of the pass that ended
    /// leave the growing set), then marks the renditions in `done` ready, so the status never
    /// names a ready rendition the master does not list yet.
    pub(super) async fn publish_master(&self, done: Vec<Done>) -> Result<(), JobEnd> {
        let written = {
            let mut board = self.board.lock().await;
            board.settle();
            board
                .write(self.store(), Turn::Settled)
                .await
                .map_err(|e| JobEnd::failed(format!("writing the master playlist: {e}")))?;
            board.written()
        };
        if let Some(key) = written {
            let mut published = self.published.lock().expect("lock");
            if !published.contains(&key) {
                published.push(key);
            }
        }
        let now = Utc::now();
        self.tracker.update(|s| {
            for d in done {
                let r = &mut s.renditions[d.index];
                r.state = RenditionState::Ready;
                r.finished = Some(now);
                r.size_bytes = Some(d.rates.bytes);
                r.bitrate_kbps = Some(d.rates.average.div_ceil(1000));
                r.peak_bitrate_kbps = Some(d.rates.peak.div_ceil(1000));
                r.codecs = d.codecs;
            }
        });
        Ok(())
    }

    /// Deletes the published keys `which` picks (best effort: a key left is only unlisted).
    async fn withdraw(&self, which: impl Fn(&str) -> bool) {
        let keys: Vec<String> = {
            let mut published = self.published.lock().expect("lock");
            let (gone, kept) = published.drain(..).partition(|key| which(key));
            *published = kept;
            gone
        };
        for key in keys {
            match self.store().delete(&key).await {
                Ok(()) | Err(StoreError::NotFound(_)) => {}
                Err(e) => tracing::warn!("withdrawing {key}: {e}"),
            }
        }
    }

    /// `ready` when every rendition is, `partial` when some are, `failed` when nothing plays.
    pub(super) async fn finish(&self, info: &SourceInfo) -> Result<(), JobEnd> {
        let status = self.tracker.snapshot();
        let ready = |kind| {
            let ready = |r: &&RenditionStatus| r.state == RenditionState::Ready;
            status
                .renditions
                .iter()
                .filter(|r| r.kind == kind)
                .filter(ready)
                .count()
        };
        let main = if info.video.is_some() {
            RenditionKind::Video
        } else {
            RenditionKind::Audio
        };
        // What failed renditions published during their encode is withdrawn: nothing lists it.
        let failed: Vec<String> = status
            .renditions
            .iter()
            .filter(|r| r.state == RenditionState::Failed)
            .map(|r| self.key(&format!("manifest/{}/", r.name)))
            .collect();
        self.withdraw(|key| failed.iter().any(|prefix| key.starts_with(prefix)))
            .await;
        if ready(main) == 0 {
            // Nothing to play: leave no half-made package behind, only status.json with why.
            self.withdraw(|_| true).await;
            self.tracker.update(|s| {
                s.playable = false;
                s.master_playlist = None;
            });
            let reason = status.renditions.iter().find_map(|r| r.error.clone());
            return Err(JobEnd::failed(
                reason.unwrap_or_else(|| "no rendition was produced".into()),
            ));
        }
        // Before the final state, so a status that says ready already lists them.
        self.publish_images().await;
        self.publish_download().await;
        let all = status
            .renditions
            .iter()
            .all(|r| r.state == RenditionState::Ready);
        self.tracker.update(|s| {
            s.state = if all {
                JobState::Ready
            } else {
                JobState::Partial
            }
        });
        Ok(())
    }
}

/// Rendition `i` of `plan` as the master lists it, with these measured rates.
pub(super) fn variant(plan: &Plan, i: usize, codecs: Option<&str>, rates: Rates) -> Growing {
    let uri = plan.statuses[i].playlist.clone();
    match (&plan.videos[i], codecs) {
        (Some(r), Some(codecs)) => Growing::Video(VideoVariant {
            uri,
            width: r.width,
            height: r.height,
            frame_rate: f64::from(plan.fps),
            codecs: codecs.into(),
            rates,
        }),
        _ => Growing::Audio(AudioVariant { uri, rates }),
    }
}
