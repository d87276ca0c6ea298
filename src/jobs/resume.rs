//! What an earlier run of the same video and source left in the output store, and what of it
//! this run keeps: the renditions it published, or, when this run ends having written nothing,
//! the earlier output exactly as it was.

use super::plan::Plan;
use super::publish::Finished;
use super::run::{Job, JobEnd};
use super::status::{JobState, JobStatus, RenditionState, RenditionStatus};

impl Job<'_> {
    /// The earlier run's status if it was of this job's source.
    fn same_source<'p>(&self, previous: Option<&'p JobStatus>) -> Option<&'p JobStatus> {
        let input = self.request.source.uri();
        previous.filter(|p| p.input.as_deref() == Some(input.as_str()))
    }

    /// Keeps what an earlier unfinished or partial run of the same source published and still
    /// exists.
    pub(super) async fn resume(
        &self,
        previous: Option<&JobStatus>,
        plan: &mut Plan,
        finished: &mut Finished,
    ) {
        let Some(previous) = self.same_source(previous) else {
            return;
        };
        if previous.state == JobState::Ready {
            return;
        }
        let mut kept: Vec<RenditionStatus> = Vec::new();
        for r in &previous.renditions {
            let playlist = self.key(&format!("manifest/{}", r.playlist));
            if r.state == RenditionState::Ready
                && matches!(self.store().get(&playlist).await, Ok(Some(_)))
            {
                kept.push(r.clone());
            }
        }
        let count = plan.carry_over(&kept, finished);
        if count > 0 {
            tracing::info!(
                kept = count,
                "resuming: renditions already published are kept"
            );
            // It has been playable since the earlier run made it so.
            let first_playable = previous.timestamps.first_playable;
            self.tracker
                .update(|s| s.timestamps.first_playable = first_playable);
        }
    }

    /// How a run that ends early (`end`) is recorded. If it wrote nothing to the output store
    /// and an earlier run of the same source left something playable, that output stands as
    /// it was (its renditions, master and state), with this run's reason as the error: a new
    /// delivery never turns a playable video into a failed one.
    pub(super) fn keep_earlier(&self, previous: Option<&JobStatus>, end: JobEnd) -> JobEnd {
        let Some(earlier) = self.same_source(previous).filter(|p| p.playable) else {
            return end;
        };
        if !self.published.lock().expect("lock").is_empty() {
            return end;
        }
        tracing::warn!("this run wrote nothing; the earlier output stands");
        self.tracker.set_renditions(earlier.renditions.clone());
        self.tracker.update(|s| {
            s.playable = true;
            s.master_playlist = earlier.master_playlist.clone();
            s.source = earlier.source.clone();
            s.warnings = earlier.warnings.clone();
            s.timestamps.first_playable = earlier.timestamps.first_playable;
        });
        JobEnd {
            // A status.json still `processing` was left by a stopped instance.
            state: match earlier.state {
                state if state.is_final() => state,
                _ => JobState::Interrupted,
            },
            reason: format!("{}; the earlier output stands", end.reason),
        }
    }
}
