//! The jobs of this instance: admission (queue capacity, idempotent triggers), one task per
//! job, their live status, what this instance has learnt about its own speed, and an orderly
//! stop on shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::publish;
use super::request::{Engine, JobRequest};
use super::run;
use super::status::{JobState, JobStatus};
use super::worker::Worker;
use crate::queue::Queue;
use crate::storage::{Store, StoreError};

mod queued;
use crate::webhooks::Webhooks;

/// Wall seconds per second of source before this instance has finished a job of its own:
/// the 5-rung 1080p ladder ran at about 0.75 on 2 cores, so 1.0 errs on the slow side.
const INITIAL_SECONDS_PER_SECOND: f64 = 1.0;

pub struct Jobs {
    engine: Engine,
    output: Arc<dyn Store>,
    /// Jobs admitted and not finished, at most.
    capacity: usize,
    active: Mutex<HashMap<String, Active>>,
    /// Parent of every job's token: cancelled on shutdown.
    cancel: CancellationToken,
    tasks: TaskTracker,
    draining: AtomicBool,
    /// Measured wall seconds per source second of finished jobs (moving average).
    speed: Mutex<f64>,
    /// Tells `WEBHOOK_URL` when a job becomes playable and when it ends.
    webhooks: Option<Arc<Webhooks>>,
    /// Queue mode (`WORK_TOPIC`): jobs are planned here and run as units by the queue.
    queued: Option<Queued>,
}

/// What queue mode works with: where units go, and what runs those delivered here.
pub struct Queued {
    pub queue: Arc<Queue>,
    pub worker: Arc<Worker>,
}

/// The end of the shutdown grace period kept for writing the statuses of jobs that did not stop.
const STUCK_WRITES: Duration = Duration::from_secs(1);

/// A running job's status.json is rewritten every second; one unchanged this long has no
/// instance working on it.
const ORPHANED_AFTER: chrono::Duration = chrono::Duration::seconds(60);

struct Active {
    input: String,
    status: watch::Receiver<JobStatus>,
}

/// What a submission led to.
pub enum Admitted {
    /// A new job was queued (for a `partial` video: to redo the renditions that failed).
    New(JobStatus),
    /// The same video from the same source is queued, running or ready: that job stands.
    Existing(JobStatus),
}

#[derive(Debug, Error)]
pub enum AdmitError {
    #[error("{0} jobs are already queued or running, the most this instance takes; retry later")]
    Busy(usize),
    #[error("the service is shutting down; retry on another instance")]
    Draining,
    #[error("video `{0}` is being made from another source right now")]
    Conflict(String),
    #[error("video `{0}` is already made from another source; give the new one another videoId")]
    Made(String),
    #[error("{0}")]
    Queue(String),
}

/// The live status of `video_id` if this instance has it from `input`; a conflict if it has it
/// from another source.
fn existing(
    active: &HashMap<String, Active>,
    video_id: &str,
    input: &str,
) -> Result<Option<JobStatus>, AdmitError> {
    match active.get(video_id) {
        Some(job) if job.input == input => Ok(Some(job.status.borrow().clone())),
        Some(_) => Err(AdmitError::Conflict(video_id.into())),
        None => Ok(None),
    }
}

/// Jobs not yet in a final state: a job that has just ended stays in the map until its last
/// status.json write, but no longer takes a place in the queue.
fn unfinished(active: &HashMap<String, Active>) -> usize {
    active
        .values()
        .filter(|job| !job.status.borrow().state.is_final())
        .count()
}

impl Jobs {
    pub fn new(
        engine: Engine,
        output: Arc<dyn Store>,
        capacity: usize,
        webhooks: Option<Arc<Webhooks>>,
        queued: Option<Queued>,
    ) -> Arc<Self> {
        Arc::new(Self {
            webhooks,
            queued,
            engine,
            output,
            capacity: capacity.max(1),
            active: Mutex::new(HashMap::new()),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            draining: AtomicBool::new(false),
            speed: Mutex::new(INITIAL_SECONDS_PER_SECOND),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn output(&self) -> &Arc<dyn Store> {
        &self.output
    }

    /// What runs the units the queue delivers here, in queue mode.
    pub fn worker(&self) -> Option<&Arc<Worker>> {
        self.queued.as_ref().map(|q| &q.worker)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Jobs queued or running.
    pub fn active_count(&self) -> usize {
        unfinished(&self.active.lock().expect("jobs lock"))
    }

    /// The current status of every job this instance is running or queueing.
    fn active_statuses(&self) -> Vec<JobStatus> {
        self.active
            .lock()
            .expect("jobs lock")
            .values()
            .map(|job| job.status.borrow().clone())
            .collect()
    }

    /// Live statuses of the jobs on this instance, oldest queued first, for operators. Jobs
    /// that ended are not kept: their status is status.json in the output store.
    pub fn overview(&self) -> Vec<JobStatus> {
        let mut active = self.active_statuses();
        active.sort_by_key(|job| job.timestamps.queued);
        active
    }

    /// Whether a new job would be admitted now (checked before accepting an upload's body).
    pub fn check_room(&self) -> Result<(), AdmitError> {
        self.check_room_in(&self.active.lock().expect("jobs lock"))
    }

    fn check_room_in(&self, active: &HashMap<String, Active>) -> Result<(), AdmitError> {
        if self.is_draining() {
            return Err(AdmitError::Draining);
        }
        match unfinished(active) {
            n if n >= self.capacity => Err(AdmitError::Busy(n)),
            _ => Ok(()),
        }
    }

    /// Makes the job active, unless (checked again, as the store was read meanwhile) another
    /// request admitted it first (its live status is returned) or the queue filled up.
    fn insert(
        &self,
        video_id: &str,
        input: String,
        status: &watch::Receiver<JobStatus>,
    ) -> Result<Option<JobStatus>, AdmitError> {
        let mut active = self.active.lock().expect("jobs lock");
        if let Some(live) = existing(&active, video_id, &input)? {
            return Ok(Some(live));
        }
        self.check_room_in(&active)?;
        let status = status.clone();
        active.insert(video_id.to_string(), Active { input, status });
        metrics::gauge!("transcoder_jobs_active").set(unfinished(&active) as f64);
        Ok(None)
    }

    /// Seconds until a `duration_seconds` source would be ready here, from this instance's
    /// measured speed.
    pub fn estimate_seconds(&self, duration_seconds: f64) -> f64 {
        let speed = *self.speed.lock().expect("speed lock");
        (duration_seconds * speed).ceil()
    }

    /// Admits `request` unless the same video is already queued, running or done from the same
    /// source (then that job is returned), the queue is full, or the instance is stopping.
    pub async fn submit(self: &Arc<Self>, request: JobRequest) -> Result<Admitted, AdmitError> {
        if let Some(queued) = &self.queued {
            return self.plan_queued(queued, request).await;
        }
        let input = request.source.uri();
        let live = existing(
            &self.active.lock().expect("jobs lock"),
            &request.video_id,
            &input,
        )?;
        if let Some(live) = live {
            return Ok(Admitted::Existing(live));
        }
        let previous = publish::read_status(self.output.as_ref(), &request.video_id).await;
        // What plays is never replaced by a trigger: a ready video stays as it is, and one made
        // from another source is not remade (a job that then failed would leave nothing).
        // A `partial` video from the same source runs again, redoing only what failed.
        if let Some(made) = previous.as_ref().filter(|p| p.is_made()) {
            if made.input.as_deref() != Some(input.as_str()) {
                return Err(AdmitError::Made(request.video_id));
            }
            if made.state == JobState::Ready {
                return Ok(Admitted::Existing(made.clone()));
            }
        }

        self.check_room()?;
        let mut queued = JobStatus::queued_from(&request.video_id, input.clone());
        queued.metadata = request.metadata.clone();
        let (updates, status) = watch::channel(queued.clone());
        // Admitted meanwhile by another request here: that job stands.
        if let Some(live) = self.insert(&request.video_id, input, &status)? {
            return Ok(Admitted::Existing(live));
        }

        let jobs = self.clone();
        let span = tracing::info_span!("job", video_id = %request.video_id);
        self.tasks.spawn(
            async move {
                let follower = jobs.webhooks.as_ref().map(|h| h.follow(status.clone()));
                let video_id = request.video_id.clone();
                let engine = jobs.engine.clone();
                let cancel = jobs.cancel.child_token();
                // Its own task, so a panic fails this job and nothing else.
                let job =
                    tokio::spawn(async move { run::run(request, &engine, cancel, updates).await });
                let last = match job.await {
                    Ok(last) => last,
                    Err(e) => {
                        tracing::error!("the job crashed: {e}");
                        let mut last = status.borrow().clone();
                        last.state = JobState::Failed;
                        last.error = Some("internal error: the job crashed; see the logs".into());
                        last.timestamps.finished = Some(Utc::now());
                        publish::write_status(jobs.output.as_ref(), &last).await;
                        last
                    }
                };
                if let Some(follower) = follower {
                    follower.ended(&last);
                }
                jobs.finished(&video_id, &last);
            }
            .instrument(span),
        );
        Ok(Admitted::New(queued))
    }

    fn finished(&self, video_id: &str, last: &JobStatus) {
        let mut active = self.active.lock().expect("jobs lock");
        active.remove(video_id);
        metrics::gauge!("transcoder_jobs_active").set(unfinished(&active) as f64);
        drop(active);
        metrics::counter!("transcoder_jobs_total", "state" => last.state.as_str()).increment(1);
        let (Some(started), Some(finished), Some(source)) = (
            last.timestamps.started,
            last.timestamps.finished,
            last.source.as_ref(),
        ) else {
            return;
        };
        if last.state == JobState::Ready && source.duration_seconds >= 1.0 {
            let seconds = (finished - started).num_milliseconds() as f64 / 1000.0;
            let mut speed = self.speed.lock().expect("speed lock");
            *speed = 0.7 * *speed + 0.3 * (seconds / source.duration_seconds);
        }
    }

    /// The live status of a job running here, else status.json in the output store (where a
    /// `processing` job nobody has written for a minute is reported `interrupted`): a job that
    /// ended is read from the store, never from a copy kept here that the store may contradict.
    /// An error: the store could not be read.
    pub async fn status(&self, video_id: &str) -> Result<Option<JobStatus>, StoreError> {
        if self.queued.is_some() {
            // Written at each unit's start and end only: its age says nothing.
            return publish::fetch_status(self.output.as_ref(), video_id).await;
        }
        let live = self
            .active
            .lock()
            .expect("jobs lock")
            .get(video_id)
            .map(|job| job.status.borrow().clone());
        if live.is_some() {
            return Ok(live);
        }
        let stored = publish::fetch_status(self.output.as_ref(), video_id).await?;
        Ok(stored.map(|status| status.orphaned(Utc::now(), ORPHANED_AFTER)))
    }

    /// Refuses new work from now on (readiness fails) and stops every job's encodes; each job
    /// writes status.json as `interrupted` with what it finished. Jobs that have not done so
    /// shortly before `deadline` are recorded as interrupted here, all at once, so this returns
    /// by `deadline` however many jobs are stuck (Cloud Run kills the process soon after).
    pub async fn shutdown(&self, deadline: Instant) {
        self.draining.store(true, Ordering::Relaxed);
        self.cancel.cancel();
        self.tasks.close();
        if let Some(worker) = self.worker() {
            worker.shutdown(deadline).await;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let for_jobs = deadline - STUCK_WRITES.min(left / 2);
        if tokio::time::timeout_at(for_jobs, self.tasks.wait())
            .await
            .is_ok()
        {
            return;
        }
        let stuck = self.active_statuses();
        let writes = stuck.into_iter().map(|mut status| async move {
            tracing::warn!(video_id = %status.video_id, "job did not stop in time");
            status.state = JobState::Interrupted;
            status.error = Some("interrupted by shutdown; trigger it again to resume".into());
            status.timestamps.finished = Some(Utc::now());
            publish::write_status(self.output.as_ref(), &status).await;
        });
        let all = futures_util::future::join_all(writes);
        if tokio::time::timeout_at(deadline, all).await.is_err() {
            tracing::warn!(
                "some statuses of stopped jobs could not be written before the deadline"
            );
        }
    }
}
