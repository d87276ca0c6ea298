//! A video encoded in time chunks (`CHUNK_SECONDS`) against the same video in one run: every
//! rendition has the same frames, segments, decode times and one init segment, each frame as
//! close to the source as the unchunked run's, and an interrupted chunked job resumes with the
//! chunks it finished kept.

mod common;

use std::path::Path;

use common::*;

/// Per-frame PSNR (luma) of a rendition against the source scaled to its size, by frame index.
fn psnr_per_frame(ws: &Workspace, playlist: &Path, source: &Path, size: (u32, u32)) -> Vec<f64> {
    let stats = ws.path().join(format!(
        "psnr-{}.log",
        playlist.to_string_lossy().replace('/', "_")
    ));
    let graph = format!(
        "[0:v]setpts=PTS-STARTPTS[a];[1:v]scale={}:{},setpts=PTS-STARTPTS[b];\
         [a][b]psnr=stats_file={}",
        size.0,
        size.1,
        stats.display()
    );
    ffmpeg(&[
        "-i",
        playlist.to_str().unwrap(),
        "-i",
        source.to_str().unwrap(),
        "-lavfi",
        &graph,
        "-f",
        "null",
        "-",
    ]);
    std::fs::read_to_string(&stats)
        .unwrap()
        .lines()
        .map(|line| {
            let y = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("psnr_y:"));
            match y.unwrap() {
                "inf" => 100.0,
                y => y.parse().unwrap(),
            }
        })
        .collect()
}

#[test]
fn a_chunked_video_matches_one_run_frame_for_frame() {
    let ws = Workspace::new("chunks_match");
    // Two minutes of moving 1080p30 with audio; source key frames every 2.5 s, so most
    // chunks start between two and decode a lead-in.
    let source = ws.clip_with(
        "source.mp4",
        "testsrc2=size=1920x1080:rate=30:duration=120",
        Some(120.0),
        &["-g", "75", "-pix_fmt", "yuv420p"],
    );
    let whole = ws.transcode(&source, "whole", Some("v"), &["--chunk-seconds", "0"]);
    let chunked = ws.transcode(&source, "chunked", Some("v"), &["--chunk-seconds", "16"]);
    for run in [&whole, &chunked] {
        assert_eq!(run.code, Some(0), "{}", run.stderr);
    }
    let manifest = |run: &Run| run.out_dir.join("videos/v/manifest");
    let markers = chunked.out_dir.join("videos/v/units");
    // One decode for every tier (the idle pool's plan) leads with one 4 s segment: 4 s, then
    // 116 s in 16 s chunks, the last 4 s long.
    assert!(
        markers.join("1080p-8.json").exists(),
        "one marker per chunk"
    );
    assert!(
        !markers.join("1080p-9.json").exists(),
        "a 4 s lead and 116 s in 16 s chunks: 9"
    );
    let master = MasterPlaylist::read(&manifest(&chunked).join("master.m3u8"));
    assert_eq!(master.variants.len(), 6, "1080p to 144p: {}", master.text);
    for variant in &master.variants {
        let name = variant.name().to_string();
        let one = MediaPlaylist::read(&manifest(&whole).join(&name).join("index.m3u8"));
        let parts = MediaPlaylist::read(&manifest(&chunked).join(&name).join("index.m3u8"));
        assert!(
            !parts.text.contains("DISCONTINUITY"),
            "{name}: {}",
            parts.text
        );
        assert_eq!(parts.map.as_deref(), Some("init.mp4"), "{name}: one init");
        let uris = |p: &MediaPlaylist| -> Vec<(String, String)> {
            let list = p.segments.iter();
            list.map(|s| (s.uri.clone(), format!("{:.6}", s.duration)))
                .collect()
        };
        assert_eq!(uris(&parts), uris(&one), "{name}: the same segments");
        let dir = parts.dir();
        let files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".mp4"))
            .collect();
        assert_eq!(files, ["init.mp4"], "{name}: chunks' own inits stay out");
        for s in &parts.segments {
            assert_eq!(
                tfdt(&dir.join(&s.uri)),
                tfdt(&one.dir().join(&s.uri)),
                "{name} {}: decode time",
                s.uri
            );
        }
        let size = variant.resolution().unwrap();
        let a = psnr_per_frame(&ws, &one.path, &source, size);
        let b = psnr_per_frame(&ws, &parts.path, &source, size);
        assert_eq!(a.len(), 3600, "{name}: frames of the single run");
        assert_eq!(b.len(), a.len(), "{name}: the same frame count");
        for (n, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 3.0,
                "{name} frame {n} ({:.2} s): PSNR {y:.2} dB chunked, {x:.2} dB in one run",
                n as f64 / 30.0
            );
        }
    }
}

/// Modification times of the files in `dir`, by name.
fn mtimes(dir: &Path) -> std::collections::BTreeMap<String, std::time::SystemTime> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            let name = e.file_name().into_string().unwrap();
            (name, e.metadata().unwrap().modified().unwrap())
        })
        .collect()
}

#[test]
fn an_interrupted_chunked_job_encodes_only_the_chunks_it_had_not_finished() {
    let ws = Workspace::new("chunks_resume");
    let source = ws.clip("source.mp4", 1280, 720, 40.0, true);
    let out = ws.subdir("out");
    let args = |cmd: &mut std::process::Command| {
        cmd.arg("transcode")
            .arg(&source)
            .args(["--out", out.to_str().unwrap(), "--id", "v"])
            .args(["--chunk-seconds", "8", "--max-parallel-encodes", "2"])
            .env("TMPDIR", ws.subdir("tmp"))
            .env("RUST_LOG", "info");
    };
    let units = out.join("videos/v/units");
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_video-transcoder"));
    args(&mut first);
    let mut child = first
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    // Stopped while the 720p rendition's fourth chunk (of five) encodes.
    while !units.join("720p-2.json").exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be stopped"
        );
        assert!(
            started.elapsed().as_secs() < 600,
            "720p chunk 2 never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap(); // exits non-zero: the job did not finish
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("videos/v/status.json")).unwrap()).unwrap();
    assert_eq!(status["state"], "interrupted", "{status:#}");
    assert!(
        !units.join("720p-4.json").exists(),
        "stopped before the last chunk"
    );
    let kept = mtimes(&units);

    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_video-transcoder"));
    args(&mut second);
    let run = second.output().unwrap();
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{log}");
    let after = mtimes(&units);
    for (name, time) in &kept {
        assert_eq!(after.get(name), Some(time), "{name} was made again:\n{log}");
    }
    assert!(after.contains_key("720p-4.json"), "{after:?}");
    assert!(
        after.len() > kept.len(),
        "the missing chunks were encoded: {after:?}"
    );
    assert!(log.contains("resuming: chunk kept"), "{log}");
    let playlist = out.join("videos/v/manifest/720p/index.m3u8");
    let frames = decode(&playlist, "v:0").frames.len();
    assert_eq!(frames, 1200, "40 s at 30 fps, joined from both runs");
    let master = MasterPlaylist::read(&out.join("videos/v/manifest/master.m3u8"));
    assert_eq!(master.variants.len(), 5, "{}", master.text);
}
