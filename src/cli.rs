//! The `transcode` command: one job from a local file, with a progress bar on a terminal.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::TranscodeSettings;
use crate::jobs::scheduler::SystemMemory;
use crate::jobs::{self, Engine, JobRequest, JobState, JobStatus, Source};
use crate::storage::LocalStore;

#[derive(Debug, Args)]
pub struct TranscodeArgs {
    /// The source video file.
    pub input: PathBuf,
    /// Output root: HLS lands in `<out>/videos/<id>/manifest/`.
    #[arg(long)]
    pub out: PathBuf,
    /// Video id (default: a new UUID).
    #[arg(long)]
    pub id: Option<String>,
    /// Print the final status.json on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub settings: TranscodeSettings,
}

/// Runs the job; exit code 0 for ready/partial, 1 with a one-line reason otherwise.
pub async fn transcode(args: TranscodeArgs) -> ExitCode {
    let id = args.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if let Err(e) = jobs::validate_video_id(&id) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if !args.input.is_file() {
        eprintln!("error: {} is not a readable file", args.input.display());
        return ExitCode::from(2);
    }
    let output = match LocalStore::new(&args.out) {
        Ok(store) => Arc::new(store),
        Err(e) => {
            eprintln!("error: cannot write to {}: {e}", args.out.display());
            return ExitCode::from(2);
        }
    };
    let master = output
        .root()
        .join(format!("videos/{id}/manifest/master.m3u8"));
    let request = JobRequest {
        video_id: id.clone(),
        source: Source::File(args.input),
        output,
        metadata: None,
        probe: None,
    };
    let memory = match SystemMemory::new() {
        Ok(memory) => Arc::new(memory),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // What a killed run (kill -9, a crash) left in scratch goes now, as in `serve`.
    jobs::scratch::remove_orphans(&args.settings.scratch_dir);
    // One job alone on this machine: the memory guard keeps nothing in reserve.
    let engine = Engine::new(args.settings, memory, 0);
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        stop_signal().await;
        on_signal.cancel();
    });
    let (updates, watcher) = watch::channel(JobStatus::queued(&id));
    let reporter = tokio::spawn(report_progress(watcher));
    let status = jobs::run(request, &engine, cancel, updates).await;
    let _ = reporter.await;

    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("status serialises")
        );
    }
    match status.state {
        JobState::Ready | JobState::Partial => {
            let failed = status
                .renditions
                .iter()
                .filter(|r| r.error.is_some())
                .count();
            if failed > 0 {
                eprintln!("warning: {failed} rendition(s) failed; see status.json");
            }
            eprintln!("master playlist: {}", master.display());
            ExitCode::SUCCESS
        }
        _ => {
            let reason = status.error.as_deref().unwrap_or("the job did not finish");
            eprintln!("error: {}", reason.lines().next().unwrap_or(reason));
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM: the job stops between frames and ends `interrupted`.
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A progress bar on a terminal; a log line every few seconds otherwise.
async fn report_progress(mut watcher: watch::Receiver<JobStatus>) {
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal {
        let bar = ProgressBar::new(1000);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {percent:>3}% {msg}",
            )
            .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(bar)
    } else {
        None
    };
    let mut last_line = std::time::Instant::now();
    while watcher.changed().await.is_ok() {
        let s = watcher.borrow_and_update().clone();
        let eta = s
            .progress
            .eta_seconds
            .map_or(String::new(), |e| format!(", ETA {e:.0} s"));
        let message = format!(
            "{:?}: {}/{} renditions{eta}",
            s.state, s.progress.completed, s.progress.total
        );
        match &bar {
            Some(bar) => {
                bar.set_position((s.progress.percent * 10.0) as u64);
                bar.set_message(message);
            }
            None if last_line.elapsed() >= Duration::from_secs(2) || s.state.is_final() => {
                tracing::info!(percent = s.progress.percent, "{message}");
                last_line = std::time::Instant::now();
            }
            None => {}
        }
        if s.state.is_final() {
            break;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}
