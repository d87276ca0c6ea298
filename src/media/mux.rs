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
    /// Told of each media file as soon as it is complete, while later ones are being written.
    pub on_segment: Option<SegmentSink>,
}

impl std::fmt::Debug for Segmenting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segmenting")
            .field("kind", &self.kind)
            .field("seconds", &self.seconds)
            .field("on_segment", &self.on_segment.is_some())
            .finish()
    }
}

/// Receives finished media files (the init segment, then segments in order) to publish them
/// early. It may block: a slow consumer slows the encoder instead of piling up files.
pub type SegmentSink = Arc<dyn Fn(&Path) + Send + Sync>;

/// The file name of segment `n` (the muxer's `seg_%05d` pattern).
fn segment_name(kind: SegmentType, n: u32) -> String {
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
        let mut octx = format::output_as(&dir.join(PLAYLIST), "hls").map_err(fail)?;
        {
            let mut stream = octx
                .add_stream(ff::encoder::find(codec::Id::None))
                .map_err(fail)?;
            stream.set_parameters(encoder);
            stream.set_time_base(encoder_time_base);
        }
        let mut options = Dictionary::new();
        options.set("hls_time", &segmenting.seconds.to_string());
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
                options.set("hls_fmp4_init_filename", INIT_SEGMENT);
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
            next_segment: 0,
        })
    }

    /// Writes one encoded packet whose timestamps are in `time_base`.
    pub fn write(&mut self, packet: &mut Packet, time_base: Rational) -> Result<(), MediaError> {
        packet.set_stream(0);
        if packet.duration() == 0 {
            // libx264 in FFmpeg 5.1 leaves durations at 0; the fMP4 muxer needs one per sample.
            packet.set_duration(1);
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
        while self
            .dir
            .join(segment_name(self.kind, self.next_segment + 1))
            .exists()
        {
            let init = self.dir.join(INIT_SEGMENT);
            if self.next_segment == 0 && self.kind == SegmentType::Fmp4 && init.exists() {
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
        let path = self.dir.join(PLAYLIST);
        let text = std::fs::read_to_string(&path)?;
        let text = text.replace("#EXT-X-PLAYLIST-TYPE:EVENT", "#EXT-X-PLAYLIST-TYPE:VOD");
        std::fs::write(&path, super::playlist::with_target_duration(&text))?;
        Ok(())
    }
}
