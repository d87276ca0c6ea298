//! HTTP: parses and checks requests, turns them into jobs, and answers from job status. It never
//! touches ffmpeg; `jobs` does the work.

mod assets;
pub mod auth;
mod direct;
mod error;
mod observe;
mod operator;
mod player;
pub mod readiness;
mod status;
mod thumbnail;
mod trigger;
mod upload;
mod videos;
mod work;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

pub use direct::{PendingUpload, UploadSigner};
pub use error::ApiError;

use crate::config::ServeSettings;
use crate::jobs::{JobStatus, Jobs};
use crate::storage::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub jobs: Arc<Jobs>,
    pub input: Arc<dyn Store>,
    pub settings: Arc<ServeSettings>,
    /// Base of public URLs: `PUBLIC_BASE_URL`, or this server's own address.
    pub public_base_url: String,
    pub metrics: PrometheusHandle,
    /// `/readyz`'s store and disk checks, shared by every call.
    pub readiness: Arc<readiness::Readiness>,
    /// Signs the URLs of direct uploads to this service (a local input store; a bucket signs
    /// its own), its key read from the store, or made there, on first use.
    pub upload_signer: Arc<tokio::sync::OnceCell<UploadSigner>>,
}

impl AppState {
    fn output(&self) -> &Arc<dyn Store> {
        self.jobs.output()
    }
}

/// Every route of the service; `/upload`, `/transcode`, `/video-status`, `/thumbnail`, `/metrics`
/// and `/jobs` behind
/// the access checks of `auth` (open when none is configured).
pub fn router(state: AppState) -> Router {
    let access = Arc::new(auth::Access::new(&state.settings.access));
    let guard = |route| {
        axum::middleware::from_fn_with_state(
            auth::Guard {
                access: access.clone(),
                route,
            },
            auth::require,
        )
    };
    let mut router = Router::new()
        .route(
            "/upload",
            post(upload::upload)
                .layer(DefaultBodyLimit::disable())
                .route_layer(guard(auth::Route::Upload)),
        )
        .route(
            "/upload-url",
            post(direct::create).route_layer(guard(auth::Route::Upload)),
        )
        .route(
            "/upload-url/{videoId}",
            put(direct::receive).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/transcode",
            post(trigger::transcode).route_layer(guard(auth::Route::Trigger)),
        )
        .route(
            "/work",
            post(work::work).route_layer(guard(auth::Route::Work)),
        )
        .route(
            "/work/dead-letter",
            post(work::dead_letter).route_layer(guard(auth::Route::Work)),
        )
        .route(
            "/video-status/{id}",
            get(status::video_status).route_layer(guard(auth::Route::Status)),
        )
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route(
            "/metrics",
            get(status::metrics).route_layer(guard(auth::Route::Metrics)),
        )
        .route(
            "/jobs",
            get(operator::jobs_page).route_layer(guard(auth::Route::Metrics)),
        )
        .route(
            "/jobs.json",
            get(operator::jobs_json).route_layer(guard(auth::Route::Metrics)),
        )
        .route("/openapi.json", get(status::openapi))
        .route("/player/{id}", get(player::player))
        .route("/assets/hls.min.js", get(assets::hls_js))
        .route(
            "/thumbnail/{file}",
            get(thumbnail::thumbnail)
                .layer(axum::Extension(thumbnail::Decodes(Arc::new(
                    tokio::sync::Semaphore::new(state.settings.thumbnail_concurrency as usize),
                ))))
                .route_layer(guard(auth::Route::Status)),
        );
    if let Some(videos) = videos::local_cdn(state.output().as_ref()) {
        router = router.nest("/videos", videos);
    }
    router
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::request,
        ))
        .with_state(state)
}

/// The answer to an accepted upload or trigger.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted {
    video_id: String,
    status: String,
    status_url: String,
    playback_url: String,
    /// Seconds until ready, from the source's duration and this instance's measured speed.
    estimated_time: Option<f64>,
}

impl Accepted {
    fn new(state: &AppState, status: &JobStatus, duration_seconds: Option<f64>) -> Self {
        let id = &status.video_id;
        Self {
            video_id: id.clone(),
            status: status.state.as_str().into(),
            status_url: format!("/video-status/{id}"),
            playback_url: format!("{}/videos/{id}/manifest/master.m3u8", state.public_base_url),
            estimated_time: match status.state.is_final() {
                true => Some(0.0),
                false => duration_seconds.map(|d| state.jobs.estimate_seconds(d)),
            },
        }
    }
}
