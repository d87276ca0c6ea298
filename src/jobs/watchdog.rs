//! Running a job's work under a watchdog: the job's cancellation, a time limit and a stall
//! detector (no progress) stop a decode pass between packets, and a source's download or probe
//! at once; work that does not stop when asked is abandoned so its job still ends.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::media::MediaError;
use crate::media::input::{Origin, ReadWatch};
use crate::media::pass::{self, DamagedPackets, PassOutcome, PassSpec};
use crate::media::source::{self, SourceInfo};

/// How long a pass asked to stop may take to notice before it is left behind.
const ABANDON_AFTER: Duration = Duration::from_secs(20);

/// The limits a pass runs under.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest a pass (and so each of its renditions) may encode: `RENDITION_TIMEOUT` plus the
    /// source's duration, so long sources are not cut off at a fixed wall time.
    pub timeout: Duration,
    /// Longest a pass may go without a single frame of progress.
    pub stall: Duration,
}

/// Why the watchdog stopped some work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The job was cancelled (shutdown).
    Cancelled,
    /// No progress for this long (`STALL_TIMEOUT`).
    Stalled(Duration),
    /// Still running after this long (`RENDITION_TIMEOUT`, plus the source's length for a pass).
    TimedOut(Duration),
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stopped::Cancelled => write!(f, "cancelled"),
            Stopped::Stalled(d) => write!(
                f,
                "stalled: no progress for {} s (STALL_TIMEOUT)",
                d.as_secs()
            ),
            Stopped::TimedOut(d) => {
                write!(f, "timed out after {} s (RENDITION_TIMEOUT)", d.as_secs())
            }
        }
    }
}

/// Progress readings of one piece of work, against its limits.
struct Clock {
    started: Instant,
    last: u64,
    last_change: Instant,
}

impl Clock {
    fn new(progress: u64) -> Self {
        let now = Instant::now();
        Self {
            started: now,
            last: progress,
            last_change: now,
        }
    }

    /// Why the work must stop, given its progress reading now; `None` while it may go on.
    fn overdue(&mut self, progress: u64, limits: &Limits) -> Option<Stopped> {
        if progress != self.last {
            (self.last, self.last_change) = (progress, Instant::now());
        }
        if self.last_change.elapsed() >= limits.stall {
            Some(Stopped::Stalled(limits.stall))
        } else if self.started.elapsed() >= limits.timeout {
            Some(Stopped::TimedOut(limits.timeout))
        } else {
            None
        }
    }
}

/// Runs `work` while `progress` (a number that grows as the work advances) is read every
/// second; the work is dropped (so stopped at its next await) when the job is cancelled, when
/// progress stops for `limits.stall`, or when it runs past `limits.timeout`.
pub async fn watched<T>(
    work: impl Future<Output = T>,
    progress: impl Fn() -> u64,
    limits: Limits,
    cancel: &CancellationToken,
) -> Result<T, Stopped> {
    tokio::pin!(work);
    let mut clock = Clock::new(progress());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            done = &mut work => return Ok(done),
            () = cancel.cancelled() => return Err(Stopped::Cancelled),
            _ = tick.tick() => {
                if let Some(why) = clock.overdue(progress(), &limits) {
                    tracing::warn!("stopping: {why}");
                    return Err(why);
                }
            }
        }
    }
}

/// Probes `origin` on the blocking pool under the watchdog: libav's reads, and the bytes
/// fetched from a bucket, are its progress, so a source whose reads hang (a network filesystem
/// or a bucket that stopped answering) fails as stalled. A probe stopped this way is told to
/// stop and left to end on its own.
pub async fn probe(
    origin: Origin,
    source_limits: source::Limits,
    limits: Limits,
    cancel: &CancellationToken,
) -> Result<Result<SourceInfo, MediaError>, Stopped> {
    let watch = ReadWatch::default();
    let (reads, stop) = (watch.reads.clone(), watch.stop.clone());
    let fetched = match &origin {
        Origin::Object(object) => object.fetched(),
        Origin::File(_) => Arc::default(),
    };
    let work = blocking(move || source::probe_watched(&origin, source_limits, &watch));
    let progress = || reads.load(Ordering::Relaxed) + fetched.load(Ordering::Relaxed);
    let outcome = watched(work, progress, limits, cancel).await;
    if outcome.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    outcome
}

/// Runs `spec`; `counters` are its renditions' frame counters. A pass stopped by the watchdog
/// reports its unfinished renditions as failed with the reason ("stalled …", "timed out …");
/// one stopped by `cancel` reports them `Cancelled`.
pub async fn run_pass(
    spec: PassSpec,
    counters: Vec<Arc<AtomicU64>>,
    limits: Limits,
    cancel: &CancellationToken,
) -> PassOutcome {
    let stop = spec.cancel.clone();
    let (videos, has_audio) = (spec.video.len(), spec.audio.is_some());
    let failed = |e: MediaError| PassOutcome {
        video: (0..videos).map(|_| Err(e.clone())).collect(),
        audio: has_audio.then(|| Err(e.clone())),
        damaged: DamagedPackets::default(),
        cpu_seconds: 0.0,
    };
    let task = background_pass(spec);
    tokio::pin!(task);

    let progress = || {
        counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let mut clock = Clock::new(progress());
    let mut stopped: Option<(Instant, Option<String>)> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            outcome = &mut task => {
                let outcome = outcome.unwrap_or_else(failed);
                return match stopped {
                    Some((_, Some(reason))) => relabel(outcome, &reason),
                    _ => outcome,
                };
            }
            () = cancel.cancelled(), if stopped.is_none() => {
                stop.store(true, Ordering::Relaxed);
                stopped = Some((Instant::now(), None));
            }
            _ = tick.tick() => {
                if let Some((since, reason)) = &stopped {
                    if since.elapsed() >= ABANDON_AFTER {
                        tracing::error!("a decode pass did not stop when asked; leaving it behind");
                        let reason = reason.clone().unwrap_or_else(|| "cancelled".into());
                        return failed(MediaError::Encode(reason));
                    }
                    continue;
                }
                if let Some(why) = clock.overdue(progress(), &limits) {
                    let reason = why.to_string();
                    tracing::warn!("stopping a decode pass: {reason}");
                    stop.store(true, Ordering::Relaxed);
                    stopped = Some((Instant::now(), Some(reason)));
                }
            }
        }
    }
}

/// Renditions the watchdog stopped failed for its reason, not because someone cancelled.
fn relabel(outcome: PassOutcome, reason: &str) -> PassOutcome {
    let relabel = |e: MediaError| match e {
        MediaError::Cancelled => MediaError::Encode(reason.to_string()),
        other => other,
    };
    PassOutcome {
        video: outcome
            .video
            .into_iter()
            .map(|r| r.map_err(relabel))
            .collect(),
        audio: outcome.audio.map(|r| r.map_err(relabel)),
        damaged: outcome.damaged,
        cpu_seconds: outcome.cpu_seconds,
    }
}

/// The encoders' nice value (19, the lowest priority): under full CPU, status polls and uploads
/// are still answered at once, while encodes lose nothing when nothing else wants the CPU.
const ENCODE_NICENESS: i32 = 19;

/// Runs the pass on a thread of its own at a lower CPU priority, which its decoder, encoder and
/// libx264 threads inherit; a panic in it becomes an error.
async fn background_pass(spec: PassSpec) -> Result<PassOutcome, MediaError> {
    let (done, outcome) = tokio::sync::oneshot::channel();
    let span = tracing::Span::current();
    let spawned = std::thread::Builder::new()
        .name("decode-pass".into())
        .spawn(move || {
            // SAFETY: plain syscalls on the calling thread; on Linux the nice value is
            // per thread and inherited by the threads it creates.
            let lowered = unsafe {
                libc::setpriority(
                    libc::PRIO_PROCESS,
                    libc::gettid() as libc::id_t,
                    ENCODE_NICENESS,
                )
            };
            if lowered != 0 {
                tracing::debug!("could not lower the encode priority");
            }
            let run = std::panic::AssertUnwindSafe(|| span.in_scope(|| pass::run(spec)));
            let _ = done.send(std::panic::catch_unwind(run));
        });
    if let Err(e) = spawned {
        return Err(MediaError::Encode(format!(
            "cannot start a decode thread: {e}"
        )));
    }
    match outcome.await {
        Ok(Ok(outcome)) => Ok(outcome),
        _ => Err(MediaError::Encode(
            "internal error: the media task crashed".into(),
        )),
    }
}

/// Runs blocking media work on the blocking pool, inside the caller's span; a panic becomes an
/// error instead of taking the process down.
pub async fn blocking<T: Send + 'static>(
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
