//! How long a source is (from the container's start to its streams' end, measured by reading
//! packets when the container does not say), and whether its end is really there.

use ffmpeg_next::{self as ff, Rational, format, media};

use super::MediaError;

/// End time in seconds (from the file's start) of each wanted stream, by reading every packet.
pub(super) fn scan_ends(input: &mut format::context::Input, wanted: &[usize]) -> Vec<(usize, f64)> {
    let start = super::input::start_micros(input) as f64 / f64::from(ff::ffi::AV_TIME_BASE);
    let bases: Vec<Rational> = input.streams().map(|s| s.time_base()).collect();
    // Per wanted stream: latest end seen, and the running sum of durations for packets that
    // carry no timestamp at all (raw elementary streams).
    let mut ends: Vec<(usize, f64, i64)> = wanted.iter().map(|&s| (s, 0.0, 0)).collect();
    let mut packet = ff::Packet::empty();
    while packet.read(input).is_ok() {
        let Some(slot) = ends.iter_mut().find(|(s, ..)| *s == packet.stream()) else {
            continue;
        };
        let tb = f64::from(bases[packet.stream()]);
        slot.2 += packet.duration().max(0);
        let end = match packet.pts().or(packet.dts()) {
            Some(ts) => (ts + packet.duration().max(0)) as f64 * tb - start,
            None => slot.2 as f64 * tb,
        };
        slot.1 = slot.1.max(end);
    }
    ends.into_iter().map(|(s, end, _)| (s, end)).collect()
}

/// Seconds from the container's start (its earliest stream's start, whatever its sign: a WebM's
/// Opus starts before 0) to the end of the last `wanted` stream (the audio and the main video);
/// `None` when only reading the packets can tell. An MP4 whose streams start late (a leading
/// empty edit) counts the gap in its own duration; the streams' own ends leave it out, and are
/// trusted only when every wanted stream has one.
pub(super) fn duration_of(input: &format::context::Input, wanted: &[usize]) -> Option<f64> {
    let start = super::input::start_micros(input) as f64 / f64::from(ff::ffi::AV_TIME_BASE);
    let ends: Option<Vec<f64>> = chosen(input, wanted)
        .map(|s| {
            (s.start_time() != ff::ffi::AV_NOPTS_VALUE && s.duration() > 0)
                .then(|| (s.start_time() + s.duration()) as f64 * f64::from(s.time_base()))
        })
        .collect();
    let spanned = ends
        .filter(|e| !e.is_empty())
        .map(|e| e.into_iter().fold(f64::MIN, f64::max) - start)
        .filter(|s| *s > 0.0);
    let declared =
        (input.duration() > 0).then(|| input.duration() as f64 / f64::from(ff::ffi::AV_TIME_BASE));
    match (declared, spanned) {
        (Some(declared), Some(spanned)) => Some(declared.min(spanned)),
        (None, Some(spanned)) => Some(spanned),
        // The container's length also spans its other streams: a subtitle cue that ends after
        // the picture and sound would set it.
        (Some(declared), None) if !others_may_outlast(input, wanted, declared) => Some(declared),
        (Some(_), None) => None,
        (None, None) => Some(
            chosen(input, wanted)
                .map(|s| stream_seconds(&s))
                .fold(0.0, f64::max),
        ),
    }
}

/// True when `input` has other streams with packets (subtitles, data, a video track that is not
/// the main one), unless the wanted streams' own `DURATION` tags (Matroska writers add them)
/// show that they reach the container's end.
fn others_may_outlast(input: &format::context::Input, wanted: &[usize], declared: f64) -> bool {
    let others = input.streams().any(|s| {
        !wanted.contains(&s.index())
            && matches!(
                s.parameters().medium(),
                media::Type::Subtitle | media::Type::Data | media::Type::Video
            )
            && !s
                .disposition()
                .contains(format::stream::Disposition::ATTACHED_PIC)
    });
    // Writers disagree on whether the tag is an end or a length from the stream's start; either
    // way, a tag near the container's length means the stream reaches its end.
    let reach = chosen(input, wanted)
        .filter_map(|s| s.metadata().get("DURATION").and_then(tag_seconds))
        .fold(0.0, f64::max);
    others && reach < declared - 0.1
}

/// `HH:MM:SS.fraction` (a Matroska `DURATION` tag) in seconds.
fn tag_seconds(tag: &str) -> Option<f64> {
    let mut parts = tag.trim().splitn(3, ':');
    let hours: f64 = parts.next()?.parse().ok()?;
    let minutes: f64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    Some(hours * 3600.0 + minutes * 60.0 + seconds)
}

/// The `wanted` streams of `input` (its audio and main video): the only ones that decide its
/// length.
fn chosen<'a>(
    input: &'a format::context::Input,
    wanted: &'a [usize],
) -> impl Iterator<Item = format::stream::Stream<'a>> {
    input.streams().filter(|s| wanted.contains(&s.index()))
}

pub(super) fn stream_seconds(stream: &format::stream::Stream) -> f64 {
    if stream.duration() > 0 {
        stream.duration() as f64 * f64::from(stream.time_base())
    } else {
        0.0
    }
}

/// Reads the last second of every stream: a file cut short behind a valid index (an upload
/// that stopped half-way) fails here, at probe time, instead of after minutes of encoding.
pub(super) fn check_tail(
    input: &mut format::context::Input,
    duration: f64,
) -> Result<(), MediaError> {
    let from_start = ((duration - 1.0).max(0.0) * f64::from(ff::ffi::AV_TIME_BASE)) as i64;
    let target = super::input::start_micros(input) + from_start;
    // Any frame, not just keyframes: a clip with one keyframe would otherwise land at 0.
    // SAFETY: a plain seek on the open context we own.
    let sought = unsafe {
        ff::ffi::avformat_seek_file(
            input.as_mut_ptr(),
            -1,
            i64::MIN,
            target,
            target,
            ff::ffi::AVSEEK_FLAG_ANY,
        )
    };
    if sought < 0 {
        return Ok(()); // Not seekable (e.g. raw streams): the encode will find any damage.
    }
    let mut packets = 0;
    for _ in 0..5000 {
        let mut packet = ff::Packet::empty();
        match packet.read(input) {
            Ok(()) => packets += 1,
            Err(ff::Error::Eof) => break,
            Err(e) => return Err(MediaError::Truncated(e.to_string())),
        }
    }
    if packets == 0 {
        return Err(MediaError::Truncated(
            "no media data where the header says there is; if the file is whole, its media \
             may be kept in other files (MP4 data references), which are never read"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::media::source::{Limits, probe};

    const NO_LIMITS: Limits = Limits {
        max_bytes: u64::MAX,
        max_seconds: u64::MAX,
    };

    /// Picture and sound of 2 s with a subtitle cue to 5 s, in Matroska with and without the
    /// streams' `DURATION` tags (not every writer adds them): 2 s long either way.
    #[test]
    fn subtitles_do_not_set_the_length() {
        crate::media::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let srt = dir.path().join("cue.srt");
        std::fs::write(&srt, "1\n00:00:00,500 --> 00:00:05,000\nStill talking\n").unwrap();
        let tagged = dir.path().join("tagged.mkv");
        let srt = srt.to_str().unwrap();
        let inputs = ["-f", "lavfi", "-i", "sine=duration=2", "-i", srt];
        let maps = [
            "-map", "0", "-map", "1", "-map", "2", "-c:a", "aac", "-c:s", "srt",
        ];
        crate::media::test_clip(&tagged, 2, &[&inputs[..], &maps[..]].concat());
        let bytes = std::fs::read(&tagged).unwrap();
        let tags = String::from_utf8_lossy(&bytes).matches("DURATION").count();
        assert!(tags >= 3, "one tag per stream: {tags}");
        let untagged = dir.path().join("untagged.mkv");
        let mut patched = bytes.clone();
        for at in 0..patched.len() - 8 {
            if &patched[at..at + 8] == b"DURATION" {
                patched[at..at + 8].copy_from_slice(b"DURATIOX");
            }
        }
        std::fs::write(&untagged, patched).unwrap();
        for path in [tagged, untagged] {
            let info = probe(&path, NO_LIMITS).unwrap();
            assert!(
                (info.duration_seconds - 2.0).abs() < 0.1,
                "{}: {}",
                path.display(),
                info.duration_seconds
            );
        }
    }

    /// A source whose streams start 10 s into the container's timeline (a leading empty edit
    /// in MP4, a timestamp offset in MPEG-TS) lasts what its streams last, not 13 s: the
    /// duration limit and the progress count the media.
    #[test]
    fn a_late_start_is_not_counted_as_duration() {
        crate::media::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        for name in ["offset.mp4", "offset.ts"] {
            let path = dir.path().join(name);
            let audio = ["-f", "lavfi", "-i", "sine=duration=3", "-c:a", "aac"];
            crate::media::test_clip(
                &path,
                3,
                &[&audio[..], &["-output_ts_offset", "10"]].concat(),
            );
            let limits = Limits {
                max_seconds: 5,
                ..NO_LIMITS
            };
            let info = probe(&path, limits).unwrap();
            assert!(
                (info.duration_seconds - 3.0).abs() < 0.1,
                "{name}: {}",
                info.duration_seconds
            );
        }
    }
}
