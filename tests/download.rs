//! The MP4 download (`videos/<id>/download.mp4`, `DOWNLOAD_RENDITION`): remuxed from the
//! published segments, faststart, as long as the source, one video and one audio stream, and
//! listed in status.json. Driven through `video-transcoder transcode` (the local store).

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::Value;

/// Byte offsets of the top-level MP4 boxes named `moov` and `mdat`.
fn top_level_boxes(path: &Path) -> Vec<(String, u64)> {
    let bytes = fs::read(path).unwrap();
    let (mut at, mut boxes) = (0usize, Vec::new());
    while at + 8 <= bytes.len() {
        let size = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as u64;
        let name = String::from_utf8_lossy(&bytes[at + 4..at + 8]).into_owned();
        let size = match size {
            1 => u64::from_be_bytes(bytes[at + 8..at + 16].try_into().unwrap()),
            0 => (bytes.len() - at) as u64,
            n => n,
        };
        boxes.push((name, at as u64));
        at += size as usize;
    }
    boxes
}

/// Checks the download a run made: listed in status.json with its rendition and size,
/// faststart, the source's duration, and the streams `audio` says.
fn check_download(run: &Run, source: &Source, rendition: &str, audio: bool) -> Value {
    let status = run.status();
    let download = &status["download"];
    let id = run.video_id();
    assert_eq!(
        download["path"],
        format!("videos/{id}/download.mp4"),
        "{status:#}"
    );
    assert_eq!(download["rendition"], rendition, "{status:#}");
    let file = run.video_dir().join("download.mp4");
    let bytes = fs::metadata(&file).expect("download.mp4 published").len();
    assert_eq!(download["bytes"].as_u64(), Some(bytes));

    let boxes = top_level_boxes(&file);
    let at = |name: &str| boxes.iter().find(|(n, _)| n == name).map(|(_, at)| *at);
    let (moov, mdat) = (at("moov").expect("moov"), at("mdat").expect("mdat"));
    assert!(moov < mdat, "not faststart: {boxes:?}");

    let probe = probe(&file);
    let streams = probe["streams"].as_array().unwrap();
    let kinds: Vec<&str> = streams
        .iter()
        .map(|s| s["codec_type"].as_str().unwrap())
        .collect();
    let expected: &[&str] = if audio {
        &["video", "audio"]
    } else {
        &["video"]
    };
    assert_eq!(kinds, expected);
    let video = stream(&probe, "video").unwrap();
    let height = rendition.trim_end_matches('p').parse::<f64>().unwrap();
    assert_eq!(num(&video["height"]), Some(height));
    assert_eq!(video["codec_name"], "h264");
    // Within a frame (30 fps) or an AAC frame (1024 samples at 48 kHz), whichever is longer.
    let tolerance = (1.0 / 30.0f64).max(1024.0 / 48_000.0) + 1e-3;
    for s in streams {
        let d = num(&s["duration"]).expect("stream duration");
        assert!(
            (d - source.duration).abs() <= tolerance,
            "{} lasts {d} s, the source {} s",
            s["codec_type"],
            source.duration
        );
    }
    let decoded = decode(&file, "v:0");
    assert!(decoded.stderr.is_empty(), "{}", decoded.stderr);
    status
}

#[test]
fn download_is_the_720p_rung_remuxed_faststart() {
    let ws = Workspace::new("download-fmp4");
    let src = ws.clip("src.mp4", 1920, 1080, 5.0, true);
    let source = Source::probe(&src);
    let run = ws.transcode(
        &src,
        "out",
        Some("dl"),
        &["--ladder", "1080:3000,720:1500,360:500"],
    );
    run.assert_success();
    check_download(&run, &source, "720p", true);
}

#[test]
fn download_from_ts_segments_and_a_source_without_audio() {
    let ws = Workspace::new("download-ts");
    let src = ws.clip("src.mp4", 640, 360, 5.0, false);
    let source = Source::probe(&src);
    let args = ["--segment-type", "ts", "--ladder", "360:500,144:150"];
    let run = ws.transcode(&src, "out", Some("dl-ts"), &args);
    run.assert_success();
    check_download(&run, &source, "360p", false);

    let src = ws.clip("src-audio.mp4", 640, 360, 5.0, true);
    let source = Source::probe(&src);
    let args = [&args[..], &["--download-rendition", "200p"]].concat();
    let run = ws.transcode(&src, "out2", Some("dl-ts2"), &args);
    run.assert_success();
    check_download(&run, &source, "144p", true);
}

#[test]
fn download_rendition_none_makes_no_download() {
    let ws = Workspace::new("download-none");
    let src = ws.clip("src.mp4", 320, 180, 2.0, true);
    let run = ws.transcode(
        &src,
        "out",
        Some("dl-none"),
        &["--ladder", "144:150", "--download-rendition", "none"],
    );
    run.assert_success();
    assert!(run.status().get("download").is_none(), "{:#}", run.status());
    assert!(!run.video_dir().join("download.mp4").exists());
}
