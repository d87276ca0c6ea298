//! HLS playlists as written to disk: tag attribute lists, the master playlist and its
//! variants, media playlists and their segments, and segment bit rates (RFC 8216).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Attributes of an HLS tag (`KEY=VALUE,…`); quoted values are unquoted, commas inside quotes
/// (CODECS) are kept.
pub type Attributes = BTreeMap<String, String>;

pub fn parse_attributes(list: &str) -> Attributes {
    let mut out = Attributes::new();
    let mut rest = list.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .unwrap_or_else(|| panic!("bad attribute list: {list}"));
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted
                .find('"')
                .unwrap_or_else(|| panic!("unterminated quote: {list}"));
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after.split_at(after.find(',').unwrap_or(after.len()))
        };
        let dup = out.insert(key.trim().to_owned(), value.to_owned());
        assert!(dup.is_none(), "attribute {key} twice in {list}");
        rest = after.strip_prefix(',').unwrap_or(after).trim_start();
        assert!(
            after.is_empty() || after.starts_with(','),
            "junk after {key} in {list}"
        );
    }
    out
}

#[derive(Debug, Clone)]
pub struct Variant {
    pub attrs: Attributes,
    pub uri: String,
}

impl Variant {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }
    pub fn bandwidth(&self) -> u64 {
        self.get("BANDWIDTH")
            .expect("BANDWIDTH")
            .parse()
            .expect("BANDWIDTH is an integer")
    }
    pub fn average_bandwidth(&self) -> Option<u64> {
        self.get("AVERAGE-BANDWIDTH")
            .map(|v| v.parse().expect("AVERAGE-BANDWIDTH is an integer"))
    }
    pub fn resolution(&self) -> Option<(u32, u32)> {
        let (w, h) = self
            .get("RESOLUTION")?
            .split_once('x')
            .expect("RESOLUTION=WxH");
        Some((w.parse().unwrap(), h.parse().unwrap()))
    }
    pub fn codecs(&self) -> Vec<String> {
        self.get("CODECS")
            .expect("CODECS")
            .split(',')
            .map(|c| c.trim().to_owned())
            .collect()
    }
    /// The rendition folder: `720p/index.m3u8` → `720p`.
    pub fn name(&self) -> &str {
        self.uri
            .strip_suffix("/index.m3u8")
            .unwrap_or_else(|| panic!("variant URI {} is not <name>/index.m3u8", self.uri))
    }
}

#[derive(Debug)]
pub struct MasterPlaylist {
    pub path: PathBuf,
    pub text: String,
    /// Every `#EXT-X-MEDIA` tag.
    pub media: Vec<Attributes>,
    pub variants: Vec<Variant>,
}

impl MasterPlaylist {
    pub fn read(path: &Path) -> Self {
        let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Self {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        assert_eq!(
            lines.next(),
            Some("#EXTM3U"),
            "master must start with #EXTM3U:\n{text}"
        );
        let (mut media, mut variants) = (Vec::new(), Vec::new());
        while let Some(line) = lines.next() {
            if let Some(attrs) = line.strip_prefix("#EXT-X-MEDIA:") {
                media.push(parse_attributes(attrs));
            } else if let Some(attrs) = line.strip_prefix("#EXT-X-STREAM-INF:") {
                let uri = lines
                    .find(|l| !l.starts_with('#'))
                    .unwrap_or_else(|| panic!("EXT-X-STREAM-INF without URI:\n{text}"));
                variants.push(Variant {
                    attrs: parse_attributes(attrs),
                    uri: uri.to_owned(),
                });
            }
        }
        MasterPlaylist {
            path: path.to_owned(),
            text: text.to_owned(),
            media,
            variants,
        }
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.text
            .lines()
            .any(|l| l.trim() == tag || l.trim().starts_with(&format!("{tag}:")))
    }

    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap()
    }
}

#[derive(Debug, Clone)]
pub struct Segment {
    pub uri: String,
    pub duration: f64,
    /// Bytes of the segment: its EXT-X-BYTERANGE length, or its file size.
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct MediaPlaylist {
    pub path: PathBuf,
    pub text: String,
    pub target_duration: u64,
    pub playlist_type: Option<String>,
    pub endlist: bool,
    /// The EXT-X-MAP URI (fMP4 init section).
    pub map: Option<String>,
    pub segments: Vec<Segment>,
}

impl MediaPlaylist {
    pub fn read(path: &Path) -> Self {
        let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let dir = path.parent().unwrap();
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        assert_eq!(
            lines.next(),
            Some("#EXTM3U"),
            "{} must start with #EXTM3U",
            path.display()
        );
        let mut pl = MediaPlaylist {
            path: path.to_owned(),
            text: text.clone(),
            target_duration: 0,
            playlist_type: None,
            endlist: false,
            map: None,
            segments: Vec::new(),
        };
        let (mut duration, mut byterange) = (None, None);
        for line in lines {
            if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
                pl.target_duration = v.parse().expect("integer EXT-X-TARGETDURATION");
            } else if let Some(v) = line.strip_prefix("#EXT-X-PLAYLIST-TYPE:") {
                pl.playlist_type = Some(v.to_owned());
            } else if line == "#EXT-X-ENDLIST" {
                pl.endlist = true;
            } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:") {
                pl.map = Some(parse_attributes(v).remove("URI").expect("EXT-X-MAP URI"));
            } else if let Some(v) = line.strip_prefix("#EXTINF:") {
                let d = v.split(',').next().unwrap();
                duration = Some(
                    d.parse::<f64>()
                        .unwrap_or_else(|_| panic!("bad EXTINF {line}")),
                );
            } else if let Some(v) = line.strip_prefix("#EXT-X-BYTERANGE:") {
                byterange = Some(
                    v.split('@')
                        .next()
                        .unwrap()
                        .parse::<u64>()
                        .expect("byterange length"),
                );
            } else if !line.starts_with('#') {
                let duration = duration
                    .take()
                    .unwrap_or_else(|| panic!("segment {line} without EXTINF"));
                let size = byterange.take().unwrap_or_else(|| {
                    fs::metadata(dir.join(line))
                        .unwrap_or_else(|e| panic!("segment {line} of {}: {e}", path.display()))
                        .len()
                });
                pl.segments.push(Segment {
                    uri: line.to_owned(),
                    duration,
                    size,
                });
            }
        }
        assert!(
            !pl.segments.is_empty(),
            "{} lists no segments",
            path.display()
        );
        pl
    }

    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap()
    }

    pub fn total_duration(&self) -> f64 {
        self.segments.iter().map(|s| s.duration).sum()
    }

    /// Peak segment bit rate (bits/s) per RFC 8216 §4.3.4.2: the largest bit rate of any
    /// contiguous run of segments lasting 0.5–1.5 × target duration; if no run qualifies, the
    /// largest bit rate of a single segment.
    pub fn peak_bitrate(&self) -> f64 {
        let target = self.target_duration as f64;
        let rate = |bytes: u64, secs: f64| {
            if secs > 0.0 {
                bytes as f64 * 8.0 / secs
            } else {
                0.0
            }
        };
        let mut peak: Option<f64> = None;
        for start in 0..self.segments.len() {
            let (mut bytes, mut secs) = (0, 0.0);
            for seg in &self.segments[start..] {
                bytes += seg.size;
                secs += seg.duration;
                if secs > 1.5 * target + 1e-9 {
                    break;
                }
                if secs >= 0.5 * target - 1e-9 {
                    peak = Some(peak.unwrap_or(0.0).max(rate(bytes, secs)));
                }
            }
        }
        peak.unwrap_or_else(|| {
            self.segments
                .iter()
                .map(|s| rate(s.size, s.duration))
                .fold(0.0, f64::max)
        })
    }

    /// Average segment bit rate (bits/s): all segment bytes over all segment time.
    pub fn average_bitrate(&self) -> f64 {
        self.segments.iter().map(|s| s.size).sum::<u64>() as f64 * 8.0 / self.total_duration()
    }

    /// The file to probe for segment `i`: the segment itself (TS), or init + segment
    /// concatenated into `scratch` (fMP4, whose segments are not decodable alone).
    pub fn probeable_segment(&self, i: usize, scratch: &Path) -> PathBuf {
        let seg = self.dir().join(&self.segments[i].uri);
        let Some(map) = &self.map else { return seg };
        let mut bytes = fs::read(self.dir().join(map)).expect("init section");
        bytes.extend(fs::read(&seg).expect("segment"));
        let path = scratch.join(format!(
            "probe-{}-{i}.mp4",
            self.dir().file_name().unwrap().to_string_lossy()
        ));
        fs::write(&path, bytes).unwrap();
        path
    }
}

/// Checks every media playlist under `root` (master playlists are skipped) with
/// `check_target_duration`. Returns each one's path (relative to `root`) with its target
/// duration, so a test can also say which value it wants.
pub fn check_target_durations(root: &Path) -> Vec<(String, u64)> {
    super::files_under(root)
        .into_iter()
        .filter(|f| f.ends_with(".m3u8"))
        .filter_map(|rel| {
            let text = fs::read_to_string(root.join(&rel)).unwrap();
            let target = text
                .contains("#EXTINF:")
                .then(|| check_target_duration(&rel, &text))?;
            Some((rel, target))
        })
        .collect()
}

/// Asserts RFC 8216 §4.3.3.1 of the media playlist `text` (called `name` in messages):
/// EXT-X-TARGETDURATION present once, at least 1, and no EXTINF rounded to the nearest integer
/// (halves up) above it, and the target the longest EXTINF rounded up, as we write it. Returns
/// the target duration.
pub fn check_target_duration(name: &str, text: &str) -> u64 {
    let targets: Vec<u64> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("#EXT-X-TARGETDURATION:"))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: TARGETDURATION {v}"))
        })
        .collect();
    assert_eq!(
        targets.len(),
        1,
        "{name}: one EXT-X-TARGETDURATION:\n{text}"
    );
    let target = targets[0];
    assert!(
        target >= 1,
        "{name}: TARGETDURATION {target} below 1:\n{text}"
    );
    let mut longest: f64 = 0.0;
    for line in text.lines() {
        let Some(v) = line.trim().strip_prefix("#EXTINF:") else {
            continue;
        };
        let seconds: f64 = v.split(',').next().unwrap().parse().unwrap();
        assert!(
            seconds.round() as u64 <= target,
            "{name}: EXTINF {seconds} rounds above TARGETDURATION {target}:\n{text}"
        );
        longest = longest.max(seconds);
    }
    assert_eq!(
        target,
        (longest.ceil() as u64).max(1),
        "{name}: TARGETDURATION is not the longest EXTINF ({longest}) rounded up:\n{text}"
    );
    target
}
