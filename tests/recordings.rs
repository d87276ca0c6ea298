//! What real recordings carry beside the picture and sound themselves: a pixel shape that the
//! container and the codec state differently, and surround sound to fold into stereo.

mod common;

use std::path::Path;

use common::*;

/// Runs the ffmpeg CLI with `args` (split on whitespace) writing `out`.
fn make(out: &Path, args: &str) {
    let mut all: Vec<&str> = args.split_whitespace().collect();
    all.push(out.to_str().unwrap());
    ffmpeg(&all);
}

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
