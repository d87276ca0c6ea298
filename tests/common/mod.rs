//! Helpers for the CLI integration tests: clips made with the ffmpeg CLI at test time, running
//! the `video-transcoder` binary, and reading back what it wrote (status.json, HLS playlists and
//! ffprobe's view of the media). Each `check_*` function asserts the whole output contract so a
//! test only adds what is specific to its source.
//!
//! ffprobe 5.1 opens a local `.m3u8` (fMP4 or TS) without extra flags: the HLS demuxer's default
//! protocol whitelist for a local playlist is `file,crypto,data` and its default
//! `allowed_extensions` include m4s/mp4/ts. An fMP4 segment alone is not decodable, so segments
//! are probed as `init.mp4 + segment` concatenated into one file.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long one transcode may take before the test kills it and fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(480);

/// Runs the ffmpeg CLI quietly and panics with its stderr if it fails.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg CLI must be installed (apt-get install ffmpeg)");
    assert!(
        out.status.success(),
        "ffmpeg {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

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

/// A scratch workspace owned by one test: clips, the binary's output and its TMPDIR live here.
/// Set `VT_KEEP_TEST_DIRS=1` to keep it for a post-mortem.
pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new(test: &str) -> Self {
        let mut dir = tempfile::Builder::new()
            .prefix(&format!("vt-{test}-"))
            .tempdir()
            .expect("temp dir");
        if std::env::var_os("VT_KEEP_TEST_DIRS").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping {}", dir.path().display());
        }
        Workspace { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh empty directory inside the workspace.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let p = self.path().join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// An H.264 (+ AAC 44.1 kHz stereo when `audio`) mp4 of `testsrc2` at 30 fps. `testsrc2`
    /// rounds odd sizes down to even: use [`Workspace::clip_with`] and `testsrc` for odd sizes.
    pub fn clip(&self, name: &str, width: u32, height: u32, seconds: f64, audio: bool) -> PathBuf {
        let video = format!("testsrc2=size={width}x{height}:rate=30:duration={seconds}");
        self.clip_with(
            name,
            &video,
            audio.then_some(seconds),
            &["-pix_fmt", "yuv420p"],
        )
    }

    /// An mp4 from a lavfi video graph, optional sine audio of `audio_seconds`, and extra
    /// output arguments (pixel format, metadata…).
    pub fn clip_with(
        &self,
        name: &str,
        lavfi_video: &str,
        audio_seconds: Option<f64>,
        extra: &[&str],
    ) -> PathBuf {
        let out = self.path().join(name);
        let sine =
            audio_seconds.map(|s| format!("sine=frequency=440:sample_rate=44100:duration={s}"));
        let mut args = vec!["-f", "lavfi", "-i", lavfi_video];
        if let Some(sine) = &sine {
            args.extend([
                "-f",
                "lavfi",
                "-i",
                sine.as_str(),
                "-c:a",
                "aac",
                "-ac",
                "2",
                "-b:a",
                "96k",
            ]);
        }
        args.extend(["-c:v", "libx264", "-preset", "ultrafast"]);
        args.extend(extra);
        args.push(out.to_str().unwrap());
        ffmpeg(&args);
        out
    }

    /// Runs `video-transcoder transcode <input> --out <ws>/<out_name> [--id id] extra…` with
    /// TMPDIR pointed at an empty directory of its own, so leftover scratch files can be seen.
    pub fn transcode(&self, input: &Path, out_name: &str, id: Option<&str>, extra: &[&str]) -> Run {
        let out_dir = self.subdir(out_name);
        let tmp_dir = self.subdir(&format!("{out_name}.tmp"));
        let stdout_path = self.path().join(format!("{out_name}.stdout"));
        let stderr_path = self.path().join(format!("{out_name}.stderr"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_video-transcoder"));
        cmd.arg("transcode").arg(input).arg("--out").arg(&out_dir);
        if let Some(id) = id {
            cmd.args(["--id", id]);
        }
        cmd.args(extra)
            .env("TMPDIR", &tmp_dir)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout_path).unwrap())
            .stderr(fs::File::create(&stderr_path).unwrap());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("spawn video-transcoder");
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > RUN_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("video-transcoder {cmd:?} still running after {RUN_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let run = Run {
            code: status.code(),
            stdout: fs::read_to_string(&stdout_path).unwrap(),
            stderr: fs::read_to_string(&stderr_path).unwrap(),
            out_dir,
            tmp_dir,
            id: id.map(str::to_owned),
            elapsed: started.elapsed(),
        };
        eprintln!(
            "transcode {} took {:.1?} (exit {:?})",
            input.display(),
            run.elapsed,
            run.code
        );
        run
    }
}

/// One finished run of the binary.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub out_dir: PathBuf,
    pub tmp_dir: PathBuf,
    pub id: Option<String>,
    pub elapsed: Duration,
}

impl Run {
    pub fn assert_success(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "video-transcoder failed; stderr:\n{}",
            self.stderr
        );
        self
    }

    /// The id given with `--id`, or the only directory under `<out>/videos/`.
    pub fn video_id(&self) -> String {
        if let Some(id) = &self.id {
            return id.clone();
        }
        let ids: Vec<String> = fs::read_dir(self.out_dir.join("videos"))
            .expect("<out>/videos exists")
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            ids.len(),
            1,
            "expected one video under {}/videos: {ids:?}",
            self.out_dir.display()
        );
        ids[0].clone()
    }

    /// The job removed its scratch: nothing at all (not even an empty dir) left in its TMPDIR.
    pub fn assert_tmpdir_empty(&self) {
        let left: Vec<_> = fs::read_dir(&self.tmp_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            left.is_empty(),
            "scratch left in TMPDIR: {left:?} (files: {:?})",
            files_under(&self.tmp_dir)
        );
    }

    pub fn video_dir(&self) -> PathBuf {
        self.out_dir.join("videos").join(self.video_id())
    }

    pub fn manifest_dir(&self) -> PathBuf {
        self.video_dir().join("manifest")
    }

    pub fn status(&self) -> Value {
        let path = self.video_dir().join("status.json");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("status.json is not JSON ({e}): {text}"))
    }

    pub fn master(&self) -> MasterPlaylist {
        MasterPlaylist::read(&self.manifest_dir().join("master.m3u8"))
    }
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

// ---------------------------------------------------------------------------------------------
// Playlists

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

// ---------------------------------------------------------------------------------------------
// ffprobe

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

// ---------------------------------------------------------------------------------------------
// The source, as ffprobe sees it

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

// ---------------------------------------------------------------------------------------------
// The whole output contract of a successful run

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SegmentType {
    Fmp4,
    Ts,
}

/// Segment length the contract asks for, in seconds, and the GOP length.
pub const SEGMENT_SECONDS: f64 = 4.0;
pub const GOP_SECONDS: f64 = 2.0;
/// Allowed difference between the source's and a rendition's duration.
pub const DURATION_TOLERANCE: f64 = 0.1;

pub struct VideoRendition {
    pub variant: Variant,
    pub playlist: MediaPlaylist,
    /// ffprobe's stream entry for the variant playlist.
    pub stream: Value,
    pub width: u32,
    pub height: u32,
    /// First pts of each segment (segments probed one by one).
    pub segment_starts: Vec<f64>,
}

pub struct AudioRendition {
    pub playlist: MediaPlaylist,
    pub stream: Value,
}

pub struct Hls {
    pub master: MasterPlaylist,
    pub videos: Vec<VideoRendition>,
    pub audio: Option<AudioRendition>,
    pub status: Value,
}

impl Hls {
    /// Video rendition names in master order (ascending BANDWIDTH).
    pub fn video_names(&self) -> Vec<String> {
        self.videos
            .iter()
            .map(|v| v.variant.name().to_owned())
            .collect()
    }
    /// Decoded (width, height) of each video rendition, in master order.
    pub fn sizes(&self) -> Vec<(u32, u32)> {
        self.videos.iter().map(|v| (v.width, v.height)).collect()
    }
    /// Folder names under manifest/, sorted.
    pub fn folders(run: &Run) -> Vec<String> {
        let mut f: Vec<String> = fs::read_dir(run.manifest_dir())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        f.sort();
        f
    }
}

/// Asserts everything the contract promises for a run that must end `ready`, whatever the
/// source: master and media playlists, every segment decodable alone and starting on a keyframe,
/// aligned segment boundaries, 2 s GOPs, H.264 High yuv420p upright square-pixel video at the
/// declared RESOLUTION, AAC-LC 48 kHz stereo audio, durations, BANDWIDTH vs measured peak, and
/// status.json. Returns what it read so tests can assert what is specific to their source.
pub fn check_ready(ws: &Workspace, run: &Run, source: &Source, seg_type: SegmentType) -> Hls {
    run.assert_success();
    let master = run.master();
    assert!(
        master.has_tag("#EXT-X-INDEPENDENT-SEGMENTS"),
        "master lacks EXT-X-INDEPENDENT-SEGMENTS:\n{}",
        master.text
    );
    let scratch = ws.subdir("probe");
    let audio_media: Vec<&Attributes> = master
        .media
        .iter()
        .filter(|m| m.get("TYPE").map(String::as_str) == Some("AUDIO"))
        .collect();

    let audio_dir = run.manifest_dir().join("audio");
    let audio = source
        .has_audio
        .then(|| check_audio(&audio_dir.join("index.m3u8"), source, seg_type, &scratch));
    if !source.has_audio {
        assert!(
            !audio_dir.exists(),
            "source has no audio but {} exists",
            audio_dir.display()
        );
        assert!(
            audio_media.is_empty(),
            "source has no audio but master has EXT-X-MEDIA:\n{}",
            master.text
        );
    }

    let mut videos = Vec::new();
    if source.display.is_none() {
        // Audio-only source: one variant pointing at the audio rendition.
        assert_eq!(
            master.variants.len(),
            1,
            "audio-only master must have one variant:\n{}",
            master.text
        );
        let v = &master.variants[0];
        assert_eq!(v.uri, "audio/index.m3u8");
        assert_eq!(v.codecs(), ["mp4a.40.2"]);
        assert!(
            v.resolution().is_none(),
            "audio-only variant has RESOLUTION"
        );
        check_bandwidth(v, None, audio.as_ref().map(|a| &a.playlist));
    } else {
        if source.has_audio {
            assert_eq!(
                audio_media.len(),
                1,
                "want one audio EXT-X-MEDIA:\n{}",
                master.text
            );
            assert_eq!(
                audio_media[0].get("GROUP-ID").map(String::as_str),
                Some("audio")
            );
            assert_eq!(
                audio_media[0].get("URI").map(String::as_str),
                Some("audio/index.m3u8")
            );
        }
        assert!(!master.variants.is_empty(), "no variants:\n{}", master.text);
        for variant in &master.variants {
            videos.push(check_video(
                master.dir(),
                variant,
                source,
                seg_type,
                &scratch,
            ));
            check_bandwidth(
                variant,
                Some(&videos.last().unwrap().playlist),
                audio.as_ref().map(|a| &a.playlist),
            );
        }
        check_alignment(&videos);
    }
    let bandwidths: Vec<u64> = master.variants.iter().map(Variant::bandwidth).collect();
    assert!(
        bandwidths.windows(2).all(|w| w[0] <= w[1]),
        "variants not ordered by BANDWIDTH: {bandwidths:?}"
    );

    let hls = Hls {
        master,
        videos,
        audio,
        status: run.status(),
    };
    check_status_ready(run, source, &hls);
    run.assert_tmpdir_empty();
    hls
}

/// Asserts what every media playlist must be: VOD, ended, target duration, file naming.
pub fn check_media_playlist(pl: &MediaPlaylist, seg_type: SegmentType) {
    let at = pl.path.display();
    assert_eq!(
        pl.playlist_type.as_deref(),
        Some("VOD"),
        "{at}: EXT-X-PLAYLIST-TYPE"
    );
    assert!(pl.endlist, "{at}: no EXT-X-ENDLIST");
    assert!(
        pl.target_duration >= 1 && pl.target_duration <= SEGMENT_SECONDS as u64,
        "{at}: TARGETDURATION {}",
        pl.target_duration
    );
    for s in &pl.segments {
        assert!(
            s.duration.round() as u64 <= pl.target_duration,
            "{at}: EXTINF {} above target",
            s.duration
        );
        assert!(s.size > 0, "{at}: empty segment {}", s.uri);
    }
    let ext = match seg_type {
        SegmentType::Fmp4 => {
            assert_eq!(pl.map.as_deref(), Some("init.mp4"), "{at}: EXT-X-MAP");
            assert!(
                pl.dir().join("init.mp4").is_file(),
                "{at}: init.mp4 missing"
            );
            "m4s"
        }
        SegmentType::Ts => {
            assert!(pl.map.is_none(), "{at}: TS playlist with EXT-X-MAP");
            "ts"
        }
    };
    for (i, s) in pl.segments.iter().enumerate() {
        assert_eq!(s.uri, format!("seg_{i:05}.{ext}"), "{at}: segment name");
    }
}

fn check_video(
    manifest: &Path,
    variant: &Variant,
    source: &Source,
    seg_type: SegmentType,
    scratch: &Path,
) -> VideoRendition {
    let name = variant.name();
    let pl = MediaPlaylist::read(&manifest.join(&variant.uri));
    check_media_playlist(&pl, seg_type);
    let (w, h) = variant
        .resolution()
        .unwrap_or_else(|| panic!("{name}: no RESOLUTION"));
    assert!(w % 2 == 0 && h % 2 == 0, "{name}: odd RESOLUTION {w}x{h}");
    assert!(variant.get("FRAME-RATE").is_some(), "{name}: no FRAME-RATE");
    assert_eq!(
        variant.get("AUDIO"),
        source.has_audio.then_some("audio"),
        "{name}: AUDIO attribute"
    );

    let probed = probe(&pl.path);
    let st = stream(&probed, "video")
        .unwrap_or_else(|| panic!("{name}: no video stream"))
        .clone();
    assert_eq!(st["codec_name"], "h264", "{name}: codec");
    assert_eq!(st["profile"], "High", "{name}: profile");
    assert_eq!(st["pix_fmt"], "yuv420p", "{name}: pix_fmt");
    assert_eq!(
        (num(&st["width"]), num(&st["height"])),
        (Some(w as f64), Some(h as f64)),
        "{name}: decoded size vs RESOLUTION {w}x{h}"
    );
    let sar = st["sample_aspect_ratio"].as_str().unwrap_or("1:1");
    assert!(
        sar == "1:1" || sar == "0:1",
        "{name}: non-square pixels (SAR {sar})"
    );
    assert_eq!(
        rotation(&st),
        0.0,
        "{name}: output still carries a display matrix"
    );

    // CODECS: avc1.PPCCLL with PP = 0x64 (High) and LL = the stream's level; mp4a.40.2 iff audio.
    let codecs = variant.codecs();
    let avc: Vec<&String> = codecs.iter().filter(|c| c.starts_with("avc1.")).collect();
    assert_eq!(avc.len(), 1, "{name}: CODECS {codecs:?}");
    let hex = &avc[0]["avc1.".len()..];
    assert!(
        hex.len() == 6 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "{name}: CODECS {codecs:?} not avc1.XXXXXX"
    );
    assert!(
        hex.to_ascii_lowercase().starts_with("64"),
        "{name}: CODECS {codecs:?} is not High profile (avc1.64xxxx)"
    );
    let level = u64::from_str_radix(&hex[4..], 16).unwrap();
    assert_eq!(
        Some(level as f64),
        num(&st["level"]),
        "{name}: CODECS level vs stream level"
    );
    let want_audio: Vec<String> = if source.has_audio {
        vec!["mp4a.40.2".into()]
    } else {
        vec![]
    };
    let other: Vec<String> = codecs
        .iter()
        .filter(|c| !c.starts_with("avc1."))
        .cloned()
        .collect();
    assert_eq!(other, want_audio, "{name}: CODECS {codecs:?}");

    // Whole variant: duration, constant frame rate, a keyframe every GOP_SECONDS.
    let decoded = packets(&pl.path, "v:0");
    let fps = num(&st["avg_frame_rate"]).expect("avg_frame_rate");
    let declared: f64 = variant
        .get("FRAME-RATE")
        .unwrap()
        .parse()
        .expect("FRAME-RATE is a number");
    assert!(
        (declared - fps).abs() < 0.01,
        "{name}: FRAME-RATE {declared} vs stream {fps}"
    );
    let dur = decoded.duration();
    assert!(
        (dur - source.duration).abs() <= DURATION_TOLERANCE,
        "{name}: duration {dur:.3} vs source {:.3}",
        source.duration
    );
    let mut pts: Vec<f64> = decoded.packets.iter().map(|p| p.pts).collect();
    pts.sort_by(f64::total_cmp);
    for d in pts.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            (d - 1.0 / fps).abs() < 0.002,
            "{name}: frame interval {d:.4} at {fps} fps: not constant frame rate"
        );
    }
    let keys = decoded.keyframe_times();
    let want_keys = ((dur - 1e-3) / GOP_SECONDS).ceil() as usize;
    assert_eq!(
        keys.len(),
        want_keys,
        "{name}: keyframes at {keys:?} for {dur:.2} s, want one every {GOP_SECONDS} s"
    );
    for d in keys.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            (d - GOP_SECONDS).abs() < 0.5 / fps,
            "{name}: GOP of {d:.3} s (keyframes {keys:?})"
        );
    }

    // Every segment alone: starts with a keyframe, decodes fully at the declared size.
    let last = pl.segments.len() - 1;
    let mut segment_starts = Vec::new();
    for (i, s) in pl.segments.iter().enumerate() {
        if i < last {
            assert!(
                (s.duration - SEGMENT_SECONDS).abs() < 0.5 / fps,
                "{name}: segment {i} lasts {} s",
                s.duration
            );
        }
        let file = pl.probeable_segment(i, scratch);
        let d = decode(&file, "v:0");
        let what = format!("{name} segment {i} ({})", s.uri);
        assert!(!d.packets.is_empty(), "{what}: no video packets");
        assert!(d.packets[0].key, "{what}: does not start with a keyframe");
        assert_eq!(
            d.frames.len(),
            d.packets.len(),
            "{what}: only {} of {} frames decode alone; {}",
            d.frames.len(),
            d.packets.len(),
            d.stderr
        );
        assert!(
            d.stderr.trim().is_empty(),
            "{what}: decode errors: {}",
            d.stderr
        );
        let first = d
            .frames
            .iter()
            .min_by(|a, b| a.pts.total_cmp(&b.pts))
            .unwrap();
        assert!(
            first.key && first.pict_type == "I",
            "{what}: first frame is {} key={}",
            first.pict_type,
            first.key
        );
        assert!(
            d.frames.iter().all(|f| (f.width, f.height) == (w, h)),
            "{what}: frames not {w}x{h}"
        );
        segment_starts.push(d.start());
    }
    VideoRendition {
        variant: variant.clone(),
        playlist: pl,
        stream: st,
        width: w,
        height: h,
        segment_starts,
    }
}

fn check_audio(
    playlist: &Path,
    source: &Source,
    seg_type: SegmentType,
    scratch: &Path,
) -> AudioRendition {
    let pl = MediaPlaylist::read(playlist);
    check_media_playlist(&pl, seg_type);
    let probed = probe(&pl.path);
    let st = stream(&probed, "audio")
        .expect("audio rendition has an audio stream")
        .clone();
    assert!(
        stream(&probed, "video").is_none(),
        "audio rendition carries video"
    );
    assert_eq!(st["codec_name"], "aac", "audio codec");
    assert_eq!(st["profile"], "LC", "audio profile");
    assert_eq!(num(&st["sample_rate"]), Some(48000.0), "audio sample rate");
    assert_eq!(num(&st["channels"]), Some(2.0), "audio channels");
    let dur = packets(&pl.path, "a:0").duration();
    assert!(
        (dur - source.duration).abs() <= DURATION_TOLERANCE,
        "audio duration {dur:.3} vs source {:.3}",
        source.duration
    );
    for (i, s) in pl.segments.iter().enumerate() {
        let d = decode(&pl.probeable_segment(i, scratch), "a:0");
        let what = format!("audio segment {i} ({})", s.uri);
        assert!(!d.packets.is_empty(), "{what}: no audio packets");
        // An encoder-delay (priming) frame may be dropped by the decoder.
        assert!(
            d.frames.len() + 1 >= d.packets.len() && !d.frames.is_empty(),
            "{what}: {} of {} frames decode alone",
            d.frames.len(),
            d.packets.len()
        );
        assert!(
            d.stderr.trim().is_empty(),
            "{what}: decode errors: {}",
            d.stderr
        );
    }
    AudioRendition {
        playlist: pl,
        stream: st,
    }
}

/// BANDWIDTH ≥ peak segment bit rate of the video plus that of the audio (RFC 8216 §4.3.4.2,
/// measured from the files); AVERAGE-BANDWIDTH ≤ BANDWIDTH and close to the measured average.
pub fn check_bandwidth(
    variant: &Variant,
    video: Option<&MediaPlaylist>,
    audio: Option<&MediaPlaylist>,
) {
    let parts = [video, audio];
    let peak: f64 = parts.iter().flatten().map(|p| p.peak_bitrate()).sum();
    let average: f64 = parts.iter().flatten().map(|p| p.average_bitrate()).sum();
    let (bw, uri) = (variant.bandwidth(), &variant.uri);
    assert!(
        bw as f64 >= peak.floor(),
        "{uri}: BANDWIDTH {bw} below measured peak segment bit rate {peak:.0} (video + audio)"
    );
    let avg = variant
        .average_bandwidth()
        .unwrap_or_else(|| panic!("{uri}: no AVERAGE-BANDWIDTH"));
    assert!(avg <= bw, "{uri}: AVERAGE-BANDWIDTH {avg} > BANDWIDTH {bw}");
    let ratio = avg as f64 / average;
    assert!(
        (0.75..=1.33).contains(&ratio),
        "{uri}: AVERAGE-BANDWIDTH {avg} vs measured average {average:.0}"
    );
}

/// All video renditions share segment boundaries: same EXTINFs and same segment start times.
fn check_alignment(videos: &[VideoRendition]) {
    let Some(first) = videos.first() else { return };
    for v in &videos[1..] {
        let (a, b) = (&first.playlist.segments, &v.playlist.segments);
        let (na, nb) = (first.variant.name(), v.variant.name());
        assert_eq!(
            a.len(),
            b.len(),
            "{na} and {nb} have different segment counts"
        );
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x.duration - y.duration).abs() < 0.002,
                "segment {i}: EXTINF {} in {na} vs {} in {nb}",
                x.duration,
                y.duration
            );
        }
        for (i, (x, y)) in first
            .segment_starts
            .iter()
            .zip(&v.segment_starts)
            .enumerate()
        {
            assert!(
                (x - y).abs() < 0.002,
                "segment {i} starts at {x} in {na} but {y} in {nb}"
            );
        }
    }
}

/// Tier of a video rendition by its short side.
pub fn tier(short_side: u32) -> &'static str {
    match short_side {
        0..=480 => "critical",
        481..=1080 => "standard",
        _ => "premium",
    }
}

fn timestamp(status: &Value, key: &str) -> chrono::DateTime<chrono::FixedOffset> {
    let v = &status["timestamps"][key];
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("timestamps.{key} missing: {v}"));
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("timestamps.{key} {s:?} is not RFC 3339: {e}"))
}

/// status.json of a `ready` job agrees with the files and the source.
fn check_status_ready(run: &Run, source: &Source, hls: &Hls) {
    let st = &hls.status;
    assert_eq!(st["videoId"], run.video_id().as_str(), "videoId");
    assert_eq!(st["state"], "ready", "state; status: {st:#}");
    assert_eq!(st["playable"], true, "playable");
    assert!(
        st["error"].is_null(),
        "error on a ready job: {}",
        st["error"]
    );

    let total = hls.videos.len() + usize::from(hls.audio.is_some());
    let p = &st["progress"];
    assert_eq!(
        p["total"].as_u64(),
        Some(total as u64),
        "progress.total; progress: {p}"
    );
    assert_eq!(
        p["completed"].as_u64(),
        Some(total as u64),
        "progress.completed; progress: {p}"
    );
    assert_eq!(num(&p["percent"]), Some(100.0), "progress.percent");
    assert!(
        p["etaSeconds"].is_null() || num(&p["etaSeconds"]) == Some(0.0),
        "etaSeconds on a finished job: {}",
        p["etaSeconds"]
    );

    let renditions = st["renditions"].as_array().expect("renditions array");
    let mut want: Vec<String> = hls.video_names();
    if hls.audio.is_some() {
        want.push("audio".into());
    }
    let mut got: Vec<String> = renditions
        .iter()
        .map(|r| r["name"].as_str().unwrap_or("?").to_owned())
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "status renditions vs master");
    assert_eq!(Hls::folders(run), want, "rendition folders under manifest/");
    for r in renditions {
        let name = r["name"].as_str().unwrap();
        assert_eq!(r["state"], "ready", "{name}: state");
        assert!(r["error"].is_null(), "{name}: error {}", r["error"]);
        let bytes: u64 = files_under(&run.manifest_dir().join(name))
            .iter()
            .map(|f| {
                fs::metadata(run.manifest_dir().join(name).join(f))
                    .unwrap()
                    .len()
            })
            .sum();
        let size = r["sizeBytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: sizeBytes {}", r["sizeBytes"]));
        assert!(
            size > 0 && size <= bytes,
            "{name}: sizeBytes {size} vs {bytes} bytes on disk"
        );
        let (kbps, peak) = (
            num(&r["bitrateKbps"]).unwrap_or(0.0),
            num(&r["peakBitrateKbps"]).unwrap_or(0.0),
        );
        assert!(
            kbps > 0.0 && peak > 0.0,
            "{name}: bitrateKbps {kbps} peakBitrateKbps {peak}"
        );
        if name == "audio" {
            assert_eq!(r["kind"], "audio", "{name}: kind");
            continue;
        }
        assert_eq!(r["kind"], "video", "{name}: kind");
        let v = hls
            .videos
            .iter()
            .find(|v| v.variant.name() == name)
            .unwrap();
        assert_eq!(
            (r["width"].as_u64(), r["height"].as_u64()),
            (Some(v.width as u64), Some(v.height as u64)),
            "{name}: size"
        );
        assert_eq!(r["tier"], tier(v.width.min(v.height)), "{name}: tier");
    }

    let master = st["masterPlaylist"]
        .as_str()
        .unwrap_or_else(|| panic!("masterPlaylist: {}", st["masterPlaylist"]));
    assert!(master.ends_with("master.m3u8"), "masterPlaylist {master}");
    let times: Vec<_> = ["queued", "started", "firstPlayable", "finished"]
        .iter()
        .map(|k| timestamp(st, k))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "timestamps out of order: {}",
        st["timestamps"]
    );

    let src = &st["source"];
    assert!(
        src["container"].as_str().is_some_and(|c| !c.is_empty()),
        "source.container {}",
        src["container"]
    );
    let d = num(&src["durationSeconds"]).expect("source.durationSeconds");
    assert!(
        (d - source.duration).abs() <= DURATION_TOLERANCE,
        "source.durationSeconds {d} vs {}",
        source.duration
    );
    assert_eq!(
        src["sizeBytes"].as_u64(),
        Some(source.size),
        "source.sizeBytes"
    );
    match source.display {
        None => assert!(
            src["video"].is_null(),
            "source.video on an audio-only source"
        ),
        Some((w, h)) => {
            let v = &src["video"];
            let got = (
                num(&v["displayWidth"]).unwrap_or(0.0),
                num(&v["displayHeight"]).unwrap_or(0.0),
            );
            assert!(
                (got.0 - w).abs() <= 1.0 && (got.1 - h).abs() <= 1.0,
                "source.video display {got:?}, ffprobe says {w}x{h}"
            );
        }
    }
    let audio = src["audio"].as_array().expect("source.audio array");
    assert_eq!(
        audio.len(),
        usize::from(source.has_audio),
        "source.audio {audio:?}"
    );
}

/// status.json's `source.video.codedWidth/codedHeight` are the stored frame size; a decoder may
/// report them rounded up to whole 16-pixel macroblocks, which is accepted.
pub fn assert_coded_size(video: &Value, width: u64, height: u64) {
    let got = (
        video["codedWidth"].as_u64().unwrap_or(0),
        video["codedHeight"].as_u64().unwrap_or(0),
    );
    let ok = |g: u64, want: u64| g >= want && g < want.next_multiple_of(16).max(want + 1);
    assert!(
        ok(got.0, width) && ok(got.1, height),
        "source.video coded size {got:?}, want {width}x{height}"
    );
}

/// `--json` printed the same status.json it wrote.
pub fn assert_json_stdout(run: &Run) {
    let printed: Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("--json stdout is not JSON ({e}): {}", run.stdout));
    assert_eq!(
        printed,
        run.status(),
        "--json stdout differs from status.json"
    );
}

/// A job on bad input: non-zero exit, one human line on stderr, status `failed` with a reason,
/// and nothing but status.json left behind (in the output tree and in TMPDIR).
pub fn assert_failed_cleanly(run: &Run) {
    assert_ne!(
        run.code,
        Some(0),
        "corrupt input must fail; stdout: {}",
        run.stdout
    );
    assert!(
        run.code.is_some(),
        "killed by a signal instead of exiting: {}",
        run.stderr
    );
    // Log lines may come first (stderr is not a terminal here); the last line is the reason.
    let reason = run
        .stderr
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_default();
    assert!(
        reason.starts_with("error: ") && reason.trim().len() >= 17,
        "the last stderr line must be `error: <reason>`, got:\n{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("panicked"),
        "panic instead of a reason: {}",
        run.stderr
    );
    let st = run.status();
    assert_eq!(st["state"], "failed", "status: {st:#}");
    assert_eq!(st["playable"], false, "playable on a failed job");
    assert!(
        st["error"].as_str().is_some_and(|e| !e.trim().is_empty()),
        "failed job needs an error: {}",
        st["error"]
    );
    let prefix = format!("videos/{}/", run.video_id());
    let files = files_under(&run.out_dir);
    assert_eq!(
        files,
        [format!("{prefix}status.json")],
        "leftovers in the output dir"
    );
    run.assert_tmpdir_empty();
}
