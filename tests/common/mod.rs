//! Helpers for the integration tests: clips made with the ffmpeg CLI at test time, running
//! the `video-transcoder` binary or the service, and reading back what it wrote (status.json, HLS playlists and
//! ffprobe's view of the media). Each `check_*` function asserts the whole output contract so a
//! test only adds what is specific to its source.
//!
//! ffprobe 5.1 opens a local `.m3u8` (fMP4 or TS) without extra flags: the HLS demuxer's default
//! protocol whitelist for a local playlist is `file,crypto,data` and its default
//! `allowed_extensions` include m4s/mp4/ts. An fMP4 segment alone is not decodable, so segments
//! are probed as `init.mp4 + segment` concatenated into one file.
#![allow(dead_code)]

mod contract; // check_ready: the whole contract of a successful run
mod events; // Google's event shapes for /transcode: Pub/Sub push, CloudEvent
mod ffprobe; // running ffprobe, decoded packets/frames, the source
mod gcs; // a real Cloud Storage emulator (fake-gcs-server) on a loopback address
mod hls; // master and media playlists, peak/average bit rates
mod mp4; // fMP4 boxes: decode times, codec configuration
mod prometheus; // the Prometheus text format, scraping /metrics
mod proxy; // a round-robin HTTP proxy in front of several service processes
mod pubsub; // a real Pub/Sub emulator (gcloud) on a loopback port, through its REST API
mod renditions; // one video or audio rendition and its segments
mod server; // the service in-process (spawn_app) or as a process, and an HTTP client
mod status; // status.json, --json, failed jobs
mod workspace; // clips, running the binary (Workspace, Run) and other tools

// Everything is re-exported flat for `use common::*;`. Like dead_code above, a re-export a test
// binary does not use is not an error: each binary uses a different subset.
#[allow(unused_imports)]
pub use contract::*;
#[allow(unused_imports)]
pub use events::*;
#[allow(unused_imports)]
pub use ffprobe::*;
#[allow(unused_imports)]
pub use gcs::*;
#[allow(unused_imports)]
pub use hls::*;
#[allow(unused_imports)]
pub use mp4::*;
#[allow(unused_imports)]
pub use prometheus::*;
#[allow(unused_imports)]
pub use proxy::*;
#[allow(unused_imports)]
pub use pubsub::*;
#[allow(unused_imports)]
pub use renditions::*;
#[allow(unused_imports)]
pub use server::*;
#[allow(unused_imports)]
pub use status::*;
#[allow(unused_imports)]
pub use workspace::*;

use std::fs;
use std::path::Path;

use serde_json::Value;

/// A JSON number or a numeric string (ffprobe prints most numbers as strings).
pub fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok().or_else(|| ratio(s)),
        _ => None,
    }
}

/// `"30000/1001"` → 29.97; `None` for `0/0` or junk.
pub fn ratio(s: &str) -> Option<f64> {
    let (a, b) = s.split_once('/')?;
    let (a, b): (f64, f64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (b != 0.0).then(|| a / b)
}

/// Every regular file under `dir`, as paths relative to it, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
