//! status.json's `cost`: the CPU time it reports is measured, so on a run with one job it
//! matches what the kernel charged the whole process.

mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;

/// The process's CPU seconds (user + system) from its rusage.
fn cpu_seconds(usage: &libc::rusage) -> f64 {
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Runs `video-transcoder transcode` to the end and returns the run and the CPU time the
/// kernel charged it (all of its threads), read with `wait4`.
#[allow(
    clippy::zombie_processes,
    reason = "reaped by wait4, which also reads its rusage"
)]
fn transcode_with_rusage(ws: &Workspace, input: &std::path::Path, id: &str) -> (Run, f64) {
    let out_dir = ws.subdir("out");
    let tmp_dir = ws.subdir("out.tmp");
    let (stdout_path, stderr_path) = (ws.path().join("stdout"), ws.path().join("stderr"));
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_video-transcoder"))
        .arg("transcode")
        .arg(input)
        .arg("--out")
        .arg(&out_dir)
        .args(["--id", id])
        .env("TMPDIR", &tmp_dir)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout_path).unwrap())
        .stderr(fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("spawn video-transcoder");
    let pid = child.id() as libc::pid_t;
    // SAFETY: zeroed rusage is a valid value to be overwritten; the pid is our own child, not
    // yet reaped (the Child handle is never waited on).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut status = 0;
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let exited = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let run = Run {
        code: exited,
        stdout: fs::read_to_string(&stdout_path).unwrap(),
        stderr: fs::read_to_string(&stderr_path).unwrap(),
        out_dir,
        tmp_dir,
        id: Some(id.into()),
        elapsed: started.elapsed(),
    };
    (run, cpu_seconds(&usage))
}

#[test]
fn cost_cpu_seconds_matches_the_process_cpu_time_of_a_single_job() {
    let ws = Workspace::new("cost");
    // Long enough that start-up, probing and publishing are small beside the encodes.
    let src = ws.clip("src.mp4", 1280, 720, 8.0, true);
    let (run, process_cpu) = transcode_with_rusage(&ws, &src, "cost");
    run.assert_success();
    let status = run.status();
    assert_eq!(status["state"], "ready", "{status}");
    let cost = &status["cost"];
    let measured = cost["cpuSeconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("{status}"));
    eprintln!("cost {cost}; process CPU {process_cpu:.3} s");
    assert!(
        (measured - process_cpu).abs() <= 0.15 * process_cpu,
        "cost.cpuSeconds {measured} vs the process's {process_cpu:.3} CPU seconds"
    );
    let wall = cost["wallSeconds"].as_f64().unwrap();
    assert!(wall > 0.0 && wall <= run.elapsed.as_secs_f64(), "{cost}");
    assert!(cost["peakMemoryMiB"].as_f64().unwrap() > 0.0, "{cost}");
    let usd =
        0.000018 * measured + 0.000002 * cost["peakMemoryMiB"].as_f64().unwrap() / 1024.0 * wall;
    let reported = cost["estimatedUsd"].as_f64().unwrap();
    assert!((reported - usd).abs() < 1e-8, "{reported} vs {usd}");
}
