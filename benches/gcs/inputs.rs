//! What the benchmark feeds the service: the clip, and 1 GiB of bytes that never sit in memory.

use std::path::PathBuf;
use std::process::Command;

/// The clip, generated on first use into `target/bench-data/`.
pub fn clip() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.ancestors().nth(3).unwrap().join("bench-data");
    let path = dir.join("gcs-1080p30-30s.mp4");
    if path.exists() {
        return path;
    }
    std::fs::create_dir_all(&dir).unwrap();
    println!("generating {} ...", path.display());
    let tmp = dir.join("tmp-gcs-1080p30-30s.mp4");
    let ok = Command::new("ffmpeg")
        .args("-hide_banner -nostdin -loglevel error -y".split(' '))
        .args("-f lavfi -i testsrc2=size=1920x1080:rate=30".split(' '))
        .args("-f lavfi -i sine=frequency=440:sample_rate=48000 -t 30".split(' '))
        .args("-c:v libx264 -preset ultrafast -pix_fmt yuv420p -g 60 -c:a aac -b:a 128k".split(' '))
        .arg(&tmp)
        .status()
        .expect("ffmpeg not found")
        .success();
    assert!(ok, "generating the clip failed");
    std::fs::rename(&tmp, &path).unwrap();
    path
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
