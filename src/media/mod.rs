//! The media pipeline: probe a local source, pick a ladder, decode → scale → encode → HLS.
//!
//! Synchronous code on ffmpeg-next; it knows nothing of HTTP, buckets or job state. Callers run it
//! in `spawn_blocking` and watch the progress counters it bumps.

pub mod cpu;
pub mod download;
pub mod filters;
pub mod images;
pub mod input;
pub mod ladder;
pub mod libav_log;
pub mod master;
pub mod mux;
pub mod pass;
pub mod picture;
pub mod playlist;
pub mod source;
pub mod versions;

mod aspect;
mod audio;
mod cadence;
mod decode;
mod length;
mod video;

pub use video::{avc_codecs, codecs_in};

pub use video::{RateControl, crf_for, gop_frames};

use thiserror::Error;

/// Why a media step failed. `is_input_fault` tells a bad upload from a fault of ours.
#[derive(Clone, Debug, Error)]
pub enum MediaError {
    #[error("the file is empty")]
    Empty,
    #[error("not a media file that can be read ({0})")]
    Unreadable(String),
    #[error("the file format `{0}` is not accepted as a source")]
    RefusedFormat(String),
    #[error("no video or audio stream in the file")]
    NoMedia,
    #[error("no decoder for the {kind} codec `{codec}`")]
    NoDecoder { kind: &'static str, codec: String },
    #[error("the file is truncated or damaged near its end ({0})")]
    Truncated(String),
    #[error("the source is {actual} long; the limit is {limit}")]
    TooLong { actual: String, limit: String },
    #[error("the source is {actual} bytes; the limit is {limit} bytes")]
    TooLarge { actual: u64, limit: u64 },
    #[error("the source's duration could not be determined")]
    UnknownDuration,
    #[error("decoding failed: {0}")]
    Decode(String),
    #[error("encoding failed: {0}")]
    Encode(String),
    #[error("file system: {0}")]
    Io(String),
    /// The source's store failed to give its bytes (after the store's own retries).
    #[error("reading the source from its store: {0}")]
    SourceRead(String),
    /// Publishing to the output store failed (after the store's own retries).
    #[error("{0}")]
    Publish(String),
    #[error("cancelled")]
    Cancelled,
}

impl From<std::io::Error> for MediaError {
    fn from(e: std::io::Error) -> Self {
        MediaError::Io(e.to_string())
    }
}

impl MediaError {
    /// True when the source itself is at fault (retrying will not help).
    pub fn is_input_fault(&self) -> bool {
        !matches!(
            self,
            MediaError::Encode(_)
                | MediaError::Io(_)
                | MediaError::Publish(_)
                | MediaError::Cancelled
        )
    }
}

/// Loads libav once per process; safe to call repeatedly.
pub fn init() -> Result<(), MediaError> {
    static INIT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INIT.get_or_init(|| {
        ffmpeg_next::init().map_err(|e| e.to_string())?;
        libav_log::route_to_tracing();
        Ok(())
    })
    .clone()
    .map_err(MediaError::Encode)
}

/// Makes `path` with the ffmpeg CLI from a 160×90 test pattern of `seconds` and `extra`
/// arguments (more inputs, codecs, muxer options), for unit tests on real files.
#[cfg(test)]
pub(crate) fn test_clip(path: &std::path::Path, seconds: u32, extra: &[&str]) {
    let pattern = format!("testsrc2=size=160x90:duration={seconds}");
    let made = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", &pattern])
        .args(extra)
        .args(["-c:v", "libx264", "-preset", "ultrafast"])
        .arg(path)
        .status()
        .expect("the ffmpeg CLI is installed");
    assert!(made.success(), "ffmpeg could not make {}", path.display());
}
