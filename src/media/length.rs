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
/// Opus starts before 0) to the end of its last audio or video stream. An MP4 whose streams
/// start late (a leading empty edit) counts the gap in its own duration; the streams' own ends
/// leave it out, and are trusted only when every audio and video stream has one.
pub(super) fn duration_of(input: &format::context::Input) -> f64 {
    let start = super::input::start_micros(input) as f64 / f64::from(ff::ffi::AV_TIME_BASE);
    let ends: Option<Vec<f64>> = media_streams(input)
        .map(|s| {
            (s.start_time() != ff::ffi::AV_NOPTS_VALUE && s.duration() > 0)
                .then(|| (s.start_time() + s.duration()) as f64 * f64::from(s.time_base()))
        })
        .collect();
    let spanned = ends
        .filter(|e| !e.is_empty())
        .map(|e| e.into_iter().fold(f64::MIN, f64::max) - start)
        .filter(|s| *s > 0.0);
    if input.duration() > 0 {
        let declared = input.duration() as f64 / f64::from(ff::ffi::AV_TIME_BASE);
        return spanned.map_or(declared, |s| declared.min(s));
    }
    media_streams(input)
        .map(|s| stream_seconds(&s))
        .fold(0.0, f64::max)
}

/// The audio and video streams of `input`: the only ones that decide its length.
fn media_streams(
    input: &format::context::Input,
) -> impl Iterator<Item = format::stream::Stream<'_>> {
    input.streams().filter(|s| {
        matches!(
            s.parameters().medium(),
            media::Type::Video | media::Type::Audio
        )
    })
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
                max_bytes: u64::MAX,
                max_seconds: 5,
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
