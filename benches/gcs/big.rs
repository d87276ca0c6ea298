//! Peak memory of a job whose source is a large object read from the bucket by ranged reads.
//!
//! The source is made where the emulator keeps its objects, without passing through its upload
//! (which would hold it in the emulator's memory): a small placeholder is uploaded, then ffmpeg
//! overwrites the placeholder's file in place (same inode, so the emulator's metadata xattr
//! stays; sizes come from the file). Its video is raw UYVY 1080p at 10 fps in a MOV with the
//! moov at the end (4,147,200 bytes a frame, so every byte is a picture the job must read and
//! decode), no audio; the server transcodes it to the one rung `LADDER=240:400`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{Server, memory};
use crate::emulator::Emulator;
use crate::{INPUT, MIB, gcs_settings, is_final, status, trigger};

const FRAME_BYTES: u64 = 1920 * 1080 * 2;

/// One transcode of a large source; times in seconds from the trigger.
pub struct BigRun {
    pub size: u64,
    pub frames: u64,
    pub make_seconds: f64,
    pub rss_before: u64,
    /// VmRSS sampled every 50 ms.
    pub rss_peak: u64,
    pub hwm: u64,
    pub emulator_hwm: Option<u64>,
    pub final_at: f64,
    pub state: String,
    pub error: String,
    /// The video rendition's frames done and expected, from the final status.
    pub frames_done: (u64, u64),
    pub samples: usize,
}

/// Writes a raw-video MOV of about `size` bytes as `INPUT/key` in the emulator's folder.
fn make_source(emulator: &Emulator, key: &str, size: u64) -> u64 {
    let frames = size / FRAME_BYTES;
    let path = emulator.objects_dir().join(INPUT).join(key);
    let ok = std::process::Command::new("ffmpeg")
        .args("-hide_banner -nostdin -loglevel error -y".split(' '))
        .args("-f lavfi -i testsrc=size=1920x1080:rate=10 -frames:v".split(' '))
        .arg(frames.to_string())
        .args("-c:v rawvideo -pix_fmt uyvy422 -f mov".split(' '))
        .arg(&path)
        .status()
        .expect("ffmpeg not found")
        .success();
    assert!(ok, "making the {size}-byte source failed");
    frames
}

pub async fn run(emulator: &Emulator, http: &reqwest::Client, size: u64) -> BigRun {
    let gib = size as f64 / (1u64 << 30) as f64;
    let key = format!("big-{gib:.0}gib.mov");
    println!("making a {gib:.0} GiB raw-video source as gs://{INPUT}/{key} ...");
    let making = Instant::now();
    emulator.put(INPUT, &key, b"placeholder".to_vec()).await;
    let frames = make_source(emulator, &key, size);
    let make_seconds = making.elapsed().as_secs_f64();

    let mut settings = gcs_settings(emulator);
    settings.push(("LADDER", "240:400".to_string()));
    settings.push(("MAX_VIDEO_SIZE", (2 * size).to_string()));
    let server = Server::start(&format!("big-{gib:.0}"), &settings);
    tokio::time::sleep(Duration::from_millis(500)).await; // settle after start-up
    let pid = server.pid();
    let rss_before = memory(pid, "VmRSS").unwrap_or(0);
    let id = format!("bench-big-{gib:.0}");
    let body = json!({
        "videoId": id,
        "inputBucket": INPUT,
        "inputPath": key,
        "outputBucket": crate::CDN,
    });
    let started = Instant::now();
    trigger(http, &server, &body).await;
    let (mut rss_peak, mut samples) = (rss_before, 0);
    let mut ticks = tokio::time::interval(Duration::from_millis(50));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut polled = Instant::now();
    let last = loop {
        ticks.tick().await;
        if let Some(rss) = memory(pid, "VmRSS") {
            rss_peak = rss_peak.max(rss);
            samples += 1;
        }
        if polled.elapsed() < Duration::from_millis(500) {
            continue;
        }
        polled = Instant::now();
        let s = status(http, &server, &id).await;
        if is_final(s["state"].as_str().unwrap_or("?")) {
            break s;
        }
        let now = started.elapsed().as_secs_f64();
        assert!(
            now < 3600.0,
            "the {gib:.0} GiB job is still not done: {s:#}"
        );
    };
    let run = BigRun {
        size,
        frames,
        make_seconds,
        rss_before,
        rss_peak,
        hwm: memory(pid, "VmHWM").unwrap_or(0),
        emulator_hwm: emulator.pid().and_then(|pid| memory(pid, "VmHWM")),
        final_at: started.elapsed().as_secs_f64(),
        state: last["state"].as_str().unwrap_or("?").to_string(),
        error: last["error"].as_str().unwrap_or("").to_string(),
        frames_done: rendition_frames(&last),
        samples,
    };
    drop(server);
    emulator.delete(INPUT, &key).await;
    println!(
        "{gib:.0} GiB source ({frames} frames): job `{}` after {:.2} s {}, 240p frames {}/{}; \
         server RSS before {:.0} MiB, peak sampled {:.0} MiB, VmHWM {:.0} MiB",
        run.state,
        run.final_at,
        run.error,
        run.frames_done.0,
        run.frames_done.1,
        run.rss_before as f64 / MIB,
        run.rss_peak as f64 / MIB,
        run.hwm as f64 / MIB
    );
    run
}

/// framesDone and framesExpected of the status's video rendition.
fn rendition_frames(status: &serde_json::Value) -> (u64, u64) {
    let renditions = status["renditions"].as_array().cloned().unwrap_or_default();
    let video = renditions.iter().find(|r| r["kind"] == "video");
    let field = |k: &str| video.and_then(|r| r[k].as_u64()).unwrap_or(0);
    (field("framesDone"), field("framesExpected"))
}
