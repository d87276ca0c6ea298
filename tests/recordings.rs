//! Sources shaped like real recordings from public test suites, which nobody on this project
//! made: a phone's "motion photo" with a still track beside the clip, a WebM whose streams start
//! before 0, a fragmented MP4 whose headers say "unknown" for its length, a Matroska file whose
//! subtitles outlast its picture and sound, and a Matroska file whose rate hint is twice its real
//! frame rate. Each is built at test time with the ffmpeg CLI, and its headers edited where the
//! CLI cannot write them so.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// The source's length as status.json says it.
fn source_seconds(run: &Run) -> f64 {
    num(&run.status()["source"]["durationSeconds"]).expect("source.durationSeconds")
}

/// A refused source: failed cleanly, with a reason about its length.
fn assert_refused_as_too_long(run: &Run) {
    assert_failed_cleanly(run);
    let error = run.status()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("long"), "{error}");
}

/// The video renditions of a ready run, as (name, playlist path).
fn video_playlists(run: &Run) -> Vec<(String, std::path::PathBuf)> {
    let status = run.status();
    assert_eq!(status["state"], "ready", "{status:#}");
    status["renditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "video")
        .map(|r| {
            let playlist = run.manifest_dir().join(r["playlist"].as_str().unwrap());
            (r["name"].as_str().unwrap().to_owned(), playlist)
        })
        .collect()
}

/// A phone "motion photo" holds the clip and, beside it, a larger still track of 2 frames that
/// runs longer. The clip is what a person means: its size, its rate, its frames, its length.
#[test]
fn the_clip_is_chosen_over_a_larger_two_frame_track() {
    let ws = Workspace::new("two_video_tracks");
    let src = ws.path().join("motion.mp4");
    // The still track first, larger and longer: neither order, size nor length may decide.
    make(
        &src,
        "-f lavfi -i testsrc=size=640x360:rate=0.5:duration=4 \
         -f lavfi -i testsrc2=size=320x180:rate=30:duration=2 -map 0 -map 1 \
         -c:v libx264 -preset ultrafast -pix_fmt yuv420p",
    );
    let run = ws.transcode(&src, "out", Some("motion"), &[]);
    run.assert_success();
    let status = run.status();
    let v = &status["source"]["video"];
    assert_eq!(
        (num(&v["codedWidth"]), num(&v["codedHeight"])),
        (Some(320.0), Some(180.0)),
        "{v:#}"
    );
    let fps = run.master().variants[0]
        .get("FRAME-RATE")
        .map(str::to_owned);
    assert_eq!(fps.as_deref(), Some("30.000"));
    for (name, playlist) in video_playlists(&run) {
        let out = decode(&playlist, "v:0");
        assert!(out.frames.iter().all(|f| f.height <= 180), "{name}");
        assert_eq!(out.frames.len(), 60, "{name}: the clip's 60 frames");
        assert!(
            (out.duration() - 2.0).abs() < 0.1,
            "{name}: {} s",
            out.duration()
        );
    }
    assert!(
        (source_seconds(&run) - 2.0).abs() < 0.1,
        "the clip's length"
    );
}

/// A WebM (VP9 + Opus) whose audio starts before 0, as browsers and encoders write them: its
/// length runs from that negative start, so a limit below it refuses the file.
#[test]
fn a_negative_start_time_counts_in_the_length() {
    let ws = Workspace::new("negative_start");
    let src = ws.path().join("negative.webm");
    make(
        &src,
        "-f lavfi -i testsrc2=size=160x90:rate=30:duration=6 \
         -f lavfi -i sine=sample_rate=48000:duration=6 \
         -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -c:a libopus",
    );
    let start = num(&probe(&src)["format"]["start_time"]).unwrap();
    assert!(start < -0.005, "the source must start before 0: {start}");

    let run = ws.transcode(&src, "out", Some("negative"), &["--ladder", "90:200"]);
    run.assert_success();
    let seconds = source_seconds(&run);
    assert!((seconds - 6.0).abs() < 0.1, "durationSeconds {seconds}");

    let limited = ws.transcode(&src, "limited", Some("limited"), &["--max-duration", "3"]);
    assert_refused_as_too_long(&limited);
}

/// Rewrites every `tkhd` and `mdhd` (version 0) duration of an MP4 to 0xFFFFFFFF, "unknown"
/// in ISO/IEC 14496-12, as screen recorders and browsers write fragmented files.
fn mark_durations_unknown(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    fn walk(bytes: &mut [u8], mut at: usize, end: usize, patched: &mut usize) {
        while at + 8 <= end {
            let size = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let kind = bytes[at + 4..at + 8].to_vec();
            assert!(size >= 8 && at + size <= end, "plain 32-bit boxes expected");
            // Duration offset inside the box, after the header and version/flags (version 0).
            let field = match &kind[..] {
                b"moov" | b"trak" | b"mdia" => {
                    walk(bytes, at + 8, at + size, patched);
                    None
                }
                b"tkhd" => Some(at + 8 + 20),
                b"mdhd" => Some(at + 8 + 16),
                _ => None,
            };
            if let Some(f) = field {
                assert_eq!(bytes[at + 8], 0, "version 0 box");
                bytes[f..f + 4].fill(0xff);
                *patched += 1;
            }
            at += size;
        }
    }
    let mut patched = 0;
    let len = bytes.len();
    walk(&mut bytes, 0, len, &mut patched);
    assert!(patched >= 2, "no tkhd/mdhd found");
    fs::write(path, bytes).unwrap();
}

/// A fragmented MP4 (moof/mdat fragments, no index at the end) whose track headers say the
/// length is unknown: it is measured from its fragments, accepted, and then held to the limit.
#[test]
fn a_fragmented_mp4_of_unknown_length_is_measured() {
    let ws = Workspace::new("fragmented");
    let src = ws.path().join("screen.mp4");
    make(
        &src,
        "-f lavfi -i testsrc2=size=320x180:rate=30:duration=2 \
         -f lavfi -i sine=sample_rate=48000:duration=2 -c:v libx264 -preset ultrafast \
         -pix_fmt yuv420p -c:a aac -movflags frag_keyframe+empty_moov+skip_trailer",
    );
    mark_durations_unknown(&src);
    let claimed = num(&probe(&src)["format"]["duration"]).unwrap();
    assert!(claimed > 1000.0, "libav must misread the length: {claimed}");

    let run = ws.transcode(&src, "out", Some("fragmented"), &["--ladder", "180:400"]);
    run.assert_success();
    let seconds = source_seconds(&run);
    assert!((seconds - 2.0).abs() < 0.1, "durationSeconds {seconds}");
    for (name, playlist) in video_playlists(&run) {
        let listed = MediaPlaylist::read(&playlist).total_duration();
        assert!((listed - 2.0).abs() < 0.1, "{name}: {listed} s");
    }

    let limited = ws.transcode(&src, "limited", Some("limited"), &["--max-duration", "1"]);
    assert_refused_as_too_long(&limited);
}

/// A Matroska file whose subtitle cue ends at 5 s, after 2 s of picture and sound: only audio
/// and video decide the length, so nothing is padded to the subtitle's end.
#[test]
fn a_long_subtitle_does_not_set_the_length() {
    let ws = Workspace::new("subtitle_length");
    let srt = ws.path().join("cue.srt");
    fs::write(&srt, "1\n00:00:00,500 --> 00:00:05,000\nStill talking\n").unwrap();
    let src = ws.path().join("subtitled.mkv");
    make(
        &src,
        &format!(
            "-f lavfi -i testsrc2=size=320x180:rate=30:duration=2 \
             -f lavfi -i sine=sample_rate=48000:duration=2 -i {} -map 0 -map 1 -map 2 \
             -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -c:s srt",
            srt.display()
        ),
    );
    let claimed = num(&probe(&src)["format"]["duration"]).unwrap();
    assert!(
        claimed > 4.9,
        "the container must span the subtitle: {claimed}"
    );

    let run = ws.transcode(&src, "out", Some("subtitled"), &["--ladder", "180:400"]);
    run.assert_success();
    let seconds = source_seconds(&run);
    assert!((seconds - 2.0).abs() < 0.1, "durationSeconds {seconds}");
    for r in run.status()["renditions"].as_array().unwrap() {
        let playlist = run.manifest_dir().join(r["playlist"].as_str().unwrap());
        let listed = MediaPlaylist::read(&playlist).total_duration();
        assert!((listed - 2.0).abs() < 0.1, "{}: {listed} s", r["name"]);
    }
}

/// A 30 fps Matroska file whose rate hint (DefaultDuration, from an H.264 stream coded for
/// 60 fps) says 60: libav reports 60 fps. The timestamps say 30, and so does the output, with no
/// frame written twice.
#[test]
fn a_doubled_frame_rate_hint_does_not_double_frames() {
    let ws = Workspace::new("rate_hint");
    let raw = ws.path().join("coded60.h264");
    make(
        &raw,
        "-f lavfi -i testsrc2=size=320x180:rate=60:duration=1.5 -c:v libx264 \
         -preset ultrafast -pix_fmt yuv420p",
    );
    let src = ws.path().join("hinted.mkv");
    make(&src, &format!("-r 30 -i {} -c copy", raw.display()));
    let source = probe(&src);
    let v = stream(&source, "video").unwrap();
    assert_eq!(
        (v["r_frame_rate"].as_str(), v["avg_frame_rate"].as_str()),
        (Some("60/1"), Some("60/1")),
        "libav must take the hint"
    );
    let frames = decode(&src, "v:0").frames.len();
    assert_eq!(frames, 90, "3 s at 30 fps");

    let run = ws.transcode(&src, "out", Some("hinted"), &["--ladder", "180:400"]);
    run.assert_success();
    let fps = run.master().variants[0]
        .get("FRAME-RATE")
        .map(str::to_owned);
    assert_eq!(fps.as_deref(), Some("30.000"));
    for (name, playlist) in video_playlists(&run) {
        let out = decode(&playlist, "v:0");
        assert_eq!(
            out.frames.len(),
            frames,
            "{name}: one output frame per source frame"
        );
    }
}
