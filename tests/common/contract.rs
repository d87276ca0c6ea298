//! The whole output contract of a successful run: `check_ready` checks the master playlist,
//! every rendition, BANDWIDTH against measured bit rates, segment alignment and status.json.

use std::fs;

use serde_json::Value;

use super::ffprobe::Source;
use super::hls::{Attributes, MasterPlaylist, MediaPlaylist, Variant, check_target_durations};
use super::renditions::{AudioRendition, VideoRendition, check_audio, check_video};
use super::status::check_status_ready;
use super::workspace::{Run, Workspace};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SegmentType {
    Fmp4,
    Ts,
}

/// Segment length the contract asks for, in seconds, and the GOP length.
pub const SEGMENT_SECONDS: f64 = 4.0;
pub const GOP_SECONDS: f64 = 2.0;
/// Allowed difference between the source's and a rendition's duration.
pub const DURATION_TOLERANCE: f64 = 0.1;

pub struct Hls {
    pub master: MasterPlaylist,
    pub videos: Vec<VideoRendition>,
    pub audio: Option<AudioRendition>,
    pub status: Value,
}

impl Hls {
    /// Video rendition names in master order (ascending BANDWIDTH).
    pub fn video_names(&self) -> Vec<String> {
        self.videos
            .iter()
            .map(|v| v.variant.name().to_owned())
            .collect()
    }
    /// Decoded (width, height) of each video rendition, in master order.
    pub fn sizes(&self) -> Vec<(u32, u32)> {
        self.videos.iter().map(|v| (v.width, v.height)).collect()
    }
    /// Folder names under manifest/, sorted.
    pub fn folders(run: &Run) -> Vec<String> {
        let mut f: Vec<String> = fs::read_dir(run.manifest_dir())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        f.sort();
        f
    }
}

/// Asserts everything the contract promises for a run that must end `ready`, whatever the
/// source: master and media playlists, every segment decodable alone and starting on a keyframe,
/// aligned segment boundaries, 2 s GOPs, H.264 High yuv420p upright square-pixel video at the
/// declared RESOLUTION, AAC-LC 48 kHz stereo audio, durations, BANDWIDTH vs measured peak,
/// every .m3u8 in the tree against RFC 8216 §4.3.3.1, and status.json. Returns what it read so
/// tests can assert what is specific to their source.
pub fn check_ready(ws: &Workspace, run: &Run, source: &Source, seg_type: SegmentType) -> Hls {
    run.assert_success();
    let master = run.master();
    assert!(
        master.has_tag("#EXT-X-INDEPENDENT-SEGMENTS"),
        "master lacks EXT-X-INDEPENDENT-SEGMENTS:\n{}",
        master.text
    );
    assert!(
        !master.has_tag("#EXT-X-START"),
        "a finished master has no start tag:\n{}",
        master.text
    );
    // FFmpeg's HLS demuxer (ffprobe, mpv) reads the finished package's duration from it.
    let listed = super::num(&super::ffprobe::probe(&master.path)["format"]["duration"]);
    assert!(
        listed.is_some_and(|d| (d - source.duration).abs() <= DURATION_TOLERANCE),
        "ffprobe reads the master's duration as {listed:?}, the source lasts {} s",
        source.duration
    );
    let scratch = ws.subdir("probe");
    let audio_media: Vec<&Attributes> = master
        .media
        .iter()
        .filter(|m| m.get("TYPE").map(String::as_str) == Some("AUDIO"))
        .collect();

    let audio_dir = run.manifest_dir().join("audio");
    let audio = source
        .has_audio
        .then(|| check_audio(&audio_dir.join("index.m3u8"), source, seg_type, &scratch));
    if !source.has_audio {
        assert!(
            !audio_dir.exists(),
            "source has no audio but {} exists",
            audio_dir.display()
        );
        assert!(
            audio_media.is_empty(),
            "source has no audio but master has EXT-X-MEDIA:\n{}",
            master.text
        );
    }

    let mut videos = Vec::new();
    if source.display.is_none() {
        // Audio-only source: one variant pointing at the audio rendition.
        assert_eq!(
            master.variants.len(),
            1,
            "audio-only master must have one variant:\n{}",
            master.text
        );
        let v = &master.variants[0];
        assert_eq!(v.uri, "audio/index.m3u8");
        assert_eq!(v.codecs(), ["mp4a.40.2"]);
        assert!(
            v.resolution().is_none(),
            "audio-only variant has RESOLUTION"
        );
        check_bandwidth(v, None, audio.as_ref().map(|a| &a.playlist));
    } else {
        if source.has_audio {
            assert_eq!(
                audio_media.len(),
                1,
                "want one audio EXT-X-MEDIA:\n{}",
                master.text
            );
            assert_eq!(
                audio_media[0].get("GROUP-ID").map(String::as_str),
                Some("audio")
            );
            assert_eq!(
                audio_media[0].get("URI").map(String::as_str),
                Some("audio/index.m3u8")
            );
        }
        assert!(!master.variants.is_empty(), "no variants:\n{}", master.text);
        for variant in &master.variants {
            videos.push(check_video(
                master.dir(),
                variant,
                source,
                seg_type,
                &scratch,
            ));
            check_bandwidth(
                variant,
                Some(&videos.last().unwrap().playlist),
                audio.as_ref().map(|a| &a.playlist),
            );
        }
        check_alignment(&videos);
    }
    let bandwidths: Vec<u64> = master.variants.iter().map(Variant::bandwidth).collect();
    assert!(
        bandwidths.windows(2).all(|w| w[0] <= w[1]),
        "variants not ordered by BANDWIDTH: {bandwidths:?}"
    );

    let hls = Hls {
        master,
        videos,
        audio,
        status: run.status(),
    };
    check_status_ready(run, source, &hls);
    check_target_durations(&run.out_dir);
    run.assert_tmpdir_empty();
    hls
}

/// BANDWIDTH ≥ peak segment bit rate of the video plus that of the audio (RFC 8216 §4.3.4.2,
/// measured from the files); AVERAGE-BANDWIDTH ≤ BANDWIDTH and close to the measured average.
pub fn check_bandwidth(
    variant: &Variant,
    video: Option<&MediaPlaylist>,
    audio: Option<&MediaPlaylist>,
) {
    let parts = [video, audio];
    let peak: f64 = parts.iter().flatten().map(|p| p.peak_bitrate()).sum();
    let average: f64 = parts.iter().flatten().map(|p| p.average_bitrate()).sum();
    let (bw, uri) = (variant.bandwidth(), &variant.uri);
    assert!(
        bw as f64 >= peak.floor(),
        "{uri}: BANDWIDTH {bw} below measured peak segment bit rate {peak:.0} (video + audio)"
    );
    let avg = variant
        .average_bandwidth()
        .unwrap_or_else(|| panic!("{uri}: no AVERAGE-BANDWIDTH"));
    assert!(avg <= bw, "{uri}: AVERAGE-BANDWIDTH {avg} > BANDWIDTH {bw}");
    let ratio = avg as f64 / average;
    assert!(
        (0.75..=1.33).contains(&ratio),
        "{uri}: AVERAGE-BANDWIDTH {avg} vs measured average {average:.0}"
    );
}

/// All video renditions share segment boundaries: same EXTINFs and same segment start times.
fn check_alignment(videos: &[VideoRendition]) {
    let Some(first) = videos.first() else { return };
    for v in &videos[1..] {
        let (a, b) = (&first.playlist.segments, &v.playlist.segments);
        let (na, nb) = (first.variant.name(), v.variant.name());
        assert_eq!(
            a.len(),
            b.len(),
            "{na} and {nb} have different segment counts"
        );
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x.duration - y.duration).abs() < 0.002,
                "segment {i}: EXTINF {} in {na} vs {} in {nb}",
                x.duration,
                y.duration
            );
        }
        for (i, (x, y)) in first
            .segment_starts
            .iter()
            .zip(&v.segment_starts)
            .enumerate()
        {
            assert!(
                (x - y).abs() < 0.002,
                "segment {i} starts at {x} in {na} but {y} in {nb}"
            );
        }
    }
}
