//! End-to-end tests of `video-transcoder transcode`: clips made with the ffmpeg CLI go in, and
//! the HLS tree, status.json and exit code that come out are checked against the contract
//! (`common::check_ready` asserts everything every successful run must satisfy; each test adds
//! what is specific to its source). Needs the ffmpeg/ffprobe CLI on PATH.

mod common;

use std::fs;
use std::process::Command;

use common::*;

/// Asserts `size` is the `rung` of a source shown at `display`: short side = rung, long side
/// keeps the display aspect ratio (within even-rounding), both even, same orientation.
fn assert_rung(size: (u32, u32), rung: u32, display: (f64, f64)) {
    let (w, h) = size;
    let portrait = display.1 > display.0;
    let (short, long) = if portrait { (w, h) } else { (h, w) };
    let aspect = display.0.max(display.1) / display.0.min(display.1);
    assert_eq!(short, rung, "{w}x{h}: short side should be {rung}");
    assert!(
        (long as f64 - rung as f64 * aspect).abs() <= 2.0,
        "{w}x{h}: aspect {aspect:.4} not kept"
    );
    assert!(w % 2 == 0 && h % 2 == 0, "{w}x{h}: odd dimension");
    assert_eq!(
        h > w,
        portrait,
        "{w}x{h}: orientation differs from the source's"
    );
}

fn assert_ladder(hls: &Hls, source: &Source, rungs: &[u32]) {
    let names: Vec<String> = rungs.iter().map(|r| format!("{r}p")).collect();
    assert_eq!(hls.video_names(), names, "renditions (ascending BANDWIDTH)");
    for (size, rung) in hls.sizes().into_iter().zip(rungs) {
        assert_rung(size, *rung, source.display.unwrap());
    }
}

#[test]
fn ladder_1080p_with_audio() {
    let ws = Workspace::new("1080p");
    let src = ws.clip("src.mp4", 1920, 1080, 5.0, true);
    let source = Source::probe(&src);
    let run = ws.transcode(&src, "out", Some("clip-1080"), &["--json"]);
    let hls = check_ready(&ws, &run, &source, SegmentType::Fmp4);
    assert_json_stdout(&run);

    assert_ladder(&hls, &source, &[144, 240, 360, 480, 720, 1080]);
    assert_eq!(hls.sizes().last(), Some(&(1920, 1080)));
    assert!(hls.audio.is_some());
    assert!(
        hls.videos.iter().all(|v| v.playlist.segments.len() == 2),
        "5 s at 4 s segments is 2 segments"
    );
    let st = &hls.status;
    assert_eq!(st["progress"]["total"], 7);
    assert_eq!(st["renditions"].as_array().unwrap().len(), 7);

    let v = &st["source"]["video"];
    assert_eq!(v["codec"], "h264");
    assert_coded_size(v, 1920, 1080);
    assert_eq!(
        (v["displayWidth"].as_u64(), v["displayHeight"].as_u64()),
        (Some(1920), Some(1080))
    );
    assert_eq!(num(&v["rotation"]), Some(0.0));
    assert!(
        (num(&v["avgFrameRate"]).expect("avgFrameRate") - 30.0).abs() < 0.01,
        "avgFrameRate {}",
        v["avgFrameRate"]
    );
    assert_eq!(v["pixelFormat"], "yuv420p");
    assert_eq!(v["bitDepth"], 8);
    assert_eq!(v["interlaced"], false);
    let a = &st["source"]["audio"][0];
    assert_eq!(a["codec"], "aac");
    assert_eq!(a["channels"], 2);
    assert_eq!(a["sampleRate"], 44100);
}

#[test]
fn ts_segments_decode_alone() {
    let ws = Workspace::new("ts");
    let src = ws.clip("src.mp4", 640, 360, 5.0, true);
    let source = Source::probe(&src);
    // No --id: the job gets one of its own, and status.json says which.
    let run = ws.transcode(&src, "out", None, &["--segment-type", "ts"]);
    let hls = check_ready(&ws, &run, &source, SegmentType::Ts);
    assert_ladder(&hls, &source, &[144, 240, 360]);
    assert!(!run.video_id().is_empty());
    assert!(hls.videos.iter().all(|v| v.playlist.segments.len() == 2));
}

#[test]
fn portrait_source_gives_portrait_renditions() {
    let ws = Workspace::new("portrait");
    let src = ws.clip("src.mp4", 720, 1280, 3.0, true);
    let source = Source::probe(&src);
    let run = ws.transcode(&src, "out", Some("portrait"), &[]);
    let hls = check_ready(&ws, &run, &source, SegmentType::Fmp4);
    assert_ladder(&hls, &source, &[144, 240, 360, 480, 720]);
    assert_eq!(hls.sizes().last(), Some(&(720, 1280)));
    assert!(
        hls.videos
            .iter()
            .all(|v| v.variant.resolution().is_some_and(|(w, h)| w < h))
    );
}

#[test]
fn odd_dimensions_give_even_renditions() {
    let ws = Workspace::new("odd");
    // testsrc (not testsrc2) keeps odd sizes; yuv420p can't be odd-sized in x264, so 4:4:4.
    let src = ws.clip_with(
        "src.mp4",
        "testsrc=size=641x361:rate=30:duration=3",
        None,
        &["-pix_fmt", "yuv444p"],
    );
    let source = Source::probe(&src);
    assert_eq!(
        source.display,
        Some((641.0, 361.0)),
        "fixture must be 641x361 square-pixel"
    );
    let run = ws.transcode(&src, "out", Some("odd"), &[]);
    let hls = check_ready(&ws, &run, &source, SegmentType::Fmp4);
    // 361 short side: 360 is the highest rung that does not upscale.
    assert_ladder(&hls, &source, &[144, 240, 360]);
    assert_eq!(hls.status["source"]["video"]["pixelFormat"], "yuv444p");
}

#[test]
fn rotated_source_is_output_upright() {
    let ws = Workspace::new("rotated");
    // White left half, black right half; the display matrix turns it portrait.
    let plain = ws.clip_with(
        "plain.mp4",
        "color=c=white:s=640x360:r=30:d=3,drawbox=x=320:y=0:w=320:h=360:color=black:t=fill",
        None,
        &["-pix_fmt", "yuv420p"],
    );
    // ffmpeg 5.1 drops `rotate` metadata when encoding but writes it as a display matrix when
    // stream-copying into mp4.
    let src = ws.path().join("src.mp4");
    ffmpeg(&[
        "-i",
        plain.to_str().unwrap(),
        "-c",
        "copy",
        "-metadata:s:v:0",
        "rotate=90",
        src.to_str().unwrap(),
    ]);
    let source = Source::probe(&src);
    let rot = rotation(stream(&source.probe, "video").unwrap());
    assert_eq!(rot.abs(), 90.0, "fixture must carry a 90° display matrix");
    assert_eq!(source.display, Some((360.0, 640.0)));

    let run = ws.transcode(&src, "out", Some("rotated"), &[]);
    let hls = check_ready(&ws, &run, &source, SegmentType::Fmp4);
    assert_ladder(&hls, &source, &[144, 240, 360]);
    assert_eq!(hls.sizes().last(), Some(&(360, 640)));

    let v = &hls.status["source"]["video"];
    assert_eq!(
        num(&v["rotation"]).map(|r| r.abs() % 180.0),
        Some(90.0),
        "source.video.rotation {}",
        v["rotation"]
    );
    assert_coded_size(v, 640, 360);

    // Upright the same way ffmpeg shows the source: the bright half ends on the same side.
    let scratch = ws.subdir("frames");
    let top_minus_bottom = |path: &std::path::Path| {
        let (w, h, px) = first_frame_gray(path, &scratch);
        assert!(h > w, "{}: frame {w}x{h} is not portrait", path.display());
        let mean = |rows: std::ops::Range<usize>| {
            px[rows.start * w..rows.end * w]
                .iter()
                .map(|&p| p as f64)
                .sum::<f64>()
                / ((rows.end - rows.start) * w) as f64
        };
        mean(0..h / 2) - mean(h / 2..h)
    };
    let want = top_minus_bottom(&src);
    let got = top_minus_bottom(&run.manifest_dir().join("360p/index.m3u8"));
    assert!(want.abs() > 100.0, "fixture halves not distinct: {want}");
    assert!(
        got.signum() == want.signum() && got.abs() > 100.0,
        "output rotated the wrong way: top-bottom {got:.0}, source shows {want:.0}"
    );

    // Made in 2 s chunks, the second chunk's picture is upright too.
    let chunked = &["--chunk-seconds", "2", "--segment-seconds", "2"];
    let run = ws.transcode(&src, "chunked", Some("rotated"), chunked);
    run.assert_success();
    let playlist = MediaPlaylist::read(&run.manifest_dir().join("360p/index.m3u8"));
    let second = playlist.probeable_segment(1, &scratch);
    let got = top_minus_bottom(&second);
    assert!(
        got.signum() == want.signum() && got.abs() > 100.0,
        "chunk 1 rotated the wrong way: top-bottom {got:.0}, source shows {want:.0}"
    );
}

#[test]
fn no_audio_source() {
    let ws = Workspace::new("noaudio");
    let src = ws.clip("src.mp4", 640, 360, 3.0, false);
    let source = Source::probe(&src);
    let run = ws.transcode(&src, "out", Some("silent"), &[]);
    let hls = check_ready(&ws, &run, &source, SegmentType::Fmp4);
    assert_ladder(&hls, &source, &[144, 240, 360]);
    assert!(
        hls.master.media.is_empty(),
        "EXT-X-MEDIA without audio:\n{}",
        hls.master.text
    );
    assert!(
        hls.master
            .variants
            .iter()
            .all(|v| v.codecs().len() == 1 && v.get("AUDIO").is_none())
    );
    assert!(!run.manifest_dir().join("audio").exists());
    assert_eq!(hls.status["progress"]["total"], 3);
    assert_eq!(hls.status["source"]["audio"], serde_json::json!([]));
}

#[test]
fn audio_only_source() {
    let ws = Workspace::new("audioonly");
    let src = ws.path().join("src.m4a");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100:duration=3",
        "-c:a",
        "aac",
        "-ac",
        "1",
        src.to_str().unwrap(),
    ]);
    let source = Source::probe(&src);
    let run = ws.transcode(&src, "out", Some("podcast"), &[]);
    let hls = check_ready(&ws, &run, &source, SegmentType::Fmp4);
    assert!(hls.videos.is_empty());
    let st = &hls.status;
    assert_eq!(st["progress"]["total"], 1);
    assert_eq!(st["renditions"][0]["kind"], "audio");
    let a = &st["source"]["audio"][0];
    assert_eq!(
        (
            a["codec"].as_str(),
            a["channels"].as_u64(),
            a["sampleRate"].as_u64()
        ),
        (Some("aac"), Some(1), Some(44100))
    );
}

#[test]
fn corrupt_random_bytes_fail_cleanly() {
    let ws = Workspace::new("random");
    let src = ws.path().join("random.mp4");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..256 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(&src, bytes).unwrap();
    assert_failed_cleanly(&ws.transcode(&src, "out", Some("random"), &[]));
}

#[test]
fn empty_file_fails_cleanly() {
    let ws = Workspace::new("empty");
    let src = ws.path().join("empty.mp4");
    fs::write(&src, b"").unwrap();
    assert_failed_cleanly(&ws.transcode(&src, "out", Some("empty"), &[]));
}

/// Scratch a killed run left (its process is gone) is removed by the next run; a live
/// process's scratch is not touched.
#[test]
fn the_next_run_removes_scratch_a_killed_run_left() {
    let ws = Workspace::new("orphans");
    let scratch = ws.subdir("out.tmp"); // the run's TMPDIR, so its scratch folder
    let dead = scratch.join("vt-4000000000-killed-abc123");
    let live = scratch.join(format!("vt-{}-running-def456", std::process::id()));
    for dir in [&dead, &live] {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("source"), b"left behind").unwrap();
    }
    let src = ws.path().join("empty.mp4");
    fs::write(&src, b"").unwrap();
    let _ = ws.transcode(&src, "out", Some("orphans"), &[]);
    assert!(!dead.exists(), "a dead process's scratch is still there");
    assert!(
        live.join("source").exists(),
        "a live process's scratch was removed"
    );
}

#[test]
fn truncated_mp4_fails_cleanly() {
    let ws = Workspace::new("truncated");
    let full = ws.clip("full.mp4", 640, 360, 3.0, true);
    let bytes = fs::read(&full).unwrap();
    let src = ws.path().join("truncated.mp4");
    // The mp4 muxer writes moov last, so the first half has media but no index.
    fs::write(&src, &bytes[..bytes.len() / 2]).unwrap();
    let probe = Command::new("ffprobe")
        .args(["-v", "error"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        !probe.status.success(),
        "fixture: ffprobe should reject the truncated file"
    );
    assert_failed_cleanly(&ws.transcode(&src, "out", Some("truncated"), &[]));
}

#[test]
fn tiny_source_gets_one_rendition_at_its_own_size() {
    let ws = Workspace::new("tiny");
    let src = ws.clip("src.mp4", 128, 72, 3.0, true);
    let source = Source::probe(&src);
    let run = ws.transcode(&src, "out", Some("tiny"), &[]);
    let hls = check_ready(&ws, &run, &source, SegmentType::Fmp4);
    assert_eq!(hls.video_names(), ["72p"]);
    assert_eq!(hls.sizes(), [(128, 72)]);
    assert_eq!(hls.status["progress"]["total"], 2);
    assert_eq!(
        hls.status["renditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "72p")
            .unwrap()["tier"],
        "critical"
    );
}

#[test]
fn custom_ladder_never_upscales() {
    let ws = Workspace::new("ladder");
    let src = ws.clip("src.mp4", 640, 360, 3.0, false);
    let source = Source::probe(&src);
    let run = ws.transcode(
        &src,
        "out",
        Some("custom"),
        &["--ladder", "720:2800,360:800,144:200"],
    );
    let hls = check_ready(&ws, &run, &source, SegmentType::Fmp4);
    assert_ladder(&hls, &source, &[144, 360]);
}
