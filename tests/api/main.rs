//! The HTTP service end to end: a real server on 127.0.0.1, real uploads, real encodes. One
//! test binary, one module per concern.

#[path = "../common/mod.rs"]
mod common;

mod direct; // direct uploads to a signed URL (local store)
mod errors; // bad requests, 413 and 429
mod observability; // metrics, readiness and health
mod support; // helpers these modules share
mod triggers; // trigger shapes and idempotent redelivery
mod uploads; // upload to playback, corrupt and large uploads, the local CDN
