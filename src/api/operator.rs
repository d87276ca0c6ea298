//! `GET /jobs` and `GET /jobs.json`: what an operator wants to see on an instance: the jobs it
//! has queued and processing with a progress bar per rendition, and the encode pool. Jobs that
//! ended are not listed: the instance keeps no copy of their status, which is status.json in
//! the output store (`/video-status/{id}`). Behind the access rule of `/metrics`. The page is plain server-rendered
//! HTML; a small script re-reads it every 2 s and swaps in the new figures.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::AppState;
use super::player::escape_html;
use crate::jobs::status::{JobStatus, RenditionState, RenditionStatus};

#[derive(Serialize)]
pub struct Overview {
    pool: Pool,
    active: Vec<JobStatus>,
}

/// The encode pool as the scheduler sees it now.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Pool {
    capacity: usize,
    encoders_running: usize,
    queue_depth: usize,
    memory_available_bytes: u64,
    memory_reserve_bytes: u64,
    memory_promised_bytes: u64,
    resident_bytes: Option<u64>,
    jobs_active: usize,
}

fn overview(state: &AppState) -> Overview {
    let scheduler = &state.jobs.engine().scheduler;
    let (encoders_running, memory_promised_bytes) = scheduler.running();
    let mut active = state.jobs.overview();
    active.retain(|job| !job.state.is_final());
    Overview {
        pool: Pool {
            capacity: scheduler.capacity(),
            encoders_running,
            queue_depth: scheduler.queue_depth(),
            memory_available_bytes: scheduler.available_memory(),
            memory_reserve_bytes: scheduler.reserve(),
            memory_promised_bytes,
            resident_bytes: super::status::resident_bytes(),
            jobs_active: active.len(),
        },
        active,
    }
}

pub async fn jobs_json(State(state): State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(overview(&state)),
    )
        .into_response()
}

pub async fn jobs_page(State(state): State<AppState>) -> Response {
    let page = render(&overview(&state), Utc::now());
    ([(header::CACHE_CONTROL, "no-store")], Html(page)).into_response()
}

const HEAD: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Jobs · video-transcoder</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; max-width: 1100px; margin: 0 auto; padding: 1rem; }
  dl { display: grid; grid-template-columns: max-content max-content; gap: .2rem 1.5rem; }
  dd { margin: 0; font-variant-numeric: tabular-nums; }
  table { border-collapse: collapse; width: 100%; margin-bottom: 1rem; }
  th, td { text-align: left; padding: .2rem .5rem; border-bottom: 1px solid #ddd; }
  progress { width: 14rem; vertical-align: middle; }
  [data-state=failed] { color: #b00020; }
  h3 span { font-weight: normal; color: #555; }
</style>
</head>
<body>
<h1>Jobs on this instance</h1>
"#;

const TAIL: &str = r#"<script>
'use strict';
// Re-reads this page every 2 s and swaps in the new figures (same URL, same credentials).
setInterval(async () => {
  try {
    const response = await fetch(location.href, { cache: 'no-store' });
    if (!response.ok) return;
    const page = new DOMParser().parseFromString(await response.text(), 'text/html');
    const live = page.getElementById('live');
    if (live) document.getElementById('live').replaceWith(live);
  } catch {
    // The next poll tries again.
  }
}, 2000);
</script>
</body>
</html>
"#;

fn render(overview: &Overview, now: DateTime<Utc>) -> String {
    let pool = &overview.pool;
    let mut html = String::from(HEAD);
    html += "<div id=\"live\">\n<section id=\"pool\"><h2>Encode pool</h2><dl>\n";
    let resident = pool.resident_bytes.map_or("unknown".into(), mib);
    for (figure, label, value) in [
        (
            "encoders",
            "Encoders in use",
            format!("{} of {}", pool.encoders_running, pool.capacity),
        ),
        ("queue", "Passes waiting", pool.queue_depth.to_string()),
        (
            "jobs",
            "Jobs queued or processing",
            pool.jobs_active.to_string(),
        ),
        (
            "memory",
            "Memory available",
            mib(pool.memory_available_bytes),
        ),
        (
            "promised",
            "Promised to running passes",
            mib(pool.memory_promised_bytes),
        ),
        (
            "reserve",
            "Kept free (reserve)",
            mib(pool.memory_reserve_bytes),
        ),
        ("resident", "Resident memory of this process", resident),
    ] {
        html += &format!("<dt>{label}</dt><dd data-figure=\"{figure}\">{value}</dd>\n");
    }
    html += "</dl></section>\n<section id=\"active\"><h2>Queued and processing</h2>\n";
    if overview.active.is_empty() {
        html += "<p>None.</p>\n";
    }
    for job in &overview.active {
        html += &active_job(job, now);
    }
    html += "<p>Jobs that ended are not listed here: see their status at \
             <code>/video-status/{id}</code> or their player page.</p>\n";
    html += &format!(
        "</section>\n<p>Updated {}.</p>\n</div>\n",
        now.format("%H:%M:%S UTC")
    );
    html + TAIL
}

/// One queued or processing job: its state and ETA, and a row per rendition.
fn active_job(job: &JobStatus, now: DateTime<Utc>) -> String {
    let id = escape_html(&job.video_id);
    let eta = job
        .progress
        .eta_seconds
        .map_or(String::new(), |s| format!(" · about {} left", seconds(s)));
    let mut html = format!(
        "<article class=\"job\" data-video=\"{id}\" data-state=\"{state}\">\n<h3><a href=\"player/{id}\">\
         {id}</a> <span>{state} · {percent:.0} %{eta}{playable}</span></h3>\n",
        state = job.state.as_str(),
        percent = job.progress.percent,
        playable = if job.playable { " · playable" } else { "" },
    );
    if job.renditions.is_empty() {
        return html + "<p>Not planned yet.</p>\n</article>\n";
    }
    html += "<table><thead><tr><th>Rendition</th><th>Tier</th><th>State</th><th>Progress</th>\
             <th>Time</th></tr></thead><tbody>\n";
    for r in &job.renditions {
        let max = r.frames_expected.max(1);
        let value = match r.state {
            RenditionState::Ready => max,
            _ => r.frames_done.min(max),
        };
        html += &format!(
            "<tr data-state=\"{state}\"><td>{name}</td><td>{tier}</td><td>{state}</td><td>\
             <progress data-rendition=\"{id}/{name}\" data-state=\"{state}\" max=\"{max}\" \
             value=\"{value}\"></progress> {percent} %</td><td>{time}</td></tr>\n",
            name = escape_html(&r.name),
            tier = r.tier.as_str(),
            state = rendition_state(r.state),
            percent = value * 100 / max,
            time = escape_html(&rendition_time(r, now)),
        );
    }
    html + "</tbody></table>\n</article>\n"
}

fn rendition_state(state: RenditionState) -> &'static str {
    match state {
        RenditionState::Pending => "pending",
        RenditionState::Encoding => "encoding",
        RenditionState::Ready => "ready",
        RenditionState::Failed => "failed",
    }
}

/// A rendition's ETA from its own pace while it encodes, how long it took once done, or why
/// it failed.
fn rendition_time(r: &RenditionStatus, now: DateTime<Utc>) -> String {
    let elapsed = |from: DateTime<Utc>, to: DateTime<Utc>| {
        (to - from).num_milliseconds().max(0) as f64 / 1000.0
    };
    match (r.state, r.started, r.finished) {
        (RenditionState::Failed, ..) => r.error.clone().unwrap_or_default(),
        (RenditionState::Ready, Some(start), Some(end)) => {
            format!("done in {}", seconds(elapsed(start, end)))
        }
        (RenditionState::Encoding, Some(start), _) if r.frames_done > 0 => {
            let left = r.frames_expected.saturating_sub(r.frames_done) as f64;
            let eta = elapsed(start, now) * left / r.frames_done as f64;
            format!("about {} left", seconds(eta))
        }
        (RenditionState::Pending, ..) => "waiting".into(),
        _ => String::new(),
    }
}

fn seconds(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        _ => format!("{} min {} s", s / 60, s % 60),
    }
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes / (1024 * 1024))
}
