//! One rendition at a time: its media playlist, its stream as ffprobe reports it, its timing
//! (durations, frame rate, GOPs) and every segment decoded alone.

use std::path::Path;

use serde_json::Value;

use super::contract::{DURATION_TOLERANCE, GOP_SECONDS, SEGMENT_SECONDS, SegmentType};
use super::ffprobe::{Source, decode, packets, probe, rotation, stream};
use super::hls::{MediaPlaylist, Variant};
use super::num;

pub struct VideoRendition {
    pub variant: Variant,
    pub playlist: MediaPlaylist,
    /// ffprobe's stream entry for the variant playlist.
    pub stream: Value,
    pub width: u32,
    pub height: u32,
    /// First pts of each segment (segments probed one by one).
    pub segment_starts: Vec<f64>,
}

pub struct AudioRendition {
    pub playlist: MediaPlaylist,
    pub stream: Value,
}

/// Asserts what every media playlist must be: VOD, ended, target duration, file naming.
pub fn check_media_playlist(pl: &MediaPlaylist, seg_type: SegmentType) {
    let at = pl.path.display();
    assert_eq!(
        pl.playlist_type.as_deref(),
        Some("VOD"),
        "{at}: EXT-X-PLAYLIST-TYPE"
    );
    assert!(pl.endlist, "{at}: no EXT-X-ENDLIST");
    assert!(
        // A segment ends on the first frame at or past its boundary: at most one over.
        pl.target_duration >= 1 && pl.target_duration <= SEGMENT_SECONDS as u64 + 1,
        "{at}: TARGETDURATION {}",
        pl.target_duration
    );
    for s in &pl.segments {
        assert!(
            s.duration.round() as u64 <= pl.target_duration,
            "{at}: EXTINF {} above target",
            s.duration
        );
        assert!(s.size > 0, "{at}: empty segment {}", s.uri);
    }
    let ext = match seg_type {
        SegmentType::Fmp4 => {
            assert_eq!(pl.map.as_deref(), Some("init.mp4"), "{at}: EXT-X-MAP");
            assert!(
                pl.dir().join("init.mp4").is_file(),
                "{at}: init.mp4 missing"
            );
            "m4s"
        }
        SegmentType::Ts => {
            assert!(pl.map.is_none(), "{at}: TS playlist with EXT-X-MAP");
            "ts"
        }
    };
    for (i, s) in pl.segments.iter().enumerate() {
        assert_eq!(s.uri, format!("seg_{i:05}.{ext}"), "{at}: segment name");
    }
}

pub(super) fn check_video(
    manifest: &Path,
    variant: &Variant,
    source: &Source,
    seg_type: SegmentType,
    scratch: &Path,
) -> VideoRendition {
    let name = variant.name();
    let pl = MediaPlaylist::read(&manifest.join(&variant.uri));
    check_media_playlist(&pl, seg_type);
    let (w, h) = variant
        .resolution()
        .unwrap_or_else(|| panic!("{name}: no RESOLUTION"));
    assert!(w % 2 == 0 && h % 2 == 0, "{name}: odd RESOLUTION {w}x{h}");
    assert!(variant.get("FRAME-RATE").is_some(), "{name}: no FRAME-RATE");
    assert_eq!(
        variant.get("AUDIO"),
        source.has_audio.then_some("audio"),
        "{name}: AUDIO attribute"
    );

    let probed = probe(&pl.path);
    let st = stream(&probed, "video")
        .unwrap_or_else(|| panic!("{name}: no video stream"))
        .clone();
    assert_eq!(st["codec_name"], "h264", "{name}: codec");
    assert_eq!(st["profile"], "High", "{name}: profile");
    assert_eq!(st["pix_fmt"], "yuv420p", "{name}: pix_fmt");
    assert_eq!(
        (num(&st["width"]), num(&st["height"])),
        (Some(w as f64), Some(h as f64)),
        "{name}: decoded size vs RESOLUTION {w}x{h}"
    );
    let sar = st["sample_aspect_ratio"].as_str().unwrap_or("1:1");
    assert!(
        sar == "1:1" || sar == "0:1",
        "{name}: non-square pixels (SAR {sar})"
    );
    assert_eq!(
        rotation(&st),
        0.0,
        "{name}: output still carries a display matrix"
    );

    // CODECS: avc1.PPCCLL with PP = 0x64 (High) and LL = the stream's level; mp4a.40.2 iff audio.
    let codecs = variant.codecs();
    let avc: Vec<&String> = codecs.iter().filter(|c| c.starts_with("avc1.")).collect();
    assert_eq!(avc.len(), 1, "{name}: CODECS {codecs:?}");
    let hex = &avc[0]["avc1.".len()..];
    assert!(
        hex.len() == 6 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "{name}: CODECS {codecs:?} not avc1.XXXXXX"
    );
    assert!(
        hex.to_ascii_lowercase().starts_with("64"),
        "{name}: CODECS {codecs:?} is not High profile (avc1.64xxxx)"
    );
    let level = u64::from_str_radix(&hex[4..], 16).unwrap();
    assert_eq!(
        Some(level as f64),
        num(&st["level"]),
        "{name}: CODECS level vs stream level"
    );
    let want_audio: Vec<String> = if source.has_audio {
        vec!["mp4a.40.2".into()]
    } else {
        vec![]
    };
    let other: Vec<String> = codecs
        .iter()
        .filter(|c| !c.starts_with("avc1."))
        .cloned()
        .collect();
    assert_eq!(other, want_audio, "{name}: CODECS {codecs:?}");

    // Whole variant: duration, constant frame rate, a keyframe every GOP_SECONDS.
    let decoded = packets(&pl.path, "v:0");
    let fps = num(&st["avg_frame_rate"]).expect("avg_frame_rate");
    let declared: f64 = variant
        .get("FRAME-RATE")
        .unwrap()
        .parse()
        .expect("FRAME-RATE is a number");
    assert!(
        (declared - fps).abs() < 0.01,
        "{name}: FRAME-RATE {declared} vs stream {fps}"
    );
    let dur = decoded.duration();
    assert!(
        (dur - source.duration).abs() <= DURATION_TOLERANCE,
        "{name}: duration {dur:.3} vs source {:.3}",
        source.duration
    );
    let mut pts: Vec<f64> = decoded.packets.iter().map(|p| p.pts).collect();
    pts.sort_by(f64::total_cmp);
    for d in pts.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            (d - 1.0 / fps).abs() < 0.002,
            "{name}: frame interval {d:.4} at {fps} fps: not constant frame rate"
        );
    }
    let keys = decoded.keyframe_times();
    let want_keys = ((dur - 1e-3) / GOP_SECONDS).ceil() as usize;
    assert_eq!(
        keys.len(),
        want_keys,
        "{name}: keyframes at {keys:?} for {dur:.2} s, want one every {GOP_SECONDS} s"
    );
    for d in keys.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            (d - GOP_SECONDS).abs() < 0.5 / fps,
            "{name}: GOP of {d:.3} s (keyframes {keys:?})"
        );
    }

    // Every segment alone: starts with a keyframe, decodes fully at the declared size.
    let last = pl.segments.len() - 1;
    let mut segment_starts = Vec::new();
    for (i, s) in pl.segments.iter().enumerate() {
        if i < last {
            assert!(
                (s.duration - SEGMENT_SECONDS).abs() < 0.5 / fps,
                "{name}: segment {i} lasts {} s",
                s.duration
            );
        }
        let file = pl.probeable_segment(i, scratch);
        let d = decode(&file, "v:0");
        let what = format!("{name} segment {i} ({})", s.uri);
        assert!(!d.packets.is_empty(), "{what}: no video packets");
        assert!(d.packets[0].key, "{what}: does not start with a keyframe");
        assert_eq!(
            d.frames.len(),
            d.packets.len(),
            "{what}: only {} of {} frames decode alone; {}",
            d.frames.len(),
            d.packets.len(),
            d.stderr
        );
        assert!(
            d.stderr.trim().is_empty(),
            "{what}: decode errors: {}",
            d.stderr
        );
        let first = d
            .frames
            .iter()
            .min_by(|a, b| a.pts.total_cmp(&b.pts))
            .unwrap();
        assert!(
            first.key && first.pict_type == "I",
            "{what}: first frame is {} key={}",
            first.pict_type,
            first.key
        );
        assert!(
            d.frames.iter().all(|f| (f.width, f.height) == (w, h)),
            "{what}: frames not {w}x{h}"
        );
        segment_starts.push(d.start());
    }
    VideoRendition {
        variant: variant.clone(),
        playlist: pl,
        stream: st,
        width: w,
        height: h,
        segment_starts,
    }
}

pub(super) fn check_audio(
    playlist: &Path,
    source: &Source,
    seg_type: SegmentType,
    scratch: &Path,
) -> AudioRendition {
    let pl = MediaPlaylist::read(playlist);
    check_media_playlist(&pl, seg_type);
    let probed = probe(&pl.path);
    let st = stream(&probed, "audio")
        .expect("audio rendition has an audio stream")
        .clone();
    assert!(
        stream(&probed, "video").is_none(),
        "audio rendition carries video"
    );
    assert_eq!(st["codec_name"], "aac", "audio codec");
    assert_eq!(st["profile"], "LC", "audio profile");
    assert_eq!(num(&st["sample_rate"]), Some(48000.0), "audio sample rate");
    assert_eq!(num(&st["channels"]), Some(2.0), "audio channels");
    let dur = packets(&pl.path, "a:0").duration();
    assert!(
        (dur - source.duration).abs() <= DURATION_TOLERANCE,
        "audio duration {dur:.3} vs source {:.3}",
        source.duration
    );
    for (i, s) in pl.segments.iter().enumerate() {
        let d = decode(&pl.probeable_segment(i, scratch), "a:0");
        let what = format!("audio segment {i} ({})", s.uri);
        assert!(!d.packets.is_empty(), "{what}: no audio packets");
        // An encoder-delay (priming) frame may be dropped by the decoder.
        assert!(
            d.frames.len() + 1 >= d.packets.len() && !d.frames.is_empty(),
            "{what}: {} of {} frames decode alone",
            d.frames.len(),
            d.packets.len()
        );
        assert!(
            d.stderr.trim().is_empty(),
            "{what}: decode errors: {}",
            d.stderr
        );
    }
    AudioRendition {
        playlist: pl,
        stream: st,
    }
}
