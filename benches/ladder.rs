//! Ladder benchmark. Run: `cargo bench --bench ladder` (rounds: env `BENCH_ROUNDS`, default 3);
//! the chunked cases on a 2-minute source: `BENCH_SOURCE=2min cargo bench --bench ladder`.
//!
//! Makes (once, cached in `target/bench-data/`) a 1080p30, 30 s source with audio (testsrc2 + sine,
//! x264 ~8 Mb/s, 2 s GOP, AAC 128k 48 kHz stereo, MP4), then builds the same 5-rung HLS ladder
//! (1080/720/480/360/240 at 5000/2800/1400/800/400 kb/s, x264 veryfast, 2 s GOP, 4 s fMP4 segments)
//! three ways, alternating every round, each run in a fresh temp dir:
//!   ours — `video-transcoder transcode` (default: on an idle pool one decode for every tier,
//!          led by one segment of the ≤480p renditions alone, published first);
//!   ours, per tier — the same with `--decode-plan per-tier` (one decode per tier, the plan
//!          `auto` picks while other jobs wait);
//!   ours, no images — the default with `--images none` (no poster or storyboard), for the wall
//!          time the images add (printed as a ratio; target ≤ 1.03);
//!   (b)  — ONE ffmpeg CLI process: split filter -> 5 x (scale + libx264), audio encoded once;
//!   (c)  — the seeds' approach: five ffmpeg processes in parallel, one per rendition, each
//!          decoding the source and encoding its own audio.
//! With `BENCH_SOURCE=2min` the source lasts 120 s and the cases are ours with `--chunk-seconds 16`,
//! ours with the default chunks, ours with `--chunk-seconds 0` (one chunk per pass) and
//! (b), alternating likewise; the ratios are chunked ÷ one chunk and each of ours ÷ (b).
//! Prints medians of wall time, user+sys CPU and peak RSS (wait4 rusage per child; for (c) the sum
//! of the five children's peaks), ratios, time to first playable and the targets with PASS/MISS.
//! Nothing is asserted: it is a benchmark, not a test. It exits non-zero only if a run fails.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;
use common::source;

/// (width, height, video kb/s) per rung.
const LADDER: [(u32, u32, u32); 5] = [
    (1920, 1080, 5000),
    (1280, 720, 2800),
    (854, 480, 1400),
    (640, 360, 800),
    (426, 240, 400),
];
const OUR_LADDER: &str = "1080:5000,720:2800,480:1400,360:800,240:400";
const X264: &str = "-c:v libx264 -preset veryfast -profile:v high -pix_fmt yuv420p \
                    -x264-params keyint=60:min-keyint=60:scenecut=0";
const HLS: &str = "-f hls -hls_time 4 -hls_playlist_type vod -hls_segment_type fmp4";

#[derive(Default)]
struct Run {
    wall: f64,
    cpu: f64,
    rss_mib: f64,
    ttfp_status: Option<f64>,
    ttfp_poll: Option<f64>,
}

/// An ffmpeg command with `args` (split on whitespace) already added.
fn ffmpeg(args: &str) -> Command {
    let mut c = Command::new("ffmpeg");
    c.args("-hide_banner -nostdin -loglevel error -y".split_whitespace());
    c.args(args.split_whitespace());
    c
}

/// `-b:v`, `-maxrate` (1.1x) and `-bufsize` (2x) for one rung; `s` is a stream spec (":2") or "".
fn rate(kbps: u32, s: &str) -> Vec<String> {
    let (max, buf) = (kbps * 11 / 10, kbps * 2);
    let text = format!("-b:v{s} {kbps}k -maxrate:v{s} {max}k -bufsize:v{s} {buf}k");
    text.split_whitespace().map(String::from).collect()
}

/// One case of the benchmark, run in turn with the others every round.
#[derive(Clone, Copy)]
enum Case {
    /// `video-transcoder transcode` with a decode plan and `--chunk-seconds` (`None`: unset).
    Ours(&'static str, Option<u32>),
    /// (b)
    PeerOne,
    /// (c)
    PeerFive,
}

fn ours(src: &Path, out: &Path, plan: &str, chunk: Option<u32>, images: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_video-transcoder"));
    c.arg("transcode").arg(src).arg("--out").arg(out);
    c.args([
        "--id",
        "bench",
        "--ladder",
        OUR_LADDER,
        "--decode-plan",
        plan,
        "--images",
        images,
    ]);
    if let Some(seconds) = chunk {
        c.args(["--chunk-seconds", &seconds.to_string()]);
    }
    c
}

/// (b): one process, split filter, 5 video outputs + one audio stream, one HLS master.
fn peer_one(src: &Path, out: &Path) -> Command {
    let mut graph = String::from("[0:v]split=5[s0][s1][s2][s3][s4]");
    let (mut maps, mut rates, mut var_map) = (String::new(), Vec::new(), String::new());
    for (i, (w, h, k)) in LADDER.iter().enumerate() {
        graph += &format!(";[s{i}]scale={w}:{h}[v{i}]");
        maps += &format!(" -map [v{i}]");
        rates.extend(rate(*k, &format!(":{i}")));
        var_map += &format!("v:{i},agroup:aud ");
    }
    let mut c = ffmpeg("");
    c.current_dir(out)
        .arg("-i")
        .arg(src)
        .args(["-filter_complex", &graph]);
    c.args(maps.split_whitespace()).args(["-map", "0:a:0"]);
    c.args(X264.split_whitespace()).args(rates);
    c.args("-c:a aac -b:a 128k -ar 48000 -ac 2".split_whitespace());
    c.args(HLS.split_whitespace());
    c.args("-hls_segment_filename %v/seg_%03d.m4s -master_pl_name master.m3u8".split_whitespace());
    c.args([
        "-var_stream_map",
        &(var_map + "a:0,agroup:aud"),
        "%v/index.m3u8",
    ]);
    c
}

/// (c): one process per rendition, each decoding the source and encoding its own audio.
fn peer_five(src: &Path, out: &Path) -> Vec<Command> {
    let mut cmds = Vec::new();
    for (i, (w, h, k)) in LADDER.iter().enumerate() {
        let dir = out.join(i.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = ffmpeg("");
        c.current_dir(&dir)
            .arg("-i")
            .arg(src)
            .args(["-vf", &format!("scale={w}:{h}")]);
        c.args(X264.split_whitespace()).args(rate(*k, ""));
        c.args("-c:a aac -b:a 128k".split_whitespace())
            .args(HLS.split_whitespace());
        c.args(["-hls_segment_filename", "seg_%03d.m4s", "index.m3u8"]);
        cmds.push(c);
    }
    cmds
}

fn secs(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}

/// Spawns all commands at once, waits for all (wait4 per child), optionally polls for `poll` to
/// appear every 50 ms. Logs go to `logs/{stdout,stderr}N.log`. On failure prints stderr and exits.
fn measure(name: &str, cmds: Vec<Command>, logs: &Path, poll: Option<PathBuf>) -> Run {
    let t0 = Instant::now();
    let mut kids = Vec::new();
    for (i, mut c) in cmds.into_iter().enumerate() {
        let out = File::create(logs.join(format!("stdout{i}.log"))).unwrap();
        let err = File::create(logs.join(format!("stderr{i}.log"))).unwrap();
        let c = c.stdin(Stdio::null()).stdout(out).stderr(err);
        kids.push(c.spawn().expect("spawn failed"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = poll.map(|p| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            loop {
                let done = stop.load(Ordering::Relaxed); // one last look after the exit
                if p.exists() {
                    return Some(t0.elapsed().as_secs_f64());
                }
                if done {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    });
    let mut run = Run::default();
    let mut failed = Vec::new();
    for (i, kid) in kids.iter().enumerate() {
        let pid = kid.id() as libc::pid_t;
        let mut status = 0;
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failed.push((i, status));
        }
        run.cpu += secs(ru.ru_utime) + secs(ru.ru_stime);
        run.rss_mib += ru.ru_maxrss as f64 / 1024.0; // ru_maxrss is in KiB on Linux
    }
    run.wall = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    run.ttfp_poll = watcher.and_then(|w| w.join().unwrap());
    for (i, status) in &failed {
        let err = std::fs::read_to_string(logs.join(format!("stderr{i}.log"))).unwrap_or_default();
        eprintln!(
            "{name}: process {i} failed ({}); stderr:\n{err}",
            ExitStatus::from_raw(*status)
        );
    }
    if !failed.is_empty() {
        std::process::exit(1);
    }
    run
}

/// firstPlayable − started from status.json, in seconds.
fn ttfp_from_status(path: &Path) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let ts = |k: &str| chrono::DateTime::parse_from_rfc3339(v["timestamps"][k].as_str()?).ok();
    let d = ts("firstPlayable")? - ts("started")?;
    Some(d.num_microseconds()? as f64 / 1e6)
}

/// ffprobes a master playlist and prints what it holds; true if it is the full 5-rung ladder.
fn probe(label: &str, master: &Path, seconds: f64) -> bool {
    let args = "-v error -show_entries stream=codec_type,height:format=duration -of csv=p=0";
    let mut cmd = Command::new("ffprobe");
    let out = cmd
        .args(args.split(' '))
        .arg(master)
        .output()
        .expect("ffprobe not found");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut heights: Vec<u32> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("video,")?.parse().ok())
        .collect();
    heights.sort_unstable_by(|a, b| b.cmp(a));
    heights.dedup();
    let audio = lines.iter().any(|l| l.starts_with("audio"));
    let dur: f64 = lines.iter().find_map(|l| l.parse().ok()).unwrap_or(0.0);
    println!("  {label} output (ffprobe master): heights {heights:?}, audio {audio}, {dur:.1} s");
    heights == [1080, 720, 480, 360, 240] && audio && dur > seconds - 1.0
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    (n > 0).then(|| (xs[(n - 1) / 2] + xs[n / 2]) / 2.0)
}

fn main() {
    let rounds = std::env::var("BENCH_ROUNDS").map_or(3, |s| s.parse().expect("BENCH_ROUNDS"));
    let long = match std::env::var("BENCH_SOURCE").as_deref() {
        Err(_) | Ok("30s") => false,
        Ok("2min") => true,
        Ok(other) => panic!("BENCH_SOURCE is `30s` (default) or `2min`, not `{other}`"),
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let seconds = if long { 120 } else { 30 };
    let src = source(seconds, 60);
    let cases: Vec<(&str, Case)> = if long {
        vec![
            ("ours, 16 s chunks", Case::Ours("auto", Some(16))),
            ("ours, default chunks", Case::Ours("auto", None)),
            ("ours, one chunk (0)", Case::Ours("auto", Some(0))),
            ("(b) ffmpeg CLI, 1 process", Case::PeerOne),
        ]
    } else {
        vec![
            ("ours (video-transcoder)", Case::Ours("auto", None)),
            ("(b) ffmpeg CLI, 1 process", Case::PeerOne),
            ("(c) ffmpeg CLI, 5 processes", Case::PeerFive),
            ("ours, per tier", Case::Ours("per-tier", None)),
            ("ours, no images", Case::Ours("auto", None)),
        ]
    };
    let mut runs: Vec<Vec<Run>> = cases.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (k, (name, case)) in cases.iter().enumerate() {
            let tmp = tempfile::tempdir().unwrap();
            let (logs, out) = (tmp.path(), tmp.path().join("out"));
            std::fs::create_dir_all(&out).unwrap();
            let job = out.join("videos/bench");
            let run = match *case {
                Case::Ours(plan, chunk) => {
                    let master = job.join("manifest/master.m3u8");
                    let images = if name.ends_with("no images") {
                        "none"
                    } else {
                        "all"
                    };
                    let cmd = ours(&src, &out, plan, chunk, images);
                    let mut r = measure(name, vec![cmd], logs, Some(master.clone()));
                    r.ttfp_status = ttfp_from_status(&job.join("status.json"));
                    if round == 1 {
                        probe(name, &master, f64::from(seconds));
                    }
                    r
                }
                Case::PeerOne => {
                    let r = measure(name, vec![peer_one(&src, &out)], logs, None);
                    let master = out.join("master.m3u8");
                    if round == 1 && !probe("(b)", &master, f64::from(seconds)) {
                        eprintln!("(b) did not produce a playable 5-rung ladder");
                        std::process::exit(1);
                    }
                    r
                }
                Case::PeerFive => measure(name, peer_five(&src, &out), logs, None),
            };
            let (w, c, m) = (run.wall, run.cpu, run.rss_mib);
            println!(
                "round {round}/{rounds} {name:28} wall {w:6.2} s  CPU {c:6.2} s  peak RSS {m:6.1} MiB"
            );
            runs[k].push(run);
        }
    }
    summary(&cases, &runs, rounds, cores, &src, long);
}

/// Prints the medians, the ratios and the targets (printed, never asserted).
fn summary(
    cases: &[(&str, Case)],
    runs: &[Vec<Run>],
    rounds: u32,
    cores: usize,
    src: &Path,
    long: bool,
) {
    let med = |k: usize, f: fn(&Run) -> Option<f64>| median(runs[k].iter().filter_map(f).collect());
    let wall = |k| med(k, |r| Some(r.wall)).unwrap();
    let cpu = |k| med(k, |r| Some(r.cpu)).unwrap();
    let rss = |k| med(k, |r| Some(r.rss_mib)).unwrap();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\nladder benchmark: {cores} cores, {rounds} rounds, source {src:?}");
    println!(
        "load average now: {} (others' work on the machine inflates wall times)",
        load.trim()
    );
    let head = ["median", "wall s", "CPU s", "peak RSS MiB"];
    println!(
        "{:30} {:>8} {:>8} {:>13}",
        head[0], head[1], head[2], head[3]
    );
    for (k, (name, _)) in cases.iter().enumerate() {
        println!("{name:30} {:8.2} {:8.2} {:13.1}", wall(k), cpu(k), rss(k));
    }
    // (ours, against, label); in the long set 3 is (b), 2 the one-chunk run.
    let ratios: &[(usize, usize, &str)] = if long {
        &[
            (0, 2, "ratio 16 s chunks ÷ one chunk"),
            (1, 2, "ratio default ÷ one chunk"),
            (0, 3, "ratio 16 s chunks ÷ (b)"),
            (1, 3, "ratio default chunks ÷ (b)"),
            (2, 3, "ratio one chunk ÷ (b)"),
        ]
    } else {
        &[
            (0, 1, "ratio ours ÷ (b)"),
            (0, 2, "ratio ours ÷ (c)"),
            (3, 1, "ratio ours per tier ÷ (b)"),
            (0, 4, "ratio with ÷ without images"),
        ]
    };
    for &(ours, k, label) in ratios {
        let (w, c, m) = (wall(ours) / wall(k), cpu(ours) / cpu(k), rss(ours) / rss(k));
        println!("{label:30} {w:8.2} {c:8.2} {m:13.2}");
    }
    println!("(CPU = user+sys from wait4 rusage; (c) peak RSS = sum of the five children's peaks)");
    let ttfp = |k: usize| {
        let (st, poll) = (med(k, |r| r.ttfp_status), med(k, |r| r.ttfp_poll));
        let show = |x: Option<f64>| match x {
            Some(s) => format!("{s:.2} s ({:.0}% of its wall)", 100.0 * s / wall(k)),
            None => "n/a".into(),
        };
        format!("status.json {}; polled master {}", show(st), show(poll))
    };
    for (k, (name, case)) in cases.iter().enumerate() {
        if let Case::Ours(..) = case {
            println!("time to first playable (median), {name}: {}", ttfp(k));
        }
    }
    let targets: Vec<(&str, f64, f64)> = if long {
        vec![
            ("wall 16 s chunks ÷ one chunk", wall(0) / wall(2), 1.0),
            ("wall 16 s chunks ÷ (b)", wall(0) / wall(3), 1.0),
            ("wall default ÷ (b)", wall(1) / wall(3), 1.0),
            ("16 s chunks peak RSS MiB", rss(0), 1024.0),
        ]
    } else {
        vec![
            ("wall ours ÷ (b)", wall(0) / wall(1), 1.0),
            ("wall ours ÷ (c)", wall(0) / wall(2), 0.75),
            ("ours peak RSS MiB", rss(0), 1024.0),
            ("images wall ratio", wall(0) / wall(4), 1.03),
        ]
    };
    println!("targets (printed, not asserted):");
    for (label, value, limit) in targets {
        let verdict = if value <= limit { "PASS" } else { "MISS" };
        println!("  {label:28} {value:7.2} ≤ {limit:<7.2} {verdict}");
    }
}
