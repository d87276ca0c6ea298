//! The single owner of a job's status: every change goes through `update`, which refreshes
//! progress from the encoders' frame counters and tells watchers (the status.json writer, the
//! HTTP status endpoint, the CLI's progress bar).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::sync::watch;

use super::status::{JobStatus, RenditionState, RenditionStatus};

pub struct Tracker {
    status: Mutex<JobStatus>,
    updates: watch::Sender<JobStatus>,
    /// Frames encoded per rendition (same order as `status.renditions`), bumped by encoders.
    counters: Mutex<Vec<Arc<AtomicU64>>>,
}

impl Tracker {
    /// Starts tracking a job from its first status; watchers see it at once.
    pub fn new(initial: JobStatus, updates: watch::Sender<JobStatus>) -> Self {
        let tracker = Self {
            status: Mutex::new(initial),
            updates,
            counters: Mutex::new(Vec::new()),
        };
        tracker.update(|_| {});
        tracker
    }

    /// Applies `change`, refreshes progress and notifies watchers.
    pub fn update(&self, change: impl FnOnce(&mut JobStatus)) {
        let mut status = self.status.lock().expect("status lock");
        change(&mut status);
        let counters = self.counters.lock().expect("counters lock");
        for (r, c) in status.renditions.iter_mut().zip(counters.iter()) {
            r.frames_done = r.frames_done.max(c.load(Ordering::Relaxed));
            if r.state == RenditionState::Ready {
                // Expected was an estimate from the probe; now the count is known.
                r.frames_expected = r.frames_done;
            }
        }
        let now = Utc::now();
        status.refresh_progress(now);
        status.timestamps.updated = Some(now);
        self.updates.send_replace(status.clone());
    }

    /// Sets the job's renditions and returns one frame counter for each, in the same order.
    pub fn set_renditions(&self, renditions: Vec<RenditionStatus>) -> Vec<Arc<AtomicU64>> {
        let counters: Vec<_> = renditions
            .iter()
            .map(|_| Arc::new(AtomicU64::new(0)))
            .collect();
        *self.counters.lock().expect("counters lock") = counters.clone();
        self.update(|s| s.renditions = renditions);
        counters
    }

    pub fn snapshot(&self) -> JobStatus {
        self.status.lock().expect("status lock").clone()
    }
}
