//! status.json: what it must say about a `ready` job, the `--json` copy on stdout, and a job
//! that failed cleanly (a reason, and nothing left behind but status.json).

use std::fs;

use serde_json::Value;

use super::contract::{DURATION_TOLERANCE, Hls};
use super::ffprobe::Source;
use super::workspace::Run;
use super::{files_under, num};

/// Tier of a video rendition by its short side.
pub fn tier(short_side: u32) -> &'static str {
    match short_side {
        0..=480 => "critical",
        481..=1080 => "standard",
        _ => "premium",
    }
}

/// width × height a status rendition declares (0 when absent).
fn pixels(r: &Value) -> u64 {
    r["width"].as_u64().unwrap_or(0) * r["height"].as_u64().unwrap_or(0)
}

fn timestamp(status: &Value, key: &str) -> chrono::DateTime<chrono::FixedOffset> {
    let v = &status["timestamps"][key];
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("timestamps.{key} missing: {v}"));
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("timestamps.{key} {s:?} is not RFC 3339: {e}"))
}

/// status.json of a `ready` job agrees with the files and the source.
pub(super) fn check_status_ready(run: &Run, source: &Source, hls: &Hls) {
    let st = &hls.status;
    assert_eq!(st["videoId"], run.video_id().as_str(), "videoId");
    assert_eq!(st["state"], "ready", "state; status: {st:#}");
    assert_eq!(st["playable"], true, "playable");
    assert!(
        st["error"].is_null(),
        "error on a ready job: {}",
        st["error"]
    );

    // Every rendition made, including any the master leaves out (checked below).
    let total = st["renditions"].as_array().map_or(0, Vec::len);
    let p = &st["progress"];
    assert_eq!(
        p["total"].as_u64(),
        Some(total as u64),
        "progress.total; progress: {p}"
    );
    assert_eq!(
        p["completed"].as_u64(),
        Some(total as u64),
        "progress.completed; progress: {p}"
    );
    assert_eq!(num(&p["percent"]), Some(100.0), "progress.percent");
    assert!(
        p["etaSeconds"].is_null() || num(&p["etaSeconds"]) == Some(0.0),
        "etaSeconds on a finished job: {}",
        p["etaSeconds"]
    );

    let renditions = st["renditions"].as_array().expect("renditions array");
    let mut want: Vec<String> = hls.video_names();
    if hls.audio.is_some() {
        want.push("audio".into());
    }
    let mut got: Vec<String> = renditions
        .iter()
        .map(|r| r["name"].as_str().unwrap_or("?").to_owned())
        .collect();
    want.sort();
    got.sort();
    assert_eq!(Hls::folders(run), got, "rendition folders under manifest/");
    // The master may leave out a rendition a larger one undercuts (costs more, shows less).
    let extra: Vec<&Value> = renditions
        .iter()
        .filter(|r| !want.iter().any(|w| r["name"] == w.as_str()))
        .collect();
    for r in &extra {
        let listed_larger_and_cheaper = renditions.iter().any(|u| {
            want.iter().any(|w| u["name"] == w.as_str())
                && pixels(u) > pixels(r)
                && num(&u["peakBitrateKbps"]) <= num(&r["peakBitrateKbps"])
        });
        assert!(
            r["kind"] == "video" && listed_larger_and_cheaper,
            "status lists {} but the master does not, and no larger listed rendition undercuts it: {st:#}",
            r["name"]
        );
    }
    assert_eq!(
        got.len(),
        want.len() + extra.len(),
        "status renditions vs master"
    );
    for r in renditions {
        let name = r["name"].as_str().unwrap();
        assert_eq!(r["state"], "ready", "{name}: state");
        assert!(r["error"].is_null(), "{name}: error {}", r["error"]);
        let bytes: u64 = files_under(&run.manifest_dir().join(name))
            .iter()
            .map(|f| {
                fs::metadata(run.manifest_dir().join(name).join(f))
                    .unwrap()
                    .len()
            })
            .sum();
        let size = r["sizeBytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: sizeBytes {}", r["sizeBytes"]));
        assert!(
            size > 0 && size <= bytes,
            "{name}: sizeBytes {size} vs {bytes} bytes on disk"
        );
        let (kbps, peak) = (
            num(&r["bitrateKbps"]).unwrap_or(0.0),
            num(&r["peakBitrateKbps"]).unwrap_or(0.0),
        );
        assert!(
            kbps > 0.0 && peak > 0.0,
            "{name}: bitrateKbps {kbps} peakBitrateKbps {peak}"
        );
        if name == "audio" {
            assert_eq!(r["kind"], "audio", "{name}: kind");
            continue;
        }
        assert_eq!(r["kind"], "video", "{name}: kind");
        let Some(v) = hls.videos.iter().find(|v| v.variant.name() == name) else {
            continue; // left out of the master, checked above
        };
        assert_eq!(
            (r["width"].as_u64(), r["height"].as_u64()),
            (Some(v.width as u64), Some(v.height as u64)),
            "{name}: size"
        );
        assert_eq!(r["tier"], tier(v.width.min(v.height)), "{name}: tier");
    }

    let master = st["masterPlaylist"]
        .as_str()
        .unwrap_or_else(|| panic!("masterPlaylist: {}", st["masterPlaylist"]));
    assert!(master.ends_with("master.m3u8"), "masterPlaylist {master}");
    let times: Vec<_> = ["queued", "started", "firstPlayable", "finished"]
        .iter()
        .map(|k| timestamp(st, k))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "timestamps out of order: {}",
        st["timestamps"]
    );

    let src = &st["source"];
    assert!(
        src["container"].as_str().is_some_and(|c| !c.is_empty()),
        "source.container {}",
        src["container"]
    );
    let d = num(&src["durationSeconds"]).expect("source.durationSeconds");
    assert!(
        (d - source.duration).abs() <= DURATION_TOLERANCE,
        "source.durationSeconds {d} vs {}",
        source.duration
    );
    assert_eq!(
        src["sizeBytes"].as_u64(),
        Some(source.size),
        "source.sizeBytes"
    );
    match source.display {
        None => assert!(
            src["video"].is_null(),
            "source.video on an audio-only source"
        ),
        Some((w, h)) => {
            let v = &src["video"];
            let got = (
                num(&v["displayWidth"]).unwrap_or(0.0),
                num(&v["displayHeight"]).unwrap_or(0.0),
            );
            assert!(
                (got.0 - w).abs() <= 1.0 && (got.1 - h).abs() <= 1.0,
                "source.video display {got:?}, ffprobe says {w}x{h}"
            );
        }
    }
    let audio = src["audio"].as_array().expect("source.audio array");
    assert_eq!(
        audio.len(),
        usize::from(source.has_audio),
        "source.audio {audio:?}"
    );
}

/// status.json's `source.video.codedWidth/codedHeight` are the stored frame size; a decoder may
/// report them rounded up to whole 16-pixel macroblocks, which is accepted.
pub fn assert_coded_size(video: &Value, width: u64, height: u64) {
    let got = (
        video["codedWidth"].as_u64().unwrap_or(0),
        video["codedHeight"].as_u64().unwrap_or(0),
    );
    let ok = |g: u64, want: u64| g >= want && g < want.next_multiple_of(16).max(want + 1);
    assert!(
        ok(got.0, width) && ok(got.1, height),
        "source.video coded size {got:?}, want {width}x{height}"
    );
}

/// `--json` printed the same status.json it wrote.
pub fn assert_json_stdout(run: &Run) {
    let printed: Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("--json stdout is not JSON ({e}): {}", run.stdout));
    assert_eq!(
        printed,
        run.status(),
        "--json stdout differs from status.json"
    );
}

/// A job on bad input: non-zero exit, one human line on stderr, status `failed` with a reason,
/// and nothing but status.json left behind (in the output tree and in TMPDIR).
pub fn assert_failed_cleanly(run: &Run) {
    assert_ne!(
        run.code,
        Some(0),
        "corrupt input must fail; stdout: {}",
        run.stdout
    );
    assert!(
        run.code.is_some(),
        "killed by a signal instead of exiting: {}",
        run.stderr
    );
    // Log lines may come first (stderr is not a terminal here); the last line is the reason.
    let reason = run
        .stderr
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_default();
    assert!(
        reason.starts_with("error: ") && reason.trim().len() >= 17,
        "the last stderr line must be `error: <reason>`, got:\n{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("panicked"),
        "panic instead of a reason: {}",
        run.stderr
    );
    let st = run.status();
    assert_eq!(st["state"], "failed", "status: {st:#}");
    assert_eq!(st["playable"], false, "playable on a failed job");
    assert!(
        st["error"].as_str().is_some_and(|e| !e.trim().is_empty()),
        "failed job needs an error: {}",
        st["error"]
    );
    let prefix = format!("videos/{}/", run.video_id());
    let files = files_under(&run.out_dir);
    assert_eq!(
        files,
        [format!("{prefix}status.json")],
        "leftovers in the output dir"
    );
    run.assert_tmpdir_empty();
}
