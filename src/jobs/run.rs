//! Running one job: fetch and probe the source, plan renditions (keeping any an interrupted run
//! already published), run decode passes tier by tier on the shared pool, publish each finished
//! rendition and the master playlist, and keep status.json current.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::cost::{self, Prices};
use super::early::{self, SharedBoard};
use super::outcome::variant;
use super::plan::Plan;
use super::progressive::Board;
use super::publish::{self, Finished};
use super::request::{Engine, JobRequest};
use super::scheduler;
use super::scratch;
use super::status::{JobState, JobStatus, RenditionState};
use super::tracker::Tracker;
use super::units::Book;
use super::watchdog::{self, Stopped};
use crate::config::{DecodePlan, TranscodeSettings};
use crate::media;
use crate::media::input::Origin;
use crate::media::mux::Segmenting;
use crate::media::pass::{AudioTarget, DamagedPackets, FrameRange, PassSpec, VideoTarget};
use crate::media::playlist::Rates;
use crate::media::source::SourceInfo;
use crate::storage::Store;

/// How often status.json is rewritten while encoding, at the least.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// Runs the job to a final state and returns its last status, which is also in status.json.
/// Every outcome, including bad input and cancellation, ends there; this never panics on media
/// errors.
pub async fn run(
    request: JobRequest,
    engine: &Engine,
    cancel: CancellationToken,
    updates: watch::Sender<JobStatus>,
) -> JobStatus {
    let span = tracing::info_span!("job", video_id = %request.video_id);
    async move {
        let output = request.output.clone();
        let previous = publish::read_status(output.as_ref(), &request.video_id).await;
        let mut initial = JobStatus::queued_from(&request.video_id, request.source.uri());
        initial.metadata = request.metadata.clone();
        let stop_writer = CancellationToken::new();
        let writer = tokio::spawn(publish::status_writer(
            output,
            updates.subscribe(),
            stop_writer.clone(),
        ));
        let tracker = Arc::new(Tracker::new(initial, updates));
        let job = Job::new(&request, engine, &cancel, &tracker);
        let result = job
            .execute(previous.as_ref())
            .await
            .map_err(|end| job.keep_earlier(previous.as_ref(), end));
        tracker.update(|s| {
            if let Err(end) = result {
                s.state = end.state;
                s.error = Some(end.reason);
            }
            s.timestamps.finished = Some(Utc::now());
            cost::record_wall(s, Prices::from_settings(&engine.settings));
        });
        stop_writer.cancel();
        let _ = writer.await;
        let status = tracker.snapshot();
        tracing::info!(state = ?status.state, error = status.error.as_deref(), "job finished");
        status
    }
    .instrument(span)
    .await
}

/// Why a job ended without finishing normally.
pub(super) struct JobEnd {
    pub(super) state: JobState,
    pub(super) reason: String,
}

impl JobEnd {
    pub(super) fn failed(reason: impl Into<String>) -> Self {
        Self {
            state: JobState::Failed,
            reason: reason.into(),
        }
    }

    pub(super) fn interrupted() -> Self {
        Self {
            state: JobState::Interrupted,
            reason: "interrupted before it finished; trigger it again to resume".into(),
        }
    }
}

/// What one job works with; borrowed for the job's lifetime.
pub(super) struct Job<'a> {
    pub(super) request: &'a JobRequest,
    pub(super) engine: &'a Engine,
    pub(super) cancel: &'a CancellationToken,
    pub(super) tracker: &'a Arc<Tracker>,
    /// Keys this run wrote, removed again if the job ends with nothing playable.
    pub(super) published: Mutex<Vec<String>>,
    /// Sizes of the files published during their pass (no longer in scratch).
    pub(super) early_sizes: Mutex<HashMap<PathBuf, u64>>,
    /// Source packets the decoders refused, the most any pass met (each decodes the same source).
    pub(super) damaged: Mutex<DamagedPackets>,
    /// The source as found (set once, before probing): every pass reads it in place.
    pub(super) source: OnceLock<Origin>,
    /// The master playlist: finished renditions and those growing in the running pass.
    pub(super) board: SharedBoard,
    /// Growing playlists and the master are published during a pass (not for a queued unit,
    /// whose renditions other instances finish: see `work`).
    pub(super) playlists_early: bool,
}

impl<'a> Job<'a> {
    /// A job of `request` that reports to `tracker`, with nothing done yet.
    pub(super) fn new(
        request: &'a JobRequest,
        engine: &'a Engine,
        cancel: &'a CancellationToken,
        tracker: &'a Arc<Tracker>,
    ) -> Self {
        let board = Board::new(&request.video_id, Some(tracker.clone()), 0, false);
        Job {
            board: Arc::new(tokio::sync::Mutex::new(board)),
            request,
            engine,
            cancel,
            tracker,
            published: Mutex::new(Vec::new()),
            early_sizes: Mutex::new(HashMap::new()),
            damaged: Mutex::default(),
            source: OnceLock::new(),
            playlists_early: true,
        }
    }
}

impl Job<'_> {
    pub(super) fn settings(&self) -> &TranscodeSettings {
        &self.engine.settings
    }

    pub(super) fn store(&self) -> &dyn Store {
        self.request.output.as_ref()
    }

    pub(super) fn key(&self, rest: &str) -> String {
        publish::key(&self.request.video_id, rest)
    }

    async fn execute(&self, previous: Option<&JobStatus>) -> Result<(), JobEnd> {
        media::init().map_err(|e| JobEnd::failed(e.to_string()))?;
        self.tracker.update(|s| {
            s.state = JobState::Processing;
            s.timestamps.started = Some(Utc::now());
            s.cost = Some(Default::default());
        });
        // Progress and the `updated` time move every second, even while waiting for the pool:
        // a status that stops changing means its instance is gone.
        let _ticker = {
            let tracker = self.tracker.clone();
            AbortOnDropHandle::new(tokio::spawn(async move {
                let mut tick = tokio::time::interval(STATUS_INTERVAL);
                loop {
                    tick.tick().await;
                    tracker.update(|_| {});
                }
            }))
        };
        let scratch = scratch::create(&self.settings().scratch_dir, &self.request.video_id)
            .map_err(|e| JobEnd::failed(format!("cannot create scratch space: {e}")))?;
        let info = self.probe_source().await?;
        tracing::info!(
            duration = info.duration_seconds,
            video = info.video.is_some(),
            audio_streams = info.audio.len(),
            "probed source"
        );
        self.tracker.update(|s| s.source = Some(info.clone()));
        let mut plan = Plan::new(&info, self.settings());
        self.tracker
            .update(|s| s.encoding = Some(plan.encoding.clone()));
        let mut finished = Finished::default();
        let resuming = self.resume(previous, &mut plan, &mut finished).await;
        {
            let mut board = self.board.lock().await;
            board.plan(plan.video_count(), plan.videos.iter().any(Option::is_none));
            board.finished = finished;
        }

        let encoded = self
            .encode_all(&info, &plan, scratch.path(), resuming)
            .await;
        drop(scratch); // removed on every path: here, or by unwinding
        encoded?;
        self.finish(&info).await
    }

    /// Finds the source and probes it, unless the request brings it probed.
    pub(super) async fn probe_source(&self) -> Result<SourceInfo, JobEnd> {
        let found = self.fetch_source().await?;
        let source = self.source.get_or_init(|| found);
        if let Some(info) = self.request.probe.clone() {
            return Ok(info);
        }
        let limits = self.settings().source_limits();
        let watch = self.engine.limits(0.0);
        match watchdog::probe(source.clone(), limits, watch, self.cancel).await {
            Ok(probed) => {
                probed.map_err(|e| JobEnd::failed(format!("the source cannot be used: {e}")))
            }
            Err(Stopped::Cancelled) => Err(JobEnd::interrupted()),
            Err(why) => Err(JobEnd::failed(format!(
                "reading the source {why}; once the input store answers, trigger the video again"
            ))),
        }
    }

    async fn encode_all(
        &self,
        info: &SourceInfo,
        plan: &Plan,
        scratch: &Path,
        resuming: bool,
    ) -> Result<(), JobEnd> {
        let counters = self.tracker.set_renditions(plan.statuses.clone());
        self.publish_master(Vec::new()).await?;
        let scheduler = &self.engine.scheduler;
        let to_encode = plan.videos_to_encode();
        let merge = match self.settings().decode_plan {
            DecodePlan::Single => true,
            DecodePlan::PerTier => false,
            // One decode for all when nothing else wants the pool and the memory holds every
            // encoder at once; otherwise one per tier, so other jobs' low tiers go first.
            DecodePlan::Auto => {
                let all = plan.passes(true).concat();
                let room = scheduler
                    .available_memory()
                    .saturating_sub(scheduler.reserve());
                scheduler.idle_encoders() >= to_encode.min(scheduler.capacity())
                    && pass_memory(info, plan, &all) <= room
            }
        };
        let units = plan.units(merge);
        let book = Book::new(plan, resuming);
        let results = futures_util::future::join_all(
            units
                .iter()
                .map(|unit| self.run_unit(info, plan, unit, &book, &counters, scratch)),
        )
        .await;
        for result in results {
            if result? {
                return Err(JobEnd::interrupted());
            }
        }
        Ok(())
    }

    /// Encodes the renditions `members` of `plan` (the chunk `range` of their video, or all of
    /// it) in one decode, publishing segments as they come; returns each member's result (the
    /// video's codecs string) and the pass's wall seconds.
    pub(super) async fn encode_pass(
        &self,
        info: &SourceInfo,
        plan: &Plan,
        members: &[usize],
        counters: &[Arc<std::sync::atomic::AtomicU64>],
        scratch: &Path,
        range: Option<FrameRange>,
    ) -> Result<(PassResults, f64), JobEnd> {
        let now = Utc::now();
        self.tracker.update(|s| {
            for &i in members {
                s.renditions[i].state = RenditionState::Encoding;
                s.renditions[i].started = Some(now);
            }
        });
        let names: Vec<&str> = members
            .iter()
            .map(|&i| plan.statuses[i].name.as_str())
            .collect();
        tracing::info!(renditions = ?names, "decode pass started");
        let settings = self.settings();
        let pass_over = CancellationToken::new();
        let target = early::Target {
            store: self.request.output.clone(),
            video_id: self.request.video_id.clone(),
            scratch: scratch.to_path_buf(),
            board: self.board.clone(),
            playlists: self.playlists_early,
            renditions: members
                .iter()
                // Codecs come from the init segment, rates from what is published.
                .map(|&i| {
                    let entry = variant(plan, i, Some(""), Rates::default());
                    (scratch.join(&plan.statuses[i].name), entry)
                })
                .collect(),
        };
        let (sink, early) = early::start(target, pass_over.clone());
        let mut spec = PassSpec {
            source: self.source.get().expect("found before any pass").clone(),
            info: info.clone(),
            video: Vec::new(),
            audio: None,
            preset: settings.preset.clone(),
            fps: plan.fps,
            segmenting: Segmenting {
                kind: settings.segment_type,
                seconds: settings.segment_seconds,
                part: None,
                on_segment: Some(sink),
            },
            audio_kbps: settings.audio_bitrate_kbps,
            encoder_threads: settings.encoder_threads as usize,
            rate_control: settings.rate_control,
            cancel: Arc::new(AtomicBool::new(false)),
            frames: range,
        };
        let (mut video_members, mut audio_member) = (Vec::new(), None);
        for &i in members {
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
        let limits = self.engine.limits(info.duration_seconds);
        let started = Instant::now();
        let pass_counters = members.iter().map(|&i| counters[i].clone()).collect();
        let outcome = watchdog::run_pass(spec, pass_counters, limits, self.cancel).await;
        let seconds = started.elapsed().as_secs_f64();
        let damaged = {
            let mut worst = self.damaged.lock().expect("lock");
            *worst = worst.max(outcome.damaged);
            *worst
        };
        let memory = pass_memory(info, plan, members);
        self.tracker.update(|s| {
            s.report_damage(damaged);
            cost::record_pass(
                s,
                outcome.cpu_seconds,
                memory,
                Prices::from_settings(settings),
            );
        });
        pass_over.cancel();
        if let Ok(early) = early.await {
            self.published.lock().expect("lock").extend(early.keys);
            self.early_sizes.lock().expect("lock").extend(early.sizes);
        }
        let results = video_members
            .into_iter()
            .zip(outcome.video.into_iter().map(|r| r.map(Some)))
            .chain(audio_member.zip(outcome.audio.map(|r| r.map(|()| None))));
        Ok((results.collect(), seconds))
    }

    /// Publishes the renditions a pass finished (`results`): republishes the master first if
    /// it names one below its final peak, publishes each (or records its failure), then the
    /// master over them; true if the job was cancelled meanwhile.
    pub(super) async fn conclude(
        &self,
        plan: &Plan,
        results: PassResults,
        seconds: f64,
        scratch: &Path,
    ) -> Result<bool, JobEnd> {
        let finals = results
            .iter()
            .filter_map(|(i, r)| Some((*i, r.as_ref().ok()?.as_deref())));
        if let Err(e) = self.cover_finals(plan, finals, scratch).await {
            tracing::warn!("{e}");
        }
        let (mut cancelled, mut done) = (false, Vec::new());
        for (i, result) in results {
            cancelled |= self
                .record(plan, i, result, seconds, scratch, &mut done)
                .await;
        }
        self.publish_master(done).await?;
        self.publish_images().await;
        Ok(cancelled)
    }
}

/// Each member of a pass with its result: the video's codecs string, `None` for the audio.
pub(super) type PassResults = Vec<(usize, Result<Option<String>, crate::media::MediaError>)>;

/// The memory guard's estimate for a pass: one decoder of the source plus each video encoder.
pub(super) fn pass_memory(info: &SourceInfo, plan: &Plan, members: &[usize]) -> u64 {
    let decoder = info.video.as_ref().map_or(16 << 20, |v| {
        scheduler::decoder_bytes(v.coded_width, v.coded_height)
    });
    let encoders: u64 = members
        .iter()
        .filter_map(|&i| plan.videos[i].as_ref())
        .map(|r| scheduler::encoder_bytes(r.width, r.height))
        .sum();
    decoder + encoders
}
