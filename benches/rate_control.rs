//! Rate-control benchmark. Run: `cargo bench --bench rate_control` (env `BENCH_CLIPS=easy,hard`
//! measures only those kinds).
//!
//! Makes (once, cached in `target/bench-data/`) three 4 s 1080p30 sources (x264 CRF 14, no audio):
//!   easy   — `testsrc2` (flat colours, one moving square, a counter);
//!   phone  — an imitation of a handheld phone clip (no real one is on this machine): a detailed
//!            still (`mandelbrot` without zoom) swaying as a hand-held camera does (moving crop),
//!            softened like a lens (`gblur`) and with temporal sensor grain (`noise`);
//!   hard   — high-motion noise: `cellauto` (rule 30, the whole frame random, scrolling a line
//!            per frame) with heavy temporal noise on top (a zooming `mandelbrot` took minutes
//!            to generate at 1080p).
//! Each goes through `video-transcoder transcode` (default ladder) with `--rate-control abr` and
//! `capped-crf`. For every rung it prints the rendition's bytes, SSIM and PSNR (ffmpeg's `ssim`
//! and `psnr` filters against the source scaled to the rung's size) and the master's BANDWIDTH
//! (`-` when the master leaves the rung out), then total bytes and the targets: ≥ 30 %
//! fewer bytes on easy content, SSIM within 0.005 of ABR on every rung of hard content.
//! Nothing is asserted: it is a benchmark, not a test. It exits non-zero only if a run fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const SECONDS: u32 = 4;

/// Name and lavfi graph of each kind of content.
const CLIPS: [(&str, &str); 3] = [
    ("easy", "testsrc2=size=1920x1080:rate=30"),
    (
        "phone",
        "mandelbrot=size=2304x1296:rate=30:start_scale=0.6:end_scale=0.6,\
         crop=1920:1080:x='192+150*sin(t*1.3)':y='108+80*sin(t*0.9+1)',\
         gblur=sigma=1.2,noise=alls=8:allf=t+u",
    ),
    (
        "hard",
        "cellauto=size=1920x1080:rate=30:rule=30:random_fill_ratio=0.5:full=1:scroll=1,\
         noise=alls=24:allf=t+u",
    ),
];
const MODES: [&str; 2] = ["abr", "capped-crf"];

/// One rung's measurements.
struct Rung {
    bytes: u64,
    ssim: f64,
    psnr: f64,
    bandwidth: Option<u64>,
}

fn run(command: &mut Command) -> String {
    let out = command.output().expect("spawn");
    if !out.status.success() {
        eprintln!(
            "{command:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::process::exit(1);
    }
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ffmpeg() -> Command {
    let mut c = Command::new("ffmpeg");
    c.args(["-hide_banner", "-nostdin", "-y"]);
    c
}

/// The cached source clip of `kind`.
fn source(kind: &str, graph: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("rc-{kind}-1080p30-{SECONDS}s.mp4"));
    if !path.exists() {
        let graph = format!("{graph},trim=duration={SECONDS},format=yuv420p");
        // Written aside and renamed, so an interrupted run leaves no half clip in the cache.
        let part = path.with_extension("part.mp4");
        run(ffmpeg()
            .args(["-loglevel", "error", "-f", "lavfi", "-i", &graph])
            .args(["-c:v", "libx264", "-preset", "veryfast", "-crf", "14"])
            .arg(&part));
        std::fs::rename(&part, &path).unwrap();
    }
    path
}

fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// (width, height) of the first video stream.
fn size(playlist: &Path) -> (u32, u32) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height",
        ])
        .args(["-of", "csv=p=0"])
        .arg(playlist)
        .output()
        .expect("ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.lines().next().expect("a video stream").split(',');
    let mut next = || {
        fields
            .next()
            .and_then(|f| f.trim().parse().ok())
            .expect("width,height")
    };
    (next(), next())
}

/// The number after `key` in an ffmpeg log line that contains `marker`.
fn stat(log: &str, marker: &str, key: &str) -> f64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(marker))
        .expect(marker);
    let rest = &line[line.find(key).expect(key) + key.len()..];
    let number: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    number.parse().unwrap_or(f64::INFINITY)
}

/// SSIM (all planes) and PSNR (average) of `playlist` against `src` scaled to its size.
fn quality(playlist: &Path, src: &Path) -> (f64, f64) {
    let (w, h) = size(playlist);
    let graph = format!(
        "[1:v]scale={w}:{h}:flags=bicubic,split[r1][r2];[0:v]split[d1][d2];\
         [d1][r1]ssim;[d2][r2]psnr"
    );
    let log = run(ffmpeg()
        .args(["-loglevel", "info", "-i"])
        .arg(playlist)
        .arg("-i")
        .arg(src)
        .args(["-lavfi", &graph, "-f", "null", "-"]));
    (stat(&log, "SSIM", "All:"), stat(&log, "PSNR", "average:"))
}

/// BANDWIDTH per variant URI's folder name, from the master.
fn bandwidths(master: &Path) -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(master).unwrap();
    let mut out = BTreeMap::new();
    let mut pending = None;
    for line in text.lines() {
        if let Some(attrs) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            let bw = attrs.split(',').find_map(|a| a.strip_prefix("BANDWIDTH="));
            pending = bw.map(|b| b.parse().unwrap());
        } else if let (Some(bw), false) = (pending.take(), line.starts_with('#')) {
            out.insert(line.split('/').next().unwrap().to_string(), bw);
        }
    }
    out
}

/// Transcodes `src` with `mode` and measures every rung, keyed by rendition name.
fn measure(src: &Path, kind: &str, mode: &str) -> BTreeMap<u32, (String, Rung)> {
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let id = format!("{kind}-{mode}");
    run(Command::new(env!("CARGO_BIN_EXE_video-transcoder"))
        .arg("transcode")
        .arg(src)
        .arg("--out")
        .arg(work.path())
        .args(["--id", &id, "--rate-control", mode]));
    let manifest = work.path().join("videos").join(&id).join("manifest");
    let listed = bandwidths(&manifest.join("master.m3u8"));
    let mut rungs = BTreeMap::new();
    for entry in std::fs::read_dir(&manifest).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let Some(short) = name.strip_suffix('p').and_then(|s| s.parse().ok()) else {
            continue; // audio, master
        };
        let (ssim, psnr) = quality(&dir.join("index.m3u8"), src);
        let rung = Rung {
            bytes: bytes_under(&dir),
            ssim,
            psnr,
            bandwidth: listed.get(&name).copied(),
        };
        rungs.insert(short, (name, rung));
    }
    rungs
}

fn main() {
    let only = std::env::var("BENCH_CLIPS").unwrap_or_default();
    for (kind, graph) in CLIPS {
        if !only.is_empty() && !only.split(',').any(|k| k == kind) {
            continue;
        }
        let src = source(kind, graph);
        let results: Vec<_> = MODES.iter().map(|m| measure(&src, kind, m)).collect();
        println!("\n{kind} ({}, {SECONDS} s 1080p30)", src.display());
        println!(
            "{:>6} | {:>28} | {:>28} | {:>7} {:>7}",
            "rung",
            "abr: kB  SSIM  PSNR  BW kb/s",
            "crf: kB  SSIM  PSNR  BW kb/s",
            "ΔSSIM",
            "bytes"
        );
        let cell = |r: &Rung| {
            let bw = r.bandwidth.map_or("-".into(), |b| (b / 1000).to_string());
            format!(
                "{:>7.0} {:.4} {:>5.2} {bw:>6}",
                r.bytes as f64 / 1000.0,
                r.ssim,
                r.psnr
            )
        };
        let mut worst_ssim = f64::INFINITY;
        for ((_, (name, abr)), (_, (_, crf))) in results[0].iter().zip(&results[1]).rev() {
            let dssim = crf.ssim - abr.ssim;
            worst_ssim = worst_ssim.min(dssim);
            println!(
                "{name:>6} | {} | {} | {dssim:>+7.4} {:>+6.1}%",
                cell(abr),
                cell(crf),
                100.0 * (crf.bytes as f64 / abr.bytes as f64 - 1.0)
            );
        }
        let total =
            |r: &BTreeMap<u32, (String, Rung)>| r.values().map(|(_, r)| r.bytes).sum::<u64>();
        let (abr, crf) = (total(&results[0]), total(&results[1]));
        let saved = 100.0 * (1.0 - crf as f64 / abr as f64);
        println!(
            "total: abr {abr} B, capped-crf {crf} B ({saved:.1} % fewer); worst ΔSSIM {worst_ssim:+.4}"
        );
        match kind {
            "easy" => println!(
                "target ≥ 30 % fewer bytes: {}",
                if saved >= 30.0 { "PASS" } else { "MISS" }
            ),
            "hard" => println!(
                "target SSIM within 0.005 of ABR on every rung: {}",
                if worst_ssim >= -0.005 { "PASS" } else { "MISS" }
            ),
            _ => {}
        }
    }
}
