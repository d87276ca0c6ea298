//! What follows a settle in queue mode that in-process mode does as its job ends, decided from
//! the status just written, so any instance's next settle finishes what a stopped one left: the
//! webhook events (once each, whichever instance gets there first) and, once the video is ready
//! or partial, its poster, storyboard and MP4 download, made inside the delivering request.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::request::{Engine, JobRequest, Source};
use super::run::Job;
use super::settle::update_status;
use super::status::{JobState, JobStatus};
use super::tracker::Tracker;
use super::work::WorkUnit;
use crate::config::ImageSet;
use crate::storage::Store;
use crate::webhooks::{EventType, Webhooks};

/// What following up a settle works with: this instance's engine, stores and webhooks.
pub(super) struct FollowUp<'a> {
    pub engine: &'a Engine,
    pub input: &'a Arc<dyn Store>,
    pub output: &'a Arc<dyn Store>,
    pub webhooks: Option<&'a Arc<Webhooks>>,
}

impl FollowUp<'_> {
    /// Follows up the settle after `unit` that wrote `status`: `video.playable` once the video
    /// is playable; once it ended, the images and download of a ready or partial video if
    /// status.json lists neither yet, then the final event (naming the poster, as in process).
    /// Returns the status as last written.
    pub async fn settled(&self, unit: &WorkUnit, status: JobStatus) -> JobStatus {
        if status.playable {
            self.announce(EventType::Playable, &status).await;
        }
        if !status.state.is_final() {
            return status;
        }
        let settings = &self.engine.settings;
        let wanted = settings.images != ImageSet::None || settings.download_rendition.0.is_some();
        let made = status.images.is_some() || status.download.is_some();
        let status = match status.state {
            JobState::Ready | JobState::Partial if wanted && !made => {
                self.extras(unit, status).await
            }
            _ => status,
        };
        if let Some(kind) = EventType::of_final(status.state) {
            self.announce(kind, &status).await;
        }
        status
    }

    async fn announce(&self, kind: EventType, status: &JobStatus) {
        if let Some(hooks) = self.webhooks {
            hooks.enqueue_once(kind, status).await;
        }
    }

    /// Makes the poster, storyboard and download of the video `settled` describes (with the
    /// in-process code, on a job that only publishes them) and records them in status.json. A
    /// failure is a log line or a warning, never the video's.
    async fn extras(&self, unit: &WorkUnit, settled: JobStatus) -> JobStatus {
        let request = JobRequest {
            video_id: unit.video_id.clone(),
            source: Source::Object {
                store: self.input.clone(),
                key: unit.input.clone(),
            },
            output: self.output.clone(),
            metadata: None,
            probe: Some(unit.source.clone()),
        };
        let tracker = Arc::new(Tracker::new(
            settled.clone(),
            watch::channel(settled.clone()).0,
        ));
        let cancel = CancellationToken::new();
        let mut job = Job::new(&request, self.engine, &cancel, &tracker);
        job.playlists_early = false;
        job.publish_images().await;
        job.publish_download().await;
        let made = tracker.snapshot();
        let warnings = &made.warnings[settled.warnings.len()..];
        if made.images.is_none() && made.download.is_none() && warnings.is_empty() {
            return settled;
        }
        let recorded = update_status(self.output.as_ref(), &unit.video_id, |s| {
            s.images = made.images.clone().or(s.images.take());
            s.download = made.download.clone().or(s.download.take());
            for warning in warnings {
                if !s.warnings.contains(warning) {
                    s.warnings.push(warning.clone());
                }
            }
        })
        .await;
        match recorded {
            Ok(status) => status,
            Err(e) => {
                tracing::warn!("the video's images and download are not in status.json: {e}");
                settled
            }
        }
    }
}
