//! video-transcoder: uploaded videos in, adaptive-bitrate HLS out.
//!
//! `media` is the ffmpeg-next pipeline, `jobs` the lifecycle and status.json around it,
//! `cli` the `transcode` command, `webhooks` the signed job events, `loadtest` a load generator for a running server.
//! The binary only parses arguments and calls in here.

pub mod api;
pub mod cli;
pub mod config;
pub mod jobs;
pub mod loadtest;
pub mod media;
pub mod queue;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod webhooks;
