use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use video_transcoder::{cli, loadtest, telemetry};

/// Turns videos into adaptive-bitrate HLS.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Transcode one local file into an HLS ladder.
    Transcode(cli::TranscodeArgs),
    /// Upload a clip many times to a running server and report latency, time to ready and peak memory.
    Loadtest(loadtest::LoadtestArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Cli::parse();
    // The progress bar owns a terminal; logs below warnings would tear it.
    telemetry::init(if std::io::stderr().is_terminal() {
        "warn"
    } else {
        "info"
    });
    match args.command {
        Command::Transcode(args) => cli::transcode(args).await,
        Command::Loadtest(args) => loadtest::run(args).await,
    }
}
