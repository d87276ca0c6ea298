//! Signed webhooks: each receiver in `WEBHOOK_URL` is told when a video becomes playable and
//! when its job ends (`video.playable`, `video.ready`, `video.partial`, `video.failed`,
//! `video.interrupted`), in a JSON body signed with `WEBHOOK_SECRET`.
//!
//! Delivery is at least once: an event goes to the outbox in the output store before its first
//! attempt, and a loop retries what is due there (also after a restart, on any instance) with
//! exponential backoff and jitter for 24 h. A job never waits for a delivery.

mod address;
mod attempt;
mod event;
mod outbox;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Url;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use address::is_private;
pub use attempt::{ATTEMPT_TIMEOUT, MAX_ANSWER_BYTES, Outcome};
pub use event::{Event, EventType, SIGNATURE_HEADER, signature};
pub use outbox::{Entry, FOLDER as OUTBOX, GIVE_UP_AFTER, delay};

use crate::config::WebhookSettings;
use crate::jobs::JobStatus;
use crate::storage::{Store, StoreError};

/// The longest the loop sleeps before looking at the outbox again (entries other instances
/// wrote, or whose attempt an instance began and never finished).
const POLL: Duration = Duration::from_secs(60);

/// Attempts running at once, all receivers together.
const PARALLEL_ATTEMPTS: usize = 16;

/// The webhook sender of this instance.
pub struct Webhooks {
    targets: Vec<Url>,
    secret: Vec<u8>,
    store: Arc<dyn Store>,
    /// Base of the URLs in events: the output store's public base.
    public_base: String,
    client: reqwest::Client,
    retry_base: Duration,
    /// Outbox keys with an attempt running here (not taken again meanwhile).
    in_flight: Mutex<HashSet<String>>,
    attempts: Semaphore,
    /// Wakes the loop early (an attempt failed: its retry may be due before the next poll).
    wake: Notify,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Webhooks {
    /// Checks the receivers (each must be public unless private ones are allowed) and starts
    /// the delivery loop; `None` when no receiver is configured.
    pub async fn start(
        settings: &WebhookSettings,
        store: Arc<dyn Store>,
        public_base: String,
    ) -> Result<Option<Arc<Self>>, String> {
        settings.check()?;
        let targets = settings.urls.0.clone();
        if targets.is_empty() {
            return Ok(None);
        }
        for url in &targets {
            if let Some(why) = address::refused_at_start(url, settings.allow_private).await {
                return Err(format!("WEBHOOK_URL: {why}"));
            }
        }
        let client = attempt::client(settings.allow_private).map_err(|e| e.to_string())?;
        let hooks = Arc::new(Self {
            targets,
            secret: settings
                .secret
                .as_ref()
                .map(|s| s.0.clone().into_bytes())
                .unwrap_or_default(),
            store,
            public_base,
            client,
            retry_base: Duration::from_millis(settings.retry_base_ms),
            in_flight: Mutex::default(),
            attempts: Semaphore::new(PARALLEL_ATTEMPTS),
            wake: Notify::new(),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let receivers: Vec<String> = hooks.targets.iter().map(origin).collect();
        tracing::info!(?receivers, "webhooks on");
        hooks.tasks.spawn(hooks.clone().deliver_due());
        Ok(Some(hooks))
    }

    /// Stops attempts (what they did not deliver stays in the outbox for the next start) and
    /// waits, until `deadline`, for events being written to the outbox.
    pub async fn shutdown(&self, deadline: Instant) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("webhook events still being written at the deadline were cut off");
        }
    }

    /// Follows one job through its status updates and sends `video.playable` when it becomes
    /// playable; [`Follower::ended`] sends the final event.
    pub fn follow(self: &Arc<Self>, mut updates: watch::Receiver<JobStatus>) -> Follower {
        let playable_sent = Arc::new(AtomicBool::new(false));
        let (hooks, sent) = (self.clone(), playable_sent.clone());
        let task = tokio::spawn(
            async move {
                loop {
                    let status = updates.borrow_and_update().clone();
                    if status.playable && !sent.swap(true, Ordering::SeqCst) {
                        hooks.emit(EventType::Playable, &status);
                    }
                    if updates.changed().await.is_err() {
                        return;
                    }
                }
            }
            .in_current_span(),
        );
        Follower {
            hooks: self.clone(),
            playable_sent,
            task,
        }
    }

    /// [`Webhooks::enqueue`] in the background: a job never waits for its events.
    fn emit(self: &Arc<Self>, kind: EventType, status: &JobStatus) {
        let (hooks, status) = (self.clone(), status.clone());
        self.tasks
            .spawn(async move { hooks.enqueue(kind, &status).await }.in_current_span());
    }

    /// [`Webhooks::enqueue`] once whoever calls it, whenever: only the caller that creates the
    /// event's record (`videos/<id>/webhooks/<event-id>`, kept after delivery, unlike the
    /// outbox entry) enqueues it. Queue mode announces from what status.json says on any
    /// instance, each time it settles a video, so this is what keeps it to one event.
    pub async fn enqueue_once(self: &Arc<Self>, kind: EventType, status: &JobStatus) {
        let record = format!("webhooks/{}", event::event_id(kind, status));
        let key = crate::jobs::publish::key(&status.video_id, &record);
        let record = bytes::Bytes::from_static(kind.as_str().as_bytes());
        match self.store.put_if(&key, record, 0).await {
            Ok(_) => self.enqueue(kind, status).await,
            Err(StoreError::Changed(_)) => {}
            Err(e) => tracing::error!(
                event = kind.as_str(),
                "webhook event not recorded, so not sent: {e}"
            ),
        }
    }

    /// Puts the `kind` event of `status` in the outbox for each receiver, returning once it is
    /// written, and makes its first attempt in the background. An event already in the outbox
    /// (same id) is left as it is.
    async fn enqueue(self: &Arc<Self>, kind: EventType, status: &JobStatus) {
        let event = Event::new(kind, status, &self.public_base);
        let body = serde_json::to_string(&event).expect("an event serialises");
        for url in &self.targets {
            let mut entry = Entry {
                event_id: event.id.clone(),
                kind: event.kind.into(),
                url: url.to_string(),
                body: body.clone(),
                created: event.created,
                attempts: 0,
                next_attempt: event.created,
            };
            match outbox::add(self.store.as_ref(), &mut entry, self.retry_base).await {
                Ok(true) => {
                    let hooks = self.clone();
                    self.tasks
                        .spawn(async move { hooks.attempt(entry).await }.in_current_span());
                }
                Ok(false) => {}
                Err(e) => tracing::error!(
                    event_id = %entry.event_id,
                    event = %entry.kind,
                    "webhook event not written to the outbox, so not sent: {e}"
                ),
            }
        }
    }

    /// One attempt at `entry` (already rescheduled in the outbox), unless stopping; the entry
    /// is removed once delivered or refused.
    async fn attempt(self: &Arc<Self>, entry: Entry) {
        let key = entry.key();
        if !self.in_flight.lock().expect("lock").insert(key.clone()) {
            return;
        }
        let outcome = tokio::select! {
            outcome = async {
                let _permit = self.attempts.acquire().await.expect("never closed");
                attempt::send(&self.client, &entry.url, &entry.body, &self.secret).await
            } => Some(outcome),
            () = self.stop.cancelled() => None,
        };
        self.in_flight.lock().expect("lock").remove(&key);
        let Some(outcome) = outcome else { return };
        let receiver = Url::parse(&entry.url)
            .map(|u| origin(&u))
            .unwrap_or_default();
        let (id, kind, attempt) = (&entry.event_id, &entry.kind, entry.attempts);
        metrics::counter!(
            "transcoder_webhook_deliveries_total",
            "event" => kind.clone(),
            "result" => outcome.label()
        )
        .increment(1);
        let done = match &outcome {
            Outcome::Delivered(code) => {
                tracing::info!(event_id = %id, event = %kind, attempt, %receiver, result = "delivered", code, "webhook delivered");
                true
            }
            Outcome::Refused(why) => {
                tracing::warn!(event_id = %id, event = %kind, attempt, %receiver, result = "refused", "webhook refused, not retried: {why}");
                true
            }
            Outcome::Failed(why) if entry.expired(entry.next_attempt) => {
                tracing::error!(event_id = %id, event = %kind, attempt, %receiver, result = "failed", "webhook failed for 24 h, given up: {why}");
                true
            }
            Outcome::Failed(why) => {
                tracing::warn!(event_id = %id, event = %kind, attempt, %receiver, result = "failed", next_attempt = %entry.next_attempt, "webhook failed, will retry: {why}");
                self.wake.notify_one();
                false
            }
        };
        if done && let Err(e) = self.store.delete(&key).await {
            tracing::warn!(event_id = %id, "webhook outbox entry not removed: {e}");
        }
    }

    /// The delivery loop: attempts every due outbox entry, then sleeps until the next is due
    /// (at most [`POLL`]), until stopped.
    async fn deliver_due(self: Arc<Self>) {
        loop {
            let next = match self.sweep().await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!("webhook outbox not read: {e}");
                    None
                }
            };
            let wait = next
                .and_then(|at| (at - Utc::now()).to_std().ok())
                .unwrap_or(Duration::ZERO)
                .min(POLL);
            let wait = if next.is_none() { POLL } else { wait };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
                () = self.stop.cancelled() => return,
            }
        }
    }

    /// Takes and attempts each due entry; returns when the next known one is due.
    async fn sweep(self: &Arc<Self>) -> Result<Option<DateTime<Utc>>, crate::storage::StoreError> {
        let mut next: Option<DateTime<Utc>> = None;
        for key in self.store.list(outbox::FOLDER).await? {
            if self.in_flight.lock().expect("lock").contains(&key) {
                continue;
            }
            match outbox::take(self.store.as_ref(), &key, self.retry_base).await? {
                outbox::Found::Taken(entry) => {
                    next = earliest(next, Some(entry.next_attempt));
                    if !self.targets.iter().any(|u| u.as_str() == entry.url) {
                        tracing::warn!(event_id = %entry.event_id, "dropping a webhook event for a receiver no longer in WEBHOOK_URL");
                        self.store.delete(&key).await?;
                        continue;
                    }
                    let hooks = self.clone();
                    self.tasks.spawn(async move { hooks.attempt(entry).await });
                }
                outbox::Found::Later(at) => next = earliest(next, at),
                outbox::Found::Nothing => {}
            }
        }
        Ok(next)
    }
}

/// The sooner of two times, either of which may be unknown.
fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A receiver as logged: scheme, host and port (a path or query may hold a token).
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// One job followed by the webhooks (see [`Webhooks::follow`]).
pub struct Follower {
    hooks: Arc<Webhooks>,
    playable_sent: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    /// The job ended with `last`: sends `video.playable` if that was not sent yet and the
    /// video is playable, then the final event. Never waits for either.
    pub fn ended(self, last: &JobStatus) {
        self.task.abort();
        if last.playable && !self.playable_sent.swap(true, Ordering::SeqCst) {
            self.hooks.emit(EventType::Playable, last);
        }
        match EventType::of_final(last.state) {
            Some(kind) => self.hooks.emit(kind, last),
            None => tracing::warn!(
                state = last.state.as_str(),
                "a job ended in a state no webhook announces"
            ),
        }
    }
}
