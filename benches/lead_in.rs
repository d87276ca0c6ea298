//! Keyframe lead-in benchmark. Run: `cargo bench --bench lead_in` (rounds: env `BENCH_ROUNDS`,
//! default 3; chunk length: env `BENCH_CHUNK_SECONDS`, default 16).
//!
//! A chunk that starts between two key frames decodes from the key frame at or before its start
//! and drops the frames before it (`media::pass`). This measures what that costs: the video of a
//! 2-minute 1080p30 source (cached in `target/bench-data/`, see `common::source`) decoded once
//! straight through, against decoded chunk by chunk, each chunk an ffmpeg CLI process that seeks
//! to the chunk's start the same way (`-ss` before `-i`: to the key frame at or before it, then
//! frames decoded and dropped up to the start) and stops at its end (`-t`). Two sources: 2 s
//! GOPs (`-g 60`, the chunk starts fall on key frames) and long GOPs (`-g 250`, 8.3 s: a lead-in
//! of up to 249 frames per chunk). Rounds alternate straight and chunked. Prints medians of wall
//! time and user+sys CPU (getrusage of the children, summed over the chunks' processes), the ratio chunked ÷
//! straight, and the lead-in frames decoded and dropped. Nothing is asserted.

#[path = "common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::Instant;

const SECONDS: u32 = 120;
const FPS: u32 = 30;

fn secs(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}

/// The user+sys CPU seconds of this process's waited-for children so far.
fn children_cpu() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) },
        0
    );
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// Runs `command` to the end; (wall, user+sys CPU) in seconds. Exits if it fails.
fn timed(mut command: Command) -> (f64, f64) {
    let (started, cpu) = (Instant::now(), children_cpu());
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("ffmpeg not found");
    if !status.success() {
        eprintln!("{command:?} failed: {status}");
        std::process::exit(1);
    }
    (started.elapsed().as_secs_f64(), children_cpu() - cpu)
}

/// Decodes the video of `src` from `start` for `length` seconds (all of it if `None`), output
/// discarded.
fn decode(src: &std::path::Path, span: Option<(u32, u32)>) -> Command {
    let mut c = Command::new("ffmpeg");
    c.args("-hide_banner -nostdin -loglevel error".split(' '));
    if let Some((start, _)) = span.filter(|(start, _)| *start > 0) {
        c.args(["-ss", &start.to_string()]);
    }
    c.arg("-i").arg(src);
    if let Some((_, length)) = span {
        c.args(["-t", &length.to_string()]);
    }
    c.args("-map 0:v:0 -f null -".split(' '));
    c
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    (xs[(n - 1) / 2] + xs[n / 2]) / 2.0
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS").map_or(3, |s| s.parse().unwrap());
    let chunk: u32 = std::env::var("BENCH_CHUNK_SECONDS").map_or(16, |s| s.parse().unwrap());
    let chunks = SECONDS.div_ceil(chunk);
    let mut report = Vec::new();
    for gop in [60, 250] {
        let src = common::source(SECONDS, gop);
        // Frames decoded before each chunk's start: back to the key frame at or before it.
        let lead_in: u32 = (0..chunks).map(|k| k * chunk * FPS % gop).sum();
        let (mut straight, mut chunked) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            let one = timed(decode(&src, None));
            let mut parts = (0.0, 0.0);
            for k in 0..chunks {
                let (wall, cpu) = timed(decode(&src, Some((k * chunk, chunk))));
                parts = (parts.0 + wall, parts.1 + cpu);
            }
            println!(
                "round {round}/{rounds} GOP {gop:3}: straight wall {:6.2} s CPU {:6.2} s; \
                 {chunks} × {chunk} s chunks wall {:6.2} s CPU {:6.2} s",
                one.0, one.1, parts.0, parts.1
            );
            straight.push(one);
            chunked.push(parts);
        }
        let med =
            |runs: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| median(runs.iter().map(f).collect());
        let s = (med(&straight, |r| r.0), med(&straight, |r| r.1));
        let c = (med(&chunked, |r| r.0), med(&chunked, |r| r.1));
        report.push((gop, lead_in, s, c));
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nlead-in benchmark: {cores} cores, {rounds} rounds, {SECONDS} s 1080p30 sources, \
         {chunks} chunks of {chunk} s; load average now {}",
        load.trim()
    );
    println!(
        "{:10} {:>13} {:>15} {:>15} {:>15} {:>15} {:>8} {:>8}",
        "median",
        "lead-in fr.",
        "straight wall",
        "straight CPU",
        "chunked wall",
        "chunked CPU",
        "wall ÷",
        "CPU ÷"
    );
    for (gop, lead_in, s, c) in report {
        let share = 100.0 * f64::from(lead_in) / f64::from(SECONDS * FPS);
        println!(
            "{:10} {:>13} {:15.2} {:15.2} {:15.2} {:15.2} {:8.2} {:8.2}",
            format!("GOP {gop}"),
            format!("{lead_in} ({share:.0}%)"),
            s.0,
            s.1,
            c.0,
            c.1,
            c.0 / s.0,
            c.1 / s.1
        );
    }
    println!(
        "(lead-in fr.: frames decoded and dropped before the chunks' starts, of {} in all; \
         chunked = the sum over the chunks' processes, so it also holds {chunks} process starts \
         and input opens)",
        SECONDS * FPS
    );
}
