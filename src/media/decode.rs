//! The shared video decode of a pass: decoder → pre chain (deinterlace, rotate, tone-map,
//! fixed rate, padded to the source's length), each frame handed to every rendition's queue.

use std::sync::{Arc, mpsc};

use ffmpeg_next::{self as ff, Packet, Rational, codec, frame, picture};

use super::MediaError;
use super::filters::Chain;
use super::pass::PassSpec;
use super::source::VideoInfo;

/// The shared video decode: decoder → pre chain (deinterlace, rotate, tone-map, fixed rate).
pub(super) struct VideoDecode {
    pub(super) stream: usize,
    decoder: ff::decoder::Video,
    time_base: Rational,
    offset: i64,
    fps: Rational,
    chain: Option<Chain>,
    /// Shape of the frames the chain was built for; a change rebuilds it.
    chain_input: (u32, u32, ff::format::Pixel),
    /// End of the latest decoded frame (its pts plus duration), where the input stops.
    end_pts: i64,
    /// The source's whole length (in `time_base`): a video that ends sooner holds its last
    /// picture until then.
    pad_to: i64,
    /// Packets the decoder refused.
    pub(super) damaged: u64,
    info: VideoInfo,
    /// Output frames to hand on: [start, end) of the chunk (all: 0..u64::MAX).
    frames: std::ops::Range<i64>,
    /// A frame at or past `frames.end` came out: the chunk is complete.
    past_end: bool,
}

/// Reads the pass's CPU clocks before the decoder joins its frame threads (see `cpu`).
impl Drop for VideoDecode {
    fn drop(&mut self) {
        super::cpu::checkpoint();
    }
}

impl VideoDecode {
    pub(super) fn new(
        stream: &ff::format::stream::Stream,
        spec: &PassSpec,
        to_stream: &dyn Fn(Rational) -> i64,
    ) -> Result<Self, MediaError> {
        let mut context = codec::context::Context::from_parameters(stream.parameters())
            .map_err(|e| MediaError::Decode(e.to_string()))?;
        context.set_threading(codec::threading::Config {
            kind: codec::threading::Type::Frame,
            count: 0,
            ..Default::default()
        });
        let decoder = context
            .decoder()
            .video()
            .map_err(|e| MediaError::Decode(format!("video decoder: {e}")))?;
        Ok(Self {
            stream: stream.index(),
            decoder,
            time_base: stream.time_base(),
            offset: to_stream(stream.time_base()),
            fps: spec.fps,
            chain: None,
            chain_input: (0, 0, ff::format::Pixel::None),
            end_pts: 0,
            pad_to: (spec.info.duration_seconds / f64::from(stream.time_base())).round() as i64,
            damaged: 0,
            info: spec.info.video.clone().expect("video stream probed"),
            frames: spec
                .frames
                .map_or(0..i64::MAX, |r| clamp(r.start)..clamp(r.end)),
            past_end: false,
        })
    }

    /// The chunk's last frame is out: nothing more of the source is needed.
    pub(super) fn past_end(&self) -> bool {
        self.past_end
    }

    /// Decodes a packet (or flushes on `None`) and sends resulting frames to every live queue.
    pub(super) fn decode(
        &mut self,
        packet: Option<&Packet>,
        senders: &mut [Option<mpsc::SyncSender<Arc<frame::Video>>>],
    ) -> Result<(), MediaError> {
        let sent = match packet {
            Some(p) => self.decoder.send_packet(p),
            None => self.decoder.send_eof(),
        };
        if let Err(e) = sent {
            tracing::debug!("skipping a damaged video packet: {e}");
            self.damaged += u64::from(packet.is_some());
        }
        let mut decoded = frame::Video::empty();
        while self.decoder.receive_frame(&mut decoded).is_ok() {
            let pts = match decoded.timestamp() {
                Some(t) => t - self.offset,
                None => self.end_pts, // raw streams: right after the previous frame
            };
            let duration = match decoded.packet().duration {
                d if d > 0 => d,
                _ => (f64::from(self.fps.invert()) / f64::from(self.time_base)).round() as i64,
            };
            self.end_pts = self.end_pts.max(pts + duration);
            decoded.set_pts(Some(pts));
            let shape = (decoded.width(), decoded.height(), decoded.format());
            if self.chain.is_none() || shape != self.chain_input {
                if self.chain.is_some() {
                    tracing::warn!("the source changes picture size or format mid-stream");
                }
                let start = self.frames.start as f64 / f64::from(self.fps);
                self.chain = Some(
                    Chain::video(&self.info, &decoded, self.time_base, self.fps, start)
                        .map_err(|e| MediaError::Decode(format!("video filters: {e}")))?,
                );
                self.chain_input = shape;
            }
            let chain = self.chain.as_mut().expect("built above");
            chain
                .push(&decoded)
                .map_err(|e| MediaError::Decode(format!("video filters: {e}")))?;
            self.fan_out(senders);
        }
        if packet.is_none() {
            if let Some(chain) = self.chain.as_mut() {
                // Padded to the source's length, or to the chunk's end if that comes first.
                let end = (self.frames.end as f64 / f64::from(self.fps) / f64::from(self.time_base))
                    .round() as i64;
                let _ = chain.close(self.end_pts.max(self.pad_to).min(end));
            }
            self.fan_out(senders);
        }
        Ok(())
    }

    fn fan_out(&mut self, senders: &mut [Option<mpsc::SyncSender<Arc<frame::Video>>>]) {
        let Some(chain) = self.chain.as_mut() else {
            return;
        };
        loop {
            let mut filtered = frame::Video::empty();
            if !chain.pull(&mut filtered) {
                break;
            }
            let pts = filtered.pts().unwrap_or(0);
            if pts < self.frames.start {
                continue; // the lead-in from the key frame before the chunk
            }
            if pts >= self.frames.end {
                self.past_end = true;
                continue;
            }
            // Source picture types would force x264's frame types: let x264 place its own GOP.
            filtered.set_kind(picture::Type::None);
            let shared = Arc::new(filtered);
            for slot in senders.iter_mut() {
                // A closed queue means that rendition failed: stop feeding it.
                if slot
                    .as_ref()
                    .is_some_and(|tx| tx.send(shared.clone()).is_err())
                {
                    *slot = None;
                }
            }
        }
    }

    /// Some reason when far less video was decoded than the probe promised (a damaged file).
    /// Measured from the container's start, as the probe's duration is when the stream has
    /// none of its own; the decoded end, not the output's (padded to the audio's end).
    pub(super) fn ended_early(&self) -> Option<String> {
        if self.past_end {
            return None; // a chunk that ends before the source does
        }
        // The probe always fills the video's own duration (the container's when it has none).
        let expected = self.info.duration_seconds;
        let tolerance = (expected * 0.05).max(1.0);
        let decoded = self.end_pts as f64 * f64::from(self.time_base);
        (decoded + tolerance < expected)
            .then(|| format!("video stops at {decoded:.1} s of {expected:.1} s"))
    }
}

fn clamp(frame: u64) -> i64 {
    i64::try_from(frame).unwrap_or(i64::MAX)
}
