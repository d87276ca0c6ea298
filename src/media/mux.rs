//! One HLS media playlist per rendition, written by libavformat's `hls` muxer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::ValueEnum;
use ffmpeg_next::{self as ff, Dictionary, Packet, Rational, codec, encoder, format};
use serde::Serialize;

use super::MediaError;

/// How HLS media segments are packaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SegmentType {
    /// CMAF / fragmented MP4 (`init.mp4` + `.m4s`): the default every current player reads.
    Fmp4,
    /// MPEG-TS (`.ts`) for old players.
    Ts,
}

impl SegmentType {
    pub fn extension(self) -> &'static str {
        match self {
            SegmentType::Fmp4 => "m4s",
            SegmentType::Ts => "ts",
        }
    }
}

/// Segmenting choices shared by every rendition of a job, so boundaries line up.
#[derive(Clone)]
pub struct Segmenting {
    pub kind: SegmentType,
    pub seconds: u32,
    /// The part of the rendition this muxer writes, when it is made in time chunks.
    pub part: Option<Part>,
    /// Told of each media file as soon as it is complete, while later ones are being written.
    pub on_segment: Option<SegmentSink>,
}

impl std::fmt::Debug for Segmenting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segmenting")
            .field("kind", &self.kind)
            .field("seconds", &self.seconds)
            .field("part", &self.part)
            .field("on_segment", &self.on_segment.is_some())
            .finish()
    }
}

/// Chunk `index` of a rendition made in parts: its segments are numbered from `first_segment`
/// (their index in the whole rendition), its playlist is `part-<index>.m3u8` (assembled with the
/// others into `index.m3u8`), and only part 0's init segment is `init.mp4` (every part's codec
/// configuration must equal it; the others keep theirs as `init-<index>.mp4` to compare).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub index: u32,
    pub first_segment: u32,
    /// One past the part's last segment: the parts of a rendition share its folder, so a
    /// segment from there on is another part's, possibly still being written.
    pub end_segment: u32,
    /// Added to the video timestamps (in the encoder's time base): libx264's reorder delay,
    /// which makes part 0's first decode time 0 as the muxer's own shift would (that one is
    /// taken from each muxer's first packet, so parts would not join); 0 for fMP4 parts after
    /// the first, whose decode times start from their first presentation time.
    pub shift: i64,
}

impl Part {
    pub fn playlist(index: u32) -> String {
        format!("part-{index}.m3u8")
    }

    pub fn init(index: u32) -> String {
        match index {
            0 => INIT_SEGMENT.into(),
            n => format!("init-{n}.mp4"),
        }
    }
}

/// Receives finished media files (the init segment, then segments in order) to publish them
/// early. It may block: a slow consumer slows the encoder instead of piling up files.
pub type SegmentSink = Arc<dyn Fn(&Path) + Send + Sync>;

/// The file name of segment `n` (the muxer's `seg_%05d` pattern).
pub fn segment_name(kind: SegmentType, n: u32) -> String {
    format!("seg_{n:05}.{}", kind.extension())
}

/// Playlist file name inside every rendition folder.
pub const PLAYLIST: &str = "index.m3u8";
/// fMP4 initialisation segment inside every rendition folder.
pub const INIT_SEGMENT: &str = "init.mp4";

/// An open HLS muxer with its single stream.
pub struct HlsOutput {
    octx: format::context::Output,
    stream_time_base: Rational,
    dir: PathBuf,
    kind: SegmentType,
    on_segment: Option<SegmentSink>,
    /// Number of the first segment not yet handed to `on_segment`.
    next_segment: u32,
    part: Option<Part>,
    /// Added to every packet's timestamps (see [`Part::shift`]).
    shift: i64,
}

impl HlsOutput {
    /// Starts `dir/index.m3u8` for the stream described by an opened `encoder`.
    pub fn create(
        dir: &Path,
        segmenting: &Segmenting,
        encoder: &encoder::Encoder,
        encoder_time_base: Rational,
    ) -> Result<Self, MediaError> {
        let fail = |e: ff::Error| MediaError::Encode(format!("HLS muxer: {e}"));
        std::fs::create_dir_all(dir)?;
        let part = segmenting.part;
        let playlist = part.map_or(PLAYLIST.into(), |p| Part::playlist(p.index));
        let mut octx = format::output_as(&dir.join(playlist), "hls").map_err(fail)?;
        {
            let mut stream = octx
                .add_stream(ff::encoder::find(codec::Id::None))
                .map_err(fail)?;
            stream.set_parameters(encoder);
            stream.set_time_base(encoder_time_base);
        }
        let mut options = Dictionary::new();
        let video = encoder.medium() == ff::media::Type::Video;
        options.set("hls_time", &hls_time(segmenting, video, encoder_time_base));
        let first = part.map_or(0, |p| p.first_segment);
        options.set("start_number", &first.to_string());
        // EVENT: the playlist is rewritten as each segment closes, so it can be published while
        // the encode runs; `finish` turns it into the VOD playlist it ends as.
        options.set("hls_playlist_type", "event");
        options.set("hls_list_size", "0");
        options.set("hls_flags", "independent_segments");
        // The same names as `segment_name`.
        let pattern = dir.join(format!("seg_%05d.{}", segmenting.kind.extension()));
        options.set("hls_segment_filename", &pattern.to_string_lossy());
        match segmenting.kind {
            SegmentType::Fmp4 => {
                options.set("hls_segment_type", "fmp4");
                let index = part.map_or(0, |p| p.index);
                options.set("hls_fmp4_init_filename", &Part::init(index));
                if index > 0 {
                    // The fragments' decode times (tfdt) continue from the packets' own
                    // timestamps instead of restarting at 0.
                    options.set("hls_segment_options", "movflags=+frag_discont");
                }
            }
            SegmentType::Ts => options.set("hls_segment_type", "mpegts"),
        }
        let unused: Vec<String> = octx
            .write_header_with(options)
            .map_err(fail)?
            .iter()
            .map(|(key, _)| key.to_string())
            .collect();
        if let Some(key) = unused.first() {
            return Err(MediaError::Encode(format!(
                "HLS muxer ignored option `{key}`"
            )));
        }
        let stream_time_base = octx.stream(0).expect("one stream").time_base();
        Ok(Self {
            octx,
            stream_time_base,
            dir: dir.to_path_buf(),
            kind: segmenting.kind,
            on_segment: segmenting.on_segment.clone(),
            next_segment: first,
            part,
            shift: part.map_or(0, |p| p.shift),
        })
    }

    /// Writes one encoded packet whose timestamps are in `time_base`.
    pub fn write(&mut self, packet: &mut Packet, time_base: Rational) -> Result<(), MediaError> {
        packet.set_stream(0);
        if packet.duration() == 0 {
            // libx264 in FFmpeg 5.1 leaves durations at 0; the fMP4 muxer needs one per sample.
            packet.set_duration(1);
        }
        if self.shift != 0 {
            packet.set_pts(packet.pts().map(|t| t + self.shift));
            packet.set_dts(packet.dts().map(|t| t + self.shift));
        }
        packet.rescale_ts(time_base, self.stream_time_base);
        let key = packet.is_key();
        packet
            .write_interleaved(&mut self.octx)
            .map_err(|e| MediaError::Encode(format!("writing a segment: {e}")))?;
        if key {
            self.hand_over_finished();
        }
        Ok(())
    }

    /// Segments start only at key frames, and the muxer opens a segment's file once the one
    /// before it is closed: so when segment n+1 exists, segment n (and the init segment before
    /// it) is complete.
    fn hand_over_finished(&mut self) {
        let Some(on_segment) = &self.on_segment else {
            return;
        };
        let end = self.part.map_or(u32::MAX, |p| p.end_segment);
        while self.next_segment + 1 < end
            && self
                .dir
                .join(segment_name(self.kind, self.next_segment + 1))
                .exists()
        {
            let init = self.dir.join(INIT_SEGMENT);
            let first = self.part.map_or(0, |p| p.first_segment);
            let own_init = self.part.is_none_or(|p| p.index == 0);
            if self.next_segment == first
                && own_init
                && self.kind == SegmentType::Fmp4
                && init.exists()
            {
                on_segment(&init);
            }
            on_segment(&self.dir.join(segment_name(self.kind, self.next_segment)));
            self.next_segment += 1;
        }
    }

    /// Closes the last segment and writes the final playlist: VOD, with EXT-X-ENDLIST, its
    /// target duration our own (`playlist::with_target_duration`), not the muxer's rounding.
    pub fn finish(mut self) -> Result<(), MediaError> {
        self.octx
            .write_trailer()
            .map_err(|e| MediaError::Encode(format!("closing the playlist: {e}")))?;
        let name = self
            .part
            .map_or(PLAYLIST.into(), |p| Part::playlist(p.index));
        let path = self.dir.join(name);
        let text = std::fs::read_to_string(&path)?;
        let text = text.replace("#EXT-X-PLAYLIST-TYPE:EVENT", "#EXT-X-PLAYLIST-TYPE:VOD");
        std::fs::write(&path, super::playlist::with_target_duration(&text))?;
        if self.part.is_some() {
            // A part's last segment is complete now: published before the rendition's end,
            // the playlist can grow past it.
            self.hand_over_finished();
            let last = self.dir.join(segment_name(self.kind, self.next_segment));
            let init = self.dir.join(INIT_SEGMENT);
            let own = self.part.is_some_and(|p| self.next_segment < p.end_segment);
            if let (Some(on_segment), true) = (&self.on_segment, own && last.exists()) {
                let first = self
                    .part
                    .is_some_and(|p| p.index == 0 && p.first_segment == self.next_segment);
                if first && init.exists() {
                    on_segment(&init);
                }
                on_segment(&last);
            }
        }
        Ok(())
    }
}

/// The muxer's segment length: for video, whole 2 s GOPs covering `seconds` (rounded up), given
/// to the microsecond below their exact length so that a segment closes at exactly that many
/// frames (29.97 fps: 120 frames, 4.004 s) whether the muxer started at 0 or at a chunk;
/// for audio, `seconds`.
fn hls_time(segmenting: &Segmenting, video: bool, time_base: Rational) -> String {
    if !video || time_base.numerator() <= 0 {
        return segmenting.seconds.to_string();
    }
    let fps = time_base.invert();
    let frames = u64::from(segment_frames(fps, segmenting.seconds));
    let micros = frames * 1_000_000 * time_base.numerator() as u64 / time_base.denominator() as u64;
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// Frames per video segment at `fps` for segments of about `seconds`: whole GOPs (see
/// `gop_frames`), at least one.
pub fn segment_frames(fps: Rational, seconds: u32) -> u32 {
    super::gop_frames(fps) * seconds.div_ceil(2).max(1)
}
