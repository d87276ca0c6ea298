//! Cloud Storage benchmark. Run: `cargo bench --bench gcs`
//!
//! Measures, in one run, what the GCS stores cost against local folders, with fake-gcs-server
//! (from the PATH, on port 80 of a loopback address from 127.0.0.200, objects on disk) standing in
//! for the buckets:
//!   clip     — a generated 1080p30 30 s clip with audio (testsrc2 + sine, x264 ultrafast; cached
//!              in `target/bench-data/`) put in the input store (not timed), then timed from
//!              `POST /transcode` to the status (polled every 100 ms) first saying
//!              `"playable": true`, to `"state": "ready"`, and to master.m3u8 being fetchable
//!              from the output store (the folder's file, or the emulator's public URL). Rounds
//!              alternate local, GCS, local, GCS, each on a fresh release server; the server's
//!              peak RSS (VmHWM) per run, and the ratio GCS ÷ local.
//!   1 GiB    — 1 GiB of pseudo-random bytes streamed into the input bucket (not timed) and
//!              triggered on a server with MAX_VIDEO_SIZE 2 GiB: the job downloads it to scratch,
//!              then fails at probe. The server's VmRSS is sampled every 50 ms: before, peak and
//!              VmHWM, and the download rate from the scratch file's size.
//! Scratch and emulator folders are under `target/tmp`, on the real disk. Nothing is asserted;
//! it exits non-zero only if the set-up fails. Every process it starts is killed when the bench
//! ends, panics included.

#[path = "../common/mod.rs"]
mod common;
// The tests' emulator; the bench uses part of it.
#[allow(dead_code)]
#[path = "../../tests/common/gcs.rs"]
mod emulator;
mod inputs;
mod report;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Server, memory};
use emulator::Emulator;
use inputs::{clip, random_body};
use serde_json::{Value, json};

const INPUT: &str = "bench-in";
const CDN: &str = "bench-cdn";
const CDN_PREFIX: &str = "media";
const GIB: u64 = 1 << 30;
const MIB: f64 = (1 << 20) as f64;
const ROUNDS: usize = 2;

#[derive(Clone, Copy, PartialEq)]
enum Store {
    Local,
    Gcs,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Local => "local",
            Store::Gcs => "gcs",
        }
    }
}

/// One timed transcode of the clip; times in seconds from the trigger.
struct ClipRun {
    store: Store,
    round: usize,
    playable: f64,
    ready: f64,
    master: f64,
    /// The status's own timestamps, from `queued`: started, firstPlayable, finished.
    server: [Option<f64>; 3],
    peak_rss: u64,
}

/// The 1 GiB source download; times in seconds from the trigger.
struct DownloadRun {
    upload_seconds: f64,
    rss_before: u64,
    rss_peak: u64,
    hwm: u64,
    first_bytes: Option<f64>,
    complete: Option<f64>,
    final_at: f64,
    state: String,
    error: String,
    samples: usize,
}

/// The service's settings for the emulator's buckets.
fn gcs_settings(emulator: &Emulator) -> Vec<(&'static str, String)> {
    vec![
        ("INPUT_STORE", format!("gs://{INPUT}")),
        ("OUTPUT_STORE", format!("gs://{CDN}/{CDN_PREFIX}")),
        ("GCS_ENDPOINT", emulator.endpoint()),
    ]
}

async fn trigger(http: &reqwest::Client, server: &Server, body: &Value) {
    let answer = http
        .post(format!("{}/transcode", server.base))
        .json(body)
        .send()
        .await
        .unwrap();
    let code = answer.status().as_u16();
    let text = answer.text().await.unwrap_or_default();
    assert_eq!(code, 202, "trigger {body}: {text}");
}

async fn status(http: &reqwest::Client, server: &Server, id: &str) -> Value {
    let url = format!("{}/video-status/{id}", server.base);
    http.get(url).send().await.unwrap().json().await.unwrap()
}

fn is_final(state: &str) -> bool {
    !matches!(state, "queued" | "processing")
}

/// Seconds from the status's `queued` timestamp to each of `fields`.
fn server_times<const N: usize>(status: &Value, fields: [&str; N]) -> [Option<f64>; N] {
    let at = |field: &str| {
        let text = status["timestamps"][field].as_str()?;
        chrono::DateTime::parse_from_rfc3339(text).ok()
    };
    fields.map(|f| {
        let (from, to) = (at("queued")?, at(f)?);
        Some((to - from).num_milliseconds() as f64 / 1000.0)
    })
}

async fn run_clip(
    store: Store,
    round: usize,
    clip: &Path,
    emulator: &Emulator,
    http: &reqwest::Client,
) -> ClipRun {
    let id = format!("bench-{}-{round}", store.name());
    let (server, body) = match store {
        Store::Local => {
            let server = Server::start(&id, &[]);
            std::fs::create_dir_all(server.input_dir()).unwrap();
            std::fs::copy(clip, server.input_dir().join("clip.mp4")).unwrap();
            let body = json!({ "videoId": id, "inputPath": "clip.mp4" });
            (server, body)
        }
        Store::Gcs => {
            let server = Server::start(&id, &gcs_settings(emulator));
            let body = json!({
                "videoId": id,
                "inputBucket": INPUT,
                "inputPath": "clip.mp4",
                "outputBucket": CDN,
            });
            (server, body)
        }
    };
    let master_key = format!("videos/{id}/manifest/master.m3u8");
    let master_file = server.cdn_dir().join(&master_key);
    let master_object = format!("{CDN_PREFIX}/{master_key}");

    let started = Instant::now();
    trigger(http, &server, &body).await;
    let (mut playable, mut ready, mut master) = (None, None, None);
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let last = loop {
        ticks.tick().await;
        if master.is_none() {
            let there = match store {
                Store::Local => master_file.is_file(),
                Store::Gcs => emulator.get(CDN, &master_object).await.is_some(),
            };
            if there {
                master = Some(started.elapsed().as_secs_f64());
            }
        }
        let s = status(http, &server, &id).await;
        let now = started.elapsed().as_secs_f64();
        if s["playable"] == true && playable.is_none() {
            playable = Some(now);
        }
        let state = s["state"].as_str().unwrap_or("?");
        if state == "ready" && ready.is_none() {
            ready = Some(now);
        }
        assert!(
            state == "ready" || !is_final(state),
            "job {id} ended `{state}`: {s:#}"
        );
        if ready.is_some() && master.is_some() {
            break s;
        }
        assert!(now < 900.0, "job {id} still not done: {s:#}");
    };
    let run = ClipRun {
        store,
        round,
        playable: playable.unwrap(),
        ready: ready.unwrap(),
        master: master.unwrap(),
        server: server_times(&last, ["started", "firstPlayable", "finished"]),
        peak_rss: memory(server.pid(), "VmHWM").unwrap_or(0),
    };
    let renditions = last["renditions"].as_array().map_or(0, Vec::len);
    println!(
        "round {round} {:5}: playable {:6.2} s, ready {:6.2} s, master fetchable {:6.2} s, \
         {renditions} renditions, server peak RSS {:.0} MiB",
        store.name(),
        run.playable,
        run.ready,
        run.master,
        run.peak_rss as f64 / MIB
    );
    run
}

/// The size of the job's downloaded source in `scratch` (`<job>/source`), if it exists.
fn source_size(scratch: &Path) -> Option<u64> {
    let jobs = std::fs::read_dir(scratch).ok()?;
    jobs.flatten()
        .filter_map(|job| std::fs::metadata(job.path().join("source")).ok())
        .map(|m| m.len())
        .max()
}

async fn run_download(emulator: &Emulator, http: &reqwest::Client) -> DownloadRun {
    println!("uploading 1 GiB of pseudo-random bytes to gs://{INPUT}/big.bin ...");
    let uploading = Instant::now();
    emulator.put(INPUT, "big.bin", random_body(GIB)).await;
    let upload_seconds = uploading.elapsed().as_secs_f64();

    let mut settings = gcs_settings(emulator);
    settings.push(("MAX_VIDEO_SIZE", (2 * GIB).to_string()));
    let server = Server::start("download", &settings);
    tokio::time::sleep(Duration::from_millis(500)).await; // settle after start-up
    let pid = server.pid();
    let rss_before = memory(pid, "VmRSS").unwrap_or(0);
    let id = "bench-1gib";
    let body = json!({
        "videoId": id,
        "inputBucket": INPUT,
        "inputPath": "big.bin",
        "outputBucket": CDN,
    });
    let started = Instant::now();
    trigger(http, &server, &body).await;
    let (mut rss_peak, mut samples) = (rss_before, 0);
    let (mut first_bytes, mut complete) = (None, None);
    let mut ticks = tokio::time::interval(Duration::from_millis(50));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let last = loop {
        ticks.tick().await;
        if let Some(rss) = memory(pid, "VmRSS") {
            rss_peak = rss_peak.max(rss);
            samples += 1;
        }
        let now = started.elapsed().as_secs_f64();
        if let Some(size) = source_size(&server.scratch_dir()) {
            if size > 0 && first_bytes.is_none() {
                first_bytes = Some(now);
            }
            if size >= GIB && complete.is_none() {
                complete = Some(now);
            }
        }
        let s = status(http, &server, id).await;
        if is_final(s["state"].as_str().unwrap_or("?")) {
            break s;
        }
        assert!(now < 900.0, "the 1 GiB job is still not done: {s:#}");
    };
    let run = DownloadRun {
        upload_seconds,
        rss_before,
        rss_peak,
        hwm: memory(pid, "VmHWM").unwrap_or(0),
        first_bytes,
        complete,
        final_at: started.elapsed().as_secs_f64(),
        state: last["state"].as_str().unwrap_or("?").to_string(),
        error: last["error"].as_str().unwrap_or("").to_string(),
        samples,
    };
    println!(
        "1 GiB download: ended `{}` after {:.2} s ({}), RSS before {:.0} MiB, peak sampled \
         {:.0} MiB, VmHWM {:.0} MiB",
        run.state,
        run.final_at,
        run.error,
        run.rss_before as f64 / MIB,
        run.rss_peak as f64 / MIB,
        run.hwm as f64 / MIB
    );
    run
}

fn main() {
    let clip = clip();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let emulator =
            Emulator::start_in(Path::new(env!("CARGO_TARGET_TMPDIR")), &[INPUT, CDN]).await;
        println!("emulator on {}", emulator.endpoint());
        let bytes = std::fs::read(&clip).unwrap();
        emulator.put(INPUT, "clip.mp4", bytes).await;

        let mut runs = Vec::new();
        for round in 1..=ROUNDS {
            for store in [Store::Local, Store::Gcs] {
                runs.push(run_clip(store, round, &clip, &emulator, &http).await);
            }
        }
        let download = run_download(&emulator, &http).await;
        let emulator_hwm = emulator.pid().and_then(|pid| memory(pid, "VmHWM"));
        drop(emulator);
        report::print(&runs, &download, emulator_hwm);
    });
}
