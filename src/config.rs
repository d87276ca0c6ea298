//! Every tunable of a transcode, with defaults, parsed from flags or env vars by clap.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::media::RateControl;
use crate::media::ladder::{Ladder, Rung};
use crate::media::mux::SegmentType;

/// Encoding settings shared by every job on this instance.
#[derive(Clone, Debug, Args)]
pub struct TranscodeSettings {
    /// Video ladder as `HEIGHT:KBPS` pairs; only rungs at or below the source's short side are used.
    #[arg(long, env = "LADDER", default_value = Ladder::DEFAULT_SPEC, value_parser = parse_ladder)]
    pub ladder: Ladder,

    /// HLS segment container.
    #[arg(long, env = "SEGMENT_TYPE", value_enum, default_value = "fmp4")]
    pub segment_type: SegmentType,

    /// Target HLS segment duration in seconds (a multiple of the 2 s GOP works best).
    #[arg(long, env = "SEGMENT_SECONDS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=30))]
    pub segment_seconds: u32,

    /// Highest output frame rate; faster sources are resampled down to it.
    #[arg(long, env = "MAX_FPS", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=240))]
    pub max_fps: u32,

    /// AAC bit rate in kb/s.
    #[arg(long, env = "AUDIO_BITRATE_KBPS", default_value_t = 128, value_parser = clap::value_parser!(u32).range(16..=512))]
    pub audio_bitrate_kbps: u32,

    /// x264 preset: speed against compression; every rendition uses the same one.
    #[arg(long, env = "X264_PRESET", default_value = "veryfast", value_parser = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"])]
    pub preset: String,

    /// Rate control of every video rendition: `capped-crf` (constant quality, each rung's kb/s
    /// as the VBV ceiling: easy content costs fewer bits) or `abr` (each rung's kb/s on average).
    #[arg(long, env = "RATE_CONTROL", value_enum, default_value = "capped-crf")]
    pub rate_control: RateControl,

    /// Renditions encoded at once across all jobs (default: the CPU count).
    #[arg(long, env = "MAX_PARALLEL_ENCODES", default_value_t = default_parallelism(), value_parser = clap::value_parser!(u32).range(1..=256))]
    pub max_parallel_encodes: u32,

    /// How many times the source is decoded: once per tier (lowest first, so the low rungs
    /// get the pool first), once for all renditions (least CPU; the ≤480p renditions' first
    /// segment is encoded alone first, so they are playable early), or `auto`: once for all
    /// when the pool is idle (no encode running or waiting) and the memory holds every encoder.
    #[arg(long, env = "DECODE_PLAN", value_enum, default_value = "auto")]
    pub decode_plan: DecodePlan,

    /// Length of the time chunks each tier's renditions are encoded in, in seconds of source
    /// (rounded to whole segments): every chunk is a unit of work that seeks into the source and
    /// encodes on its own, and units of one video run in parallel when the pool has room.
    /// 0: one chunk per tier. Unset: per tier, the length a 4-vCPU instance encodes in about
    /// 4 minutes (see `jobs::plan::default_chunk_seconds`).
    #[arg(long, env = "CHUNK_SECONDS", value_parser = clap::value_parser!(u32).range(0..=86_400))]
    pub chunk_seconds: Option<u32>,

    /// libx264 threads per rendition encoder; 0 lets libx264 choose (1.5 × cores each).
    #[arg(long, env = "ENCODER_THREADS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub encoder_threads: u32,

    /// Largest accepted source file, in bytes.
    #[arg(long, env = "MAX_VIDEO_SIZE", default_value_t = 10 * 1024 * 1024 * 1024)]
    pub max_video_size: u64,

    /// Longest accepted source, in seconds.
    #[arg(long, env = "MAX_DURATION", default_value_t = 4 * 3600)]
    pub max_duration: u64,

    /// Where per-job scratch directories are made (removed when the job ends).
    #[arg(long, env = "SCRATCH_DIR", default_value_os_t = std::env::temp_dir())]
    pub scratch_dir: PathBuf,

    /// Seconds a decode pass (so each rendition in it) may encode beyond the source's own
    /// duration before it fails as timed out; also the most opening or probing a source takes.
    #[arg(long, env = "RENDITION_TIMEOUT", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub rendition_timeout: u64,

    /// Seconds without progress (a frame encoded, a source read or bytes fetched from its
    /// bucket while probing) after which a pass, opening a source or a probe fails as stalled.
    #[arg(long, env = "STALL_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_timeout: u64,

    /// The MP4 download (`videos/<id>/download.mp4`, remuxed from the published segments): the
    /// tallest finished rendition at or below this height (`720p` or `720`; the lowest one if
    /// none is), with the audio; `none` makes no download.
    #[arg(long, env = "DOWNLOAD_RENDITION", default_value = "720p", value_parser = parse_download)]
    pub download_rendition: DownloadRendition,

    /// Images made from the published renditions (`images/` beside the manifest): `all` (a
    /// poster and a storyboard sprite with its WebVTT index) or `none`.
    #[arg(long, env = "IMAGES", value_enum, default_value = "all")]
    pub images: ImageSet,

    /// When the poster is taken: `auto` (10 % into the video, at most 5 s), seconds (`3.5`) or
    /// a share of the duration (`25%`); a later candidate wins if that frame is black or flat.
    #[arg(long, env = "POSTER_TIME", default_value = "auto", value_parser = parse_poster_time)]
    pub poster_time: PosterTime,

    /// USD per vCPU-second for status.json's `cost.estimatedUsd` (default: Cloud Run,
    /// instance-based billing, tier 1, as listed on 2026-11-29).
    #[arg(long, env = "PRICE_VCPU_SECOND", default_value_t = DEFAULT_PRICE_VCPU_SECOND, value_parser = parse_price)]
    pub price_vcpu_second: f64,

    /// USD per GiB-second of memory for `cost.estimatedUsd` (default: Cloud Run, instance-based
    /// billing, tier 1, as listed on 2026-11-29).
    #[arg(long, env = "PRICE_GIB_SECOND", default_value_t = DEFAULT_PRICE_GIB_SECOND, value_parser = parse_price)]
    pub price_gib_second: f64,
}

/// See [`TranscodeSettings::download_rendition`]: the tallest short side the download may have,
/// or `None` for no download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DownloadRendition(pub Option<u32>);

fn parse_download(spec: &str) -> Result<DownloadRendition, String> {
    let spec = spec.trim();
    if spec.eq_ignore_ascii_case("none") {
        return Ok(DownloadRendition(None));
    }
    match spec.strip_suffix('p').unwrap_or(spec).parse::<u32>() {
        Ok(height) if height > 0 => Ok(DownloadRendition(Some(height))),
        _ => Err(format!(
            "`{spec}` is not a rendition height like `720p`, or `none`"
        )),
    }
}

/// See [`TranscodeSettings::images`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ImageSet {
    All,
    None,
}

/// See [`TranscodeSettings::poster_time`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PosterTime {
    Auto,
    Seconds(f64),
    Share(f64),
}

impl PosterTime {
    /// Seconds into a video of `duration` seconds (the asked time, before candidates).
    pub fn seconds(self, duration: f64) -> f64 {
        let at = match self {
            PosterTime::Auto => (duration * 0.1).min(5.0),
            PosterTime::Seconds(s) => s,
            PosterTime::Share(share) => duration * share,
        };
        at.clamp(0.0, duration.max(0.0))
    }
}

fn parse_poster_time(spec: &str) -> Result<PosterTime, String> {
    let spec = spec.trim();
    let bad = || format!("`{spec}` is not `auto`, seconds like `3.5` or a share like `25%`");
    if spec.eq_ignore_ascii_case("auto") {
        return Ok(PosterTime::Auto);
    }
    let (number, share) = match spec.strip_suffix('%') {
        Some(n) => (n.trim(), true),
        None => (spec, false),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    match (share, value) {
        (_, v) if !v.is_finite() || v < 0.0 => Err(bad()),
        (true, v) if v > 100.0 => Err(bad()),
        (true, v) => Ok(PosterTime::Share(v / 100.0)),
        (false, v) => Ok(PosterTime::Seconds(v)),
    }
}

/// Cloud Run's instance-based tier-1 list price per vCPU-second (read 2026-11-29).
pub const DEFAULT_PRICE_VCPU_SECOND: f64 = 0.000018;
/// Cloud Run's instance-based tier-1 list price per GiB-second (read 2026-11-29).
pub const DEFAULT_PRICE_GIB_SECOND: f64 = 0.000002;

/// A price: a finite, non-negative number of USD.
fn parse_price(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if p.is_finite() && p >= 0.0 => Ok(p),
        _ => Err(format!(
            "`{text}` is not a price (a non-negative number of USD)"
        )),
    }
}

/// Settings of the HTTP service (`serve`), on top of the transcode settings.
#[derive(Clone, Debug, Args)]
pub struct ServeSettings {
    /// Port to listen on (Cloud Run sets it).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address to listen on: loopback by default; `0.0.0.0` in a container.
    #[arg(long, env = "BIND_ADDRESS", default_value = "127.0.0.1")]
    pub bind_address: IpAddr,

    /// Where sources are stored: a local folder, or `gs://bucket[/prefix]`.
    #[arg(long, env = "INPUT_STORE", default_value = "./data/input")]
    pub input_store: String,

    /// Where HLS and status.json are published (the CDN's origin): a local folder, or
    /// `gs://bucket[/prefix]`.
    #[arg(long, env = "OUTPUT_STORE", default_value = "./data/cdn")]
    pub output_store: String,

    /// A Cloud Storage emulator's base URL (`http://127.0.0.2`), used with anonymous credentials.
    /// Unset in production: Google's endpoint with Application Default Credentials.
    #[arg(long, env = "GCS_ENDPOINT", value_parser = parse_base_url)]
    pub gcs_endpoint: Option<String>,

    /// Seconds one Cloud Storage call keeps retrying transient faults (429, 5xx, resets,
    /// timeouts) with exponential backoff before the job fails with the storage error.
    #[arg(long, env = "STORAGE_RETRY_SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub storage_retry_seconds: u64,

    /// Base URL players use for the output store (default: this server, which serves a local
    /// output store under `/videos`).
    #[arg(long, env = "PUBLIC_BASE_URL", value_parser = parse_base_url)]
    pub public_base_url: Option<String>,

    /// Jobs queued or running at once on this instance; beyond it uploads and triggers get 429.
    #[arg(long, env = "MAX_QUEUED_JOBS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_queued_jobs: u32,

    /// Memory (MiB) the memory guard keeps free: an encode waits rather than dip into it.
    #[arg(long, env = "MEMORY_RESERVE_MB", default_value_t = 512)]
    pub memory_reserve_mb: u64,

    /// Seconds between SIGTERM and exit: requests finish and jobs record what they finished; in
    /// the last second, the statuses of jobs that did not stop are written all at once (Cloud
    /// Run kills the container 10 s after SIGTERM).
    #[arg(long, env = "SHUTDOWN_GRACE", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub shutdown_grace: u64,

    /// Free bytes the scratch folder's disk needs for the instance to report ready.
    #[arg(long, env = "MIN_DISK_SPACE", default_value_t = 1 << 30)]
    pub min_disk_space: u64,

    /// Where the player page loads hls.js from (default: the pinned copy this service serves at
    /// `/assets/hls.min.js`, so the page needs no third-party CDN).
    #[arg(long, env = "HLS_JS_URL")]
    pub hls_js_url: Option<String>,

    /// Seconds a direct-upload URL from `POST /upload-url` stays valid (Cloud Storage's V4
    /// signed URLs allow at most 7 days).
    #[arg(long, env = "UPLOAD_URL_TTL", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub upload_url_ttl: u64,

    /// `GET /thumbnail` decodes at once, at most; more get 429 with `Retry-After`.
    #[arg(long, env = "THUMBNAIL_CONCURRENCY", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub thumbnail_concurrency: u32,

    /// Google Cloud project, to link request logs to Cloud Trace.
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT")]
    pub google_cloud_project: Option<String>,

    #[command(flatten)]
    pub access: crate::api::auth::AccessSettings,

    #[command(flatten)]
    pub webhooks: WebhookSettings,

    #[command(flatten)]
    pub queue: crate::queue::QueueSettings,

    #[command(flatten)]
    pub transcode: TranscodeSettings,
}

/// Signed webhooks: who is told when a video becomes playable and when its job ends.
#[derive(Clone, Debug, Args)]
pub struct WebhookSettings {
    /// Receivers of the events `video.playable`, `video.ready`, `video.partial`, `video.failed`
    /// and `video.interrupted`: http(s) URLs, comma-separated; empty for none.
    #[arg(long = "webhook-url", env = "WEBHOOK_URL", default_value = "", value_parser = parse_webhook_urls)]
    pub urls: WebhookUrls,

    /// Key of each event's `Transcoder-Signature` (HMAC-SHA256); needed with WEBHOOK_URL, at
    /// least 16 characters. Give it by environment (Secret Manager in production).
    #[arg(
        long = "webhook-secret",
        env = "WEBHOOK_SECRET",
        hide_env_values = true,
        value_parser = parse_webhook_secret
    )]
    pub secret: Option<WebhookSecret>,

    /// Whether receivers may be on loopback, private networks or link-local addresses (the
    /// metadata server); refused at start-up and at each delivery otherwise.
    #[arg(long = "webhook-allow-private", env = "WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_private: bool,

    /// Milliseconds before the first retry of a failed delivery; each later wait doubles, up to
    /// an hour, with jitter (each wait is 50–100 % of its nominal value), for 24 h.
    #[arg(long = "webhook-retry-base-ms", env = "WEBHOOK_RETRY_BASE_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub retry_base_ms: u64,
}

/// See [`WebhookSettings::secret`]; its `Debug` never shows it.
#[derive(Clone)]
pub struct WebhookSecret(pub String);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

fn parse_webhook_secret(secret: &str) -> Result<WebhookSecret, String> {
    Ok(WebhookSecret(secret.to_string()))
}

/// See [`WebhookSettings::urls`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookUrls(pub Vec<reqwest::Url>);

fn parse_webhook_urls(list: &str) -> Result<WebhookUrls, String> {
    let urls = list
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| reqwest::Url::parse(u).map_err(|e| format!("`{u}` is not a URL: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(bad) = urls
        .iter()
        .find(|u| !matches!(u.scheme(), "http" | "https"))
    {
        return Err(format!("`{bad}` must start with http:// or https://"));
    }
    Ok(WebhookUrls(urls))
}

impl WebhookSettings {
    /// Checks what can be checked without the network: a secret for the receivers.
    pub fn check(&self) -> Result<(), String> {
        let secret = self.secret.as_ref().map_or("", |s| s.0.as_str());
        if !self.urls.0.is_empty() && secret.chars().count() < 16 {
            return Err("WEBHOOK_URL needs WEBHOOK_SECRET, at least 16 characters".into());
        }
        Ok(())
    }
}

fn parse_base_url(url: &str) -> Result<String, String> {
    let url = url.trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("`{url}` must start with http:// or https://"))?;
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        return Err(format!("`{url}` is not a URL"));
    }
    Ok(url.to_string())
}

/// See [`TranscodeSettings::decode_plan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DecodePlan {
    Auto,
    PerTier,
    Single,
}

impl Default for TranscodeSettings {
    fn default() -> Self {
        Self {
            ladder: Ladder::default(),
            segment_type: SegmentType::Fmp4,
            segment_seconds: 4,
            max_fps: 60,
            audio_bitrate_kbps: 128,
            preset: "veryfast".into(),
            rate_control: RateControl::CappedCrf,
            max_parallel_encodes: default_parallelism(),
            encoder_threads: 0,
            decode_plan: DecodePlan::Auto,
            chunk_seconds: None,
            max_video_size: 10 * 1024 * 1024 * 1024,
            max_duration: 4 * 3600,
            scratch_dir: std::env::temp_dir(),
            rendition_timeout: 600,
            stall_timeout: 60,
            download_rendition: DownloadRendition(Some(720)),
            images: ImageSet::All,
            poster_time: PosterTime::Auto,
            price_vcpu_second: DEFAULT_PRICE_VCPU_SECOND,
            price_gib_second: DEFAULT_PRICE_GIB_SECOND,
        }
    }
}

impl TranscodeSettings {
    /// The size and duration limits a source is probed under.
    pub fn source_limits(&self) -> crate::media::source::Limits {
        crate::media::source::Limits {
            max_bytes: self.max_video_size,
            max_seconds: self.max_duration,
        }
    }
}

fn default_parallelism() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

fn parse_ladder(spec: &str) -> Result<Ladder, String> {
    let rungs = spec
        .split(',')
        .map(|pair| {
            let (height, kbps) = pair
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("`{pair}` is not HEIGHT:KBPS"))?;
            let height: u32 = height
                .parse()
                .map_err(|_| format!("bad height in `{pair}`"))?;
            let kbps: u32 = kbps
                .parse()
                .map_err(|_| format!("bad bit rate in `{pair}`"))?;
            if !(16..=8640).contains(&height) || !(50..=200_000).contains(&kbps) {
                return Err(format!(
                    "`{pair}` is out of range (height 16..8640, kb/s 50..200000)"
                ));
            }
            Ok(Rung { height, kbps })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ladder::new(rungs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_rendition_is_a_height_or_none() {
        assert_eq!(parse_download("720p"), Ok(DownloadRendition(Some(720))));
        assert_eq!(parse_download("480"), Ok(DownloadRendition(Some(480))));
        assert_eq!(parse_download("none"), Ok(DownloadRendition(None)));
        assert!(parse_download("0p").is_err());
        assert!(parse_download("hd").is_err());
    }

    #[test]
    fn poster_time_is_auto_seconds_or_a_share() {
        assert_eq!(parse_poster_time("auto"), Ok(PosterTime::Auto));
        assert_eq!(parse_poster_time("3.5"), Ok(PosterTime::Seconds(3.5)));
        assert_eq!(parse_poster_time("25%"), Ok(PosterTime::Share(0.25)));
        for bad in ["-1", "150%", "soon", "nan"] {
            assert!(parse_poster_time(bad).is_err(), "{bad}");
        }
        assert_eq!(PosterTime::Auto.seconds(30.0), 3.0);
        assert_eq!(PosterTime::Auto.seconds(600.0), 5.0);
        assert_eq!(PosterTime::Seconds(9.0).seconds(4.0), 4.0);
        assert_eq!(PosterTime::Share(0.5).seconds(8.0), 4.0);
    }

    #[test]
    fn ladder_spec_parses_and_rejects_garbage() {
        let ladder = parse_ladder("720:2800, 1080:5000").unwrap();
        assert_eq!(ladder.rungs()[0].height, 1080, "sorted tallest first");
        assert!(parse_ladder("720").is_err());
        assert!(parse_ladder("720:abc").is_err());
        assert!(parse_ladder("0:100").is_err());
        assert!(parse_ladder("").is_err());
    }

    #[test]
    fn webhook_urls_are_a_comma_separated_list_of_http_urls() {
        assert_eq!(parse_webhook_urls(""), Ok(WebhookUrls::default()));
        let two = parse_webhook_urls("https://a.example/h, http://b.example:8080/x").unwrap();
        assert_eq!(two.0.len(), 2);
        assert_eq!(two.0[1].port(), Some(8080));
        assert!(parse_webhook_urls("ftp://a.example/").is_err());
        assert!(parse_webhook_urls("not a url").is_err());
    }

    #[test]
    fn base_url_must_be_http_and_loses_its_trailing_slash() {
        assert_eq!(
            parse_base_url("https://cdn.example.com/").unwrap(),
            "https://cdn.example.com"
        );
        assert!(parse_base_url("cdn.example.com").is_err());
        assert!(parse_base_url("http://").is_err());
    }
}
