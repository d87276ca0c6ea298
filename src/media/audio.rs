//! The audio rendition: decode once, resample to 48 kHz stereo, encode AAC-LC into HLS.

use std::path::PathBuf;

use ffmpeg_next::{self as ff, Dictionary, Packet, Rational, codec, format, frame};

use super::MediaError;
use super::filters::Chain;
use super::mux::{HlsOutput, Segmenting};

const RATE: i32 = 48_000;

pub struct AudioEncoder {
    decoder: ff::decoder::Audio,
    /// Timestamps of packets and decoded frames (the input stream's time base).
    time_base: Rational,
    /// Subtracted from every timestamp so audio and video share a zero.
    offset: i64,
    dir: PathBuf,
    segmenting: Segmenting,
    kbps: u32,
    /// Added to every output timestamp (in 1/48000 s) to match the video's start.
    shift: i64,
    /// Seconds the audio is padded to with silence if it ends sooner (the video's end).
    pad_to: Option<f64>,
    open: Option<(Chain, ff::encoder::Audio, HlsOutput)>,
    /// AAC frames written, for progress.
    pub frames: u64,
    /// Packets the decoder refused.
    pub damaged: u64,
}

impl AudioEncoder {
    pub fn new(
        stream: &format::stream::Stream,
        offset: i64,
        dir: PathBuf,
        segmenting: Segmenting,
        kbps: u32,
        shift: i64,
        pad_to: Option<f64>,
    ) -> Result<Self, MediaError> {
        let decoder = codec::context::Context::from_parameters(stream.parameters())
            .and_then(|c| c.decoder().audio())
            .map_err(|e| MediaError::Decode(format!("audio decoder: {e}")))?;
        Ok(Self {
            decoder,
            time_base: stream.time_base(),
            offset,
            dir,
            segmenting,
            kbps,
            shift,
            pad_to,
            open: None,
            frames: 0,
            damaged: 0,
        })
    }

    /// Decodes one packet of the audio stream. Damaged packets are skipped, as players do.
    pub fn push(&mut self, packet: &Packet) -> Result<(), MediaError> {
        if let Err(e) = self.decoder.send_packet(packet) {
            tracing::debug!("skipping a damaged audio packet: {e}");
            self.damaged += 1;
            return Ok(());
        }
        self.receive_decoded()
    }

    /// Drains decoder, filter and encoder, and closes the playlist; returns the AAC frames
    /// written in all (the padding included).
    pub fn finish(mut self) -> Result<u64, MediaError> {
        let _ = self.decoder.send_eof();
        self.receive_decoded()?;
        let (mut chain, mut encoder, mut output) = self
            .open
            .take()
            .ok_or_else(|| MediaError::Decode("no audio could be decoded".into()))?;
        chain.flush().map_err(audio_error)?;
        self.frames += filter_and_encode(&mut chain, &mut encoder, &mut output, self.shift)?;
        encoder.send_eof().map_err(audio_error)?;
        write_packets(&mut encoder, &mut output, self.shift)?;
        output.finish()?;
        Ok(self.frames)
    }

    fn receive_decoded(&mut self) -> Result<(), MediaError> {
        let mut decoded = frame::Audio::empty();
        while self.decoder.receive_frame(&mut decoded).is_ok() {
            if self.open.is_none() {
                self.open = Some(self.start(&decoded)?);
            }
            let pts = decoded.timestamp().map(|t| t - self.offset);
            decoded.set_pts(pts);
            let (chain, encoder, output) = self.open.as_mut().expect("opened above");
            chain.push(&decoded).map_err(audio_error)?;
            self.frames += filter_and_encode(chain, encoder, output, self.shift)?;
        }
        Ok(())
    }

    fn start(
        &self,
        first: &frame::Audio,
    ) -> Result<(Chain, ff::encoder::Audio, HlsOutput), MediaError> {
        let codec = ff::encoder::find(codec::Id::AAC)
            .ok_or_else(|| MediaError::Encode("no AAC encoder".into()))?;
        let mut encoder = codec::context::Context::new_with_codec(codec)
            .encoder()
            .audio()
            .map_err(audio_error)?;
        let time_base = Rational::new(1, RATE);
        encoder.set_rate(RATE);
        encoder.set_channel_layout(ff::ChannelLayout::STEREO);
        encoder.set_format(format::Sample::F32(format::sample::Type::Planar));
        encoder.set_bit_rate(self.kbps as usize * 1000);
        encoder.set_time_base(time_base);
        encoder.set_flags(codec::Flags::GLOBAL_HEADER);
        let mut options = Dictionary::new();
        options.set("profile", "aac_low");
        let encoder = encoder.open_with(options).map_err(audio_error)?;
        let chain = Chain::audio(first, self.time_base, encoder.frame_size(), self.pad_to)
            .map_err(audio_error)?;
        let output = HlsOutput::create(&self.dir, &self.segmenting, &encoder, time_base)?;
        Ok((chain, encoder, output))
    }
}

/// Moves every frame the chain has ready through the encoder; returns how many.
fn filter_and_encode(
    chain: &mut Chain,
    encoder: &mut ff::encoder::Audio,
    output: &mut HlsOutput,
    shift: i64,
) -> Result<u64, MediaError> {
    let mut count = 0;
    let mut filtered = frame::Audio::empty();
    while chain.pull(&mut filtered) {
        encoder.send_frame(&filtered).map_err(audio_error)?;
        write_packets(encoder, output, shift)?;
        count += 1;
    }
    Ok(count)
}

fn write_packets(
    encoder: &mut ff::encoder::Audio,
    output: &mut HlsOutput,
    shift: i64,
) -> Result<(), MediaError> {
    let mut packet = Packet::empty();
    while encoder.receive_packet(&mut packet).is_ok() {
        packet.set_pts(packet.pts().map(|t| t + shift));
        packet.set_dts(packet.dts().map(|t| t + shift));
        output.write(&mut packet, Rational::new(1, RATE))?;
    }
    Ok(())
}

fn audio_error(e: ff::Error) -> MediaError {
    MediaError::Encode(format!("audio: {e}"))
}
