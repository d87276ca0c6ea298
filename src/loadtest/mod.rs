//! The `loadtest` command: uploads one clip `--total` times to a running server, follows
//! every job to a final state, and reports upload latency, time to first playable, time to
//! ready and the server's peak RSS. It only talks HTTP, so it measures what a client sees.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::multipart::{Form, Part};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::time::{Instant, sleep, timeout_at};

mod report;

use report::{End, JobCost, Outcome, print_text, summarise};

/// How often each job's status, and the server's /metrics, are polled.
const POLL: Duration = Duration::from_millis(500);
/// Status and metrics requests are small; one that takes longer than this is retried.
const SMALL_REQUEST: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug)]
pub struct LoadtestArgs {
    /// Base URL of the running server, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub url: String,
    /// The clip to upload (streamed from disk on every upload).
    #[arg(long)]
    pub file: PathBuf,
    /// How many uploads to make.
    #[arg(long, default_value_t = 20)]
    pub total: u32,
    /// At most this many uploads in flight; status polling does not hold a slot.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// Seconds from the start of the run after which unfinished jobs count as timed out.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// What the client, shared by every job, needs.
struct Ctx {
    client: Client,
    base: String,
    file: PathBuf,
    uploads: Semaphore,
}

/// Runs the load test; exit code 0 when every job ended ready or partial, 1 otherwise,
/// 2 for bad arguments.
pub async fn run(args: LoadtestArgs) -> ExitCode {
    if let Err(e) = reqwest::Url::parse(&args.url) {
        eprintln!("error: --url {}: {e}", args.url);
        return ExitCode::from(2);
    }
    if !args.file.is_file() {
        eprintln!("error: {} is not a readable file", args.file.display());
        return ExitCode::from(2);
    }
    let ctx = Ctx {
        // Built without TLS, the builder has nothing that can fail.
        client: (Client::builder().connect_timeout(SMALL_REQUEST).build()).expect("HTTP client"),
        base: args.url.trim_end_matches('/').to_owned(),
        file: args.file,
        uploads: Semaphore::new(args.concurrency as usize),
    };
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn(sample_memory(
        ctx.client.clone(),
        format!("{}/metrics", ctx.base),
        peak_rss.clone(),
    ));

    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.timeout);
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(args.total.into());
        bar.set_style(
            ProgressStyle::with_template("[{elapsed_precise}] {bar:40} {pos}/{len} jobs {msg}")
                .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let mut jobs: FuturesUnordered<_> = (0..args.total).map(|_| one_job(&ctx, deadline)).collect();
    let mut outcomes = Vec::with_capacity(args.total as usize);
    while let Some(outcome) = jobs.next().await {
        let line = match &outcome.end {
            End::Failed(reason) => format!("failed: {reason}"),
            end => format!("{end:?}").to_lowercase(),
        };
        outcomes.push(outcome);
        match &bar {
            Some(bar) => {
                bar.inc(1);
                bar.set_message(format!("(last: {line})"));
            }
            None => eprintln!("[{}/{}] {line}", outcomes.len(), args.total),
        }
    }
    drop(jobs);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    sampler.abort();

    let summary = summarise(
        args.total,
        &outcomes,
        start.elapsed().as_secs_f64(),
        peak_rss.load(Ordering::Relaxed),
    );
    if args.json {
        let text = serde_json::to_string_pretty(&summary).expect("summary serialises");
        println!("{text}");
    } else {
        print_text(&summary);
    }
    if summary.succeeded + summary.partial == outcomes.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One upload (holding a concurrency slot) and then status polling until a final state.
/// Times are measured from the first upload attempt, so Retry-After waits count.
async fn one_job(ctx: &Ctx, deadline: Instant) -> Outcome {
    let mut out = Outcome::default();
    let permit = ctx.uploads.acquire().await.ok();
    let started = Instant::now();
    if started >= deadline {
        return out;
    }
    let status_url = match timeout_at(deadline, upload(ctx, &mut out)).await {
        Err(_) => return out,
        Ok(Err(reason)) => {
            out.end = End::Failed(reason);
            return out;
        }
        Ok(Ok(url)) => url,
    };
    drop(permit);
    // On timeout `out.end` stays `TimedOut`, with whatever was measured so far.
    let _ = timeout_at(deadline, poll(ctx, &status_url, started, &mut out)).await;
    out
}

/// POSTs the clip, streamed from disk, until a 2xx; sleeps out 429s. Returns the status URL.
async fn upload(ctx: &Ctx, out: &mut Outcome) -> Result<String, String> {
    loop {
        // `Part::file` wraps a tokio File in a streaming body, with the filename and length.
        let part = Part::file(&ctx.file)
            .await
            .map_err(|e| format!("opening {}: {e}", ctx.file.display()))?;
        let sent = Instant::now();
        let form = Form::new().part("file", part);
        let url = format!("{}/upload", ctx.base);
        let response = ctx.client.post(url).multipart(form).send().await;
        let response = response.map_err(|e| format!("upload: {:#}", anyhow::Error::from(e)))?;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            out.retries_429 += 1;
            let retry_after = response.headers().get(reqwest::header::RETRY_AFTER);
            let wait = retry_after.and_then(|v| v.to_str().ok()?.trim().parse().ok());
            sleep(Duration::from_secs(wait.unwrap_or(1))).await;
            continue;
        }
        if !response.status().is_success() {
            return Err(http_error(response).await);
        }
        out.upload_ms = Some(sent.elapsed().as_secs_f64() * 1000.0);
        let accepted: Value = (response.json().await).map_err(|e| format!("upload answer: {e}"))?;
        let path = match (accepted["statusUrl"].as_str(), accepted["videoId"].as_str()) {
            (Some(url), _) => url.to_owned(),
            (None, Some(id)) => format!("/video-status/{id}"),
            (None, None) => return Err(format!("upload answer without videoId: {accepted}")),
        };
        let base = if path.starts_with("http") {
            ""
        } else {
            &ctx.base
        };
        return Ok(format!("{base}{path}"));
    }
}

/// Polls the job's status until a final state, recording when it first became playable.
/// Network errors, 5xx and unreadable answers are retried; other non-2xx fail the job.
async fn poll(ctx: &Ctx, url: &str, started: Instant, out: &mut Outcome) {
    loop {
        match ctx.client.get(url).timeout(SMALL_REQUEST).send().await {
            Ok(r) if r.status().is_success() => {
                let s: Value = r.json().await.unwrap_or_default();
                let now = Some(started.elapsed().as_secs_f64());
                let state = s["state"].as_str().unwrap_or_default();
                let finished_ok = matches!(state, "ready" | "partial");
                if finished_ok {
                    out.cost = job_cost(&s);
                }
                if (s["playable"] == true || finished_ok) && out.first_playable_s.is_none() {
                    out.first_playable_s = now;
                }
                out.end = match state {
                    "ready" => {
                        out.ready_s = now;
                        End::Ready
                    }
                    "partial" => End::Partial,
                    "failed" | "interrupted" => {
                        let error = s["error"].as_str().unwrap_or("no error given");
                        End::Failed(format!(
                            "job {state}: {}",
                            error.lines().next().unwrap_or("")
                        ))
                    }
                    _ => End::TimedOut,
                };
                if !matches!(out.end, End::TimedOut) {
                    return;
                }
            }
            Ok(r) if !r.status().is_server_error() => {
                out.end = End::Failed(format!("status: {}", http_error(r).await));
                return;
            }
            _ => {}
        }
        sleep(POLL).await;
    }
}

/// A finished status's cost and source length; `None` if either is missing.
fn job_cost(status: &Value) -> Option<JobCost> {
    Some(JobCost {
        usd: status["cost"]["estimatedUsd"].as_f64()?,
        cpu_seconds: status["cost"]["cpuSeconds"].as_f64()?,
        content_seconds: status["source"]["durationSeconds"].as_f64()?,
    })
}

/// "HTTP <status>: <code>: <message>" from the server's JSON error, else the body's start.
async fn http_error(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let json: Value = serde_json::from_str(&body).unwrap_or_default();
    let field = |name| json["error"][name].as_str();
    match (field("code"), field("message")) {
        (Some(code), Some(message)) => format!("HTTP {status}: {code}: {message}"),
        _ => format!(
            "HTTP {status}: {}",
            body.chars().take(200).collect::<String>()
        ),
    }
}

/// Keeps the highest `process_resident_memory_bytes` seen on /metrics in `peak` (0 = never seen).
async fn sample_memory(client: Client, url: String, peak: Arc<AtomicU64>) {
    loop {
        if let Ok(response) = client.get(&url).timeout(SMALL_REQUEST).send().await
            && let Ok(text) = response.text().await
            && let Some(rss) = gauge(&text, "process_resident_memory_bytes")
        {
            peak.fetch_max(rss as u64, Ordering::Relaxed);
        }
        sleep(POLL).await;
    }
}

/// The value of the first sample named exactly `name` (labels allowed) in Prometheus text.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix(name)?;
        let rest = match rest.strip_prefix('{') {
            Some(labels) => &labels[labels.find('}')? + 1..],
            None if rest.starts_with([' ', '\t']) => rest,
            None => return None,
        };
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauge_is_read_from_prometheus_text() {
        let text = "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
                    # TYPE process_resident_memory_bytes gauge\n\
                    process_resident_memory_bytes_max 1\n\
                    process_resident_memory_bytes 123456789\n\
                    jobs_queued{priority=\"normal\"} 3 1700000000000\n\
                    weird_gauge{a=\"b\"} 1.5e3\n";
        assert_eq!(
            gauge(text, "process_resident_memory_bytes"),
            Some(123456789.0)
        );
        assert_eq!(gauge(text, "jobs_queued"), Some(3.0));
        assert_eq!(gauge(text, "weird_gauge"), Some(1500.0));
        assert_eq!(gauge(text, "missing"), None);
        assert_eq!(gauge("", "process_resident_memory_bytes"), None);
    }
}
