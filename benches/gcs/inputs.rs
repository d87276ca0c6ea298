//! What the benchmark feeds the service: the clip, and 1 GiB of bytes that never sit in memory.

use std::path::PathBuf;

/// The clip, generated on first use into `target/bench-data/`.
pub fn clip() -> PathBuf {
    crate::common::clip("gcs-1080p30-30s.mp4", "testsrc2=size=1920x1080:rate=30", 30)
}

/// `total` pseudo-random bytes (xorshift64), made 1 MiB at a time as the upload sends them.
pub fn random_body(total: u64) -> reqwest::Body {
    const CHUNK: u64 = 1 << 20;
    let chunks = futures_util::stream::unfold(
        (0u64, 0x9e37_79b9_7f4a_7c15u64),
        move |(sent, mut x)| async move {
            if sent >= total {
                return None;
            }
            let n = (total - sent).min(CHUNK) as usize;
            let mut chunk = Vec::with_capacity(n + 8);
            while chunk.len() < n {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.extend_from_slice(&x.to_le_bytes());
            }
            chunk.truncate(n);
            let chunk = bytes::Bytes::from(chunk);
            Some((Ok::<_, std::io::Error>(chunk), (sent + n as u64, x)))
        },
    );
    reqwest::Body::wrap_stream(chunks)
}
