//! The `serve` command: builds the service from its settings, serves HTTP/1.1 and h2c on one
//! listener, and shuts down in order on the signal it is given.

use std::future::{Future, IntoFuture};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::ServeSettings;
use crate::jobs::registry::Queued;
use crate::jobs::scheduler::MemoryProbe;
use crate::jobs::worker::Worker;
use crate::jobs::{Engine, Jobs};
use crate::queue::Queue;
use crate::webhooks::Webhooks;
use crate::{jobs, media, storage};

/// Serves on `listener` until `shutdown` resolves, then: readiness fails and new work is
/// refused, encodes stop and each job records `interrupted` with what it finished, in-flight
/// requests get `SHUTDOWN_GRACE` to finish, and this returns.
pub async fn serve(
    listener: TcpListener,
    settings: ServeSettings,
    memory: Arc<dyn MemoryProbe>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    media::init().context("loading the media libraries")?;
    let libav = media::versions::libraries();
    match media::versions::check(&libav) {
        Ok(()) => tracing::info!(libav = %media::versions::summary(&libav), "media libraries"),
        Err(why) => tracing::error!(%why, "media libraries differ from the build: not ready"),
    }
    settings.access.check().map_err(anyhow::Error::msg)?;
    tracing::info!(routes = %settings.access, "access control");
    let gcs = storage::GcsOptions {
        endpoint: settings.gcs_endpoint.clone(),
        retry_budget: Duration::from_secs(settings.storage_retry_seconds),
    };
    let input = storage::open(&settings.input_store, &gcs)
        .await
        .map_err(anyhow::Error::msg)?;
    let output = storage::open(&settings.output_store, &gcs)
        .await
        .map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&settings.transcode.scratch_dir).with_context(|| {
        format!(
            "cannot use SCRATCH_DIR {}",
            settings.transcode.scratch_dir.display()
        )
    })?;
    let orphans = jobs::scratch::remove_orphans(&settings.transcode.scratch_dir);
    if orphans > 0 {
        tracing::info!(orphans, "removed scratch folders left by stopped processes");
    }
    let address = listener.local_addr()?;
    let public_base_url = settings
        .public_base_url
        .clone()
        .unwrap_or_else(|| format!("http://{address}"));
    let engine = Engine::new(
        settings.transcode.clone(),
        memory,
        settings.memory_reserve_mb << 20,
    );
    let webhooks = Webhooks::start(&settings.webhooks, output.clone(), public_base_url.clone())
        .await
        .map_err(anyhow::Error::msg)?;
    let queued = match Queue::open(&settings.queue)
        .await
        .map_err(anyhow::Error::msg)?
    {
        Some(queue) => Some(Queued {
            worker: Worker::new(
                engine.clone(),
                input.clone(),
                output.clone(),
                Duration::from_secs(settings.queue.work_lease_seconds),
                Duration::from_secs(settings.queue.work_wait_seconds),
                Some(queue.clone()),
                webhooks.clone(),
            ),
            queue,
        }),
        None => None,
    };
    let jobs = Jobs::new(
        engine,
        output.clone(),
        settings.max_queued_jobs as usize,
        webhooks.clone(),
        queued,
    );
    let grace = Duration::from_secs(settings.shutdown_grace);
    tracing::info!(
        %address,
        input = %input.describe(),
        output = %output.describe(),
        encoders = jobs.engine().scheduler.capacity(),
        "serving"
    );
    let state = AppState {
        jobs: jobs.clone(),
        input,
        settings: Arc::new(settings),
        public_base_url,
        metrics: metrics_handle(),
        readiness: Arc::default(),
        upload_signer: Arc::default(),
    };

    let stop = CancellationToken::new();
    let server = axum::serve(listener, api::router(state))
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .into_future();
    let mut server = tokio::spawn(server);
    tokio::select! {
        result = &mut server => return result?.context("the HTTP server stopped"),
        () = shutdown => {}
    }
    tracing::info!("shutting down");
    let deadline = Instant::now() + grace;
    stop.cancel();
    jobs.shutdown(deadline).await;
    if let Some(webhooks) = &webhooks {
        webhooks.shutdown(deadline).await;
    }
    match tokio::time::timeout_at(deadline, &mut server).await {
        Ok(result) => result?.context("the HTTP server stopped")?,
        Err(_) => {
            tracing::warn!("requests still running after the grace period were cut off");
            server.abort();
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// The process-wide Prometheus recorder, installed on first use. Histograms get buckets so
/// they export as Prometheus histograms (quantiles can then be taken across instances).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("transcoder_encode_seconds".into()),
                    &[
                        1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("transcoder_http_request_duration_seconds".into()),
                        &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0],
                    )
                })
                .expect("bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// Resolves on SIGTERM (Cloud Run's stop) or Ctrl-C.
pub async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Binds the configured address and serves until SIGTERM or Ctrl-C.
pub async fn run(settings: ServeSettings) -> anyhow::Result<()> {
    let address = (settings.bind_address, settings.port);
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {}:{}", address.0, address.1))?;
    let memory = crate::jobs::scheduler::SystemMemory::new().map_err(anyhow::Error::msg)?;
    serve(listener, settings, Arc::new(memory), stop_signal()).await
}
