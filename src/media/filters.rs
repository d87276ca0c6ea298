//! libavfilter graphs: the shared video "pre" chain (deinterlace, rotate, tone-map, constant
//! frame rate) run once per decode, and the audio chain (resample to 48 kHz stereo AAC frames).

use ffmpeg_next::{self as ff, Rational, filter, frame};

use super::source::{Transfer, VideoInfo};

/// A buffer source → chain → buffer sink graph.
pub struct Chain {
    graph: filter::Graph,
}

impl Chain {
    fn build(source: &str, args: &str, spec: &str, sink: &str) -> Result<Self, ff::Error> {
        let mut graph = filter::Graph::new();
        graph.add(
            &filter::find(source).ok_or(ff::Error::FilterNotFound)?,
            "in",
            args,
        )?;
        graph.add(
            &filter::find(sink).ok_or(ff::Error::FilterNotFound)?,
            "out",
            "",
        )?;
        graph.output("in", 0)?.input("out", 0)?.parse(spec)?;
        Ok(Self { graph })
    }

    /// The video chain for a source whose decoded frames look like `first`, with timestamps in
    /// `time_base`, producing upright, progressive, SDR frames at exactly `fps`.
    pub fn video(
        info: &VideoInfo,
        first: &frame::Video,
        time_base: Rational,
        fps: Rational,
        start: f64,
    ) -> Result<Self, ff::Error> {
        let sar = first.aspect_ratio();
        let sar = if sar.numerator() > 0 {
            sar
        } else {
            Rational::new(1, 1)
        };
        let args = format!(
            "video_size={}x{}:pix_fmt={}:time_base={}/{}:pixel_aspect={}/{}",
            first.width(),
            first.height(),
            ff::ffi::AVPixelFormat::from(first.format()) as i32,
            time_base.numerator(),
            time_base.denominator(),
            sar.numerator(),
            sar.denominator(),
        );
        let mut chain = Self::build("buffer", &args, &video_spec(info, fps, start), "buffersink")?;
        chain.graph.validate()?;
        Ok(chain)
    }

    /// The audio chain: any input → 48 kHz stereo float-planar frames of `frame_size` samples
    /// (surround folded down at FFmpeg's `-ac 2` level), from time 0 (a late start is filled
    /// with silence), with gaps and overlaps in the timestamps smoothed out (`async`), and
    /// silence after its end up to `pad_to` seconds.
    pub fn audio(
        decoded: &frame::Audio,
        time_base: Rational,
        frame_size: u32,
        pad_to: Option<f64>,
    ) -> Result<Self, ff::Error> {
        let layout = if decoded.channel_layout().bits() != 0 {
            decoded.channel_layout()
        } else {
            ff::ChannelLayout::default(i32::from(decoded.channels()))
        };
        let args = format!(
            "time_base={}/{}:sample_rate={}:sample_fmt={}:channel_layout=0x{:x}",
            time_base.numerator(),
            time_base.denominator(),
            decoded.rate(),
            decoded.format().name(),
            layout.bits(),
        );
        let pad = pad_to.map_or(String::new(), |s| format!("apad=whole_dur={s:.6},"));
        // Folding more channels into two: swresample's ITU-R BS.775 matrix (centre and
        // surrounds at -3 dB, no LFE), scaled so that no output channel's coefficients sum
        // above 1 (`rematrix_maxval`), as `ffmpeg -ac 2` into 16-bit does: a full-scale 5.1
        // source stays within full scale (without it, float output sums to +7.7 dB).
        let spec = format!(
            "aresample=48000:async=1:first_pts=0:rematrix_maxval=1,{pad}\
             aformat=sample_fmts=fltp:sample_rates=48000:channel_layouts=stereo"
        );
        let mut chain = Self::build("abuffer", &args, &spec, "abuffersink")?;
        chain.graph.validate()?;
        chain.sink().sink().set_frame_size(frame_size);
        Ok(chain)
    }

    pub fn push(&mut self, frame: &ff::Frame) -> Result<(), ff::Error> {
        self.input().source().add(frame)
    }

    pub fn flush(&mut self) -> Result<(), ff::Error> {
        self.input().source().flush()
    }

    /// Ends the input at `pts` (the end of the last frame, not its start), so a frame-rate
    /// filter still emits that last frame.
    pub fn close(&mut self, pts: i64) -> Result<(), ff::Error> {
        self.input().source().close(pts)
    }

    fn input(&mut self) -> filter::Context {
        self.graph.get("in").expect("graph has an input")
    }

    /// Takes the next ready frame, if any, into `frame`.
    pub fn pull(&mut self, frame: &mut ff::Frame) -> bool {
        self.sink().sink().frame(frame).is_ok()
    }

    pub fn output_time_base(&mut self) -> Rational {
        self.sink().sink().time_base()
    }

    fn sink(&mut self) -> filter::Context {
        self.graph.get("out").expect("graph has an output")
    }
}

/// The pre-scale chain as filter text; `null` when the source needs nothing but a fixed rate.
fn video_spec(info: &VideoInfo, fps: Rational, start: f64) -> String {
    let mut steps: Vec<String> = Vec::new();
    if info.interlaced {
        steps.push("bwdif=mode=send_frame:deint=interlaced".into());
    }
    match info.rotation {
        90 => steps.push("transpose=clock".into()),
        180 => steps.push("hflip,vflip".into()),
        270 => steps.push("transpose=cclock".into()),
        _ => {}
    }
    let transfer_in = match info.transfer {
        Transfer::Pq => Some("smpte2084"),
        Transfer::Hlg => Some("arib-std-b67"),
        Transfer::Sdr => None,
    };
    if let Some(tin) = transfer_in {
        // Linearise, tone-map (Hable) into BT.709 and back to 8-bit limited-range 4:2:0.
        steps.push(format!(
            "zscale=tin={tin}:min=bt2020nc:pin=bt2020:rin=tv:t=linear:npl=100,format=gbrpf32le,\
             zscale=p=bt709,tonemap=tonemap=hable:desat=0,zscale=t=bt709:m=bt709:r=tv,format=yuv420p"
        ));
    }
    // From time 0 (or a chunk's start): a video that starts after the audio opens on its first
    // picture.
    steps.push(format!(
        "fps=fps={}/{}:round=near:start_time={start}",
        fps.numerator(),
        fps.denominator()
    ));
    steps.join(",")
}

/// The constant output rate. The stream's real base rate (r_frame_rate) when it is a broadcast
/// rate: phones record variable frame rate whose average (29.6) is not the rate they were
/// shooting at (30). Otherwise the average rate, or the rate the timestamps show. Never above
/// that shown rate: a container's hint of 60 for a 30 fps stream would write every frame twice.
/// Then divided by whole numbers until within `max_fps` (59.94 → 29.97 keeps the cadence) and
/// snapped to a broadcast rate when close.
pub fn output_frame_rate(info: &VideoInfo, max_fps: u32) -> Rational {
    // Slideshows run below 1 fps; they come out at 1 fps (the lowest whole rate).
    let valid = |r: &f64| (0.05..=1000.0).contains(r);
    let shown = Some(info.timestamp_frame_rate).filter(valid);
    let source = Some(info.real_frame_rate)
        .filter(|r| valid(r) && snap(*r).is_some())
        .or(Some(info.avg_frame_rate).filter(valid))
        .or(shown)
        .unwrap_or(30.0);
    let source = match shown {
        Some(shown) if source > shown * 1.1 => shown,
        _ => source,
    };
    let divisor = (source / f64::from(max_fps)).ceil().max(1.0);
    let fps = source / divisor;
    snap(fps).unwrap_or_else(|| Rational::new((fps.round() as i32).clamp(1, max_fps as i32), 1))
}

/// The broadcast rate within 0.5 % of `fps`, if any.
fn snap(fps: f64) -> Option<Rational> {
    const COMMON: [(i32, i32); 11] = [
        (15, 1),
        (24000, 1001),
        (24, 1),
        (25, 1),
        (30000, 1001),
        (30, 1),
        (48, 1),
        (50, 1),
        (60000, 1001),
        (60, 1),
        (120, 1),
    ];
    COMMON
        .into_iter()
        .map(|(n, d)| Rational::new(n, d))
        .map(|r| (r, (f64::from(r) - fps).abs() / fps))
        .filter(|(_, off)| *off < 0.005)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(r, _)| r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::source::Transfer;

    fn info(avg: f64, rotation: u32, interlaced: bool, transfer: Transfer) -> VideoInfo {
        VideoInfo {
            stream_index: 0,
            codec: "h264".into(),
            duration_seconds: 10.0,
            coded_width: 1920,
            coded_height: 1080,
            display_width: 1920,
            display_height: 1080,
            rotation,
            sample_aspect_ratio: "1:1".into(),
            avg_frame_rate: avg,
            real_frame_rate: avg,
            pixel_format: "yuv420p".into(),
            bit_depth: 8,
            transfer,
            interlaced,
            timestamp_frame_rate: 0.0,
        }
    }

    #[test]
    fn frame_rate_is_capped_by_whole_divisors_and_snapped() {
        let rate = |avg| output_frame_rate(&info(avg, 0, false, Transfer::Sdr), 60);
        assert_eq!(rate(29.97), Rational::new(30000, 1001));
        assert_eq!(rate(30.0), Rational::new(30, 1));
        assert_eq!(rate(120.0), Rational::new(60, 1));
        assert_eq!(rate(119.88), Rational::new(60000, 1001));
        assert_eq!(rate(29.1), Rational::new(29, 1), "odd VFR averages round");
        assert_eq!(rate(0.0), Rational::new(30, 1), "unknown falls back to 30");
        assert_eq!(
            rate(0.5),
            Rational::new(1, 1),
            "a slideshow is not sped up to 30"
        );
        let capped = output_frame_rate(&info(59.94, 0, false, Transfer::Sdr), 30);
        assert_eq!(capped, Rational::new(30000, 1001));
        // A phone's variable rate: the average dips, the base rate is what it shot at.
        let mut phone = info(22.69, 0, false, Transfer::Sdr);
        phone.real_frame_rate = 30.0;
        assert_eq!(output_frame_rate(&phone, 60), Rational::new(30, 1));
        // A container's odd time base as base rate: the average decides.
        phone.real_frame_rate = 1000.0;
        phone.avg_frame_rate = 29.6;
        assert_eq!(output_frame_rate(&phone, 60), Rational::new(30, 1));
        // A rate hint twice what the timestamps show: never more frames than the source has.
        let mut hinted = info(60.0, 0, false, Transfer::Sdr);
        hinted.timestamp_frame_rate = 29.97;
        assert_eq!(output_frame_rate(&hinted, 60), Rational::new(30000, 1001));
        hinted.timestamp_frame_rate = 59.94;
        assert_eq!(
            output_frame_rate(&hinted, 60),
            Rational::new(60, 1),
            "close enough"
        );
        // No rate in the container at all: the timestamps'.
        let mut unknown = info(0.0, 0, false, Transfer::Sdr);
        unknown.timestamp_frame_rate = 25.0;
        assert_eq!(output_frame_rate(&unknown, 60), Rational::new(25, 1));
    }

    #[test]
    fn chain_text_follows_the_source() {
        let fps = Rational::new(30, 1);
        assert_eq!(
            video_spec(&info(30.0, 0, false, Transfer::Sdr), fps, 0.0),
            "fps=fps=30/1:round=near:start_time=0"
        );
        let spec = video_spec(&info(25.0, 90, true, Transfer::Pq), fps, 0.0);
        assert!(spec.starts_with(
            "bwdif=mode=send_frame:deint=interlaced,transpose=clock,zscale=tin=smpte2084"
        ));
        assert!(spec.ends_with("format=yuv420p,fps=fps=30/1:round=near:start_time=0"));
    }
}
