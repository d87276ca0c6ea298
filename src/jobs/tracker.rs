//! The single owner of a job's status.json: every change goes through `update`, which refreshes
//! progress from the encoders' frame counters, rewrites the file atomically and tells watchers.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::sync::watch;

use super::status::{JobStatus, RenditionStatus};

pub struct Tracker {
    status: Mutex<JobStatus>,
    path: PathBuf,
    updates: watch::Sender<JobStatus>,
    /// Frames encoded per rendition (same order as `status.renditions`), bumped by encoders.
    counters: Mutex<Vec<Arc<AtomicU64>>>,
}

impl Tracker {
    /// Starts tracking a queued job whose status lives at `path`; writes it at once.
    pub fn new(video_id: &str, path: PathBuf, updates: watch::Sender<JobStatus>) -> Self {
        let tracker = Self {
            status: Mutex::new(JobStatus::queued(video_id)),
            path,
            updates,
            counters: Mutex::new(Vec::new()),
        };
        tracker.update(|_| {});
        tracker
    }

    /// Applies `change`, then writes status.json and notifies watchers.
    pub fn update(&self, change: impl FnOnce(&mut JobStatus)) {
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
