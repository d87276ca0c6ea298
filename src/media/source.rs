//! Probing what a source holds, refusing what cannot be transcoded.

use std::path::Path;

use ffmpeg_next::{self as ff, codec, format, media};
use serde::{Deserialize, Serialize};

use super::MediaError;
use super::input::Origin;
use super::length::{check_tail, duration_of, scan_ends, stream_seconds};

/// Colour transfer of the video: decides whether tone-mapping to SDR is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transfer {
    Sdr,
    /// SMPTE ST 2084 (HDR10, Dolby Vision base layers).
    Pq,
    /// ARIB STD-B67 hybrid log-gamma.
    Hlg,
}

/// What the probe learnt about a source; written into status.json under `source`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceInfo {
    pub container: String,
    pub duration_seconds: f64,
    pub size_bytes: u64,
    pub video: Option<VideoInfo>,
    pub audio: Vec<AudioInfo>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoInfo {
    #[serde(skip)]
    pub stream_index: usize,
    pub codec: String,
    /// The video stream's own length (it may be shorter than the container's).
    pub duration_seconds: f64,
    pub coded_width: u32,
    pub coded_height: u32,
    /// Size as shown: sample aspect ratio and rotation applied.
    pub display_width: u32,
    pub display_height: u32,
    /// Clockwise degrees the picture must turn to be upright: 0, 90, 180 or 270.
    pub rotation: u32,
    pub sample_aspect_ratio: String,
    pub avg_frame_rate: f64,
    pub real_frame_rate: f64,
    pub pixel_format: String,
    pub bit_depth: u32,
    pub transfer: Transfer,
    pub interlaced: bool,
    /// The constant rate the first seconds' timestamps show (0 when they vary or carry none):
    /// a container's rate hint can be twice the real rate.
    #[serde(default)]
    pub timestamp_frame_rate: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudioInfo {
    #[serde(skip)]
    pub stream_index: usize,
    pub codec: String,
    pub channels: u16,
    pub sample_rate: u32,
}

/// Source limits checked at probe time.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_seconds: u64,
}

/// Probes `path`: refuses empty, unreadable, media-less, truncated and over-limit sources.
pub fn probe(path: &Path, limits: Limits) -> Result<SourceInfo, MediaError> {
    let origin = Origin::File(std::path::absolute(path)?);
    probe_watched(&origin, limits, &super::input::ReadWatch::default())
}

/// [`probe`] of a file or a store object, with libav's reads counted and stoppable through
/// `watch` (for the job watchdog).
pub fn probe_watched(
    origin: &Origin,
    limits: Limits,
    watch: &super::input::ReadWatch,
) -> Result<SourceInfo, MediaError> {
    // Whatever libav made of bytes a store failed to give, the store's failure is the reason.
    let probed = probe_inner(origin, limits, watch);
    match origin.failure() {
        Some(failed) => Err(failed),
        None => probed,
    }
}

fn probe_inner(
    origin: &Origin,
    limits: Limits,
    watch: &super::input::ReadWatch,
) -> Result<SourceInfo, MediaError> {
    let size_bytes = origin.size()?;
    if size_bytes == 0 {
        return Err(MediaError::Empty);
    }
    if size_bytes > limits.max_bytes {
        return Err(MediaError::TooLarge {
            actual: size_bytes,
            limit: limits.max_bytes,
        });
    }
    let layout = super::input::mp4_layout(origin).unwrap_or_default();
    if let Some(missing) = layout.shortfall {
        return Err(MediaError::Truncated(format!(
            "it ends {missing} bytes short of what its MP4 boxes declare; was the upload cut short?"
        )));
    }
    let mut input = super::input::open_origin(origin, watch)?;
    let mut video = main_video(&input).map(|s| video_info(&s)).transpose()?;
    let audio = input
        .streams()
        .filter(|s| s.parameters().medium() == media::Type::Audio)
        .map(|s| audio_info(&s))
        .collect::<Result<Vec<_>, _>>()?;
    if video.is_none() && audio.is_empty() {
        return Err(MediaError::NoMedia);
    }
    let wanted: Vec<usize> = video
        .iter()
        .map(|v| v.stream_index)
        .chain(audio.iter().map(|a| a.stream_index))
        .collect();
    // SAFETY: reading a plain field of the open format context.
    let guessed = unsafe { (*input.as_ptr()).duration_estimation_method }
        == ff::ffi::AVDurationEstimationMethod::AVFMT_DURATION_FROM_BITRATE;
    let measured = duration_of(&input, &wanted);
    let mut duration_seconds = measured.unwrap_or(0.0);
    let scanned = guessed
        || layout.fragmented
        || measured.is_none()
        || duration_seconds.is_nan()
        || duration_seconds <= 0.0;
    if scanned {
        // Raw streams and some live recordings carry no duration, or only a guess from the bit
        // rate, a fragmented MP4's is in its fragments, and a container's own may span
        // subtitles that outlast the picture and sound: read every packet once (no decoding)
        // to measure it.
        let ends = scan_ends(&mut input, &wanted);
        duration_seconds = ends.iter().map(|(_, end)| *end).fold(0.0, f64::max);
        if let Some(v) = video.as_mut() {
            let end = ends.iter().find(|(s, _)| *s == v.stream_index);
            v.duration_seconds = end.map_or(0.0, |(_, e)| *e);
        }
    }
    if duration_seconds.is_nan() || duration_seconds <= 0.0 {
        return Err(MediaError::UnknownDuration);
    }
    if duration_seconds > limits.max_seconds as f64 {
        return Err(MediaError::TooLong {
            actual: format!("{duration_seconds:.0} s"),
            limit: format!("{} s", limits.max_seconds),
        });
    }
    if let Some(v) = video.as_mut().filter(|v| v.duration_seconds <= 0.0) {
        v.duration_seconds = duration_seconds;
    }
    if !scanned {
        check_tail(&mut input, duration_seconds)?;
    }
    if let Some(v) = video.as_mut() {
        v.timestamp_frame_rate = rate(super::cadence::steady_frame_rate(
            &mut input,
            v.stream_index,
        ));
    }
    Ok(SourceInfo {
        container: input.format().name().to_string(),
        duration_seconds,
        size_bytes,
        video,
        audio,
    })
}

/// The video stream a person means. Cover art and still images are left out; then the stream
/// with the most frames wins, and only then the one with the most pixels: a phone's "motion
/// photo" keeps a larger 2-frame still track beside the clip itself.
fn main_video(input: &format::context::Input) -> Option<format::stream::Stream<'_>> {
    let still = ff::ffi::AV_DISPOSITION_ATTACHED_PIC | ff::ffi::AV_DISPOSITION_STILL_IMAGE;
    let container_seconds = input.duration() as f64 / f64::from(ff::ffi::AV_TIME_BASE);
    input
        .streams()
        .filter(|s| s.parameters().medium() == media::Type::Video)
        // SAFETY: reading a plain field of the stream.
        .filter(|s| unsafe { (*s.as_ptr()).disposition } & still == 0)
        .max_by_key(|s| {
            let frames = match s.frames() {
                n if n > 0 => n,
                // Containers that do not count frames: rate × length.
                _ => {
                    let seconds = Some(stream_seconds(s))
                        .filter(|d| *d > 0.0)
                        .unwrap_or(container_seconds);
                    (rate(s.avg_frame_rate()) * seconds).round() as i64
                }
            };
            let p = s.parameters();
            // SAFETY: reading plain fields of the stream's codec parameters.
            let pixels =
                unsafe { i64::from((*p.as_ptr()).width) * i64::from((*p.as_ptr()).height) };
            (frames, pixels)
        })
}

/// An unopened decoder context for `stream`, refused when libav has no decoder for its codec.
fn decoder_for(
    stream: &format::stream::Stream,
    kind: &'static str,
) -> Result<ff::decoder::Decoder, MediaError> {
    let id = stream.parameters().id();
    if ff::decoder::find(id).is_none() {
        let codec = id.name().into();
        return Err(MediaError::NoDecoder { kind, codec });
    }
    codec::context::Context::from_parameters(stream.parameters())
        .map(|c| c.decoder())
        .map_err(|e| MediaError::Unreadable(e.to_string()))
}

fn video_info(stream: &format::stream::Stream) -> Result<VideoInfo, MediaError> {
    let params = stream.parameters();
    let id = params.id();
    let ctx = decoder_for(stream, "video")?
        .video()
        .map_err(|e| MediaError::Unreadable(e.to_string()))?;
    let (width, height) = (ctx.width(), ctx.height());
    if width == 0 || height == 0 {
        return Err(MediaError::Unreadable(
            "the video has no picture size".into(),
        ));
    }
    let sar = super::aspect::of_stream(stream, ctx.aspect_ratio());
    let rotation = rotation_of(stream);
    let shown_width = (f64::from(width) * f64::from(sar)).round().max(2.0) as u32;
    let (display_width, display_height) = if rotation % 180 == 90 {
        (height, shown_width)
    } else {
        (shown_width, height)
    };
    let format = ctx.format();
    // SAFETY: reading plain fields of the codec parameters / the static pixel descriptor.
    let (field_order, bit_depth) = unsafe {
        let field_order = (*params.as_ptr()).field_order;
        let desc = ff::ffi::av_pix_fmt_desc_get(format.into());
        let depth = if desc.is_null() {
            8
        } else {
            (*desc).comp[0].depth as u32
        };
        (field_order, depth)
    };
    use ff::ffi::AVFieldOrder::*;
    let transfer = match ctx.color_transfer_characteristic() {
        ff::color::TransferCharacteristic::SMPTE2084 => Transfer::Pq,
        ff::color::TransferCharacteristic::ARIB_STD_B67 => Transfer::Hlg,
        _ => Transfer::Sdr,
    };
    Ok(VideoInfo {
        stream_index: stream.index(),
        codec: id.name().into(),
        duration_seconds: stream_seconds(stream),
        coded_width: width,
        coded_height: height,
        display_width,
        display_height,
        rotation,
        sample_aspect_ratio: format!("{}:{}", sar.numerator(), sar.denominator()),
        avg_frame_rate: rate(stream.avg_frame_rate()),
        real_frame_rate: rate(stream.rate()),
        pixel_format: format.descriptor().map_or("unknown", |d| d.name()).into(),
        bit_depth,
        transfer,
        interlaced: matches!(
            field_order,
            AV_FIELD_TT | AV_FIELD_BB | AV_FIELD_TB | AV_FIELD_BT
        ),
        timestamp_frame_rate: 0.0,
    })
}

fn audio_info(stream: &format::stream::Stream) -> Result<AudioInfo, MediaError> {
    let id = stream.parameters().id();
    let ctx = decoder_for(stream, "audio")?
        .audio()
        .map_err(|e| MediaError::Unreadable(e.to_string()))?;
    Ok(AudioInfo {
        stream_index: stream.index(),
        codec: id.name().into(),
        channels: ctx.channels(),
        sample_rate: ctx.rate(),
    })
}

/// Degrees clockwise to turn the picture upright, from the display matrix (as ffmpeg's CLI does).
fn rotation_of(stream: &format::stream::Stream) -> u32 {
    let Some(matrix) = stream
        .side_data()
        .find(|d| d.kind() == codec::packet::side_data::Type::DisplayMatrix)
    else {
        return 0;
    };
    let data = matrix.data();
    if data.len() < 36 {
        return 0;
    }
    // SAFETY: the display matrix is nine int32 values; libav reads them unaligned-safe.
    let degrees = unsafe { ff::ffi::av_display_rotation_get(data.as_ptr().cast()) };
    if degrees.is_nan() {
        return 0;
    }
    let clockwise = (-degrees).round() as i64;
    (((clockwise % 360) + 360) % 360 + 45) as u32 / 90 * 90 % 360
}

fn rate(r: impl Into<f64>) -> f64 {
    let r: f64 = r.into();
    if r.is_finite() {
        (r * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}
