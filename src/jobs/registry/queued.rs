//! Admission in queue mode: the trigger's request plans the video and queues its units, once
//! per video. Of two triggers for the same video at once (an upload and its own bucket event,
//! or a redelivery), the one that creates `videos/<id>/plan.json` plans; the other answers with
//! the status that one writes.

use bytes::Bytes;
use chrono::Utc;
use serde_json::json;

use super::{AdmitError, Admitted, Jobs, Queued};
use crate::jobs::publish;
use crate::jobs::request::JobRequest;
use crate::jobs::settle::update_status;
use crate::jobs::status::{JobState, JobStatus};
use crate::jobs::work;
use crate::storage::{Store, StoreError};
use crate::webhooks::EventType;

impl Jobs {
    pub(super) async fn plan_queued(
        &self,
        queued: &Queued,
        request: JobRequest,
    ) -> Result<Admitted, AdmitError> {
        if self.is_draining() {
            return Err(AdmitError::Draining);
        }
        let store = self.output.as_ref();
        let (video_id, input) = (request.video_id.clone(), request.source.uri());
        let previous = publish::read_status(store, &video_id).await;
        if let Some(p) = &previous {
            let same = p.input.as_deref() == Some(input.as_str());
            match (same, p.state) {
                (false, _) if p.is_made() => return Err(AdmitError::Made(video_id)),
                (false, state) if !state.is_final() => return Err(AdmitError::Conflict(video_id)),
                // Queued or running (its units are in the queue), or ready: that job stands.
                (true, state) if state == JobState::Ready || !state.is_final() => {
                    return Ok(Admitted::Existing(p.clone()));
                }
                _ => {} // failed, partial or interrupted: planned again, keeping what is made
            }
        }
        let plan_key = publish::key(&video_id, "plan.json");
        let version = store
            .get_versioned(&plan_key)
            .await
            .map_err(unavailable)?
            .map_or(0, |(_, version)| version);
        let cancel = self.cancel.child_token();
        let planned = work::plan(&request, &self.engine, &cancel).await;
        let record = json!({"input": input, "planned": Utc::now()}).to_string();
        match store.put_if(&plan_key, Bytes::from(record), version).await {
            Ok(_) => {}
            Err(StoreError::Changed(_)) => {
                // Another trigger of this video planned it first.
                let status = publish::read_status(store, &video_id)
                    .await
                    .unwrap_or_else(|| JobStatus::queued_from(&video_id, input));
                return Ok(Admitted::Existing(status));
            }
            Err(e) => return Err(unavailable(e)),
        }
        let (status, units) = match planned {
            Ok(planned) => planned,
            Err(why) => {
                let mut failed = JobStatus::queued_from(&video_id, input);
                failed.metadata = request.metadata.clone();
                failed.state = JobState::Failed;
                failed.error = Some(why);
                failed.timestamps.finished = Some(Utc::now());
                publish::write_status(store, &failed).await;
                if let Some(hooks) = &self.webhooks {
                    hooks.enqueue_once(EventType::Failed, &failed).await;
                }
                return Ok(Admitted::New(failed));
            }
        };
        forget_failures(store, &video_id).await;
        let written = update_status(store, &video_id, |s| *s = status.clone())
            .await
            .map_err(unavailable)?;
        for unit in &units {
            if let Err(why) = queued.queue.publish(unit).await {
                let why = format!("the units could not be queued ({why}); trigger it again");
                let _ = update_status(store, &video_id, |s| {
                    s.state = JobState::Failed;
                    s.error = Some(why.clone());
                })
                .await;
                return Err(AdmitError::Queue(why));
            }
        }
        tracing::info!(video_id, units = units.len(), "planned and queued");
        Ok(Admitted::New(written))
    }
}

/// Removes the failure records of an earlier plan, whose units are queued again.
async fn forget_failures(store: &dyn Store, video_id: &str) {
    let keys = store
        .list(&publish::key(video_id, "units/"))
        .await
        .unwrap_or_default();
    for key in keys.iter().filter(|k| k.ends_with(".failed")) {
        if let Err(e) = store.delete(key).await {
            tracing::warn!("removing the earlier failure {key}: {e}");
        }
    }
}

fn unavailable(e: StoreError) -> AdmitError {
    AdmitError::Queue(format!(
        "the output store cannot be read or written now: {e}"
    ))
}
