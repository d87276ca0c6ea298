//! What an earlier run of the same video and source left in the output store, and what of it
//! this run keeps: renditions it published under the same encoding settings, or, when this run
//! ends having written nothing, the earlier output exactly as it was.

use super::plan::Plan;
use super::publish::{self, Finished};
use super::run::{Job, JobEnd};
use super::status::{JobState, JobStatus, RenditionState, RenditionStatus};

impl Job<'_> {
    /// The earlier run's status if it was of this job's source.
    fn same_source<'p>(&self, previous: Option<&'p JobStatus>) -> Option<&'p JobStatus> {
        let input = self.request.source.uri();
        previous.filter(|p| p.input.as_deref() == Some(input.as_str()))
    }

    /// Keeps what an earlier unfinished or partial run of the same source published and still
    /// exists, when it was made under the same encoding settings as `plan` (a redeploy may have
    /// changed segment type or length, preset or frame rate: one master must not mix them).
    /// True if the earlier run's unit markers may be kept too (same source and settings).
    pub(super) async fn resume(
        &self,
        previous: Option<&JobStatus>,
        plan: &mut Plan,
        finished: &mut Finished,
    ) -> bool {
        let Some(previous) = self.same_source(previous) else {
            return false;
        };
        if previous.state == JobState::Ready {
            return false;
        }
        if previous.encoding.as_deref() != Some(plan.encoding.as_str()) {
            if previous.playable {
                tracing::info!(
                    before = previous.encoding.as_deref(),
                    now = plan.encoding,
                    "encoding settings changed: every rendition is made again"
                );
                self.withdraw_master().await;
            }
            return false;
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
        true
    }

    /// Deletes the earlier master playlist, whose renditions this run rewrites under other
    /// settings: until this run writes its own, nothing lists a mix of the two.
    async fn withdraw_master(&self) {
        let master = self.key(publish::MASTER);
        match self.store().delete(&master).await {
            // Written by this run as far as `keep_earlier` is concerned: the earlier output
            // no longer stands.
            Ok(()) => self.published.lock().expect("lock").push(master),
            Err(e) => tracing::warn!("withdrawing the earlier master playlist: {e}"),
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
            s.download = earlier.download.clone();
            s.images = earlier.images.clone();
            s.encoding = earlier.encoding.clone();
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
