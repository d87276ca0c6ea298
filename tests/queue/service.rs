//! Queue mode end to end: two `serve` processes behind a round-robin proxy, fed by the real
//! Pub/Sub emulator, sharing one output folder. A video made of units on both ends as a single
//! process makes it; a killed or stopped instance's units finish on the other; a unit delivered
//! three times at once is encoded once; a unit that never succeeds ends its video `partial`;
//! and a load of short jobs drains with 429s and nothing lost or duplicated.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{Cluster, envelope};
use crate::common::*;

/// How far a status has got, in an order that must never go back: final or not, renditions
/// completed, per-mille done, and each rendition's state.
fn progress(status: &Value) -> (bool, u64, u64, Vec<u8>) {
    let rank = |state: &str| match state {
        "pending" => 0,
        "encoding" => 1,
        _ => 2,
    };
    let states = status["renditions"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|r| rank(r["state"].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    let p = &status["progress"];
    let final_state = matches!(
        status["state"].as_str(),
        Some("ready" | "partial" | "failed")
    );
    let permille = (num(&p["percent"]).unwrap_or(0.0) * 10.0).round() as u64;
    (
        final_state,
        p["completed"].as_u64().unwrap_or(0),
        permille,
        states,
    )
}

/// Asserts that no status in `seen` went back from the one before it.
fn assert_no_regression(seen: &[Value]) {
    for pair in seen.windows(2) {
        let (before, after) = (progress(&pair[0]), progress(&pair[1]));
        let back = (before.0 && !after.0)
            || after.1 < before.1
            || after.2 < before.2
            || after.3.iter().zip(&before.3).any(|(a, b)| a < b);
        assert!(
            !back,
            "status.json went back:\n{:#}\nthen\n{:#}",
            pair[0], pair[1]
        );
    }
}

/// Every media playlist of the video lists each segment once.
fn assert_segments_listed_once(cluster: &Cluster, id: &str) {
    let manifest = cluster.video_dir(id).join("manifest");
    for entry in std::fs::read_dir(&manifest).unwrap() {
        let folder = entry.unwrap().path();
        if !folder.is_dir() {
            continue;
        }
        let text = std::fs::read_to_string(folder.join("index.m3u8")).unwrap();
        let uris: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect();
        let unique: HashSet<&&str> = uris.iter().collect();
        assert_eq!(unique.len(), uris.len(), "{}:\n{text}", folder.display());
    }
}

/// The output in the shared folder as the single-process contract checks it.
fn run_of(cluster: &Cluster, id: &str) -> Run {
    Run {
        code: Some(0),
        stdout: String::new(),
        stderr: cluster.logs(),
        out_dir: cluster.ws.path().join("cdn"),
        tmp_dir: cluster.ws.subdir("tmp"),
        id: Some(id.into()),
        elapsed: Duration::ZERO,
    }
}

#[tokio::test]
async fn a_two_minute_1080p_video_is_made_in_units_on_both_instances() {
    let cluster = Cluster::start("queue-ladder", 2, &[("CHUNK_SECONDS", "24")], false).await;
    let clip = cluster.ws.clip("source.mp4", 1920, 1080, 120.0, true);
    cluster.put_input("long.mp4", &clip);

    assert_eq!(cluster.trigger("long", "long.mp4").await, 202);
    let mut seen = Vec::new();
    let status = cluster
        .wait_final_seeing("long", |s| seen.push(s.clone()))
        .await;
    assert_eq!(status["state"], "ready", "{status:#}\n{}", cluster.logs());

    assert_no_regression(&seen);
    assert!(
        seen.iter()
            .any(|s| s["state"] == "queued" || s["state"] == "processing")
    );
    check_ready(
        &cluster.ws,
        &run_of(&cluster, "long"),
        &Source::probe(&clip),
        SegmentType::Fmp4,
    );
    assert_segments_listed_once(&cluster, "long");
    let done = cluster.units_total("done").await;
    assert!(
        done.iter().all(|&n| n > 0.0),
        "units done per instance: {done:?}\n{}",
        cluster.logs()
    );
    // 4 critical and 2 standard renditions of 120 s in 24 s chunks, and the audio.
    assert_eq!(done.iter().sum::<f64>(), 11.0, "{status:#}");
}

/// Waits until server `i` runs a unit of `id` and returns when it started.
async fn until_running(cluster: &Cluster, i: usize, id: &str) {
    let started = Instant::now();
    while cluster.encodes(i, id, None) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_killed_instances_units_are_finished_by_the_other() {
    let env = [("CHUNK_SECONDS", "8")];
    let mut cluster = Cluster::start("queue-kill", 2, &env, false).await;
    let clip = cluster.ws.clip("source.mp4", 1280, 720, 32.0, true);
    cluster.put_input("clip.mp4", &clip);

    assert_eq!(cluster.trigger("killed", "clip.mp4").await, 202);
    until_running(&cluster, 0, "killed").await;
    let victim = cluster.servers[0].api.url("");
    cluster.servers[0].child.kill().unwrap(); // SIGKILL: no goodbye, its leases stay behind
    cluster.servers[0].child.wait().unwrap();
    let killed = Instant::now();
    let mut seen = Vec::new();
    let status = cluster
        .wait_final_seeing("killed", |s| seen.push(s.clone()))
        .await;
    assert_eq!(status["state"], "ready", "{status:#}\n{}", cluster.logs());
    eprintln!(
        "queue-kill: the killed instance's units were finished by the other {:.1} s after the \
         kill; answers through the proxy: {:?}",
        killed.elapsed().as_secs_f64(),
        cluster.proxy.answers()
    );

    assert_no_regression(&seen);
    check_ready(
        &cluster.ws,
        &run_of(&cluster, "killed"),
        &Source::probe(&clip),
        SegmentType::Fmp4,
    );
    assert_segments_listed_once(&cluster, "killed");
    assert!(
        cluster.proxy.count(502) > 0,
        "the killed instance dropped a push: {:?}",
        cluster.proxy.answers()
    );
    cluster.proxy.remove_backend(&victim);
    let done = metric(
        &scrape(&cluster.servers[1].api).await,
        "transcoder_work_units_total",
        &[("result", "done")],
    );
    assert!(done.unwrap_or(0.0) > 0.0, "{status:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_instance_answers_503_and_the_other_finishes_its_units() {
    let env = [("CHUNK_SECONDS", "8")];
    let mut cluster = Cluster::start("queue-stop", 2, &env, false).await;
    let clip = cluster.ws.clip("source.mp4", 1280, 720, 32.0, true);
    cluster.put_input("clip.mp4", &clip);

    assert_eq!(cluster.trigger("stopped", "clip.mp4").await, 202);
    until_running(&cluster, 0, "stopped").await;
    let asked = Instant::now();
    let code = tokio::task::block_in_place(|| cluster.servers[0].terminate());
    let stopped_after = asked.elapsed();
    assert_eq!(code, Some(0), "{}", cluster.logs());
    // Cloud Run kills the process 10 s after SIGTERM: the unit must be answered before that.
    assert!(
        stopped_after < Duration::from_secs(10),
        "stopped after {stopped_after:?}"
    );
    assert!(
        cluster.proxy.count(503) > 0,
        "{:?}\n{}",
        cluster.proxy.answers(),
        cluster.logs()
    );

    let status = cluster.wait_final("stopped").await;
    assert_eq!(status["state"], "ready", "{status:#}");
    check_ready(
        &cluster.ws,
        &run_of(&cluster, "stopped"),
        &Source::probe(&clip),
        SegmentType::Fmp4,
    );
    assert_segments_listed_once(&cluster, "stopped");
}

#[tokio::test]
async fn a_unit_delivered_three_times_at_once_is_encoded_once() {
    let cluster = Cluster::start("queue-storm", 2, &[("CHUNK_SECONDS", "4")], true).await;
    let clip = cluster.ws.clip("source.mp4", 640, 360, 8.0, true);
    cluster.put_input("clip.mp4", &clip);
    assert_eq!(cluster.trigger("storm", "clip.mp4").await, 202);
    // 360p and below are one pass (two 4 s chunks) plus the audio: three units.
    let units = cluster.planned_units(3).await;
    let unit = units
        .iter()
        .find(|u| u.attributes["unit"] == "unit-0")
        .expect("unit-0");

    let http = reqwest::Client::new();
    let deliver = |server: usize| {
        http.post(cluster.servers[server].api.url("/work"))
            .json(&envelope(unit))
            .send()
    };
    let answers = futures_util::future::join_all([deliver(0), deliver(0), deliver(1)]).await;
    let codes: Vec<u16> = answers
        .into_iter()
        .map(|a| a.unwrap().status().as_u16())
        .collect();

    let encodes =
        cluster.encodes(0, "storm", Some("unit-0")) + cluster.encodes(1, "storm", Some("unit-0"));
    assert_eq!(encodes, 1, "answers {codes:?}\n{}", cluster.logs());
    assert!(codes.contains(&204), "{codes:?}");
    assert!(
        codes.iter().all(|c| [204, 429].contains(c)),
        "{codes:?}\n{}",
        cluster.logs()
    );
    // A later delivery of the finished unit is done at once, with no encode.
    let again = deliver(1).await.unwrap().status().as_u16();
    assert_eq!(again, 204);
    let encodes =
        cluster.encodes(0, "storm", Some("unit-0")) + cluster.encodes(1, "storm", Some("unit-0"));
    assert_eq!(encodes, 1);
}

#[tokio::test]
async fn a_unit_that_always_fails_is_dead_lettered_and_its_video_ends_partial() {
    let cluster = Cluster::start("queue-poison", 2, &[("CHUNK_SECONDS", "4")], true).await;
    let clip = cluster.ws.clip("source.mp4", 640, 360, 8.0, true);
    cluster.put_input("clip.mp4", &clip);
    assert_eq!(cluster.trigger("poison", "clip.mp4").await, 202);
    let units = cluster.planned_units(3).await;
    // After planning the source loses its audio stream: every delivery of the audio unit fails.
    let silent = cluster.ws.path().join("silent.mp4");
    ffmpeg(&[
        "-i",
        clip.to_str().unwrap(),
        "-an",
        "-c",
        "copy",
        silent.to_str().unwrap(),
    ]);
    cluster.put_input("clip.mp4", &silent);
    cluster.relay(&units).await;

    let status = cluster.wait_final("poison").await;
    assert_eq!(status["state"], "partial", "{status:#}");
    let audio = status["renditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "audio")
        .unwrap();
    assert_eq!(audio["state"], "failed", "{status:#}");
    let why = audio["error"].as_str().unwrap();
    assert!(
        why.contains("it failed 5 times") && why.contains("replaced after it was probed"),
        "{why}"
    );
    assert!(
        status["error"].as_str().unwrap().contains("audio"),
        "{status:#}"
    );
    assert_eq!(
        cluster.proxy.count(500),
        u64::from(crate::cluster::ATTEMPTS),
        "{:?}",
        cluster.proxy.answers()
    );
    let master =
        std::fs::read_to_string(cluster.video_dir("poison").join("manifest/master.m3u8")).unwrap();
    assert!(
        master.contains("360p/index.m3u8") && !master.contains("audio/"),
        "{master}"
    );
}

#[tokio::test]
async fn two_hundred_short_jobs_drain_with_429s_none_lost_none_duplicated() {
    const JOBS: usize = 200;
    // No waiting for a free encoder: a second unit at an instance is answered 429 at once.
    // No images or download: they run after the encoder is free and would hide the 429s.
    let env = [
        ("LADDER", "144:200"),
        ("WORK_WAIT_SECONDS", "0"),
        ("IMAGES", "none"),
        ("DOWNLOAD_RENDITION", "none"),
    ];
    let cluster = Cluster::start("queue-load", 2, &env, false).await;
    let clip = cluster.ws.clip("source.mp4", 256, 144, 2.0, true);
    cluster.put_input("short.mp4", &clip);

    let cluster = &cluster;
    let started = Instant::now();
    let mut depth_peak = 0u64;
    let mut triggered = 0u64;
    for batch in (0..JOBS).collect::<Vec<_>>().chunks(10) {
        let codes = futures_util::future::join_all(
            batch
                .iter()
                .map(|n| async move { cluster.trigger(&format!("load-{n}"), "short.mp4").await }),
        )
        .await;
        assert!(codes.iter().all(|&c| c == 202), "{codes:?}");
        triggered += batch.len() as u64; // one unit each: 144p and audio in one pass
        depth_peak = depth_peak.max(triggered.saturating_sub(cluster.proxy.count(204)));
    }
    let planned_in = started.elapsed();
    let mut states = BTreeMap::new();
    while cluster.proxy.count(204) < JOBS as u64 {
        depth_peak = depth_peak.max(triggered.saturating_sub(cluster.proxy.count(204)));
        assert!(
            started.elapsed() < crate::cluster::VIDEO_TIMEOUT,
            "{:?}\n{}",
            cluster.proxy.answers(),
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained_in = started.elapsed();
    for n in 0..JOBS {
        let status = cluster.wait_final(&format!("load-{n}")).await;
        *states
            .entry(status["state"].as_str().unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    let done = cluster.units_total("done").await;
    eprintln!(
        "queue-load: {JOBS} jobs planned in {:.1} s, drained in {:.1} s; peak queue depth \
         {depth_peak} units; answers {:?}; units done per instance {done:?}",
        planned_in.as_secs_f64(),
        drained_in.as_secs_f64(),
        cluster.proxy.answers()
    );
    assert_eq!(states, BTreeMap::from([("ready".to_string(), JOBS)]));
    assert_eq!(
        done.iter().sum::<f64>(),
        JOBS as f64,
        "each unit encoded once"
    );
    assert!(
        cluster.proxy.count(429) > 0,
        "{:?}",
        cluster.proxy.answers()
    );
}

#[tokio::test]
async fn a_dead_lettered_unit_that_never_ran_is_queued_again() {
    let cluster = Cluster::start("queue-requeue", 1, &[("CHUNK_SECONDS", "4")], true).await;
    let clip = cluster.ws.clip("source.mp4", 640, 360, 8.0, true);
    cluster.put_input("clip.mp4", &clip);
    assert_eq!(cluster.trigger("waited", "clip.mp4").await, 202);
    let units = cluster.planned_units(3).await;
    let unit = units
        .iter()
        .find(|u| u.attributes["unit"] == "unit-0")
        .unwrap();

    // Pub/Sub gave up on it after deliveries that all found no room: it never started.
    let answer = reqwest::Client::new()
        .post(cluster.servers[0].api.url("/work/dead-letter"))
        .json(&envelope(unit))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 204);
    let again = cluster.planned_units(1).await;
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].attributes["unit"], "unit-0");
    assert_eq!(again[0].data, unit.data, "the same unit, queued again");
    let status = cluster.status("waited");
    assert_eq!(status["state"], "queued", "{status:#}");
    assert!(
        status["renditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "pending")
    );
}
