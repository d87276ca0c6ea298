use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use video_transcoder::config::ServeSettings;
use video_transcoder::{cli, loadtest, server, telemetry};

/// Turns videos into adaptive-bitrate HLS.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// What to run; `serve` when omitted.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (the default): upload, trigger, status, metrics, player.
    Serve(Box<ServeSettings>),
    /// Transcode one local file into an HLS ladder.
    Transcode(cli::TranscodeArgs),
    /// Upload a clip many times to a running server and report latency, time to ready, peak memory and USD per content-minute.
    Loadtest(loadtest::LoadtestArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let command = match Cli::parse().command {
        Some(command) => command,
        // No subcommand: `serve`, configured from the environment.
        None => match Cli::parse_from(["video-transcoder", "serve"]).command {
            Some(command) => command,
            None => unreachable!("`serve` was given"),
        },
    };
    match command {
        Command::Serve(settings) => {
            telemetry::init("info");
            match server::run(*settings).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Transcode(args) => {
            // The progress bar owns a terminal; logs below warnings would tear it.
            telemetry::init(if std::io::stderr().is_terminal() {
                "warn"
            } else {
                "info"
            });
            cli::transcode(args).await
        }
        Command::Loadtest(args) => {
            telemetry::init("warn");
            loadtest::run(args).await
        }
    }
}
