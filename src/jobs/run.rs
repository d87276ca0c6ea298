//! Running one job: probe, plan renditions, run decode passes tier by tier on the shared pool,
//! publish each finished rendition and the master playlist, and keep status.json current.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::plan::Plan;
use super::publish::{self, Finished};
use super::status::{self, JobState, JobStatus, RenditionKind, RenditionState};
use super::tracker::Tracker;
use crate::config::{DecodePlan, TranscodeSettings};
use crate::media::master::{AudioVariant, VideoVariant};
use crate::media::mux::Segmenting;
use crate::media::pass::{self, AudioTarget, PassSpec, VideoTarget};
use crate::media::source::{self, Limits, SourceInfo};
use crate::media::{self, MediaError};

/// How often status.json is rewritten while encoding, at the least.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// One video to transcode: a local source file and the output store's root folder.
#[derive(Clone, Debug)]
pub struct JobRequest {
    pub video_id: String,
    pub source: PathBuf,
    pub output_root: PathBuf,
}

impl JobRequest {
    /// `videos/<id>` under the output root.
    pub fn video_dir(&self) -> PathBuf {
        self.output_root.join("videos").join(&self.video_id)
    }

    pub(super) fn manifest_dir(&self) -> PathBuf {
        self.video_dir().join("manifest")
    }
}

/// Runs the job to a final state and returns its last status. Every outcome, including bad
/// input and cancellation, ends in status.json; this never panics on media errors.
pub async fn run(
    request: JobRequest,
    settings: Arc<TranscodeSettings>,
    pool: Arc<Semaphore>,
    cancel: CancellationToken,
    updates: watch::Sender<JobStatus>,
) -> JobStatus {
    let span = tracing::info_span!("job", video_id = %request.video_id);
    async move {
        if let Err(e) = prepare_output(&request) {
            let mut status = JobStatus::queued(&request.video_id);
            status.state = JobState::Failed;
            status.error = Some(format!("cannot write to the output folder: {e}"));
            return status;
        }
        let status_path = request.video_dir().join("status.json");
        let tracker = Arc::new(Tracker::new(&request.video_id, status_path, updates));
        let job = Job {
            request: &request,
            settings: &settings,
            pool: &pool,
            cancel: &cancel,
            tracker: &tracker,
        };
        let result = job.execute().await;
        tracker.update(|s| {
            if let Err(end) = result {
                s.state = end.state;
                s.error = Some(end.reason);
            }
            s.timestamps.finished = Some(Utc::now());
        });
        let status = tracker.snapshot();
        tracing::info!(state = ?status.state, error = status.error.as_deref(), "job finished");
        status
    }
    .instrument(span)
    .await
}

/// Creates `videos/<id>/`; a new run replaces whatever an earlier run with this id published.
fn prepare_output(request: &JobRequest) -> std::io::Result<()> {
    std::fs::create_dir_all(request.video_dir())?;
    match std::fs::remove_dir_all(request.manifest_dir()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Why a job ended without finishing normally.
struct JobEnd {
    state: JobState,
    reason: String,
}

impl JobEnd {
    fn failed(reason: impl Into<String>) -> Self {
        Self {
            state: JobState::Failed,
            reason: reason.into(),
        }
    }

    fn interrupted() -> Self {
        Self {
            state: JobState::Interrupted,
            reason: "interrupted before it finished".into(),
        }
    }
}

/// What one job works with; borrowed for the job's lifetime.
struct Job<'a> {
    request: &'a JobRequest,
    settings: &'a TranscodeSettings,
    pool: &'a Arc<Semaphore>,
    cancel: &'a CancellationToken,
    tracker: &'a Arc<Tracker>,
}

impl Job<'_> {
    async fn execute(&self) -> Result<(), JobEnd> {
        media::init().map_err(|e| JobEnd::failed(e.to_string()))?;
        self.tracker.update(|s| {
            s.state = JobState::Processing;
            s.timestamps.started = Some(Utc::now());
        });
        let limits = Limits {
            max_bytes: self.settings.max_video_size,
            max_seconds: self.settings.max_duration,
        };
        let path = self.request.source.clone();
        let info = blocking(move || source::probe(&path, limits))
            .await
            .map_err(|e| JobEnd::failed(format!("probe: {e}")))?;
        tracing::info!(
            duration = info.duration_seconds,
            video = info.video.is_some(),
            audio_streams = info.audio.len(),
            "probed source"
        );
        self.tracker.update(|s| s.source = Some(info.clone()));
        let plan = Plan::new(&info, self.settings);

        let scratch = tempfile::Builder::new()
            .prefix(&format!("vt-{}-", self.request.video_id))
            .tempdir_in(&self.settings.scratch_dir)
            .map_err(|e| JobEnd::failed(format!("cannot create scratch space: {e}")))?;
        let ticker = {
            let tracker = self.tracker.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(STATUS_INTERVAL);
                loop {
                    tick.tick().await;
                    tracker.update(|_| {});
                }
            })
        };
        let encoded = self.encode_all(&info, &plan, scratch.path()).await;
        ticker.abort();
        drop(scratch); // removed on every path: here, or by unwinding
        encoded?;
        self.finish(&info)
    }

    async fn encode_all(
        &self,
        info: &SourceInfo,
        plan: &Plan,
        scratch: &Path,
    ) -> Result<(), JobEnd> {
        let counters = self.tracker.set_renditions(plan.statuses.clone());
        let capacity = self.settings.max_parallel_encodes as usize;
        let videos = plan.video_count();
        let merge = match self.settings.decode_plan {
            DecodePlan::Single => true,
            DecodePlan::PerTier => false,
            DecodePlan::Auto => videos <= capacity && self.pool.available_permits() >= videos,
        };
        let mut finished = Finished::default();
        for members in plan.passes(merge) {
            let encoders = members
                .iter()
                .filter(|&&i| plan.videos[i].is_some())
                .count();
            let _permits = tokio::select! {
                permits = self.pool.clone().acquire_many_owned(encoders.clamp(1, capacity) as u32) => {
                    permits.expect("the pool is never closed")
                }
                () = self.cancel.cancelled() => return Err(JobEnd::interrupted()),
            };
            self.tracker.update(|s| {
                for &i in &members {
                    s.renditions[i].state = RenditionState::Encoding;
                }
            });
            let names: Vec<&str> = members
                .iter()
                .map(|&i| plan.statuses[i].name.as_str())
                .collect();
            tracing::info!(renditions = ?names, "decode pass started");

            let mut spec = PassSpec {
                source: self.request.source.clone(),
                info: info.clone(),
                video: Vec::new(),
                audio: None,
                preset: self.settings.preset.clone(),
                fps: plan.fps,
                segmenting: Segmenting {
                    kind: self.settings.segment_type,
                    seconds: self.settings.segment_seconds,
                },
                audio_kbps: self.settings.audio_bitrate_kbps,
                encoder_threads: self.settings.encoder_threads as usize,
                cancel: Arc::new(AtomicBool::new(false)),
            };
            let (mut video_members, mut audio_member) = (Vec::new(), None);
            for &i in &members {
                let dir = scratch.join(&plan.statuses[i].name);
                let frames = counters[i].clone();
                match &plan.videos[i] {
                    Some(r) => {
                        video_members.push(i);
                        spec.video.push(VideoTarget {
                            rendition: r.clone(),
                            dir,
                            frames,
                        });
                    }
                    None => {
                        audio_member = Some(i);
                        spec.audio = Some(AudioTarget { dir, frames });
                    }
                }
            }
            let outcome = self.encode_pass(spec).await;
            let results = video_members
                .into_iter()
                .zip(outcome.video.into_iter().map(|r| r.map(Some)))
                .chain(audio_member.zip(outcome.audio.map(|r| r.map(|()| None))));
            let mut cancelled = false;
            for (i, result) in results {
                cancelled |= self.record(plan, i, result, scratch, &mut finished);
            }
            if cancelled {
                return Err(JobEnd::interrupted());
            }
            self.publish_master(&finished, videos)?;
        }
        Ok(())
    }

    /// Runs one decode pass on the blocking pool; cancellation reaches it as a flag checked
    /// between packets.
    async fn encode_pass(&self, spec: PassSpec) -> pass::PassOutcome {
        let stop = spec.cancel.clone();
        let cancel = self.cancel.clone();
        let watcher = tokio::spawn(async move {
            cancel.cancelled().await;
            stop.store(true, Ordering::Relaxed);
        });
        let (videos, has_audio) = (spec.video.len(), spec.audio.is_some());
        let outcome = blocking(move || Ok(pass::run(spec)))
            .await
            .unwrap_or_else(|e| pass::PassOutcome {
                video: (0..videos).map(|_| Err(e.clone())).collect(),
                audio: has_audio.then(|| Err(e.clone())),
            });
        watcher.abort();
        outcome
    }

    /// Publishes rendition `i` (or records its failure); true if it was cancelled. `codecs` is
    /// the video's RFC 6381 string, `None` for audio.
    fn record(
        &self,
        plan: &Plan,
        i: usize,
        result: Result<Option<String>, MediaError>,
        scratch: &Path,
        finished: &mut Finished,
    ) -> bool {
        let status = &plan.statuses[i];
        let target = self.request.manifest_dir().join(&status.name);
        let published = result.and_then(|codecs| {
            Ok((
                codecs,
                publish::rendition(&scratch.join(&status.name), &target)?,
            ))
        });
        match published {
            Ok((codecs, rates)) => {
                let uri = status.playlist.clone();
                match (&plan.videos[i], codecs) {
                    (Some(r), Some(codecs)) => finished.videos.push(VideoVariant {
                        uri,
                        width: r.width,
                        height: r.height,
                        frame_rate: f64::from(plan.fps),
                        codecs,
                        rates,
                    }),
                    _ => finished.audio = Some(AudioVariant { uri, rates }),
                }
                self.tracker.update(|s| {
                    let r = &mut s.renditions[i];
                    r.state = RenditionState::Ready;
                    r.size_bytes = Some(rates.bytes);
                    r.bitrate_kbps = Some(rates.average.div_ceil(1000));
                    r.peak_bitrate_kbps = Some(rates.peak.div_ceil(1000));
                });
                false
            }
            Err(e) => {
                tracing::warn!(rendition = %status.name, "rendition failed: {e}");
                let _ = std::fs::remove_dir_all(scratch.join(&status.name));
                self.tracker.update(|s| {
                    s.renditions[i].state = RenditionState::Failed;
                    s.renditions[i].error = Some(e.to_string());
                });
                matches!(e, MediaError::Cancelled)
            }
        }
    }

    /// (Re)writes master.m3u8 once something plays; the first time makes the job playable.
    fn publish_master(&self, finished: &Finished, videos: usize) -> Result<(), JobEnd> {
        let written = publish::master(self.request, finished, videos)
            .map_err(|e| JobEnd::failed(format!("writing the master playlist: {e}")))?;
        let Some(relative) = written else {
            return Ok(());
        };
        self.tracker.update(|s| {
            if !s.playable {
                s.playable = true;
                s.timestamps.first_playable = Some(Utc::now());
                tracing::info!("first playable");
            }
            s.master_playlist = Some(relative);
        });
        Ok(())
    }

    /// `ready` when every rendition is, `partial` when some are, `failed` when nothing plays.
    fn finish(&self, info: &SourceInfo) -> Result<(), JobEnd> {
        let status = self.tracker.snapshot();
        let ready = |kind| {
            let ready = |r: &&status::RenditionStatus| r.state == RenditionState::Ready;
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
        if ready(main) == 0 {
            // Nothing to play: leave no half-made package behind, only status.json with why.
            let _ = std::fs::remove_dir_all(self.request.manifest_dir());
            let reason = status.renditions.iter().find_map(|r| r.error.clone());
            return Err(JobEnd::failed(
                reason.unwrap_or_else(|| "no rendition was produced".into()),
            ));
        }
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

/// Runs blocking media work on the blocking pool, inside the caller's span; a panic becomes an
/// error instead of taking the process down.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, MediaError> + Send + 'static,
) -> Result<T, MediaError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .unwrap_or_else(|_| {
            Err(MediaError::Encode(
                "internal error: the media task crashed".into(),
            ))
        })
}
