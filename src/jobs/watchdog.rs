//! Running one decode pass on the blocking pool under a watchdog: the job's cancellation, a
//! time limit and a stall detector (no frame progress) all stop it between packets, and a pass
//! that does not stop when asked is abandoned so its job still ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::media::MediaError;
use crate::media::pass::{self, DamagedPackets, PassOutcome, PassSpec};

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
    };
    let task = background_pass(spec);
    tokio::pin!(task);

    let progress = || {
        counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let started = Instant::now();
    let (mut last, mut last_change) = (progress(), Instant::now());
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
                let now = progress();
                if now != last {
                    (last, last_change) = (now, Instant::now());
                }
                let reason = if last_change.elapsed() >= limits.stall {
                    Some(format!("stalled: no progress for {} s", limits.stall.as_secs()))
                } else if started.elapsed() >= limits.timeout {
                    Some(format!("timed out after {} s", limits.timeout.as_secs()))
                } else {
                    None
                };
                if let Some(reason) = reason {
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
