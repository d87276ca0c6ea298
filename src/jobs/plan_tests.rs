//! Tests of the plan: which renditions, their passes, the units and chunks they run in.

use super::*;
use crate::media::RateControl;
use crate::media::source::{AudioInfo, Transfer, VideoInfo};

fn source(width: u32, height: u32, audio: bool) -> SourceInfo {
    SourceInfo {
        container: "mov".into(),
        duration_seconds: 10.0,
        size_bytes: 1,
        video: Some(VideoInfo {
            stream_index: 0,
            codec: "h264".into(),
            duration_seconds: 10.0,
            coded_width: width,
            coded_height: height,
            display_width: width,
            display_height: height,
            rotation: 0,
            sample_aspect_ratio: "1:1".into(),
            avg_frame_rate: 25.0,
            real_frame_rate: 25.0,
            pixel_format: "yuv420p".into(),
            bit_depth: 8,
            transfer: Transfer::Sdr,
            interlaced: false,
            timestamp_frame_rate: 25.0,
        }),
        audio: audio
            .then(|| AudioInfo {
                stream_index: 1,
                codec: "aac".into(),
                channels: 2,
                sample_rate: 48000,
            })
            .into_iter()
            .collect(),
    }
}

fn names(plan: &Plan, pass: &[usize]) -> Vec<String> {
    pass.iter()
        .map(|&i| plan.statuses[i].name.clone())
        .collect()
}

#[test]
fn one_pass_per_tier_lowest_first_with_audio_in_the_first() {
    let plan = Plan::new(&source(3840, 2160, true), &TranscodeSettings::default());
    let passes = plan.passes(false);
    assert_eq!(passes.len(), 3);
    assert_eq!(
        names(&plan, &passes[0]),
        ["144p", "240p", "360p", "480p", "audio"]
    );
    assert_eq!(names(&plan, &passes[1]), ["720p", "1080p"]);
    assert_eq!(names(&plan, &passes[2]), ["1440p", "2160p"]);
    assert_eq!(plan.statuses[0].frames_expected, 250);
    assert_eq!(plan.statuses.last().unwrap().frames_expected, 469);
}

#[test]
fn kept_renditions_are_listed_and_never_encoded_again() {
    let mut plan = Plan::new(&source(1920, 1080, true), &TranscodeSettings::default());
    let mut kept: Vec<RenditionStatus> = plan.statuses[..4].to_vec();
    for k in &mut kept {
        k.state = RenditionState::Ready;
        k.codecs = Some("avc1.64001f".into());
        k.bitrate_kbps = Some(100);
    }
    kept.push(plan.statuses.last().unwrap().clone());
    kept.last_mut().unwrap().state = RenditionState::Ready; // the audio
    kept[1].height = Some(999); // made with another ladder: not kept
    let mut finished = Finished::default();
    assert_eq!(plan.carry_over(&kept, &mut finished), 4);
    assert_eq!(finished.videos.len(), 3);
    assert!(finished.audio.is_some());
    let passes = plan.passes(false);
    assert_eq!(names(&plan, &passes[0]), ["240p"]);
    assert_eq!(names(&plan, &passes[1]), ["720p", "1080p"]);
    assert_eq!(plan.videos_to_encode(), 3);
}

#[test]
fn the_encoding_names_every_setting_that_makes_renditions_incompatible() {
    let info = source(1280, 720, true);
    let base = TranscodeSettings::default();
    let encoding = Plan::new(&info, &base).encoding;
    assert_eq!(
        encoding,
        "h264 preset veryfast, capped-crf, 25/1 fps, GOP 50 frames, fmp4 segments of 4 s, AAC 128 kb/s"
    );
    let changes: [fn(&mut TranscodeSettings); 6] = [
        |s| s.rate_control = RateControl::Abr,
        |s| s.segment_type = SegmentType::Ts,
        |s| s.segment_seconds = 2,
        |s| s.preset = "medium".into(),
        |s| s.max_fps = 24,
        |s| s.audio_bitrate_kbps = 96,
    ];
    for change in changes {
        let mut settings = base.clone();
        change(&mut settings);
        assert_ne!(Plan::new(&info, &settings).encoding, encoding);
    }
    let mut settings = base.clone();
    settings.max_parallel_encodes = 7;
    settings.rendition_timeout = 5;
    assert_eq!(Plan::new(&info, &settings).encoding, encoding);
}

#[test]
fn merged_plan_decodes_once_and_audio_only_is_one_pass() {
    let plan = Plan::new(&source(1280, 720, true), &TranscodeSettings::default());
    assert_eq!(plan.passes(true).len(), 1);
    assert_eq!(plan.passes(true)[0].len(), 6);
    let mut audio_only = source(2, 2, true);
    audio_only.video = None;
    let plan = Plan::new(&audio_only, &TranscodeSettings::default());
    assert_eq!(plan.passes(false), [vec![0]]);
    assert_eq!(plan.video_count(), 0);
}

#[test]
fn a_merged_pass_leads_with_one_segment_of_the_first_tier() {
    let mut settings = TranscodeSettings::default();
    let plan = Plan::new(&source(1920, 1080, true), &settings);
    // 10 s at 25 fps, segments of 100 frames.
    type Span = (Vec<String>, Option<(u64, u64)>, u32);
    let spans = |plan: &Plan| -> Vec<Span> {
        let span = |u: &crate::jobs::units::Unit| {
            let range = u.range.map(|r| (r.start, r.end));
            (names(plan, &u.members), range, u.parts)
        };
        plan.units(true).iter().map(span).collect()
    };
    let low = ["144p", "240p", "360p", "480p"].map(String::from).to_vec();
    let high = ["720p", "1080p"].map(String::from).to_vec();
    let all = [low.clone(), high.clone()].concat();
    assert_eq!(
        spans(&plan),
        [
            (low.clone(), Some((0, 100)), 2),
            (vec!["audio".to_string()], None, 1),
            (high.clone(), Some((0, 100)), 2),
            (all, Some((100, u64::MAX)), 2),
        ]
    );
    assert_eq!(plan.units(true)[2].tier, Tier::Critical, "before the rest");
    // Per tier, no lead: one unit per tier, the audio in the first.
    assert_eq!(plan.units(false).len(), 2);
    assert!(plan.units(false).iter().all(|u| u.range.is_none()));
    // Chunks as long as the top tier's: 2 min for 1080p, so a 5 min source leads with
    // 4 s, then 120 s, 120 s and the last 56 s.
    let mut long = source(1920, 1080, true);
    long.duration_seconds = 300.0;
    long.video.as_mut().unwrap().duration_seconds = 300.0;
    let plan = Plan::new(&long, &settings);
    let starts: Vec<u64> = plan
        .units(true)
        .iter()
        .filter_map(|u| u.range)
        .map(|r| r.start)
        .collect();
    assert_eq!(starts, [0, 0, 100, 3100, 6100]);
    // Chunking off: no lead either.
    settings.chunk_seconds = Some(0);
    let plan = Plan::new(&source(1920, 1080, true), &settings);
    assert_eq!(plan.units(true).len(), 1);
    // Every rendition in one tier: nothing to lead.
    let plan = Plan::new(&source(640, 360, true), &TranscodeSettings::default());
    assert_eq!(plan.units(true).len(), 1);
    // One segment long: the lowest tier with the audio, then the rest in one decode.
    let mut short = source(2560, 1440, true);
    short.duration_seconds = 3.0;
    short.video.as_mut().unwrap().duration_seconds = 3.0;
    let plan = Plan::new(&short, &TranscodeSettings::default());
    assert_eq!(
        spans(&plan)
            .into_iter()
            .map(|(names, range, _)| (names, range))
            .collect::<Vec<_>>(),
        [
            ([low, vec!["audio".to_string()]].concat(), None),
            ([high, vec!["1440p".to_string()]].concat(), None),
        ]
    );
}
