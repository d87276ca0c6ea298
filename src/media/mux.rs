//! One HLS media playlist per rendition, written by libavformat's `hls` muxer.

use std::path::Path;

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
#[derive(Clone, Copy, Debug)]
pub struct Segmenting {
    pub kind: SegmentType,
    pub seconds: u32,
}

/// Playlist file name inside every rendition folder.
pub const PLAYLIST: &str = "index.m3u8";
/// fMP4 initialisation segment inside every rendition folder.
pub const INIT_SEGMENT: &str = "init.mp4";

/// An open HLS muxer with its single stream.
pub struct HlsOutput {
    octx: format::context::Output,
    stream_time_base: Rational,
}

impl HlsOutput {
    /// Starts `dir/index.m3u8` for the stream described by an opened `encoder`.
    pub fn create(
        dir: &Path,
        segmenting: Segmenting,
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
        options.set("hls_playlist_type", "vod");
        options.set("hls_list_size", "0");
        options.set("hls_flags", "independent_segments");
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
        packet
            .write_interleaved(&mut self.octx)
            .map_err(|e| MediaError::Encode(format!("writing a segment: {e}")))
    }

    /// Closes the last segment and writes the final playlist (with EXT-X-ENDLIST).
    pub fn finish(mut self) -> Result<(), MediaError> {
        self.octx
            .write_trailer()
            .map_err(|e| MediaError::Encode(format!("closing the playlist: {e}")))
    }
}
