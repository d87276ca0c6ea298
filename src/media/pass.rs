//! One decode pass: demux and decode the source once, fan every frame out to a set of video
//! renditions encoding in parallel threads (a small one scaled from a larger one's frames), and
//! encode the audio rendition alongside.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use ffmpeg_next::{self as ff, Packet, Rational, frame};

use super::MediaError;
use super::audio::AudioEncoder;
use super::cpu::PassCpu;
use super::decode::VideoDecode;
use super::input;
use super::ladder::VideoRendition;
use super::mux::{Part, SegmentType, Segmenting, segment_frames};
use super::source::SourceInfo;
use super::video::{RateControl, RenditionEncoder, VideoSettings};

/// Decoded frames queued per rendition: enough to smooth jitter, small enough for 4K memory.
const QUEUE_FRAMES: usize = 4;

/// What a pass produces and how fast.
pub struct PassSpec {
    /// The source, read in place (a file, or a bucket's object by ranged reads).
    pub source: input::Origin,
    pub info: SourceInfo,
    pub video: Vec<VideoTarget>,
    pub audio: Option<AudioTarget>,
    pub preset: String,
    pub fps: Rational,
    pub segmenting: Segmenting,
    pub audio_kbps: u32,
    /// libx264 threads per encoder (0 = libx264's own choice).
    pub encoder_threads: usize,
    pub rate_control: RateControl,
    /// Set by the caller to stop between packets.
    pub cancel: Arc<AtomicBool>,
    /// The chunk of the video renditions to make, in output frames (`n` sits at n / fps);
    /// `None`: all of it. Segments are numbered by their place in the whole rendition.
    pub frames: Option<FrameRange>,
}

/// Output frames [start, end) of a chunk: `start` a multiple of the segment length in frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FrameRange {
    pub index: u32,
    pub start: u64,
    pub end: u64,
}

pub struct VideoTarget {
    pub rendition: VideoRendition,
    pub dir: PathBuf,
    /// Frames encoded so far, read by the progress reporter.
    pub frames: Arc<AtomicU64>,
}

pub struct AudioTarget {
    pub dir: PathBuf,
    pub frames: Arc<AtomicU64>,
}

/// Per-target results: the RFC 6381 codecs string of each video rendition, and the audio's.
pub struct PassOutcome {
    pub video: Vec<Result<String, MediaError>>,
    pub audio: Option<Result<(), MediaError>>,
    /// Packets of the source the decoders could not decode (skipped, as players do).
    pub damaged: DamagedPackets,
    /// CPU seconds the pass's threads used, libav's and libx264's own included (see `cpu`).
    pub cpu_seconds: f64,
}

/// Packets a pass's decoders refused, per stream: a damaged source the output shows as
/// glitches or skips, though the pass still succeeds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DamagedPackets {
    pub video: u64,
    pub audio: u64,
}

impl DamagedPackets {
    pub fn is_empty(self) -> bool {
        self == Self::default()
    }

    /// The larger count of each stream: every pass of a job decodes the same source, so the
    /// job's damage is the most any one pass met, not their sum.
    pub fn max(self, other: Self) -> Self {
        Self {
            video: self.video.max(other.video),
            audio: self.audio.max(other.audio),
        }
    }
}

impl PassOutcome {
    fn all_failed(spec: &PassSpec, error: impl Fn() -> MediaError) -> Self {
        Self {
            video: spec.video.iter().map(|_| Err(error())).collect(),
            audio: spec.audio.as_ref().map(|_| Err(error())),
            damaged: DamagedPackets::default(),
            cpu_seconds: 0.0,
        }
    }
}

/// Runs the pass to the end (or to cancellation). Never panics on bad input: every failure is
/// reported per target.
pub fn run(spec: PassSpec) -> PassOutcome {
    let meter = PassCpu::new();
    let enlisted = meter.enlist();
    let mut outcome =
        run_inner(&spec, &meter).unwrap_or_else(|e| PassOutcome::all_failed(&spec, || e.clone()));
    drop(enlisted);
    outcome.cpu_seconds = meter.seconds();
    tracing::debug!(
        cpu_seconds = outcome.cpu_seconds,
        threads = meter.threads(),
        "decode pass CPU time"
    );
    outcome
}

fn run_inner(spec: &PassSpec, meter: &Arc<PassCpu>) -> Result<PassOutcome, MediaError> {
    let mut input = input::open_origin(&spec.source, &input::ReadWatch::default())?;
    let offset_us = input::start_micros(&input);
    if let Some(range) = spec
        .frames
        .filter(|r| r.start > 0 && !spec.video.is_empty())
    {
        // To the last key frame at or before the chunk's start; the frames before it are
        // decoded and dropped.
        let at = offset_us + (range.start as f64 / f64::from(spec.fps) * 1e6) as i64;
        input
            .seek(at, ..at)
            .map_err(|e| MediaError::Decode(format!("seeking to the chunk at {at} µs: {e}")))?;
    }
    let to_stream = |tb: Rational| ff::Rescale::rescale(&offset_us, ff::rescale::TIME_BASE, tb);

    let video_stream = spec
        .info
        .video
        .as_ref()
        .filter(|_| !spec.video.is_empty())
        .map(|v| v.stream_index);
    let audio_stream = spec
        .audio
        .as_ref()
        .and_then(|_| spec.info.audio.first())
        .map(|a| a.stream_index);

    let mut audio = match (&spec.audio, audio_stream) {
        (Some(target), Some(index)) => {
            let stream = input.stream(index).ok_or_else(|| gone(index))?;
            let shift = if spec.info.video.is_some() {
                let delay = super::video::reorder_delay_frames(&spec.preset);
                delay * 48_000 * i64::from(spec.fps.denominator()) / i64::from(spec.fps.numerator())
            } else {
                0
            };
            Some(AudioEncoder::new(
                &stream,
                to_stream(stream.time_base()),
                target.dir.clone(),
                spec.segmenting.clone(),
                spec.audio_kbps,
                shift,
                // Every rendition runs the source's whole length: audio that ends before the
                // video is padded with silence (and video that ends first, with its last
                // picture), so players see one duration.
                spec.info
                    .video
                    .is_some()
                    .then_some(spec.info.duration_seconds),
            )?)
        }
        _ => None,
    };
    let mut video = match video_stream {
        Some(index) => Some(VideoDecode::new(
            &input.stream(index).ok_or_else(|| gone(index))?,
            spec,
            &to_stream,
        )?),
        None => None,
    };
    for stream in input.streams() {
        if Some(stream.index()) != video_stream && Some(stream.index()) != audio_stream {
            // SAFETY: setting the discard flag of a stream we own, before reading packets.
            unsafe { (*stream.as_ptr().cast_mut()).discard = ff::ffi::AVDiscard::AVDISCARD_ALL };
        }
    }

    let mut segmenting = spec.segmenting.clone();
    let per_segment = u64::from(segment_frames(spec.fps, segmenting.seconds));
    segmenting.part = spec.frames.map(|range| Part {
        index: range.index,
        first_segment: (range.start / per_segment) as u32,
        // The last part's end is open (`u64::MAX`).
        end_segment: u32::try_from(range.end.div_ceil(per_segment)).unwrap_or(u32::MAX),
        // fMP4 parts after the first take their fragments' decode time (tfdt) from their
        // first presentation time (the mov muxer's `frag_discont` with an edit list), which
        // is the frame's place on the timeline unshifted.
        shift: match (segmenting.kind, range.index) {
            (SegmentType::Fmp4, 1..) => 0,
            _ => super::video::reorder_delay_frames(&spec.preset),
        },
    });
    let settings = VideoSettings {
        preset: spec.preset.clone(),
        fps: spec.fps,
        segmenting,
        threads: spec.encoder_threads,
        rate_control: spec.rate_control,
    };
    let span = tracing::Span::current();
    let mut audio_result = None;
    let mut damaged = DamagedPackets::default();
    // Each rendition is fed by the decode, or by a rendition of the pass twice its size (its
    // scaled frames: cascaded scaling reads a quarter of the pixels).
    let sizes: Vec<_> = spec
        .video
        .iter()
        .map(|t| (t.rendition.width, t.rendition.height))
        .collect();
    let feeds = feeds(&sizes);
    let video_results = std::thread::scope(|scope| {
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in &spec.video {
            let (tx, rx) = mpsc::sync_channel::<Arc<frame::Video>>(QUEUE_FRAMES);
            senders.push(Some(tx));
            receivers.push(rx);
        }
        let mut children: Vec<Vec<_>> = spec.video.iter().map(|_| Vec::new()).collect();
        for (i, feed) in feeds.iter().enumerate() {
            if let Some(parent) = *feed {
                children[parent].push(senders[i].take().expect("one feed each"));
            }
        }
        let mut handles = Vec::new();
        for ((target, rx), children) in spec.video.iter().zip(receivers).zip(children) {
            let (rendition, dir) = (target.rendition.clone(), target.dir.clone());
            let (settings, span, frames) = (settings.clone(), span.clone(), target.frames.clone());
            handles.push(scope.spawn(move || {
                let _cpu = meter.enlist();
                let _entered = span.enter();
                encode_rendition(
                    RenditionEncoder::new(rendition, dir, settings),
                    rx,
                    children,
                    &frames,
                )
            }));
        }

        let read = demux(
            &mut input,
            spec,
            video.as_mut(),
            &mut audio,
            &mut senders,
            audio_stream,
        );
        senders.clear(); // closes every queue: encoders flush and finish
        let short = video.as_ref().and_then(|v| v.ended_early());
        let read = match (read, &short) {
            (Ok(()), Some(reason)) => Err(MediaError::Truncated(reason.clone())),
            (read, _) => read,
        };
        damaged = DamagedPackets {
            video: video.as_ref().map_or(0, |v| v.damaged),
            audio: audio.as_ref().map_or(0, |a| a.damaged),
        };
        audio_result = audio.take().map(|a| {
            let frames = read.clone().and_then(|()| a.finish())?;
            if let Some(target) = &spec.audio {
                target.frames.store(frames, Ordering::Relaxed);
            }
            Ok(())
        });
        let (results, fed): (Vec<_>, Vec<_>) = handles
            .into_iter()
            .map(|h| {
                let (encoded, fed) = h.join().unwrap_or_else(|_| {
                    let crashed = MediaError::Encode("the encoder thread crashed".into());
                    (Err(crashed), false)
                });
                (read.clone().and(encoded), fed)
            })
            .unzip();
        orphaned(results, &fed, &feeds)
    });
    if !damaged.is_empty() {
        tracing::warn!(
            video_packets = damaged.video,
            audio_packets = damaged.audio,
            "the source is damaged: {} video and {} audio packets could not be decoded and were skipped",
            damaged.video,
            damaged.audio
        );
    }
    Ok(PassOutcome {
        video: video_results,
        audio: spec.audio.as_ref().map(|_| {
            audio_result
                .unwrap_or_else(|| Err(MediaError::Decode("the audio stream is missing".into())))
        }),
        damaged,
        cpu_seconds: 0.0,
    })
}

/// Encodes every frame that arrives on `rx`, handing its scaled frames to `children` first. A
/// failed encode stops encoding, not the feed: the smaller renditions go on. The flag is false
/// when the feed stopped early (a frame could not be scaled).
fn encode_rendition(
    mut encoder: RenditionEncoder,
    rx: mpsc::Receiver<Arc<frame::Video>>,
    mut children: Vec<mpsc::SyncSender<Arc<frame::Video>>>,
    frames: &AtomicU64,
) -> (Result<String, MediaError>, bool) {
    let mut failed = None;
    for source in rx {
        let picture = match encoder.picture(&source) {
            Ok(picture) => picture,
            Err(e) => return (Err(e), false),
        };
        // A closed queue means that rendition failed: stop feeding it.
        children.retain(|tx| tx.send(picture.clone()).is_ok());
        if failed.is_none() {
            match encoder.encode(&picture) {
                Ok(()) => {
                    frames.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => failed = Some(e),
            }
        }
        if failed.is_some() && children.is_empty() {
            break; // nothing left to feed: closing the queue stops the decode feeding this one
        }
    }
    drop(children); // the smaller renditions flush while this one does
    match failed {
        Some(e) => (Err(e), true),
        None => (encoder.finish(), true),
    }
}

/// For each video target, the index of the target it scales its frames from: the smallest one
/// at least twice its size in both dimensions (a 2:1 bicubic step loses next to nothing: 240p
/// from 480p frames measured SSIM 0.94418 against 0.94427 from 1080p, where 240p through every
/// rung lost 0.0008; see README "Benchmark"), or `None` for the decoded source.
fn feeds(sizes: &[(u32, u32)]) -> Vec<Option<usize>> {
    let size = |i: usize| sizes[i];
    (0..sizes.len())
        .map(|i| {
            let (w, h) = size(i);
            (0..sizes.len())
                // 2 × 426 = 852 < 854: widths are rounded to even numbers.
                .filter(|&j| {
                    let (pw, ph) = size(j);
                    pw + 2 >= 2 * w && ph + 2 >= 2 * h
                })
                .min_by_key(|&j| {
                    let (pw, ph) = size(j);
                    (u64::from(pw) * u64::from(ph), j)
                })
        })
        .collect()
}

/// A rendition whose feed stopped early (`fed[i]` false for the one feeding it, or for any
/// before it) got only part of the frames: it fails too.
fn orphaned(
    mut results: Vec<Result<String, MediaError>>,
    fed: &[bool],
    feeds: &[Option<usize>],
) -> Vec<Result<String, MediaError>> {
    let mut fed = fed.to_vec();
    for _ in 0..feeds.len() {
        for (i, feed) in feeds.iter().enumerate() {
            if let Some(p) = *feed
                && !fed[p]
            {
                fed[i] = false;
                if results[i].is_ok() {
                    results[i] = Err(MediaError::Encode(
                        "the larger rendition it is scaled from stopped early".into(),
                    ));
                }
            }
        }
    }
    results
}

/// Reads every packet, feeding the video decoder (and from it, the renditions' queues) and the
/// audio encoder. A read error past the start is treated as the end of a damaged file.
fn demux(
    input: &mut ff::format::context::Input,
    spec: &PassSpec,
    mut video: Option<&mut VideoDecode>,
    audio: &mut Option<AudioEncoder>,
    senders: &mut [Option<mpsc::SyncSender<Arc<frame::Video>>>],
    audio_stream: Option<usize>,
) -> Result<(), MediaError> {
    let audio_frames = spec.audio.as_ref().map(|a| a.frames.clone());
    loop {
        if spec.cancel.load(Ordering::Relaxed) {
            return Err(MediaError::Cancelled);
        }
        if senders.iter().all(Option::is_none) && audio.is_none() {
            return Ok(());
        }
        let mut packet = Packet::empty();
        match packet.read(input) {
            Ok(()) => {}
            Err(ff::Error::Eof) => break,
            // A store that failed is no damaged tail: the pass fails rather than end short.
            Err(_) if spec.source.failure().is_some() => {
                return Err(spec.source.failure().expect("checked"));
            }
            Err(e) => {
                tracing::warn!("reading the source stopped early: {e}");
                break;
            }
        }
        if let Some(v) = video.as_deref_mut().filter(|v| v.stream == packet.stream()) {
            v.decode(Some(&packet), senders)?;
            if v.past_end() && audio.is_none() {
                return Ok(());
            }
        } else if let Some(a) = audio
            .as_mut()
            .filter(|_| Some(packet.stream()) == audio_stream)
        {
            a.push(&packet)?;
            if let Some(frames) = &audio_frames {
                frames.store(a.frames, Ordering::Relaxed);
            }
        }
    }
    if let Some(v) = video {
        v.decode(None, senders)?;
    }
    Ok(())
}

/// The source no longer has the stream its probe found (replaced since it was probed).
fn gone(index: usize) -> MediaError {
    MediaError::Decode(format!(
        "the source has no stream {index} any more: it was replaced after it was probed; \
         trigger the video again"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendition_scales_from_one_at_least_twice_its_size() {
        // A tier's pass, smallest first as plans list them: 240p from 480p, the others from
        // the source (480p is only 1.33 × 360p).
        let tier = [(426, 240), (640, 360), (854, 480)];
        assert_eq!(feeds(&tier), [Some(2), None, None]);
        // Every rung in one decode: 480p from the 1080p rendition (the source's own frames on
        // a 1080p source), 360p from 720p, 240p from 480p.
        let all = [
            (1920, 1080),
            (1280, 720),
            (854, 480),
            (640, 360),
            (426, 240),
        ];
        assert_eq!(feeds(&all), [None, None, Some(0), Some(1), Some(2)]);
        // Portrait: both dimensions count.
        assert_eq!(feeds(&[(240, 426), (480, 854)]), [Some(1), None]);
        assert_eq!(feeds(&[(1280, 720), (1920, 1080)]), [None, None]);
    }

    #[test]
    fn a_rendition_fails_when_the_one_it_is_scaled_from_stops_early() {
        let ok = |s: &str| Ok(s.to_string());
        let failed = || Err(MediaError::Encode("x264".into()));
        let feeds = [None, Some(3), None, Some(2)];
        // 2 failed to encode but fed 3 every frame: 3 (and 1, fed by 3) are fine.
        let out = orphaned(
            vec![ok("a"), ok("b"), failed(), ok("d")],
            &[true; 4],
            &feeds,
        );
        assert!(out[0].is_ok() && out[1].is_ok() && out[2].is_err() && out[3].is_ok());
        // 2 stopped feeding: 3 and 1 got part of the frames.
        let fed = [true, true, false, true];
        let out = orphaned(vec![ok("a"), ok("b"), failed(), ok("d")], &fed, &feeds);
        assert!(out[0].is_ok());
        assert!(out[3].is_err(), "fed by the one that stopped");
        assert!(
            out[1].is_err(),
            "fed by one that was fed by the one that stopped"
        );
    }
}
