//! ffprobe's view of files and playlists: running it, packets and decoded frames of one stream,
//! streams and their rotation, the first frame as pixels, and the source (`Source`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::workspace::ffmpeg;
use super::{num, ratio};

/// Runs ffprobe with JSON output; returns the parsed JSON and ffprobe's stderr (errors only).
pub fn ffprobe(args: &[&str], path: &Path) -> (Value, String) {
    let out = Command::new("ffprobe")
        .args(["-hide_banner", "-v", "error", "-of", "json"])
        .args(args)
        .arg(path)
        .output()
        .expect("ffprobe CLI must be installed");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "ffprobe {args:?} {} failed: {stderr}",
        path.display()
    );
    (
        serde_json::from_slice(&out.stdout).expect("ffprobe JSON"),
        stderr,
    )
}

#[derive(Debug, Clone)]
pub struct Packet {
    pub pts: f64,
    pub duration: f64,
    pub key: bool,
}

#[derive(Debug, Clone)]
pub struct Frame {
    pub pts: f64,
    pub key: bool,
    pub pict_type: String,
    pub width: u32,
    pub height: u32,
}

/// What ffprobe says about one stream of a file, decoding it fully: packets in decode order,
/// decoded frames in presentation order, and ffprobe's stderr (decode errors).
#[derive(Debug)]
pub struct Decoded {
    pub packets: Vec<Packet>,
    pub frames: Vec<Frame>,
    pub stderr: String,
}

impl Decoded {
    /// Presentation span: first pts to the end of the last packet.
    pub fn duration(&self) -> f64 {
        let end = self
            .packets
            .iter()
            .map(|p| p.pts + p.duration)
            .fold(f64::MIN, f64::max);
        end - self.start()
    }
    pub fn start(&self) -> f64 {
        self.packets.iter().map(|p| p.pts).fold(f64::MAX, f64::min)
    }
    pub fn keyframe_times(&self) -> Vec<f64> {
        let mut t: Vec<f64> = self
            .packets
            .iter()
            .filter(|p| p.key)
            .map(|p| p.pts)
            .collect();
        t.sort_by(f64::total_cmp);
        t
    }
}

/// Decodes stream `select` (`v:0`, `a:0`) of `path` with ffprobe.
pub fn decode(path: &Path, select: &str) -> Decoded {
    probe_packets(
        path,
        select,
        "packet=pts_time,duration_time,flags:frame=pts_time,key_frame,pict_type,width,height",
    )
}

/// Like [`decode`] but without decoding: packets only (`frames` is empty).
pub fn packets(path: &Path, select: &str) -> Decoded {
    probe_packets(path, select, "packet=pts_time,duration_time,flags")
}

fn probe_packets(path: &Path, select: &str, entries: &str) -> Decoded {
    let (json, stderr) = ffprobe(&["-select_streams", select, "-show_entries", entries], path);
    let (mut packets, mut frames) = (Vec::new(), Vec::new());
    let items = json
        .get("packets_and_frames")
        .or_else(|| json.get("packets"));
    for item in items.and_then(Value::as_array).into_iter().flatten() {
        let pts = num(&item["pts_time"]).unwrap_or(f64::NAN);
        match item["type"].as_str() {
            Some("packet") | None => packets.push(Packet {
                pts,
                duration: num(&item["duration_time"]).unwrap_or(0.0),
                key: item["flags"].as_str().unwrap_or("").starts_with('K'),
            }),
            Some("frame") => frames.push(Frame {
                pts,
                key: item["key_frame"].as_i64() == Some(1),
                pict_type: item["pict_type"].as_str().unwrap_or("").to_owned(),
                width: item["width"].as_u64().unwrap_or(0) as u32,
                height: item["height"].as_u64().unwrap_or(0) as u32,
            }),
            _ => {}
        }
    }
    Decoded {
        packets,
        frames,
        stderr,
    }
}

/// `-show_streams -show_format` of a file or playlist.
pub fn probe(path: &Path) -> Value {
    ffprobe(&["-show_streams", "-show_format"], path).0
}

/// The first stream of `codec_type` ("video"/"audio") in a `probe` result.
pub fn stream<'a>(probe: &'a Value, codec_type: &str) -> Option<&'a Value> {
    probe["streams"]
        .as_array()?
        .iter()
        .find(|s| s["codec_type"] == codec_type)
}

/// Rotation in degrees from a stream's display-matrix side data (0 when there is none).
pub fn rotation(stream: &Value) -> f64 {
    stream["side_data_list"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|sd| num(&sd["rotation"]))
        .unwrap_or(0.0)
}

/// The first video frame as 8-bit gray, as a player shows it (ffmpeg applies any display
/// matrix): (width, height, pixels).
pub fn first_frame_gray(path: &Path, scratch: &Path) -> (usize, usize, Vec<u8>) {
    let out = scratch.join(format!("frame-{}.pgm", std::process::id()));
    ffmpeg(&[
        "-i",
        path.to_str().unwrap(),
        "-frames:v",
        "1",
        "-pix_fmt",
        "gray",
        "-f",
        "image2",
        out.to_str().unwrap(),
    ]);
    let data = fs::read(&out).unwrap();
    // Binary PGM: "P5\n<w> <h>\n255\n<pixels>".
    let mut fields = Vec::new();
    let mut pos = 0;
    while fields.len() < 4 {
        while data[pos].is_ascii_whitespace() {
            pos += 1;
        }
        let start = pos;
        while !data[pos].is_ascii_whitespace() {
            pos += 1;
        }
        fields.push(String::from_utf8_lossy(&data[start..pos]).into_owned());
    }
    assert_eq!(fields[0], "P5");
    let (w, h): (usize, usize) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    (w, h, data[pos + 1..pos + 1 + w * h].to_vec())
}

#[derive(Debug)]
pub struct Source {
    pub path: PathBuf,
    pub probe: Value,
    pub duration: f64,
    pub size: u64,
    /// Display size (after SAR and rotation), when the source has video.
    pub display: Option<(f64, f64)>,
    pub has_audio: bool,
}

impl Source {
    pub fn probe(path: &Path) -> Self {
        let probe = probe(path);
        let duration = num(&probe["format"]["duration"]).expect("source duration");
        let display = stream(&probe, "video").map(|v| {
            let (w, h) = (num(&v["width"]).unwrap(), num(&v["height"]).unwrap());
            let sar = v["sample_aspect_ratio"]
                .as_str()
                .and_then(|s| ratio(&s.replace(':', "/")))
                .filter(|s| *s > 0.0);
            let w = w * sar.unwrap_or(1.0);
            if (rotation(v).abs() % 180.0 - 90.0).abs() < 1.0 {
                (h, w)
            } else {
                (w, h)
            }
        });
        let has_audio = stream(&probe, "audio").is_some();
        Source {
            path: path.to_owned(),
            size: fs::metadata(path).unwrap().len(),
            probe,
            duration,
            display,
            has_audio,
        }
    }
}
