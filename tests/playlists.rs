//! Every media playlist we write meets RFC 8216 §4.3.3.1 whatever the source's length: a
//! target duration of at least 1 that no segment, rounded to the nearest second, exceeds.

mod common;

use common::*;

/// Transcodes a 320x240 24 fps clip with audio of `seconds` and returns every media playlist's
/// target duration, after checking each against §4.3.3.1.
fn target_durations(test: &str, seconds: f64, extra: &[&str]) -> Vec<(String, u64)> {
    let ws = Workspace::new(test);
    // 24 fps: FFmpeg's muxer writes TARGETDURATION:2 for its 2.500000 s segment (lrint rounds
    // halves to even).
    let video = format!("testsrc2=size=320x240:rate=24:duration={seconds}");
    let src = ws.clip_with("src.mp4", &video, Some(seconds), &["-pix_fmt", "yuv420p"]);
    let run = ws.transcode(&src, "out", Some("v"), extra);
    run.assert_success();
    let checked = check_target_durations(&run.out_dir);
    let names: Vec<&str> = checked.iter().map(|(p, _)| p.as_str()).collect();
    assert!(
        names.iter().any(|p| p.ends_with("audio/index.m3u8"))
            && names.iter().filter(|p| p.ends_with("p/index.m3u8")).count() >= 2,
        "the video and audio playlists: {names:?}"
    );
    checked
}

fn assert_all(checked: &[(String, u64)], want: u64) {
    for (path, target) in checked {
        assert_eq!(*target, want, "{path}");
    }
}

#[test]
fn half_second_source_has_target_duration_1() {
    assert_all(&target_durations("target-short", 0.5, &[]), 1);
}

#[test]
fn two_and_a_half_second_source_rounds_up_in_every_playlist() {
    assert_all(&target_durations("target-half", 2.5, &[]), 3);
    let ts = target_durations("target-half-ts", 2.5, &["--segment-type", "ts"]);
    assert_all(&ts, 3);
}

#[test]
fn last_segment_longer_than_nominal_sets_the_target() {
    // 5 s segments, 2 s GOPs: no keyframe between 5 and the end, so the one segment runs 5.5 s.
    let checked = target_durations("target-long", 5.5, &["--segment-seconds", "5"]);
    let video: Vec<_> = checked
        .into_iter()
        .filter(|(path, _)| !path.contains("/audio/"))
        .collect();
    assert_all(&video, 6);
}
