//! video-transcoder: uploaded videos in, adaptive-bitrate HLS out.
//!
//! `media` is the ffmpeg-next pipeline, `jobs` the lifecycle and status.json around it,
//! `cli` the `transcode` command. The binary only parses arguments and calls in here.

pub mod cli;
pub mod config;
pub mod jobs;
pub mod media;
pub mod storage;
pub mod telemetry;
