//! A rendition made in time chunks, at the media level: the same segment names, one init, and
//! decode times (tfdt) that run on across the joins.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use common::*;
use video_transcoder::media::RateControl;
use video_transcoder::media::filters::output_frame_rate;
use video_transcoder::media::input::Origin;
use video_transcoder::media::ladder::{Ladder, select};
use video_transcoder::media::mux::{SegmentSink, SegmentType, Segmenting};
use video_transcoder::media::pass::{self, FrameRange, PassSpec, VideoTarget};
use video_transcoder::media::{self, source};

fn encode(clip: &Path, out: &Path, kind: SegmentType, frames: Option<FrameRange>) {
    encode_with(clip, out, kind, frames, None);
}

fn encode_with(
    clip: &Path,
    out: &Path,
    kind: SegmentType,
    frames: Option<FrameRange>,
    on_segment: Option<SegmentSink>,
) {
    let info = source::probe(
        clip,
        source::Limits {
            max_bytes: u64::MAX,
            max_seconds: 100_000,
        },
    )
    .unwrap();
    let v = info.video.clone().unwrap();
    let fps = output_frame_rate(&v, 60);
    let rendition = select(&Ladder::default(), v.display_width, v.display_height).remove(0);
    let spec = PassSpec {
        source: Origin::File(clip.to_path_buf()),
        info,
        video: vec![VideoTarget {
            rendition,
            dir: out.to_path_buf(),
            frames: Arc::new(AtomicU64::new(0)),
        }],
        audio: None,
        preset: "veryfast".into(),
        fps,
        segmenting: Segmenting {
            kind,
            seconds: 4,
            part: None,
            on_segment,
        },
        audio_kbps: 128,
        encoder_threads: 0,
        rate_control: RateControl::CappedCrf,
        cancel: Arc::new(AtomicBool::new(false)),
        frames,
    };
    let outcome = pass::run(spec);
    outcome.video[0].as_ref().expect("encoded");
}

/// Segment file names in `dir`, sorted.
fn segments(dir: &Path, extension: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(extension))
        .collect();
    names.sort();
    names
}

fn clip(ws: &Workspace) -> std::path::PathBuf {
    let clip = ws.path().join("clip.mp4");
    // Source key frames every 1.5 s: no chunk start falls on one, so each part decodes a
    // lead-in from the key frame before it.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=30",
        "-t",
        "20",
        "-c:v",
        "libx264",
        "-g",
        "45",
        "-pix_fmt",
        "yuv420p",
        clip.to_str().unwrap(),
    ]);
    clip
}

/// Chunks [0, 8 s) and [8 s, 20 s): frames 0..240 and 240..600 at 30 fps.
const CHUNKS: [(u64, u64); 2] = [(0, 240), (240, 600)];

fn in_parts(clip: &Path, dir: &Path, kind: SegmentType) {
    for (index, (start, end)) in CHUNKS.into_iter().enumerate() {
        let range = FrameRange {
            index: index as u32,
            start,
            end,
        };
        encode(clip, dir, kind, Some(range));
    }
}

#[test]
fn fmp4_parts_share_one_init_and_continue_the_decode_times() {
    media::init().unwrap();
    let ws = Workspace::new("chunk_fmp4");
    let clip = clip(&ws);
    let (whole, parts) = (ws.subdir("whole"), ws.subdir("parts"));
    encode(&clip, &whole, SegmentType::Fmp4, None);
    in_parts(&clip, &parts, SegmentType::Fmp4);

    let names = segments(&whole, ".m4s");
    assert_eq!(names.len(), 5);
    assert_eq!(
        segments(&parts, ".m4s"),
        names,
        "numbered by their place in the whole"
    );
    for name in &names {
        assert_eq!(tfdt(&parts.join(name)), tfdt(&whole.join(name)), "{name}");
    }
    assert_eq!(
        avcc(&parts.join("init-1.mp4")),
        avcc(&parts.join("init.mp4")),
        "every part is encoded with part 0's codec configuration"
    );
    let frames = |dir: &Path| -> usize {
        names
            .iter()
            .map(|n| {
                let joined = ws.path().join(format!("{n}.mp4"));
                let mut bytes = std::fs::read(dir.join("init.mp4")).unwrap();
                bytes.extend(std::fs::read(dir.join(n)).unwrap());
                std::fs::write(&joined, bytes).unwrap();
                decode(&joined, "v:0").frames.len()
            })
            .sum()
    };
    assert_eq!(
        frames(&parts),
        600,
        "no frame repeated or skipped at the join"
    );
    assert_eq!(frames(&whole), 600);
}

#[test]
fn ts_parts_continue_the_timestamps() {
    media::init().unwrap();
    let ws = Workspace::new("chunk_ts");
    let clip = clip(&ws);
    let (whole, parts) = (ws.subdir("whole"), ws.subdir("parts"));
    encode(&clip, &whole, SegmentType::Ts, None);
    in_parts(&clip, &parts, SegmentType::Ts);
    let names = segments(&whole, ".ts");
    assert_eq!(segments(&parts, ".ts"), names);
    for name in &names {
        let (a, b) = (
            packets(&whole.join(name), "v:0"),
            packets(&parts.join(name), "v:0"),
        );
        assert_eq!(a.packets.len(), b.packets.len(), "{name}");
        assert!(
            (a.start() - b.start()).abs() < 1e-6,
            "{name}: {} vs {}",
            a.start(),
            b.start()
        );
    }
}

/// Parts of a rendition run at once in one folder: a part hands over for early publishing only
/// its own files, each once complete, even while the next part's first segment is being
/// written beside them.
#[test]
fn a_part_hands_over_only_its_own_finished_segments() {
    media::init().unwrap();
    let ws = Workspace::new("chunk_handover");
    let clip = clip(&ws);
    let dir = ws.subdir("parts");
    // Part 1's first segment, still being written (part 0 makes seg_00000 and seg_00001).
    let neighbour = dir.join("seg_00002.m4s");
    std::fs::write(&neighbour, b"part 1, half written").unwrap();
    let told: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let sink: SegmentSink = {
        let told = told.clone();
        Arc::new(move |path: &Path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let size = std::fs::metadata(path).unwrap().len();
            told.lock().unwrap().push((name, size));
        })
    };
    let (start, end) = CHUNKS[0];
    let range = FrameRange {
        index: 0,
        start,
        end,
    };
    encode_with(&clip, &dir, SegmentType::Fmp4, Some(range), Some(sink));
    let told = told.lock().unwrap().clone();
    let names: Vec<&str> = told.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["init.mp4", "seg_00000.m4s", "seg_00001.m4s"]);
    for (name, size) in &told {
        assert_eq!(
            *size,
            std::fs::metadata(dir.join(name)).unwrap().len(),
            "{name} was handed over before it was complete"
        );
    }
    assert_eq!(std::fs::read(&neighbour).unwrap(), b"part 1, half written");
}
