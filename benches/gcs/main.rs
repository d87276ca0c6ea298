//! Cloud Storage benchmark. Run: `cargo bench --bench gcs` (or e.g. `BENCH_CASES=1gib,8gib`)
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
//!   big      — a 1 GiB and an 8 GiB source (raw 1080p video in a MOV, made in the emulator's
//!              folder, see `big`) transcoded to one 240p rung on a fresh server: the job reads
//!              the object by ranged reads, so the server's memory should not grow with the
//!              source's size. The server's VmRSS is sampled every 50 ms: before, peak and VmHWM.
//! Cases: env `BENCH_CASES`, a comma list of `clip`, `1gib`, `8gib` (default: all); the 8 GiB
//! case needs about 8.5 GB of free disk while it runs (the object is deleted afterwards).
//! Scratch and emulator folders are under `target/tmp`, on the real disk. Nothing is asserted;
//! it exits non-zero only if the set-up fails. Every process it starts is killed when the bench
//! ends, panics included.

#[path = "../common/mod.rs"]
mod common;
// The tests' emulator; the bench uses part of it.
mod big;
#[allow(dead_code)]
#[path = "../../tests/common/gcs.rs"]
mod emulator;
mod inputs;
mod report;

use std::path::Path;
use std::time::{Duration, Instant};

use big::BigRun;
use common::{Server, memory};
use emulator::Emulator;
use inputs::clip;
use serde_json::{Value, json};

pub const INPUT: &str = "bench-in";
pub const CDN: &str = "bench-cdn";
const CDN_PREFIX: &str = "media";
const GIB: u64 = 1 << 30;
pub const MIB: f64 = (1 << 20) as f64;
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

/// The service's settings for the emulator's buckets.
pub fn gcs_settings(emulator: &Emulator) -> Vec<(&'static str, String)> {
    vec![
        ("INPUT_STORE", format!("gs://{INPUT}")),
        ("OUTPUT_STORE", format!("gs://{CDN}/{CDN_PREFIX}")),
        ("GCS_ENDPOINT", emulator.endpoint()),
    ]
}

pub async fn trigger(http: &reqwest::Client, server: &Server, body: &Value) {
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

pub async fn status(http: &reqwest::Client, server: &Server, id: &str) -> Value {
    let url = format!("{}/video-status/{id}", server.base);
    http.get(url).send().await.unwrap().json().await.unwrap()
}

pub fn is_final(state: &str) -> bool {
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

fn main() {
    let cases = std::env::var("BENCH_CASES").unwrap_or_else(|_| "clip,1gib,8gib".into());
    let cases: Vec<&str> = cases.split(',').map(str::trim).collect();
    for case in &cases {
        assert!(
            ["clip", "1gib", "8gib"].contains(case),
            "BENCH_CASES takes clip, 1gib, 8gib; not `{case}`"
        );
    }
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
        let mut runs = Vec::new();
        if cases.contains(&"clip") {
            let clip = clip();
            let bytes = std::fs::read(&clip).unwrap();
            emulator.put(INPUT, "clip.mp4", bytes).await;
            for round in 1..=ROUNDS {
                for store in [Store::Local, Store::Gcs] {
                    runs.push(run_clip(store, round, &clip, &emulator, &http).await);
                }
            }
        }
        let mut bigs: Vec<BigRun> = Vec::new();
        for (case, size) in [("1gib", GIB), ("8gib", 8 * GIB)] {
            if cases.contains(&case) {
                bigs.push(big::run(&emulator, &http, size).await);
            }
        }
        let emulator_hwm = emulator.pid().and_then(|pid| memory(pid, "VmHWM"));
        drop(emulator);
        report::print(&runs, &bigs, emulator_hwm);
    });
}
