//! Final statuses of the jobs that ended on this instance lately, so polls for them need no
//! store read (and still get an answer when the store refused the last status.json write).

use std::collections::{HashMap, VecDeque};

use super::status::JobStatus;

/// The last `RECENT_JOBS` final statuses, oldest dropped first.
#[derive(Default)]
pub(super) struct Recent {
    statuses: HashMap<String, JobStatus>,
    order: VecDeque<String>,
}

const RECENT_JOBS: usize = 1000;

impl Recent {
    pub(super) fn remember(&mut self, status: JobStatus) {
        if self
            .statuses
            .insert(status.video_id.clone(), status.clone())
            .is_none()
        {
            self.order.push_back(status.video_id);
        }
        while self.order.len() > RECENT_JOBS {
            if let Some(old) = self.order.pop_front() {
                self.statuses.remove(&old);
            }
        }
    }

    /// The last `n` statuses remembered, newest first.
    pub(super) fn latest(&self, n: usize) -> Vec<JobStatus> {
        self.order
            .iter()
            .rev()
            .take(n)
            .filter_map(|id| self.statuses.get(id).cloned())
            .collect()
    }

    pub(super) fn get(&self, video_id: &str) -> Option<JobStatus> {
        self.statuses.get(video_id).cloned()
    }
}
