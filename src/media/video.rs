//! One video rendition: scale shared frames to its size and encode them with libx264 into HLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::ValueEnum;
use ffmpeg_next::{self as ff, Dictionary, Packet, Rational, codec, format, frame, software};

use super::MediaError;
use super::ladder::VideoRendition;
use super::mux::{HlsOutput, Segmenting};

/// Encoder settings common to every video rendition of a pass.
#[derive(Clone, Debug)]
pub struct VideoSettings {
    pub preset: String,
    /// Output frame rate (constant) and the timestamps' time base, its inverse.
    pub fps: Rational,
    pub segmenting: Segmenting,
    /// libx264 threads per encoder (0 = libx264's own choice).
    pub threads: usize,
    pub rate_control: RateControl,
}

/// How libx264 chooses each rendition's bit rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RateControl {
    /// Constant quality ([`crf_for`]) capped by a VBV at the rung's kb/s: easy content costs
    /// what it needs, hard content gets at most the rung's rate.
    CappedCrf,
    /// Average bit rate at the rung's kb/s (VBV at 1.1 ×): every video costs about the same.
    Abr,
}

impl RateControl {
    pub fn name(self) -> &'static str {
        match self {
            Self::CappedCrf => "capped-crf",
            Self::Abr => "abr",
        }
    }
}

/// CRF of a capped-CRF rendition whose short side is `short`: 23 (libx264's default, visually
/// clean at 720p and up); one and two lower for the small rungs, which players show upscaled,
/// so their artefacts are magnified (and their bits are cheap). See benches/rate_control.rs.
pub fn crf_for(short: u32) -> u32 {
    match short {
        720.. => 23,
        360.. => 22,
        _ => 21,
    }
}

/// Frames per GOP at `fps`: one closed GOP every 2 s in every rendition, so segment
/// boundaries line up across renditions and players switch cleanly.
pub fn gop_frames(fps: Rational) -> u32 {
    (2.0 * f64::from(fps)).round().max(1.0) as u32
}

/// ABR's VBV ceiling and buffer as multiples of the target rate.
const MAXRATE_FACTOR: f64 = 1.1;
const BUFSIZE_FACTOR: f64 = 2.0;
/// Capped CRF's VBV buffer in seconds at the rung's rate: one 2 s GOP, so an IDR frame and the
/// P-frames after it can share the GOP's budget (a 1 s buffer starves the IDR on hard content),
/// and no 4 s segment exceeds 1.5 × the rung's rate.
const CRF_BUFFER_SECONDS: f64 = 2.0;

/// Everything opened lazily on the first frame, when the real input format is known.
struct Open {
    /// First, so it drops first: reads the pass's CPU clocks before libx264 joins its threads.
    _cpu: super::cpu::CheckpointOnDrop,
    encoder: ff::encoder::Video,
    output: HlsOutput,
}

pub struct RenditionEncoder {
    rendition: VideoRendition,
    dir: PathBuf,
    settings: VideoSettings,
    /// Built on the first frame that is not already this rendition's size and format.
    scaler: Option<software::scaling::Context>,
    open: Option<Open>,
    codecs: Option<String>,
}

impl RenditionEncoder {
    pub fn new(rendition: VideoRendition, dir: PathBuf, settings: VideoSettings) -> Self {
        Self {
            rendition,
            dir,
            settings,
            scaler: None,
            open: None,
            codecs: None,
        }
    }

    /// `source` at this rendition's size in YUV 4:2:0 (`source` itself when it already is),
    /// with its pts and colour tags: what this rendition encodes, and what a smaller rendition
    /// of the pass scales its own frames from (see `media::pass`).
    pub fn picture(&mut self, source: &Arc<frame::Video>) -> Result<Arc<frame::Video>, MediaError> {
        let (w, h) = (self.rendition.width, self.rendition.height);
        let fits = source.width() == w && source.height() == h;
        if fits && source.format() == format::Pixel::YUV420P {
            return Ok(source.clone());
        }
        let mut scaled = frame::Video::new(format::Pixel::YUV420P, w, h);
        let scaler = match &mut self.scaler {
            Some(scaler) => scaler,
            None => self.scaler.insert(scaler_for(source, w, h)?),
        };
        if scaler.run(source, &mut scaled).is_err() {
            // The source changed size or format mid-stream: rebuild the scaler.
            *scaler = scaler_for(source, w, h)?;
            scaler.run(source, &mut scaled).map_err(encode_error)?;
        }
        scaled.set_pts(source.pts());
        scaled.set_color_space(source.color_space());
        scaled.set_color_primaries(source.color_primaries());
        scaled.set_color_transfer_characteristic(source.color_transfer_characteristic());
        scaled.set_color_range(ff::color::Range::MPEG);
        Ok(Arc::new(scaled))
    }

    /// Encodes one frame of this rendition's size (from [`Self::picture`]).
    pub fn encode(&mut self, picture: &frame::Video) -> Result<(), MediaError> {
        if self.open.is_none() {
            self.open = Some(self.start(picture)?);
        }
        let open = self.open.as_mut().expect("opened above");
        open.encoder.send_frame(picture).map_err(encode_error)?;
        drain(open, self.settings.fps)
    }

    /// Flushes the encoder and closes the playlist; returns the RFC 6381 `avc1.PPCCLL` string.
    pub fn finish(mut self) -> Result<String, MediaError> {
        let mut open = self
            .open
            .take()
            .ok_or_else(|| MediaError::Decode("no video frame was decoded".into()))?;
        // libx264's lookahead thread ends as soon as the flush starts: read it first.
        super::cpu::checkpoint();
        open.encoder.send_eof().map_err(encode_error)?;
        drain(&mut open, self.settings.fps)?;
        open.output.finish()?;
        self.codecs
            .take()
            .ok_or_else(|| MediaError::Encode("libx264 gave no SPS to name the codec by".into()))
    }

    fn start(&mut self, first: &frame::Video) -> Result<Open, MediaError> {
        let (w, h) = (self.rendition.width, self.rendition.height);
        let codec = ff::encoder::find_by_name("libx264")
            .ok_or_else(|| MediaError::Encode("libx264 is not available".into()))?;
        let mut encoder = codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(encode_error)?;
        let fps = self.settings.fps;
        let time_base = fps.invert();
        encoder.set_width(w);
        encoder.set_height(h);
        encoder.set_format(format::Pixel::YUV420P);
        encoder.set_time_base(time_base);
        encoder.set_frame_rate(Some(fps));
        encoder.set_aspect_ratio(Rational::new(1, 1));
        encoder.set_colorspace(first.color_space());
        encoder.set_color_primaries(first.color_primaries());
        encoder.set_color_transfer_characteristic(first.color_transfer_characteristic());
        encoder.set_color_range(ff::color::Range::MPEG);
        // `set_flags` replaces the whole set: keep closed GOPs so every keyframe is an IDR.
        encoder.set_flags(codec::Flags::GLOBAL_HEADER | codec::Flags::CLOSED_GOP);
        let kbps = f64::from(self.rendition.kbps);
        let gop = gop_frames(fps);
        let mut options = Dictionary::new();
        options.set("preset", &self.settings.preset);
        options.set("profile", "high");
        match self.settings.rate_control {
            RateControl::Abr => {
                options.set("b", &format!("{}k", self.rendition.kbps));
                options.set("maxrate", &format!("{}k", (kbps * MAXRATE_FACTOR).round()));
                options.set("bufsize", &format!("{}k", (kbps * BUFSIZE_FACTOR).round()));
            }
            RateControl::CappedCrf => {
                let short = w.min(h);
                options.set("crf", &crf_for(short).to_string());
                options.set("maxrate", &format!("{}k", self.rendition.kbps));
                options.set(
                    "bufsize",
                    &format!("{}k", (kbps * CRF_BUFFER_SECONDS).round()),
                );
            }
        }
        options.set("threads", &self.settings.threads.to_string());
        options.set("forced-idr", "1");
        options.set(
            "x264-params",
            &format!("keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0"),
        );
        let encoder = encoder.open_with(options).map_err(encode_error)?;
        // SAFETY: reading the extradata buffer libx264 filled in while opening.
        let extradata = unsafe {
            let ctx = encoder.as_ptr();
            std::slice::from_raw_parts((*ctx).extradata, (*ctx).extradata_size.max(0) as usize)
        };
        self.codecs = avc_codecs(extradata);
        let output = HlsOutput::create(&self.dir, &self.settings.segmenting, &encoder, time_base)?;
        Ok(Open {
            _cpu: super::cpu::CheckpointOnDrop,
            encoder,
            output,
        })
    }
}

/// Frames by which libx264 delays presentation behind decoding (B-frame reordering) with these
/// settings. The muxer shifts video so decoding starts at 0, so presentation starts this late;
/// the audio is shifted by the same amount to stay in sync.
pub fn reorder_delay_frames(preset: &str) -> i64 {
    let Some(codec) = ff::encoder::find_by_name("libx264") else {
        return 0;
    };
    let Ok(mut encoder) = codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
    else {
        return 0;
    };
    encoder.set_width(64);
    encoder.set_height(64);
    encoder.set_format(format::Pixel::YUV420P);
    encoder.set_time_base(Rational::new(1, 30));
    let mut options = Dictionary::new();
    options.set("preset", preset);
    options.set("profile", "high");
    options.set("threads", "1");
    match encoder.open_with(options) {
        // SAFETY: reading a plain field libx264 set while opening.
        Ok(opened) => i64::from(unsafe { (*opened.as_ptr()).has_b_frames }),
        Err(_) => 0,
    }
}

fn scaler_for(
    source: &frame::Video,
    w: u32,
    h: u32,
) -> Result<software::scaling::Context, MediaError> {
    software::scaling::Context::get(
        source.format(),
        source.width(),
        source.height(),
        format::Pixel::YUV420P,
        w,
        h,
        software::scaling::Flags::BICUBIC,
    )
    .map_err(encode_error)
}

fn drain(open: &mut Open, fps: Rational) -> Result<(), MediaError> {
    let mut packet = Packet::empty();
    while open.encoder.receive_packet(&mut packet).is_ok() {
        open.output.write(&mut packet, fps.invert())?;
    }
    Ok(())
}

fn encode_error(e: ff::Error) -> MediaError {
    MediaError::Encode(e.to_string())
}

/// `avc1.PPCCLL` from the SPS in H.264 extradata, in avcC or Annex B form.
pub fn avc_codecs(extradata: &[u8]) -> Option<String> {
    let sps = if extradata.first() == Some(&1) && extradata.len() >= 4 {
        &extradata[1..4]
    } else {
        let start = extradata
            .windows(4)
            .position(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == 7)?;
        extradata.get(start + 4..start + 7)?
    };
    Some(format!("avc1.{:02X}{:02X}{:02X}", sps[0], sps[1], sps[2]))
}

/// The `avc1.PPCCLL` string of a video folder from its fMP4 init segment (the `avcC` box) or
/// its first MPEG-TS segment (Annex B), read before the file leaves scratch.
pub fn codecs_in(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if name == super::mux::INIT_SEGMENT {
        let bytes = std::fs::read(path).ok()?;
        let at = bytes.windows(4).position(|w| w == b"avcC")?;
        return avc_codecs(&bytes[at + 4..]);
    }
    if name.starts_with("seg_00000.") && name.ends_with(".ts") {
        return avc_codecs(&std::fs::read(path).ok()?);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::avc_codecs;

    #[test]
    fn codecs_string_from_annex_b_and_avcc() {
        let annex_b = [
            0, 0, 0, 1, 0x67, 0x64, 0x00, 0x1f, 0xac, 0, 0, 0, 1, 0x68, 0xeb,
        ];
        assert_eq!(avc_codecs(&annex_b).as_deref(), Some("avc1.64001F"));
        let avcc = [1, 0x4d, 0x40, 0x1e, 0xff, 0xe1];
        assert_eq!(avc_codecs(&avcc).as_deref(), Some("avc1.4D401E"));
        assert_eq!(avc_codecs(&[0, 0, 1, 0x68, 1, 2, 3]), None, "no SPS");
        assert_eq!(avc_codecs(&[]), None);
    }
}
