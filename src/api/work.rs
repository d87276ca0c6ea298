//! `POST /work` and `POST /work/dead-letter`: Pub/Sub push deliveries of queued units (see
//! `jobs::worker`). The request stays open while the unit runs; its answer tells Pub/Sub what
//! to do: 204 forget it, 429 (with Retry-After) or 503 deliver it again later, elsewhere if it
//! likes, 500 deliver it again (counted towards the dead-letter topic).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiError, AppState};
use crate::jobs::work::WorkUnit;
use crate::jobs::worker::{Answer, Worker};
use crate::queue::envelope::unit_of;

pub async fn work(State(state): State<AppState>, body: Bytes) -> Response {
    match delivery(&state, &body) {
        Ok((worker, unit, attempt)) => {
            tracing::info!(video_id = %unit.video_id, unit = %unit.name(), attempt, "unit delivered");
            answer(worker.deliver(unit).await)
        }
        Err(refused) => refused.into_response(),
    }
}

pub async fn dead_letter(State(state): State<AppState>, body: Bytes) -> Response {
    match delivery(&state, &body) {
        Ok((worker, unit, _)) => {
            tracing::warn!(video_id = %unit.video_id, unit = %unit.name(), "unit dead-lettered");
            answer(worker.dead_letter(unit).await)
        }
        Err(refused) => refused.into_response(),
    }
}

/// The worker and the unit a push delivers (with its delivery attempt, when Pub/Sub sends
/// one), or why there is none.
fn delivery(
    state: &AppState,
    body: &[u8],
) -> Result<(Arc<Worker>, WorkUnit, Option<u32>), Refused> {
    let worker = state.jobs.worker().ok_or(Refused::NotQueued)?;
    let (unit, attempt) = unit_of(body).map_err(Refused::NotAUnit)?;
    Ok((worker.clone(), unit, attempt))
}

enum Refused {
    /// 404: this service takes no units.
    NotQueued,
    /// 200 `{"ignored": why}`: a delivery that is not a unit is acknowledged, never retried.
    NotAUnit(String),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::NotQueued => {
                let why =
                    "this service runs jobs in process (WORK_TOPIC is not set): it takes no units";
                ApiError::NotFound(why.into()).into_response()
            }
            Refused::NotAUnit(why) => {
                tracing::warn!("ignored delivery: {why}");
                (StatusCode::OK, Json(json!({"ignored": why}))).into_response()
            }
        }
    }
}

fn answer(answer: Answer) -> Response {
    match answer {
        Answer::Done => StatusCode::NO_CONTENT.into_response(),
        Answer::Busy(after) => ApiError::Busy {
            message: "no room for the unit here now; retry later".into(),
            retry_after: after.as_secs().max(1),
        }
        .into_response(),
        Answer::Draining => {
            let why = "the instance is shutting down; retry elsewhere";
            ApiError::Unavailable(why.into()).into_response()
        }
        // The reason is logged and kept in the unit's lease for the dead-letter recorder.
        Answer::Failed(why) => ApiError::Unexpected(anyhow::anyhow!(why)).into_response(),
    }
}
