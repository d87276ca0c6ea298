//! The units this instance runs for the queue (`POST /work`): one task per unit, which the
//! delivering request waits on. A redelivery of a unit running here waits on the same task; one
//! whose markers exist is done at once; one another instance holds (its lease) or that finds no
//! room here is sent back to wait. On shutdown every unit is cancelled and its lease released,
//! so the queue hands it to another instance at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::lease::{self, Leased};
use super::plan::Plan;
use super::publish;
use super::request::Engine;
use super::run::pass_memory;
use super::scheduler::Grant;
use super::settle::{failure_key, settle};
use super::settled::FollowUp;
use super::work::{self, Ran, WorkUnit, parts_of};
use crate::queue::Queue;
use crate::storage::Store;
use crate::webhooks::Webhooks;

/// Runs of a unit that end in an error or a stopped instance before the dead-letter recorder
/// fails it; with fewer it is queued again.
const GIVE_UP_AFTER: u32 = 3;

/// How a delivery is answered.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// Done now or before (204): the queue may forget it.
    Done,
    /// No room here, or another instance has it: deliver it again after this (429).
    Busy(Duration),
    /// This instance is stopping (503).
    Draining,
    /// It failed; another delivery may succeed (500).
    Failed(String),
}

pub struct Worker {
    engine: Engine,
    input: Arc<dyn Store>,
    output: Arc<dyn Store>,
    /// This process, in leases.
    owner: String,
    lease: Duration,
    /// How long a delivered unit waits for room before it is sent back.
    wait: Duration,
    running: Mutex<HashMap<String, watch::Receiver<Option<Answer>>>>,
    /// Where a dead-lettered unit that never ran goes back to.
    queue: Option<Arc<Queue>>,
    /// Told of the changes this instance's settles make (playable, ended).
    webhooks: Option<Arc<Webhooks>>,
    cancel: CancellationToken,
    draining: AtomicBool,
    tasks: TaskTracker,
}

impl Worker {
    pub fn new(
        engine: Engine,
        input: Arc<dyn Store>,
        output: Arc<dyn Store>,
        lease: Duration,
        wait: Duration,
        queue: Option<Arc<Queue>>,
        webhooks: Option<Arc<Webhooks>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            queue,
            webhooks,
            engine,
            input,
            output,
            owner: uuid::Uuid::new_v4().to_string(),
            lease,
            wait,
            running: Mutex::default(),
            cancel: CancellationToken::new(),
            draining: AtomicBool::new(false),
            tasks: TaskTracker::new(),
        })
    }

    /// Runs `unit` (or waits on its run here) and says how to answer its delivery.
    pub async fn deliver(self: &Arc<Self>, unit: WorkUnit) -> Answer {
        if self.draining.load(Ordering::Relaxed) {
            return Answer::Draining;
        }
        let key = format!("{}/{}", unit.video_id, unit.name());
        let mut answer = {
            let mut running = self.running.lock().expect("lock");
            match running.get(&key) {
                Some(answer) => answer.clone(),
                None => {
                    let (send, answer) = watch::channel(None);
                    running.insert(key.clone(), answer.clone());
                    let worker = self.clone();
                    let span = tracing::info_span!(
                        "unit", video_id = %unit.video_id, unit = %unit.name(), tier = unit.tier.as_str()
                    );
                    self.tasks.spawn(
                        async move {
                            let answer = worker.run(&unit).await;
                            worker.running.lock().expect("lock").remove(&key);
                            send.send_replace(Some(answer));
                        }
                        .instrument(span),
                    );
                    answer
                }
            }
        };
        match answer.wait_for(Option::is_some).await {
            Ok(answer) => answer.clone().expect("waited for"),
            Err(_) => Answer::Failed("the unit's task ended without an answer".into()),
        }
    }

    async fn run(&self, unit: &WorkUnit) -> Answer {
        let plan = unit.plan(&self.engine);
        let parts = parts_of(&plan);
        if unit.members.iter().any(|&i| i >= plan.statuses.len()) {
            tracing::warn!("the unit names renditions its plan does not have: dropped");
            return Answer::Done;
        }
        if plan.encoding != unit.encoding || parts[unit.members[0]] != unit.parts {
            let why = "the service's encoding settings changed after this video was planned; \
                       trigger it again";
            return self.give_up(unit, &plan, why).await;
        }
        let store = self.output.as_ref();
        if work::is_marked(store, unit, &plan).await {
            metrics::counter!("transcoder_work_units_total", "result" => "kept").increment(1);
            return self.settled(unit, &plan, &parts, &[]).await;
        }
        let (grant, lease) = match self.admit(unit, &plan).await {
            Ok(held) => held,
            Err(answer) => return answer,
        };
        let settings = &self.engine.settings;
        let begun = settle(
            store,
            &unit.video_id,
            &plan,
            &parts,
            &unit.members,
            settings,
        )
        .await;
        if let Err(e) = begun {
            tracing::warn!("recording the unit's start: {e}");
        }
        let cancel = self.cancel.child_token();
        let stop = CancellationToken::new();
        let keeper = tokio::spawn(lease.keep(stop.clone(), cancel.clone()));
        let ran = work::encode(
            unit,
            &plan,
            &self.engine,
            self.input.clone(),
            self.output.clone(),
            &cancel,
        )
        .await;
        drop(grant);
        stop.cancel();
        let lease = keeper.await.expect("the lease keeper does not panic");
        match ran {
            Ran::Done => {
                lease.release(None).await;
                metrics::counter!("transcoder_work_units_total", "result" => "done").increment(1);
                self.settled(unit, &plan, &parts, &[]).await
            }
            Ran::Cancelled => {
                lease.release(None).await;
                match self.draining.load(Ordering::Relaxed) {
                    true => Answer::Draining,
                    false => Answer::Failed("the unit's lease was lost to another instance".into()),
                }
            }
            Ran::Failed(why) => {
                tracing::warn!("unit failed: {why}");
                metrics::counter!("transcoder_work_units_total", "result" => "failed").increment(1);
                lease.release(Some(why.clone())).await;
                Answer::Failed(why)
            }
        }
    }

    /// Room for `unit` here (an encoder and memory, waited for up to `wait`), then its lease;
    /// or how to answer the delivery instead.
    async fn admit(
        &self,
        unit: &WorkUnit,
        plan: &Plan,
    ) -> Result<(Option<Grant>, lease::Lease), Answer> {
        let encoders = unit
            .members
            .iter()
            .filter(|&&i| plan.videos[i].is_some())
            .count();
        let memory = pass_memory(&unit.source, plan, &unit.members);
        let wait = tokio::time::timeout(
            self.wait,
            self.engine.scheduler.acquire(unit.tier, encoders, memory),
        );
        // Audio alone costs a few percent of a core: it takes no encoder (as in-process).
        let grant = match encoders {
            0 => None,
            _ => tokio::select! {
                waited = wait => match waited {
                    Ok(Ok(grant)) => Some(grant),
                    Ok(Err(why)) => return Err(Answer::Failed(why)),
                    Err(_) => {
                        metrics::counter!("transcoder_work_units_total", "result" => "busy")
                            .increment(1);
                        return Err(Answer::Busy(self.wait));
                    }
                },
                () = self.cancel.cancelled() => return Err(Answer::Draining),
            },
        };
        // Taken once there is room, so a unit sent back for want of room has no run counted.
        let key = self.lease_key(unit);
        match lease::take(&self.output, &key, &self.owner, self.lease).await {
            Ok(Leased::Taken(lease)) => Ok((grant, lease)),
            Ok(Leased::Held(left)) => {
                tracing::info!(
                    left_seconds = left.as_secs(),
                    "another instance runs the unit"
                );
                Err(Answer::Busy(left.max(Duration::from_secs(1))))
            }
            Err(e) => Err(Answer::Failed(format!("taking the unit's lease: {e}"))),
        }
    }

    /// Settles the video after `unit`; a store that fails here has the unit delivered again
    /// (its markers are kept, so that only settles again).
    async fn settled(
        &self,
        unit: &WorkUnit,
        plan: &Plan,
        parts: &[u32],
        begun: &[usize],
    ) -> Answer {
        let settings = &self.engine.settings;
        match settle(
            self.output.as_ref(),
            &unit.video_id,
            plan,
            parts,
            begun,
            settings,
        )
        .await
        {
            Ok(status) => {
                let status = self.follow_up().settled(unit, status).await;
                tracing::info!(state = status.state.as_str(), "video settled");
                Answer::Done
            }
            Err(e) => Answer::Failed(format!("settling the video: {e}")),
        }
    }

    /// Records `unit` as failed for good (`why`) for each of its renditions still without a
    /// marker, and settles the video: the queue forgets the unit.
    async fn give_up(&self, unit: &WorkUnit, plan: &Plan, why: &str) -> Answer {
        let chunk = unit.range.index;
        for &i in &unit.members {
            let name = &plan.statuses[i].name;
            let key = publish::key(&unit.video_id, &failure_key(name, chunk));
            let text = format!("chunk {chunk}: {why}");
            if let Err(e) = self.output.put(&key, text.into()).await {
                return Answer::Failed(format!("recording the unit's failure: {e}"));
            }
        }
        tracing::warn!(reason = why, "unit failed for good");
        metrics::counter!("transcoder_work_units_total", "result" => "dead").increment(1);
        let parts = parts_of(plan);
        self.settled(unit, plan, &parts, &[]).await
    }

    /// The dead-letter recorder: `unit` was delivered as often as the queue allows and never
    /// finished. Its renditions are recorded as failed with its last failure.
    pub async fn dead_letter(&self, unit: WorkUnit) -> Answer {
        let plan = unit.plan(&self.engine);
        if unit.members.iter().any(|&i| i >= plan.statuses.len()) {
            return Answer::Done;
        }
        if work::is_marked(self.output.as_ref(), &unit, &plan).await {
            return Answer::Done;
        }
        let history = match lease::history(self.output.as_ref(), &self.lease_key(&unit)).await {
            Ok(history) => history,
            Err(e) => return Answer::Failed(format!("reading the unit's lease: {e}")),
        };
        // Pub/Sub counts every refused delivery (no room, leased elsewhere) towards its limit:
        // a unit gives up only after it really went wrong this often.
        let bad = history.failures + history.crashes;
        if bad < GIVE_UP_AFTER {
            return self.requeue(&unit).await;
        }
        let why = match history.last_error {
            Some(last) => format!("it failed {bad} times; the last time: {last}"),
            None => format!("its instance stopped {bad} times while running it (out of memory?)"),
        };
        self.give_up(&unit, &plan, &why).await
    }

    /// Queues a unit the queue gave up on again: a long backlog, or an instance killed once
    /// (a deploy, a scale-in), is no reason to fail a video.
    async fn requeue(&self, unit: &WorkUnit) -> Answer {
        let Some(queue) = &self.queue else {
            return Answer::Failed("no queue to put the unit back on".into());
        };
        match queue.publish(unit).await {
            Ok(()) => {
                tracing::info!("unit never found room: queued again");
                metrics::counter!("transcoder_work_units_total", "result" => "requeued")
                    .increment(1);
                Answer::Done
            }
            Err(why) => Answer::Failed(format!("queueing the unit again: {why}")),
        }
    }

    fn follow_up(&self) -> FollowUp<'_> {
        FollowUp {
            engine: &self.engine,
            input: &self.input,
            output: &self.output,
            webhooks: self.webhooks.as_ref(),
        }
    }

    fn lease_key(&self, unit: &WorkUnit) -> String {
        publish::key(&unit.video_id, &format!("leases/{}.json", unit.name()))
    }

    /// Refuses new units and cancels the running ones, which release their leases and are
    /// answered 503; returns once they have (or at `deadline`).
    pub async fn shutdown(&self, deadline: tokio::time::Instant) {
        self.draining.store(true, Ordering::Relaxed);
        self.cancel.cancel();
        self.tasks.close();
        if tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some units did not stop before the deadline");
        }
    }

    /// Units running or waiting here.
    pub fn running(&self) -> usize {
        self.running.lock().expect("lock").len()
    }
}
