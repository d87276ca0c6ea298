//! Reading back a rendition's media playlist to measure what was really encoded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::mux::PLAYLIST;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Segment {
    pub seconds: f64,
    pub bytes: u64,
}

/// The parts of a media playlist the master needs.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaPlaylist {
    pub target_seconds: f64,
    pub segments: Vec<Segment>,
    /// Size of the EXT-X-MAP initialisation segment (fMP4), 0 for MPEG-TS.
    pub init_bytes: u64,
}

/// Measured rates of a rendition, in bits per second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rates {
    /// Peak segment bit rate as RFC 8216 §4.3.4.2 defines it.
    pub peak: u64,
    /// Total segment bits over total duration.
    pub average: u64,
    /// Bytes on disk, init segment included.
    pub bytes: u64,
}

impl MediaPlaylist {
    /// Parses `dir/index.m3u8` and sizes every segment it names.
    pub fn read(dir: &Path) -> std::io::Result<Self> {
        Self::read_with(dir, &HashMap::new())
    }

    /// Like `read`, for a folder some of whose files were moved away already: `moved` has
    /// their sizes.
    pub fn read_with(dir: &Path, moved: &HashMap<PathBuf, u64>) -> std::io::Result<Self> {
        Self::parse(&std::fs::read_to_string(dir.join(PLAYLIST))?, dir, moved)
    }

    /// Parses playlist `text` of folder `dir`, sizing segments from `moved` or the folder.
    pub fn parse(text: &str, dir: &Path, moved: &HashMap<PathBuf, u64>) -> std::io::Result<Self> {
        let size = |name: &str| -> std::io::Result<u64> {
            if name.contains('/') || name.contains("..") {
                return Err(std::io::Error::other(format!(
                    "unexpected segment URI {name}"
                )));
            }
            let path = dir.join(name);
            match moved.get(&path) {
                Some(&size) => Ok(size),
                None => Ok(std::fs::metadata(path)?.len()),
            }
        };
        let mut playlist = MediaPlaylist {
            target_seconds: 0.0,
            segments: Vec::new(),
            init_bytes: 0,
        };
        let mut pending: Option<f64> = None;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
                playlist.target_seconds = v.parse().unwrap_or(0.0);
            } else if let Some(v) = line.strip_prefix("#EXTINF:") {
                pending = v.split(',').next().and_then(|d| d.parse().ok());
            } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:") {
                if let Some(uri) = v.split('"').nth(1) {
                    playlist.init_bytes = size(uri)?;
                }
            } else if !line.starts_with('#') {
                let seconds = pending.take().unwrap_or(0.0);
                playlist.segments.push(Segment {
                    seconds,
                    bytes: size(line)?,
                });
            }
        }
        Ok(playlist)
    }

    pub fn duration(&self) -> f64 {
        self.segments.iter().map(|s| s.seconds).sum()
    }

    pub fn rates(&self) -> Rates {
        let bits: u64 = self.segments.iter().map(|s| s.bytes * 8).sum();
        let seconds = self.duration();
        Rates {
            peak: peak_rate(&self.segments, self.target_seconds),
            average: if seconds > 0.0 {
                (bits as f64 / seconds).ceil() as u64
            } else {
                0
            },
            bytes: self.init_bytes + bits / 8,
        }
    }
}

/// The target duration for segments of these lengths: the longest rounded up, at least 1.
/// RFC 8216 §4.3.3.1 wants every EXTINF, rounded to the nearest integer, at most the target;
/// FFmpeg's muxer rounds halves to even (2.5 s → 2) and writes 0 for sub-second media. A segment
/// that ends a frame past its boundary (29.97 fps: 4.004 s; AAC frames: 4.011 s) makes the
/// target 5, as the ceiling rule says.
pub fn target_duration(segments: impl IntoIterator<Item = f64>) -> u64 {
    let longest = segments.into_iter().fold(0.0, f64::max);
    (longest.ceil() as u64).max(1)
}

/// A media playlist's text with its EXT-X-TARGETDURATION set by `target_duration` from the
/// EXTINFs it lists (added after `#EXTM3U` if missing). Every playlist we publish, growing or
/// final, passes through here.
pub fn with_target_duration(text: &str) -> String {
    let durations = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("#EXTINF:"))
        .filter_map(|v| v.split(',').next()?.trim().parse::<f64>().ok());
    let tag = format!("#EXT-X-TARGETDURATION:{}", target_duration(durations));
    let mut out = String::with_capacity(text.len() + 4);
    let mut written = false;
    for line in text.lines() {
        if line.trim().starts_with("#EXT-X-TARGETDURATION:") {
            if !written {
                out.push_str(&tag);
                out.push('\n');
                written = true;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if !written && line.trim() == "#EXTM3U" && !text.contains("#EXT-X-TARGETDURATION:") {
            out.push_str(&tag);
            out.push('\n');
            written = true;
        }
    }
    out
}

/// The largest bit rate of any run of contiguous segments lasting 0.5–1.5 × the target
/// duration; the largest single segment when no run qualifies (very short media).
fn peak_rate(segments: &[Segment], target: f64) -> u64 {
    let rate = |bytes: u64, secs: f64| {
        if secs > 0.0 {
            (bytes as f64 * 8.0 / secs).ceil() as u64
        } else {
            0
        }
    };
    let mut peak = None;
    for start in 0..segments.len() {
        let (mut bytes, mut secs) = (0, 0.0);
        for s in &segments[start..] {
            bytes += s.bytes;
            secs += s.seconds;
            if secs > 1.5 * target {
                break;
            }
            if secs >= 0.5 * target {
                peak = peak.max(Some(rate(bytes, secs)));
            }
        }
    }
    peak.unwrap_or_else(|| {
        segments
            .iter()
            .map(|s| rate(s.bytes, s.seconds))
            .max()
            .unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(seconds: f64, bytes: u64) -> Segment {
        Segment { seconds, bytes }
    }

    #[test]
    fn peak_follows_rfc_windows() {
        // The heavy 4 s segment joined by the short, dense tail (4.5 s) is the peak; the tail
        // alone (3.2 Mb/s over 0.5 s) is too short to count.
        let segs = [seg(4.0, 500_000), seg(4.0, 1_000_000), seg(0.5, 200_000)];
        assert_eq!(peak_rate(&segs, 4.0), 2_133_334);
        // Only short segments: the windows join them.
        let segs = [seg(1.0, 100_000), seg(1.0, 300_000), seg(1.0, 100_000)];
        assert_eq!(peak_rate(&segs, 4.0), 1_600_000);
        // Nothing reaches half the target: the largest single segment.
        assert_eq!(peak_rate(&[seg(0.5, 10_000)], 4.0), 160_000);
        assert_eq!(peak_rate(&[], 4.0), 0);
    }

    #[test]
    fn reads_playlist_and_sizes_segments() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("init.mp4"), [0u8; 100]).unwrap();
        std::fs::write(dir.path().join("seg_00000.m4s"), [0u8; 4000]).unwrap();
        std::fs::write(dir.path().join("seg_00001.m4s"), [0u8; 1000]).unwrap();
        std::fs::write(
            dir.path().join(PLAYLIST),
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n#EXT-X-MAP:URI=\"init.mp4\"\n\
             #EXTINF:4.000000,\nseg_00000.m4s\n#EXTINF:1.000000,\nseg_00001.m4s\n#EXT-X-ENDLIST\n",
        )
        .unwrap();
        let p = MediaPlaylist::read(dir.path()).unwrap();
        assert_eq!(p.segments, [seg(4.0, 4000), seg(1.0, 1000)]);
        let r = p.rates();
        assert_eq!(r.bytes, 5100);
        assert_eq!(r.average, 8000);
        assert_eq!(r.peak, 8000);
    }

    #[test]
    fn target_duration_is_the_longest_segment_rounded_up() {
        assert_eq!(target_duration([0.5]), 1, "never 0");
        assert_eq!(target_duration([]), 1);
        assert_eq!(target_duration([2.5]), 3, "halves round up");
        assert_eq!(target_duration([4.0, 4.0, 2.5]), 4);
        assert_eq!(target_duration([4.0, 5.5]), 6, "the longest decides");
        assert_eq!(
            target_duration([4.0, 4.004, 1.2]),
            5,
            "a frame past 4 s is longer"
        );
        assert_eq!(target_duration([4.010667]), 5);
    }

    #[test]
    fn target_duration_line_is_rewritten_from_the_segments() {
        let text = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.500000,\n\
                    seg_00000.m4s\n#EXT-X-ENDLIST\n";
        assert_eq!(
            with_target_duration(text),
            text.replace("TARGETDURATION:2", "TARGETDURATION:3")
        );
        let bare = "#EXTM3U\n#EXTINF:0.5,\nseg_00000.ts\n";
        assert_eq!(
            with_target_duration(bare),
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:0.5,\nseg_00000.ts\n"
        );
    }

    #[test]
    fn refuses_segment_uris_outside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PLAYLIST), "#EXTINF:4,\n../../etc/passwd\n").unwrap();
        assert!(MediaPlaylist::read(dir.path()).is_err());
    }
}
