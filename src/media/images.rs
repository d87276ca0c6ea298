//! Pictures from published renditions, never from the source: a rendition's media playlist
//! maps a time to its segment (each starts with an IDR frame), and the init segment plus that
//! one segment, held in memory, decode alone. Poster candidates are scored by detail, so a
//! black or flat frame is passed over.

use std::io::Cursor;

use ffmpeg_next::{self as ff, Dictionary, Packet, codec, format, frame, media};

use super::MediaError;

/// Containers a published segment may be in: fMP4 (`init.mp4` + `.m4s`) or MPEG-TS.
const SEGMENT_DEMUXERS: &str = "mov,mp4,m4a,3gp,3g2,mj2,mpegts";

/// Seconds after the poster time at which other candidates are tried (a clip that opens on
/// black for a few seconds still gets a picture).
pub const CANDIDATE_STEPS: [f64; 5] = [0.0, 1.0, 2.0, 4.0, 8.0];

/// One media segment as its playlist lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentRef {
    pub name: String,
    /// Seconds from the rendition's start to the segment's first frame.
    pub start: f64,
    pub seconds: f64,
}

/// A media playlist read for its files and their times.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentIndex {
    /// The `EXT-X-MAP` initialisation segment (fMP4), which goes in front of every segment.
    pub init: Option<String>,
    pub segments: Vec<SegmentRef>,
}

impl SegmentIndex {
    /// Parses a media playlist; names must be plain file names beside it.
    pub fn parse(text: &str) -> Result<Self, MediaError> {
        let plain = |name: &str| {
            let bad = name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.');
            match bad {
                true => Err(MediaError::Io(format!("unexpected segment name `{name}`"))),
                false => Ok(name.to_string()),
            }
        };
        let (mut index, mut start, mut pending) = (Self::empty(), 0.0, 0.0);
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(map) = line.strip_prefix("#EXT-X-MAP:") {
                index.init = Some(plain(map.split('"').nth(1).unwrap_or_default())?);
            } else if let Some(inf) = line.strip_prefix("#EXTINF:") {
                pending = inf
                    .split(',')
                    .next()
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(0.0);
            } else if !line.starts_with('#') {
                let name = plain(line)?;
                index.segments.push(SegmentRef {
                    name,
                    start,
                    seconds: pending,
                });
                start += pending;
                pending = 0.0;
            }
        }
        Ok(index)
    }

    fn empty() -> Self {
        Self {
            init: None,
            segments: Vec::new(),
        }
    }

    pub fn duration(&self) -> f64 {
        self.segments.last().map_or(0.0, |s| s.start + s.seconds)
    }

    /// The segment shown at `time` (the last one for a time at or past the end).
    pub fn locate(&self, time: f64) -> Option<usize> {
        let last = self.segments.len().checked_sub(1)?;
        let i = self.segments.partition_point(|s| s.start <= time);
        Some(i.saturating_sub(1).min(last))
    }

    /// `times` grouped by the segment that shows them: (segment, offsets into it), in order.
    /// `times` must be ascending.
    pub fn group(&self, times: &[f64]) -> Vec<(usize, Vec<f64>)> {
        let mut groups: Vec<(usize, Vec<f64>)> = Vec::new();
        for &t in times {
            let Some(i) = self.locate(t) else { break };
            let offset = (t - self.segments[i].start).max(0.0);
            match groups.last_mut() {
                Some((last, offsets)) if *last == i => offsets.push(offset),
                _ => groups.push((i, vec![offset])),
            }
        }
        groups
    }
}

/// Decodes the video of `bytes` (an init segment followed by one media segment, or one TS
/// segment) and returns the frame shown at each of `offsets` (seconds after the segment's
/// first frame, ascending). Decoding starts at the last keyframe before the first offset.
pub fn frames_at(bytes: Vec<u8>, offsets: &[f64]) -> Result<Vec<frame::Video>, MediaError> {
    let fail = |what: &'static str| move |e: ff::Error| MediaError::Decode(format!("{what}: {e}"));
    let io = format::context::StreamIo::from_read_seek(Cursor::new(bytes))
        .map_err(fail("reading a segment"))?;
    let mut options = Dictionary::new();
    options.set("format_whitelist", SEGMENT_DEMUXERS);
    options.set("protocol_whitelist", "none");
    let mut input =
        format::input_from_stream(io, None, Some(options)).map_err(fail("opening a segment"))?;
    let stream = input
        .streams()
        .best(media::Type::Video)
        .ok_or(MediaError::NoMedia)?;
    let (index, time_base) = (stream.index(), f64::from(stream.time_base()));
    let mut context = codec::context::Context::from_parameters(stream.parameters())
        .map_err(fail("a segment's decoder"))?;
    context.set_threading(codec::threading::Config {
        kind: codec::threading::Type::Frame,
        count: 0,
        ..Default::default()
    });
    let mut decoder = context
        .decoder()
        .video()
        .map_err(fail("a segment's decoder"))?;
    let mut packets = Vec::new();
    loop {
        let mut packet = Packet::empty();
        match packet.read(&mut input) {
            Ok(()) if packet.stream() == index => packets.push(packet),
            Ok(()) => {}
            Err(ff::Error::Eof) => break,
            Err(e) => return Err(MediaError::Decode(format!("reading a segment: {e}"))),
        }
    }
    let seconds = |pts: Option<i64>| pts.map(|t| t as f64 * time_base);
    let first = packets
        .iter()
        .filter_map(|p| seconds(p.pts()))
        .fold(f64::INFINITY, f64::min);
    let from = match offsets.first() {
        Some(&o) => packets
            .iter()
            .rposition(|p| p.is_key() && seconds(p.pts()).is_some_and(|t| t - first <= o))
            .unwrap_or(0),
        None => return Ok(Vec::new()),
    };
    let mut picker = Picker::new(offsets);
    let mut decoded = frame::Video::empty();
    for packet in packets[from..].iter().map(Some).chain([None]) {
        let sent = match packet {
            Some(p) => decoder.send_packet(p),
            None => decoder.send_eof(),
        };
        if let Err(e) = sent {
            tracing::debug!("skipping a segment packet that does not decode: {e}");
        }
        while decoder.receive_frame(&mut decoded).is_ok() {
            let at = seconds(decoded.timestamp().or(decoded.pts())).unwrap_or(first) - first;
            picker.offer(&decoded, at);
            if picker.done() {
                return Ok(picker.picked);
            }
        }
    }
    picker.finish()
}

/// Chooses, as frames arrive in display order, the one shown at each wanted offset: the last
/// frame that starts at or before it.
struct Picker<'a> {
    wanted: &'a [f64],
    picked: Vec<frame::Video>,
    previous: Option<frame::Video>,
}

impl<'a> Picker<'a> {
    fn new(wanted: &'a [f64]) -> Self {
        Self {
            wanted,
            picked: Vec::with_capacity(wanted.len()),
            previous: None,
        }
    }

    fn offer(&mut self, decoded: &frame::Video, at: f64) {
        while let Some(&want) = self.wanted.get(self.picked.len()) {
            if at <= want + 1e-3 {
                break;
            }
            let shown = self.previous.as_ref().unwrap_or(decoded);
            self.picked.push(shown.clone());
        }
        self.previous = Some(decoded.clone());
    }

    fn done(&self) -> bool {
        self.picked.len() == self.wanted.len()
    }

    /// After the last frame: every offset still open shows it.
    fn finish(mut self) -> Result<Vec<frame::Video>, MediaError> {
        let last = self
            .previous
            .take()
            .ok_or_else(|| MediaError::Decode("a segment decoded to no picture".into()))?;
        self.picked.resize(self.wanted.len(), last);
        Ok(self.picked)
    }
}

/// How much detail a picture holds: the mean absolute difference between neighbouring luma
/// samples (across and down, every other sample). Black, flat or faded frames score near 0.
pub fn detail(picture: &frame::Video) -> f64 {
    let (w, h) = (picture.width() as usize, picture.height() as usize);
    if w < 2 || h < 2 || picture.planes() == 0 {
        return 0.0;
    }
    let (luma, stride) = (picture.data(0), picture.stride(0));
    let (mut sum, mut count) = (0u64, 0u64);
    for y in (0..h - 1).step_by(2) {
        let row = &luma[y * stride..];
        let below = &luma[(y + 1) * stride..];
        for x in (0..w - 1).step_by(2) {
            sum += u64::from(row[x].abs_diff(row[x + 1])) + u64::from(row[x].abs_diff(below[x]));
            count += 1;
        }
    }
    sum as f64 / count.max(1) as f64
}

/// The poster candidates for `time` in a video of `duration` seconds: `CANDIDATE_STEPS` after
/// it, kept inside the video, ascending without repeats.
pub fn candidates(time: f64, duration: f64) -> Vec<f64> {
    let last = (duration - 0.05).max(0.0);
    let mut times: Vec<f64> = CANDIDATE_STEPS
        .iter()
        .map(|step| (time + step).clamp(0.0, last))
        .collect();
    times.dedup_by(|a, b| (*a - *b).abs() < 1e-6);
    times
}

/// Which candidate makes the poster, from each one's detail (candidates in time order): the
/// earliest with at least half the most detail, so the chosen time stays near the asked one
/// unless that picture is clearly emptier.
pub fn pick(details: &[f64]) -> usize {
    let best = details.iter().copied().fold(0.0, f64::max);
    details
        .iter()
        .position(|&d| d >= best / 2.0 && d > 0.0)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAYLIST: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MAP:URI=\"init.mp4\"\n\
        #EXTINF:4.000000,\nseg_00000.m4s\n#EXTINF:4.000000,\nseg_00001.m4s\n\
        #EXTINF:1.500000,\nseg_00002.m4s\n#EXT-X-ENDLIST\n";

    #[test]
    fn a_playlist_maps_times_to_segments() {
        let index = SegmentIndex::parse(PLAYLIST).unwrap();
        assert_eq!(index.init.as_deref(), Some("init.mp4"));
        assert_eq!(index.duration(), 9.5);
        assert_eq!(index.segments[2].start, 8.0);
        let at = |t| index.locate(t).unwrap();
        assert_eq!(
            (at(0.0), at(3.99), at(4.0), at(9.0), at(20.0)),
            (0, 0, 1, 2, 2)
        );
        let groups = index.group(&[0.5, 1.0, 4.5, 9.0]);
        assert_eq!(
            groups,
            [(0, vec![0.5, 1.0]), (1, vec![0.5]), (2, vec![1.0])]
        );
        assert!(SegmentIndex::parse("#EXTINF:4,\n../x.ts\n").is_err());
        assert_eq!(SegmentIndex::parse("#EXTM3U\n").unwrap().locate(1.0), None);
    }

    #[test]
    fn the_poster_is_the_earliest_candidate_with_enough_detail() {
        assert_eq!(candidates(0.8, 8.0), [0.8, 1.8, 2.8, 4.8, 7.95]);
        assert_eq!(candidates(0.1, 0.5), [0.1, 0.45]);
        assert_eq!(pick(&[0.0, 0.1, 0.0, 9.0, 12.0]), 3);
        assert_eq!(pick(&[7.0, 9.0, 12.0]), 0);
        assert_eq!(pick(&[0.0, 0.0]), 0);
    }

    /// A 3 s TS segment of testsrc2 whose first second is black: the frames asked for are
    /// the ones shown then, and the black one has no detail.
    #[test]
    fn frames_come_from_one_segment_at_the_asked_times() {
        crate::media::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let clip = dir.path().join("seg.ts");
        let graph = "color=black:size=160x90:rate=10:duration=1[b];\
                     testsrc2=size=160x90:rate=10:duration=2[t];[b][t]concat=n=2:v=1[v]";
        let made = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-filter_complex", graph, "-map", "[v]"])
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "10"])
            .arg(&clip)
            .status()
            .unwrap();
        assert!(made.success());
        let bytes = std::fs::read(&clip).unwrap();
        let frames = frames_at(bytes, &[0.5, 1.5, 2.0, 9.0]).unwrap();
        assert_eq!(frames.len(), 4);
        assert!((frames[0].width(), frames[0].height()) == (160, 90));
        assert!(detail(&frames[0]) < 0.5, "{}", detail(&frames[0]));
        assert!(detail(&frames[1]) > 5.0, "{}", detail(&frames[1]));
        // Past the end: the last frame.
        assert!(detail(&frames[3]) > 5.0);
    }
}
