//! `POST /work` and `POST /work/dead-letter`: Pub/Sub push deliveries of queued units (see
//! `jobs::worker`). The request stays open while the unit runs; its answer tells Pub/Sub what
//! to do: 204 forget it, 429 (with Retry-After) or 503 deliver it again later, elsewhere if it
//! likes, 500 deliver it again (counted towards the dead-letter topic).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::jobs::worker::{Answer, Worker};
use crate::queue::envelope::unit_of;

pub async fn work(State(state): State<AppState>, body: Bytes) -> Response {
    let Some(worker) = queued(&state) else {
        return not_queued();
    };
    match unit_of(&body) {
        Ok((unit, attempt)) => {
            tracing::info!(video_id = %unit.video_id, unit = %unit.name(), attempt, "unit delivered");
            answer(worker.deliver(unit).await)
        }
        Err(why) => ignored(why),
    }
}

pub async fn dead_letter(State(state): State<AppState>, body: Bytes) -> Response {
    let Some(worker) = queued(&state) else {
        return not_queued();
    };
    match unit_of(&body) {
        Ok((unit, _)) => {
            tracing::warn!(video_id = %unit.video_id, unit = %unit.name(), "unit dead-lettered");
            answer(worker.dead_letter(unit).await)
        }
        Err(why) => ignored(why),
    }
}

fn queued(state: &AppState) -> Option<&std::sync::Arc<Worker>> {
    state.jobs.worker()
}

fn not_queued() -> Response {
    let why = "this service runs jobs in process (WORK_TOPIC is not set): it takes no units";
    (StatusCode::NOT_FOUND, Json(json!({"error": why}))).into_response()
}

/// 200 `{"ignored": why}`: a delivery that is not a unit is acknowledged, never retried.
fn ignored(why: String) -> Response {
    tracing::warn!("ignored delivery: {why}");
    (StatusCode::OK, Json(json!({"ignored": why}))).into_response()
}

fn answer(answer: Answer) -> Response {
    match answer {
        Answer::Done => StatusCode::NO_CONTENT.into_response(),
        Answer::Busy(after) => {
            let seconds = after.as_secs().max(1).to_string();
            let body = Json(json!({"error": "no room for the unit here now; retry later"}));
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, seconds)],
                body,
            )
                .into_response()
        }
        Answer::Draining => {
            let body = Json(json!({"error": "the instance is shutting down; retry elsewhere"}));
            (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
        }
        Answer::Failed(why) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": why})),
        )
            .into_response(),
    }
}
