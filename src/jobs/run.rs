//! Running one job: probe, plan renditions, run decode passes tier by tier on the shared pool,
//! publish each finished rendition and the master playlist, and keep status.json current.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::status::{JobState, JobStatus, RenditionKind, RenditionState, RenditionStatus};
use crate::config::{DecodePlan, TranscodeSettings};
use crate::media::filters::output_frame_rate;
use crate::media::ladder::{self, Tier, VideoRendition};
use crate::media::master::{self, AudioVariant, VideoVariant};
use crate::media::mux::{PLAYLIST, Segmenting};
use crate::media::pass::{self, AudioTarget, PassOutcome, PassSpec, VideoTarget};
use crate::media::playlist::MediaPlaylist;
use crate::media::source::{self, Limits, SourceInfo};
use crate::media::{self as media_mod, MediaError};

/// Audio samples per AAC frame, for progress accounting.
const AAC_FRAME: f64 = 1024.0;
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
        let tracker = match Tracker::new(&request, updates) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                let mut status = JobStatus::queued(&request.video_id);
                status.state = JobState::Failed;
                status.error = Some(format!("cannot write to the output folder: {e}"));
                return status;
            }
        };
        let result = execute(&request, &settings, &pool, &cancel, &tracker).await;
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
}

/// Owns status.json for one job: every change goes through `update`, which writes the file and
/// notifies watchers.
struct Tracker {
    status: Mutex<JobStatus>,
    path: PathBuf,
    updates: watch::Sender<JobStatus>,
    /// Frame counters bumped by the encoders, one per rendition.
    counters: Mutex<Vec<Arc<AtomicU64>>>,
}

impl Tracker {
    fn new(request: &JobRequest, updates: watch::Sender<JobStatus>) -> std::io::Result<Self> {
        let dir = request.video_dir();
        std::fs::create_dir_all(&dir)?;
        // A new run replaces whatever an earlier run with this id left behind.
        match std::fs::remove_dir_all(dir.join("manifest")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let tracker = Self {
            status: Mutex::new(JobStatus::queued(&request.video_id)),
            path: dir.join("status.json"),
            updates,
            counters: Mutex::new(Vec::new()),
        };
        tracker.update(|_| {});
        Ok(tracker)
    }

    fn update(&self, change: impl FnOnce(&mut JobStatus)) {
        let mut status = self.status.lock().expect("status lock");
        change(&mut status);
        let counters = self.counters.lock().expect("counters lock");
        for (r, c) in status.renditions.iter_mut().zip(counters.iter()) {
            r.frames_done = r.frames_done.max(c.load(Ordering::Relaxed));
        }
        status.refresh_progress(Utc::now());
        if let Err(e) = status.write_atomic(&self.path) {
            tracing::error!("writing status.json: {e}");
        }
        self.updates.send_replace(status.clone());
    }

    fn snapshot(&self) -> JobStatus {
        self.status.lock().expect("status lock").clone()
    }
}

async fn execute(
    request: &JobRequest,
    settings: &TranscodeSettings,
    pool: &Arc<Semaphore>,
    cancel: &CancellationToken,
    tracker: &Arc<Tracker>,
) -> Result<(), JobEnd> {
    media_mod::init().map_err(|e| JobEnd::failed(e.to_string()))?;
    tracker.update(|s| {
        s.state = JobState::Processing;
        s.timestamps.started = Some(Utc::now());
    });
    let limits = Limits {
        max_bytes: settings.max_video_size,
        max_seconds: settings.max_duration,
    };
    let path = request.source.clone();
    let info = blocking(move || source::probe(&path, limits))
        .await
        .map_err(|e| JobEnd::failed(format!("probe: {e}")))?;
    tracing::info!(
        duration = info.duration_seconds,
        video = info.video.is_some(),
        audio_streams = info.audio.len(),
        "probed source"
    );
    let plan = Plan::new(&info, settings);
    tracker.update(|s| {
        s.source = Some(info.clone());
        s.renditions = plan.statuses.clone();
    });
    *tracker.counters.lock().expect("counters lock") = plan
        .statuses
        .iter()
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();

    let scratch = tempfile::Builder::new()
        .prefix(&format!("vt-{}-", request.video_id))
        .tempdir_in(&settings.scratch_dir)
        .map_err(|e| JobEnd::failed(format!("cannot create scratch space: {e}")))?;
    let ticker = {
        let tracker = tracker.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(STATUS_INTERVAL);
            loop {
                tick.tick().await;
                tracker.update(|_| {});
            }
        })
    };
    let published = run_passes(
        request,
        settings,
        pool,
        cancel,
        tracker,
        &info,
        &plan,
        scratch.path(),
    )
    .await;
    ticker.abort();
    drop(scratch); // scratch is removed on every path, here or by unwinding
    published?;
    finish_state(tracker, &info, &request.video_dir().join("manifest"))
}

/// Renditions of a job and how they are grouped into decode passes.
struct Plan {
    statuses: Vec<RenditionStatus>,
    videos: Vec<Option<VideoRendition>>,
    fps: ffmpeg_next::Rational,
}

impl Plan {
    fn new(info: &SourceInfo, settings: &TranscodeSettings) -> Self {
        let mut statuses = Vec::new();
        let mut videos = Vec::new();
        let fps = info
            .video
            .as_ref()
            .map_or(ffmpeg_next::Rational::new(30, 1), |v| {
                output_frame_rate(v, settings.max_fps)
            });
        if let Some(v) = &info.video {
            let mut picked = ladder::select(&settings.ladder, v.display_width, v.display_height);
            picked.reverse(); // smallest first: the order they are published in
            for r in picked {
                statuses.push(RenditionStatus {
                    name: r.name.clone(),
                    kind: RenditionKind::Video,
                    tier: r.tier,
                    width: Some(r.width),
                    height: Some(r.height),
                    target_bitrate_kbps: r.kbps,
                    state: RenditionState::Pending,
                    playlist: format!("{}/{PLAYLIST}", r.name),
                    size_bytes: None,
                    bitrate_kbps: None,
                    peak_bitrate_kbps: None,
                    frames_done: 0,
                    frames_expected: (v.duration_seconds * f64::from(fps)).ceil() as u64,
                    error: None,
                });
                videos.push(Some(r));
            }
        }
        if !info.audio.is_empty() {
            statuses.push(RenditionStatus {
                name: "audio".into(),
                kind: RenditionKind::Audio,
                tier: Tier::Critical,
                width: None,
                height: None,
                target_bitrate_kbps: settings.audio_bitrate_kbps,
                state: RenditionState::Pending,
                playlist: format!("audio/{PLAYLIST}"),
                size_bytes: None,
                bitrate_kbps: None,
                peak_bitrate_kbps: None,
                frames_done: 0,
                frames_expected: (info.duration_seconds * 48_000.0 / AAC_FRAME).ceil() as u64,
                error: None,
            });
            videos.push(None);
        }
        Self {
            statuses,
            videos,
            fps,
        }
    }

    /// Decode passes in order: one per tier (lowest first), the audio riding with the first.
    /// With `merge`, one pass decodes the source once for every rendition.
    fn passes(&self, merge: bool) -> Vec<Vec<usize>> {
        let mut passes: Vec<(Tier, Vec<usize>)> = Vec::new();
        for (i, s) in self.statuses.iter().enumerate() {
            if s.kind == RenditionKind::Audio {
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
        {
            match passes.first_mut() {
                Some(first) => first.push(audio),
                None => passes.push(vec![audio]),
            }
        }
        passes
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_passes(
    request: &JobRequest,
    settings: &TranscodeSettings,
    pool: &Arc<Semaphore>,
    cancel: &CancellationToken,
    tracker: &Arc<Tracker>,
    info: &SourceInfo,
    plan: &Plan,
    scratch: &Path,
) -> Result<(), JobEnd> {
    let video_count = plan.videos.iter().flatten().count();
    let capacity = settings.max_parallel_encodes as usize;
    let merge = match settings.decode_plan {
        DecodePlan::Single => true,
        DecodePlan::PerTier => false,
        DecodePlan::Auto => video_count <= capacity && pool.available_permits() >= video_count,
    };
    let manifest = request.video_dir().join("manifest");
    let mut variants: Vec<Option<VideoVariant>> = vec![None; plan.statuses.len()];
    let mut audio_variant: Option<AudioVariant> = None;
    for members in plan.passes(merge) {
        let videos = members
            .iter()
            .filter(|&&i| plan.videos[i].is_some())
            .count();
        let permits = videos.clamp(1, capacity) as u32;
        let _permit = tokio::select! {
            permit = pool.clone().acquire_many_owned(permits) => permit.expect("pool open"),
            () = cancel.cancelled() => return Err(interrupted()),
        };
        tracker.update(|s| {
            for &i in &members {
                s.renditions[i].state = RenditionState::Encoding;
            }
        });
        let names: Vec<&str> = members
            .iter()
            .map(|&i| plan.statuses[i].name.as_str())
            .collect();
        tracing::info!(renditions = ?names, "decode pass started");
        let outcome = encode_pass(
            request, settings, cancel, tracker, info, plan, &members, scratch,
        )
        .await;
        let mut cancelled = false;
        let results = members.iter().zip(
            outcome
                .video
                .into_iter()
                .map(|r| r.map(Some))
                .chain(outcome.audio.map(|r| r.map(|()| None))),
        );
        for (&i, result) in results {
            let status = &plan.statuses[i];
            let published = result.and_then(|codecs| {
                let rates = publish(&scratch.join(&status.name), &manifest.join(&status.name))?;
                Ok((codecs, rates))
            });
            match published {
                Ok((codecs, rates)) => {
                    match (&plan.videos[i], codecs) {
                        (Some(r), Some(codecs)) => {
                            variants[i] = Some(VideoVariant {
                                uri: status.playlist.clone(),
                                width: r.width,
                                height: r.height,
                                frame_rate: f64::from(plan.fps),
                                codecs,
                                rates,
                            });
                        }
                        _ => {
                            audio_variant = Some(AudioVariant {
                                uri: status.playlist.clone(),
                                rates,
                            });
                        }
                    }
                    tracker.update(|s| {
                        let r = &mut s.renditions[i];
                        r.state = RenditionState::Ready;
                        r.size_bytes = Some(rates.bytes);
                        r.bitrate_kbps = Some(rates.average.div_ceil(1000));
                        r.peak_bitrate_kbps = Some(rates.peak.div_ceil(1000));
                    });
                }
                Err(e) => {
                    cancelled |= matches!(e, MediaError::Cancelled);
                    tracing::warn!(rendition = %status.name, "rendition failed: {e}");
                    let _ = std::fs::remove_dir_all(scratch.join(&status.name));
                    tracker.update(|s| {
                        s.renditions[i].state = RenditionState::Failed;
                        s.renditions[i].error = Some(e.to_string());
                    });
                }
            }
        }
        if cancelled {
            return Err(interrupted());
        }
        publish_master(
            request,
            tracker,
            &variants,
            audio_variant.as_ref(),
            video_count,
        )?;
    }
    Ok(())
}

fn interrupted() -> JobEnd {
    JobEnd {
        state: JobState::Interrupted,
        reason: "interrupted before it finished".into(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn encode_pass(
    request: &JobRequest,
    settings: &TranscodeSettings,
    cancel: &CancellationToken,
    tracker: &Arc<Tracker>,
    info: &SourceInfo,
    plan: &Plan,
    members: &[usize],
    scratch: &Path,
) -> PassOutcome {
    let counters = tracker.counters.lock().expect("counters lock").clone();
    let mut video = Vec::new();
    let mut audio = None;
    for &i in members {
        let dir = scratch.join(&plan.statuses[i].name);
        match &plan.videos[i] {
            Some(r) => video.push(VideoTarget {
                rendition: r.clone(),
                dir,
                frames: counters[i].clone(),
            }),
            None => {
                audio = Some(AudioTarget {
                    dir,
                    frames: counters[i].clone(),
                })
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, cancel) = (stop.clone(), cancel.clone());
        tokio::spawn(async move {
            cancel.cancelled().await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let spec = PassSpec {
        source: request.source.clone(),
        info: info.clone(),
        video,
        audio,
        preset: settings.preset.clone(),
        fps: plan.fps,
        segmenting: Segmenting {
            kind: settings.segment_type,
            seconds: settings.segment_seconds,
        },
        audio_kbps: settings.audio_bitrate_kbps,
        encoder_threads: settings.encoder_threads as usize,
        cancel: stop,
    };
    let targets = spec.video.len();
    let has_audio = spec.audio.is_some();
    let outcome = blocking(move || Ok::<_, MediaError>(pass::run(spec)))
        .await
        .unwrap_or_else(|e| PassOutcome {
            video: (0..targets).map(|_| Err(e.clone())).collect(),
            audio: has_audio.then(|| Err(e.clone())),
        });
    watcher.abort();
    outcome
}

/// Moves a finished rendition from scratch into the output store; returns its measured rates.
fn publish(from: &Path, to: &Path) -> Result<crate::media::playlist::Rates, MediaError> {
    let rates = MediaPlaylist::read(from)?.rates();
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if std::fs::rename(from, to).is_err() {
        // Scratch on another file system: copy, then let the scratch cleanup remove the source.
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(rates)
}

/// (Re)writes master.m3u8 with every finished rendition, once there is something to play.
fn publish_master(
    request: &JobRequest,
    tracker: &Tracker,
    variants: &[Option<VideoVariant>],
    audio: Option<&AudioVariant>,
    video_count: usize,
) -> Result<(), JobEnd> {
    let ready: Vec<VideoVariant> = variants.iter().flatten().cloned().collect();
    if ready.is_empty() && (video_count > 0 || audio.is_none()) {
        return Ok(());
    }
    let relative = format!("videos/{}/manifest/master.m3u8", request.video_id);
    let path = request.output_root.join(&relative);
    super::status::write_atomic(&path, master::render(&ready, audio).as_bytes())
        .map_err(|e| JobEnd::failed(format!("writing the master playlist: {e}")))?;
    tracker.update(|s| {
        if !s.playable {
            s.playable = true;
            s.timestamps.first_playable = Some(Utc::now());
            tracing::info!("first playable");
        }
        s.master_playlist = Some(relative);
    });
    Ok(())
}

/// ready when every rendition is, partial when some are, failed when nothing can be played.
fn finish_state(tracker: &Tracker, info: &SourceInfo, manifest: &Path) -> Result<(), JobEnd> {
    let status = tracker.snapshot();
    let ready = |kind| {
        status
            .renditions
            .iter()
            .filter(|r| r.kind == kind && r.state == RenditionState::Ready)
            .count()
    };
    let playable = if info.video.is_some() {
        ready(RenditionKind::Video) > 0
    } else {
        ready(RenditionKind::Audio) > 0
    };
    if !playable {
        // Nothing to play: leave no half-made package behind, only status.json with the reason.
        let _ = std::fs::remove_dir_all(manifest);
        let reason = status
            .renditions
            .iter()
            .find_map(|r| r.error.clone())
            .unwrap_or_else(|| "no rendition could be produced".into());
        return Err(JobEnd::failed(reason));
    }
    let all = status
        .renditions
        .iter()
        .all(|r| r.state == RenditionState::Ready);
    tracker.update(|s| {
        s.state = if all {
            JobState::Ready
        } else {
            JobState::Partial
        }
    });
    Ok(())
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
