//! What the benchmark feeds the service: the clip (the large sources are made in `big`).

use std::path::PathBuf;

/// The clip, generated on first use into `target/bench-data/`.
pub fn clip() -> PathBuf {
    crate::common::clip("gcs-1080p30-30s.mp4", "testsrc2=size=1920x1080:rate=30", 30)
}
