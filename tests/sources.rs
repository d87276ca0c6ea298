//! Sources a real platform receives that are hard in other ways than size: HDR, interlaced,
//! variable frame rate, a file cut short behind a valid index, a file damaged in the middle, and
//! crafted playlists that try to make FFmpeg read other files or URLs.

mod common;

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

use common::*;

/// The first video stream's entry of ffprobe's view of a variant playlist.
fn variant_stream(run: &Run, name: &str) -> serde_json::Value {
    let probe = probe(&run.manifest_dir().join(name).join("index.m3u8"));
    stream(&probe, "video").expect("video stream").clone()
}

#[test]
fn hdr10_source_comes_out_as_8_bit_sdr() {
    let ws = Workspace::new("hdr");
    let src = ws.path().join("hdr.mp4");
    make(
        &src,
        "-f lavfi -i testsrc2=size=640x360:rate=30:duration=3 -c:v libx265 \
         -preset ultrafast -x265-params log-level=error -pix_fmt yuv420p10le \
         -color_primaries bt2020 -color_trc smpte2084 -colorspace bt2020nc",
    );
    let source = Source::probe(&src);
    let run = ws.transcode(&src, "out", Some("hdr"), &[]);
    let hls = check_ready(&ws, &run, &source, SegmentType::Fmp4);
    let v = &hls.status["source"]["video"];
    assert_eq!(
        (v["codec"].as_str(), v["bitDepth"].as_u64()),
        (Some("hevc"), Some(10))
    );
    assert_eq!(v["transfer"], "pq");
    let out = variant_stream(&run, "360p");
    assert_eq!(out["pix_fmt"], "yuv420p", "browsers need 8-bit 4:2:0");
    assert_eq!(out["color_transfer"], "bt709", "tone-mapped to SDR");
    assert_eq!(out["profile"], "High");
}

#[test]
fn interlaced_source_is_deinterlaced() {
    let ws = Workspace::new("interlaced");
    let src = ws.path().join("interlaced.mp4");
    make(
        &src,
        "-f lavfi -i testsrc2=size=720x576:rate=50:duration=3 -vf \
         tinterlace=mode=interleave_top,fieldorder=tff -c:v libx264 -preset \
         veryfast -flags +ildct+ilme -x264opts tff=1 -pix_fmt yuv420p",
    );
    let source = Source::probe(&src);
    let run = ws.transcode(&src, "out", Some("interlaced"), &[]);
    let hls = check_ready(&ws, &run, &source, SegmentType::Fmp4);
    assert_eq!(hls.status["source"]["video"]["interlaced"], true);
    let chunked = ws.transcode(&src, "chunked", Some("interlaced"), CHUNKED);
    chunked.assert_success();
    for run in [&run, &chunked] {
        let out = variant_stream(run, "480p");
        assert!(
            matches!(out["field_order"].as_str(), None | Some("progressive")),
            "output must be progressive: {}",
            out["field_order"]
        );
    }
    assert_eq!(decode_count(&chunked, "480p"), decode_count(&run, "480p"));
}

#[test]
fn variable_frame_rate_becomes_constant() {
    let ws = Workspace::new("vfr");
    let src = ws.path().join("vfr.mp4");
    // 2 s at 30 fps, then 2 s at 15 fps: an average of 22.5 that is no real rate.
    make(
        &src,
        "-f lavfi -i testsrc2=size=640x360:rate=30:duration=4 -vf \
         setpts='if(lt(N,60),N/30,2+(N-60)/15)/TB' -fps_mode vfr -c:v libx264 \
         -preset veryfast -pix_fmt yuv420p",
    );
    let source = Source::probe(&src);
    let run = ws.transcode(&src, "out", Some("vfr"), &[]);
    let hls = check_ready(&ws, &run, &source, SegmentType::Fmp4);
    let fps = hls.master.variants[0]
        .get("FRAME-RATE")
        .expect("FRAME-RATE");
    assert_eq!(fps, "30.000", "the base rate, not the average");
    let chunked = ws.transcode(&src, "chunked", Some("vfr"), CHUNKED);
    chunked.assert_success();
    for run in [&run, &chunked] {
        let out = variant_stream(run, "360p");
        assert_eq!(out["avg_frame_rate"], out["r_frame_rate"], "constant rate");
    }
    // 60 frames in 2 s, then 60 at 15 fps: about 6 s at 30 fps, the same frames chunked.
    assert_eq!(decode_count(&run, "360p"), 179);
    assert_eq!(decode_count(&chunked, "360p"), 179, "made in 2 s chunks");
}

/// Time chunks of one 2 s segment each: a few-second source is made in several parts.
const CHUNKED: &[&str] = &["--chunk-seconds", "2", "--segment-seconds", "2"];

/// Frames of a rendition, decoded.
fn decode_count(run: &Run, name: &str) -> usize {
    let playlist = run.manifest_dir().join(name).join("index.m3u8");
    decode(&playlist, "v:0").frames.len()
}

#[test]
fn file_cut_short_behind_a_valid_index_fails_at_probe() {
    let ws = Workspace::new("cut");
    let full = ws.clip_with(
        "full.mp4",
        "testsrc2=size=640x360:rate=30:duration=4",
        Some(4.0),
        &["-pix_fmt", "yuv420p", "-movflags", "+faststart"],
    );
    assert_first_half_fails_as_truncated(&ws, &full, "cut.mp4");
}

/// The first half of `full`, as `name`, fails cleanly with a reason that says truncated.
fn assert_first_half_fails_as_truncated(ws: &Workspace, full: &std::path::Path, name: &str) {
    let bytes = fs::read(full).unwrap();
    let src = ws.path().join(name);
    fs::write(&src, &bytes[..bytes.len() / 2]).unwrap();
    let run = ws.transcode(&src, "out", Some("cut"), &[]);
    assert_failed_cleanly(&run);
    let error = run.status()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("truncated"), "{error}");
}

/// The messages of status.json's `warnings` (absent means none).
fn warnings(status: &serde_json::Value) -> Vec<String> {
    let Some(list) = status.get("warnings") else {
        return Vec::new();
    };
    let list = list.as_array().expect("warnings is an array");
    assert!(!list.is_empty(), "an empty warnings list is left out");
    list.iter()
        .map(|w| w.as_str().expect("a warning is a string").to_owned())
        .collect()
}

#[test]
fn source_damaged_in_the_middle_is_delivered_with_a_warning() {
    let ws = Workspace::new("damaged");
    let src = ws.clip("src.mp4", 320, 180, 3.0, true);
    // Overwrite the middle 5 % with noise (xorshift from a fixed seed), as a bad disk or an
    // interrupted copy does: the container's index stays valid, packets there do not.
    let mut bytes = fs::read(&src).unwrap();
    let n = bytes.len() / 20;
    let start = bytes.len() / 2 - n / 2;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for b in &mut bytes[start..start + n] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    fs::write(&src, bytes).unwrap();

    let run = ws.transcode(&src, "out", Some("damaged"), &[]);
    run.assert_success();
    let status = run.status();
    assert!(
        matches!(status["state"].as_str(), Some("ready" | "partial")),
        "what could be decoded is delivered: {status:#}"
    );
    assert_eq!(status["playable"], true);
    let warnings = warnings(&status);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("damaged") && w.contains("video packet")),
        "{warnings:?}"
    );
    // One summary per pass in the log; the per-packet lines stay at debug.
    assert!(
        run.stderr.contains("could not be decoded"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("skipping a damaged"), "{}", run.stderr);
}

/// A canary file and a loopback listener that crafted sources point at: neither may be read.
struct Bait {
    canary: std::path::PathBuf,
    listener: TcpListener,
}

impl Bait {
    fn new(ws: &Workspace) -> Self {
        let canary = ws.path().join("canary.ts");
        // Real media, so a demuxer that followed the reference would succeed.
        make(
            &canary,
            "-f lavfi -i testsrc2=size=320x180:rate=30:duration=2 -c:v libx264 \
             -preset ultrafast",
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Self { canary, listener }
    }

    fn url(&self) -> String {
        format!("http://{}/x.ts", self.listener.local_addr().unwrap())
    }

    fn assert_untouched(&self, run: &Run) {
        assert_failed_cleanly(run);
        match self.listener.accept() {
            Ok((mut conn, _)) => {
                let mut head = [0u8; 256];
                conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let n = conn.read(&mut head).unwrap_or(0);
                panic!(
                    "the source made FFmpeg connect: {}",
                    String::from_utf8_lossy(&head[..n])
                );
            }
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
        }
        let atime = fs::metadata(&self.canary).unwrap().accessed().unwrap();
        let created = fs::metadata(&self.canary).unwrap().modified().unwrap();
        // relatime still updates atime when it is not newer than mtime: a read would show.
        assert!(atime <= created, "the canary file was read");
    }
}

#[test]
fn hls_playlist_naming_local_files_and_urls_is_refused() {
    let ws = Workspace::new("evil-hls");
    let bait = Bait::new(&ws);
    let src = ws.path().join("upload.m3u8");
    fs::write(
        &src,
        format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n{}\n#EXTINF:2,\n{}\n#EXT-X-ENDLIST\n",
            bait.canary.display(),
            bait.url()
        ),
    )
    .unwrap();
    bait.assert_untouched(&ws.transcode(&src, "out", Some("evil-hls"), &[]));
}

#[test]
fn concat_list_naming_local_files_is_refused() {
    let ws = Workspace::new("evil-concat");
    let bait = Bait::new(&ws);
    let src = ws.path().join("upload.mp4");
    fs::write(
        &src,
        format!(
            "ffconcat version 1.0\nfile '{}'\nfile '{}'\n",
            bait.canary.display(),
            bait.url()
        ),
    )
    .unwrap();
    let run = ws.transcode(&src, "out", Some("evil-concat"), &[]);
    bait.assert_untouched(&run);
    let error = run.status()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("not accepted"), "{error}");
}

#[test]
fn raw_h264_stream_without_timestamps_is_measured_and_encoded() {
    let ws = Workspace::new("raw");
    let src = ws.path().join("camera.h264");
    make(
        &src,
        "-f lavfi -i testsrc2=size=640x360:rate=30:duration=3 -c:v libx264 \
         -preset veryfast -pix_fmt yuv420p",
    );
    let run = ws.transcode(&src, "out", Some("raw"), &["--ladder", "360:800"]);
    run.assert_success();
    let status = run.status();
    assert_eq!(status["state"], "ready", "{status:#}");
    assert_eq!(warnings(&status), Vec::<String>::new(), "an intact source");
    let duration = num(&status["source"]["durationSeconds"]).unwrap();
    assert!((duration - 3.0).abs() < 0.1, "measured duration {duration}");
    let out = probe(&run.manifest_dir().join("360p/index.m3u8"));
    let encoded = num(&out["format"]["duration"]).unwrap();
    assert!((encoded - 3.0).abs() < 0.1, "encoded duration {encoded}");
}

#[test]
fn interrupt_mid_encode_ends_interrupted_and_cleans_scratch() {
    let ws = Workspace::new("interrupt");
    let src = ws.clip("src.mp4", 1280, 720, 20.0, true);
    let out = ws.subdir("out");
    let tmp = ws.subdir("tmp");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_video-transcoder"))
        .args(["transcode", src.to_str().unwrap(), "--id", "stop", "--out"])
        .arg(&out)
        .env("TMPDIR", &tmp)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status_path = out.join("videos/stop/status.json");
    let started = std::time::Instant::now();
    loop {
        let percent = fs::read(&status_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|s| num(&s["progress"]["percent"]));
        if percent.is_some_and(|p| p > 0.0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "encoding never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: signalling the child we spawned, by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let exit = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!exit.success(), "an interrupted job is not a success");
    let status: serde_json::Value =
        serde_json::from_slice(&fs::read(&status_path).unwrap()).unwrap();
    assert_eq!(status["state"], "interrupted", "{status:#}");
    assert!(status["timestamps"]["finished"].is_string());
    assert!(
        stderr.lines().last().unwrap_or("").starts_with("error: "),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?} to stop",
        started.elapsed()
    );
    assert_eq!(
        fs::read_dir(&tmp).unwrap().count(),
        0,
        "scratch left behind"
    );
}

#[test]
fn undecodable_audio_leaves_a_partial_video_only_package() {
    let ws = Workspace::new("bad-audio");
    let src = ws.clip_with(
        "src.mp4",
        "testsrc2=size=320x180:rate=30:duration=3",
        Some(3.0),
        &["-pix_fmt", "yuv420p"],
    );
    // Overwrite every audio packet's bytes in place: the container stays valid, the AAC does not.
    let (packets, _) = ffprobe(
        &["-select_streams", "a", "-show_entries", "packet=pos,size"],
        &src,
    );
    let mut bytes = fs::read(&src).unwrap();
    let packets = packets["packets"].as_array().unwrap();
    assert!(!packets.is_empty());
    for p in packets {
        let pos: usize = p["pos"].as_str().unwrap().parse().unwrap();
        let size: usize = p["size"].as_str().unwrap().parse().unwrap();
        bytes[pos..pos + size].fill(0xff);
    }
    fs::write(&src, bytes).unwrap();

    let run = ws.transcode(&src, "out", Some("bad-audio"), &[]);
    run.assert_success();
    let status = run.status();
    assert_eq!(status["state"], "partial", "{status:#}");
    assert_eq!(status["playable"], true);
    let audio = status["renditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "audio")
        .unwrap();
    assert_eq!(audio["state"], "failed");
    assert!(audio["error"].as_str().is_some_and(|e| e.contains("audio")));
    let warnings = warnings(&status);
    assert!(
        warnings.iter().any(|w| w.contains("audio packets")),
        "{warnings:?}"
    );
    let master = run.master();
    assert!(master.media.is_empty(), "no audio group without audio");
    assert!(master.variants.iter().all(|v| v.get("AUDIO").is_none()));
    assert!(!run.manifest_dir().join("audio").exists());
    let stderr_lines = run.stderr.lines().count();
    assert!(
        stderr_lines < 40,
        "one log line per damaged packet: {stderr_lines} lines"
    );
}

/// Audio and video that end or start at different times come out as renditions of one length,
/// all starting at 0: audio that ends first is padded with silence, video that ends first holds
/// its last picture, and video that starts late opens on its first picture. Players then see
/// one duration and no gap at the start.
#[test]
fn audio_and_video_of_different_lengths_come_out_equally_long() {
    let ws = Workspace::new("av_lengths");
    let video =
        |seconds: u32| format!("-f lavfi -i testsrc2=size=320x180:rate=30:duration={seconds}");
    let audio = |seconds: u32| format!("-f lavfi -i sine=sample_rate=48000:duration={seconds}");
    let codecs = "-c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac";
    let cases = [
        (
            "audio_longer.mp4",
            format!("{} {} {codecs}", video(2), audio(5)),
            5.0,
        ),
        (
            "video_longer.mp4",
            format!("{} {} {codecs}", video(5), audio(2)),
            5.0,
        ),
        (
            "video_late.mkv",
            format!("-itsoffset 2 {} {} {codecs}", video(2), audio(4)),
            4.0,
        ),
    ];
    for ((name, args, seconds), extra) in cases
        .iter()
        .flat_map(|case| [(case, &[][..]), (case, CHUNKED)])
    {
        let (name, seconds) = (*name, *seconds);
        let src = ws.path().join(name);
        if !src.exists() {
            make(&src, args);
        }
        let out = format!("out-{name}-{}", extra.len());
        let run = ws.transcode(&src, &out, Some("av"), extra);
        run.assert_success();
        let status = run.status();
        for r in status["renditions"].as_array().unwrap() {
            let playlist = run.manifest_dir().join(r["playlist"].as_str().unwrap());
            let listed = MediaPlaylist::read(&playlist).total_duration();
            assert!(
                (listed - seconds).abs() < 0.1,
                "{name} {extra:?} {}: {listed} s",
                r["name"]
            );
            let select = if r["kind"] == "audio" { "a:0" } else { "v:0" };
            let media = packets(&playlist, select);
            assert!(
                media.start() < 0.1,
                "{name} {}: starts at {}",
                r["name"],
                media.start()
            );
            assert!(
                (media.duration() - seconds).abs() < 0.1,
                "{name} {}",
                r["name"]
            );
            assert_eq!(r["framesDone"], r["framesExpected"], "{name}: {r:#}");
        }
    }
}

/// A Matroska file cut in half has no index to check at probe time: the pass finds the video
/// stopping at 2 s of 4 s and the job fails as truncated, even though every rendition is padded
/// to the source's length otherwise.
#[test]
fn matroska_cut_in_half_fails_as_truncated() {
    let ws = Workspace::new("mkv_cut");
    let full = ws.path().join("full.mkv");
    make(
        &full,
        "-f lavfi -i testsrc2=size=320x180:rate=30:duration=4 -f lavfi -i sine=duration=4 \
         -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac",
    );
    assert_first_half_fails_as_truncated(&ws, &full, "cut.mkv");
}
