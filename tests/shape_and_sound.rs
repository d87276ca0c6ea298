//! What real recordings carry beside the picture and sound themselves: a pixel shape that the
//! container and the codec state differently, and surround sound to fold into stereo.

mod common;

use std::path::Path;

use common::*;

/// The stream's sample aspect ratio as ffprobe states it (FFmpeg's own choice between
/// container and codec).
fn probed_sar(path: &Path) -> String {
    let probe = probe(path);
    let v = stream(&probe, "video").expect("video stream");
    v["sample_aspect_ratio"].as_str().unwrap_or("").to_owned()
}

/// Transcodes `src`, checks the whole contract (the status's display size against ffprobe's
/// included) and asserts every rung keeps the display aspect `want` and its orientation.
fn assert_shown_at(ws: &Workspace, src: &Path, want: f64) -> Hls {
    let source = Source::probe(src);
    let run = ws.transcode(src, "out", Some("v"), &[]);
    let hls = check_ready(ws, &run, &source, SegmentType::Fmp4);
    for (w, h) in hls.sizes() {
        let aspect = f64::from(w) / f64::from(h);
        assert!(
            (aspect - want).abs() < 0.05,
            "{w}x{h} shows {aspect:.3}, the source {want:.3}"
        );
    }
    hls
}

#[test]
fn container_aspect_ratio_unsqueezes_a_square_coded_wmv() {
    let ws = Workspace::new("sar-asf");
    let src = ws.path().join("film.wmv");
    // A 2.35:1 film stored as 360x240: ASF states the pixel shape, WMV2 has no field for it.
    make(
        &src,
        "-f lavfi -i testsrc=size=360x240:rate=25:duration=3 -f lavfi -i \
         sine=frequency=440:duration=3 -vf setsar=1280/819 -c:v wmv2 -c:a wmav2",
    );
    // ASF keeps it as 25:16 (its metadata rounds); 360 × 25/16 = 562.5 shown pixels.
    assert_eq!(probed_sar(&src), "25:16");
    let hls = assert_shown_at(&ws, &src, 562.5 / 240.0);
    assert_eq!(hls.video_names(), ["144p", "240p"]);
    assert_eq!(hls.status["source"]["video"]["sampleAspectRatio"], "25:16");
}

#[test]
fn mp4_pasp_box_wins_over_an_sps_that_says_otherwise() {
    let ws = Workspace::new("sar-pasp");
    let src = ws.path().join("slowmo.mp4");
    // The muxer writes `pasp` 1:1 (the encoder's square pixels); the bitstream filter then
    // rewrites only the SPS to 27:64, as in the phone recording.
    make(
        &src,
        "-f lavfi -i testsrc=size=320x240:rate=30:duration=3 -c:v libx264 -preset \
         ultrafast -pix_fmt yuv420p -bsf:v h264_metadata=sample_aspect_ratio=27/64",
    );
    let bytes = std::fs::read(&src).unwrap();
    let pasp = bytes
        .windows(4)
        .position(|w| w == b"pasp")
        .expect("a pasp box");
    assert_eq!(
        bytes[pasp + 4..pasp + 12],
        [0, 0, 0, 1, 0, 0, 0, 1],
        "pasp 1:1"
    );
    let raw = ws.path().join("slowmo.h264");
    make(&raw, &format!("-i {} -c copy", src.display()));
    assert_eq!(probed_sar(&raw), "27:64", "the SPS alone says 27:64");
    assert_eq!(probed_sar(&src), "1:1");

    let hls = assert_shown_at(&ws, &src, 4.0 / 3.0);
    assert_eq!(hls.sizes(), [(192, 144), (320, 240)]);
    assert_eq!(hls.status["source"]["video"]["sampleAspectRatio"], "1:1");
}

/// Overall peak and RMS level in dBFS of the audio `args` (ffmpeg input options, split on
/// whitespace) decodes to, by astats; `-ac 2` and the like may come last.
fn levels(args: &str) -> (f64, f64) {
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-nostats", "-v", "info"])
        .args(args.split_whitespace())
        .args([
            "-af",
            "astats=measure_perchannel=none:measure_overall=Peak_level+RMS_level",
        ])
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg CLI");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffmpeg {args}: {log}");
    let last = |label: &str| -> f64 {
        let line = log.lines().rev().find(|l| l.contains(label));
        let value = line.and_then(|l| l.rsplit(':').next()?.trim().parse().ok());
        value.unwrap_or_else(|| panic!("no `{label}` from astats: {log}"))
    };
    (last("Peak level dB:"), last("RMS level dB:"))
}

/// Peak and RMS level of our audio rendition of a `layout` source with `amplitude` ×
/// a 440 Hz tone on every channel, in phase (the worst case for a downmix); with the same of
/// `ffmpeg -ac 2` on that source.
fn tone_levels(ws: &Workspace, layout: &str, amplitude: f64) -> ((f64, f64), (f64, f64)) {
    let name = format!("{layout}-{amplitude}").replace('.', "_");
    let src = ws.path().join(format!("{name}.flac"));
    let tone = format!("{amplitude}*sin(2*PI*440*t)");
    let channels = if layout == "5.1" { 6 } else { 2 };
    let all = vec![tone.as_str(); channels].join("|");
    make(
        &src,
        &format!("-f lavfi -i aevalsrc={all}:channel_layout={layout}:sample_rate=48000:duration=3"),
    );
    let run = ws.transcode(&src, &name, Some(&name), &[]);
    let hls = check_ready(ws, &run, &Source::probe(&src), SegmentType::Fmp4);
    assert!(hls.videos.is_empty());
    let playlist = run.manifest_dir().join("audio/index.m3u8");
    let ours = levels(&format!("-i {}", playlist.display()));
    let ffmpeg = levels(&format!("-i {} -ac 2", src.display()));
    eprintln!("{name}: ours peak/RMS {ours:?} dBFS, ffmpeg -ac 2 {ffmpeg:?}");
    (ours, ffmpeg)
}

#[test]
fn surround_downmix_matches_ffmpeg_and_does_not_clip() {
    let ws = Workspace::new("downmix");
    // 20 dB down, where no clipping hides a wrong level: ffmpeg's -ac 2 into 16-bit.
    let (ours, ffmpeg) = tone_levels(&ws, "5.1", 0.1);
    assert!(
        (ours.1 - ffmpeg.1).abs() <= 1.0,
        "RMS {} dBFS, ffmpeg -ac 2 gives {}",
        ours.1,
        ffmpeg.1
    );
    // Full scale: the downmix stays within full scale. AAC overshoots a full-scale tone by
    // about 0.1 dB whatever its channels (the stereo tone shows it); a summed downmix by 7.7.
    let (ours, ffmpeg) = tone_levels(&ws, "5.1", 1.0);
    let (stereo, _) = tone_levels(&ws, "stereo", 1.0);
    assert!(
        ours.0 <= stereo.0.max(0.0) + 0.1,
        "peak {} dBFS clips (a full-scale stereo tone peaks at {})",
        ours.0,
        stereo.0
    );
    assert!(
        (ours.1 - ffmpeg.1).abs() <= 1.0,
        "RMS {} dBFS, ffmpeg -ac 2 gives {}",
        ours.1,
        ffmpeg.1
    );
}
