//! Scheduling contracts of the service, end to end on a real server: priority across jobs (tier,
//! then arrival), the memory guard, playable before ready, shutdown and resume (SIGTERM, SIGKILL),
//! and a failing job next to a healthy one. Orderings come from status timestamps, never wall
//! time.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use video_transcoder::jobs::scheduler::{decoder_bytes, encoder_bytes};

/// An RFC 3339 timestamp from status.json.
fn at(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

fn renditions(status: &Value) -> &[Value] {
    status["renditions"].as_array().map_or(&[], Vec::as_slice)
}

fn find<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    renditions(status).iter().find(|r| r["name"] == name)
}

fn rendition<'a>(status: &'a Value, name: &str) -> &'a Value {
    find(status, name).unwrap_or_else(|| panic!("no rendition {name}: {status:#}"))
}

/// The renditions of `tier`, which must exist.
fn of_tier<'a>(status: &'a Value, tier: &str) -> Vec<&'a Value> {
    let found: Vec<&Value> = renditions(status)
        .iter()
        .filter(|r| r["tier"] == tier)
        .collect();
    assert!(!found.is_empty(), "no {tier} renditions: {status:#}");
    found
}

/// Earliest and latest `started` of some renditions.
fn started_span(rs: &[&Value]) -> (DateTime<Utc>, DateTime<Utc>) {
    let times: Vec<DateTime<Utc>> = rs.iter().map(|r| at(&r["started"])).collect();
    (*times.iter().min().unwrap(), *times.iter().max().unwrap())
}

/// Processing, with the source probed and the renditions planned (so its first pass waits in
/// the scheduler's queue).
fn planned(status: &Value) -> bool {
    status["state"] == "processing" && !status["source"].is_null() && !renditions(status).is_empty()
}

fn is_final(status: &Value) -> bool {
    !matches!(status["state"].as_str(), Some("queued" | "processing"))
}

/// The variant folder names (`360p`) of a master playlist served over HTTP.
async fn master_variants(api: &Api, id: &str) -> Vec<String> {
    let (code, text) = api
        .text(&format!("/videos/{id}/manifest/master.m3u8"))
        .await;
    assert_eq!(code, 200, "master of {id}: {text}");
    MasterPlaylist::parse(Path::new("master.m3u8"), &text)
        .variants
        .iter()
        .map(|v| v.name().to_owned())
        .collect()
}

/// Two jobs on a one-encoder pool: passes start by tier first, then by arrival. A's critical
/// pass (queued first) runs before B's critical pass, and B's critical pass (a newer job) runs
/// before A's 720p, which is a less urgent tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_start_by_tier_then_arrival_across_jobs() {
    let ws = Workspace::new("sched_priority");
    let clip_a = ws.clip("a.mp4", 1280, 720, 3.0, true);
    let clip_b = ws.clip("b.mp4", 640, 360, 2.0, false);
    let app = spawn_app(&["--max-parallel-encodes", "1", "--decode-plan", "per-tier"]).await;
    app.memory.0.store(0, Ordering::Relaxed);

    let a = app.api.upload_accepted(&clip_a).await;
    app.api.wait_for(&a, |s| planned(s) || is_final(s)).await;
    let b = app.api.upload_accepted(&clip_b).await;
    app.api.wait_for(&b, |s| planned(s) || is_final(s)).await;
    for id in [&a, &b] {
        let status = app.api.status(id).await;
        assert!(planned(&status), "{status:#}");
        assert!(
            renditions(&status).iter().all(|r| r["started"].is_null()),
            "an encode started with no memory: {status:#}"
        );
    }
    app.memory.0.store(PLENTY_OF_MEMORY, Ordering::Relaxed);

    let sa = app.api.wait_final(&a).await;
    let sb = app.api.wait_final(&b).await;
    assert_eq!(sa["state"], "ready", "{sa:#}");
    assert_eq!(sb["state"], "ready", "{sb:#}");
    assert_eq!(rendition(&sa, "720p")["tier"], "standard");
    let (_, a_critical_last) = started_span(&of_tier(&sa, "critical"));
    let (b_critical_first, b_critical_last) = started_span(&of_tier(&sb, "critical"));
    let a_720 = at(&rendition(&sa, "720p")["started"]);
    assert!(
        a_critical_last < b_critical_first,
        "arrival order within a tier: A's critical started {a_critical_last}, B's {b_critical_first}"
    );
    assert!(
        b_critical_last < a_720,
        "tier beats arrival: B's critical started {b_critical_last}, A's 720p {a_720}"
    );
    app.stop().await;
}

/// The memory guard's estimate of one pass of `tier` for a planned job, as `pass_memory`
/// (src/jobs/run.rs) computes it: one decoder of the source plus one encoder per video rendition
/// of the tier.
fn pass_bytes(status: &Value, tier: &str) -> u64 {
    let size = |v: &Value, w: &str, h: &str| {
        (v[w].as_u64().unwrap() as u32, v[h].as_u64().unwrap() as u32)
    };
    let (w, h) = size(&status["source"]["video"], "codedWidth", "codedHeight");
    let encoders: u64 = of_tier(status, tier)
        .iter()
        .filter(|r| r["kind"] == "video")
        .map(|r| {
            let (w, h) = size(r, "width", "height");
            encoder_bytes(w, h)
        })
        .sum();
    decoder_bytes(w, h) + encoders
}

/// Tier beats arrival even against a pass that was queued first: A's standard pass waits in
/// the queue (the memory guard has room for a critical pass but not for it) when B is
/// uploaded; B's critical pass, queued later, starts before A's 720p. A scheduler going by
/// arrival alone would keep B behind A's blocked pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_critical_pass_overtakes_a_waiting_standard_pass() {
    let ws = Workspace::new("sched_overtake");
    let clip_a = ws.clip("a.mp4", 1920, 1080, 2.0, false);
    let clip_b = ws.clip("b.mp4", 320, 180, 1.0, false);
    let app = spawn_app(&[
        "--max-parallel-encodes",
        "1",
        "--decode-plan",
        "per-tier",
        "--memory-reserve-mb",
        "0",
    ])
    .await;
    app.memory.0.store(0, Ordering::Relaxed);

    let a = app.api.upload_accepted(&clip_a).await;
    let planned_a = app.api.wait_for(&a, |s| planned(s) || is_final(s)).await;
    assert!(planned(&planned_a), "{planned_a:#}");
    let (critical, standard) = (
        pass_bytes(&planned_a, "critical"),
        pass_bytes(&planned_a, "standard"),
    );
    assert!(critical < standard, "{critical} vs {standard}");
    let room = (critical + standard) / 2;
    app.memory.0.store(room, Ordering::Relaxed);

    let playable = app
        .api
        .wait_for(&a, |s| s["playable"] == true || is_final(s))
        .await;
    assert_eq!(playable["state"], "processing", "{playable:#}");
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = app.api.status(&a).await;
        for r in of_tier(&status, "standard") {
            assert!(r["started"].is_null(), "started without room: {status:#}");
        }
    }

    let b = app.api.upload_accepted(&clip_b).await;
    let sb = app.api.wait_final(&b).await;
    assert_eq!(sb["state"], "ready", "{sb:#}");
    assert!(
        pass_bytes(&sb, "critical") <= room,
        "B's pass must fit: {sb:#}"
    );
    let held = app.api.status(&a).await;
    assert!(
        rendition(&held, "720p")["started"].is_null(),
        "A's 720p started while memory was short: {held:#}"
    );
    app.memory.0.store(PLENTY_OF_MEMORY, Ordering::Relaxed);

    let sa = app.api.wait_final(&a).await;
    assert_eq!(sa["state"], "ready", "{sa:#}");
    // A's standard pass was queued on first playable, before B even arrived.
    assert!(at(&sa["timestamps"]["firstPlayable"]) < at(&sb["timestamps"]["queued"]));
    let (_, b_last) = started_span(&of_tier(&sb, "critical"));
    let a_720 = at(&rendition(&sa, "720p")["started"]);
    assert!(
        b_last < a_720,
        "B's critical started {b_last}, A's 720p {a_720}"
    );
    app.stop().await;
}

/// The memory guard: with no memory available nothing starts encoding (the job stays
/// processing, every rendition pending); once memory returns the job finishes, and every
/// rendition started after the release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_memory_delays_encodes_until_memory_returns() {
    let ws = Workspace::new("sched_memory");
    let clip = ws.clip("clip.mp4", 640, 360, 2.0, true);
    let app = spawn_app(&[]).await;
    app.memory.0.store(0, Ordering::Relaxed);

    let id = app.api.upload_accepted(&clip).await;
    app.api.wait_for(&id, |s| planned(s) || is_final(s)).await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let status = app.api.status(&id).await;
        assert!(planned(&status), "{status:#}");
        for r in renditions(&status) {
            assert_eq!(r["state"], "pending", "{status:#}");
            assert!(r["started"].is_null(), "started without memory: {status:#}");
        }
    }
    let released = Utc::now();
    app.memory.0.store(PLENTY_OF_MEMORY, Ordering::Relaxed);

    let status = app.api.wait_final(&id).await;
    assert_eq!(status["state"], "ready", "{status:#}");
    assert!(
        at(&status["timestamps"]["started"]) < released,
        "{status:#}"
    );
    for r in renditions(&status) {
        assert!(
            at(&r["started"]) > released,
            "{} started before memory returned at {released}: {status:#}",
            r["name"]
        );
    }
    app.stop().await;
}

/// Playable before ready: once the critical tier is published the job is playable (with
/// `firstPlayable` set) while higher tiers still encode, and the master served at that moment
/// lists only ≤480p renditions; the finished master lists the premium 1440p.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playable_with_critical_tier_before_premium_is_done() {
    let ws = Workspace::new("sched_playable");
    let clip = ws.clip("clip.mp4", 2560, 1440, 2.0, false);
    let app = spawn_app(&["--max-parallel-encodes", "1"]).await;

    let id = app.api.upload_accepted(&clip).await;
    let playable = app
        .api
        .wait_for(&id, |s| s["playable"] == true || is_final(s))
        .await;
    let early = master_variants(&app.api, &id).await;
    assert_ne!(
        playable["state"], "ready",
        "no poll saw playable before ready: {playable:#}"
    );
    assert_eq!(playable["playable"], true, "{playable:#}");
    assert!(
        !playable["timestamps"]["firstPlayable"].is_null(),
        "{playable:#}"
    );
    assert_eq!(rendition(&playable, "1440p")["tier"], "premium");
    assert_ne!(rendition(&playable, "1440p")["state"], "ready");
    assert!(!early.is_empty(), "an empty master while playable");
    for name in &early {
        assert_eq!(
            rendition(&playable, name)["tier"],
            "critical",
            "master lists {name} while only playable: {early:?}"
        );
    }

    let status = app.api.wait_final(&id).await;
    assert_eq!(status["state"], "ready", "{status:#}");
    assert!(
        at(&status["timestamps"]["firstPlayable"]) <= at(&rendition(&status, "1440p")["started"]),
        "playable only after the premium tier started: {status:#}"
    );
    let late = master_variants(&app.api, &id).await;
    assert!(late.iter().any(|v| v == "1440p"), "{late:?}");
    app.stop().await;
}

/// The real binary in a blocking thread (it polls its log until it serves).
async fn start_server(root: &Path) -> ServerProcess {
    let root = root.to_owned();
    tokio::task::spawn_blocking(move || {
        ServerProcess::start(
            &root,
            &[
                ("MAX_PARALLEL_ENCODES", "1"),
                ("DECODE_PLAN", "per-tier"),
                ("SHUTDOWN_GRACE", "8"),
            ],
        )
    })
    .await
    .unwrap()
}

/// SIGTERM and its exit code, from a blocking thread.
async fn terminate(mut server: ServerProcess) -> (Option<i32>, ServerProcess) {
    tokio::task::spawn_blocking(move || (server.terminate(), server))
        .await
        .unwrap()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", path.display()))
}

/// SIGTERM mid-encode stops cleanly (exit 0, status.json `interrupted` with the critical tier
/// ready, scratch removed); triggering the same source again on a new process resumes: the
/// critical renditions are kept (not encoded again) and only the 720p is encoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_interrupts_and_a_new_trigger_encodes_only_what_is_missing() {
    let ws = Workspace::new("sched_resume");
    let clip = ws.clip("clip.mp4", 1280, 720, 8.0, true);
    let root = ws.subdir("root");

    let server = start_server(&root).await;
    let id = server.api.upload_accepted(&clip).await;
    let seen = server
        .api
        .wait_for(&id, |s| {
            let encoding_720 = find(s, "720p").is_some_and(|r| r["state"] == "encoding");
            (s["playable"] == true && encoding_720) || is_final(s)
        })
        .await;
    assert_eq!(seen["state"], "processing", "{seen:#}");
    let (code, server) = terminate(server).await;
    let log = server.log_text();
    assert_eq!(code, Some(0), "log:\n{log}");
    assert_eq!(
        decode_passes(&log),
        [
            r#"["144p", "240p", "360p", "480p", "audio"]"#,
            r#"["720p"]"#
        ],
        "passes before SIGTERM; log:\n{log}"
    );

    let before = read_json(&root.join(format!("cdn/videos/{id}/status.json")));
    assert_eq!(before["state"], "interrupted", "{before:#}");
    for r in of_tier(&before, "critical") {
        assert_eq!(r["state"], "ready", "{before:#}");
    }
    assert_ne!(rendition(&before, "720p")["state"], "ready", "{before:#}");
    let scratch_left: Vec<_> = std::fs::read_dir(root.join("scratch"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(scratch_left.is_empty(), "scratch left: {scratch_left:?}");

    let key = std::fs::read_dir(root.join("input/pending"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with(&format!("{id}_")))
        .map(|name| format!("pending/{name}"))
        .expect("the upload under input/pending");

    let restarted = Utc::now();
    let server = start_server(&root).await;
    let accepted = server
        .api
        .trigger(&json!({"videoId": id, "inputPath": key}), &[])
        .await;
    assert!(
        matches!(accepted.code, 200 | 202),
        "{}: {:?}",
        accepted.code,
        accepted.body
    );
    let again = server
        .api
        .trigger(&json!({"videoId": id, "inputPath": key}), &[])
        .await;
    assert_eq!(again.code, 200, "a duplicate trigger: {:?}", again.body);
    let after = server.api.wait_final(&id).await;
    assert_eq!(after["state"], "ready", "{after:#}");
    let done = server
        .api
        .trigger(&json!({"videoId": id, "inputPath": key}), &[])
        .await;
    assert_eq!(done.code, 200, "a trigger once ready: {:?}", done.body);
    assert_eq!(done.body["status"], "ready", "{:?}", done.body);
    for old in of_tier(&before, "critical") {
        let name = old["name"].as_str().unwrap();
        assert_eq!(
            rendition(&after, name)["started"],
            old["started"],
            "{name} was encoded again: {after:#}"
        );
    }
    let started_720 = at(&rendition(&after, "720p")["started"]);
    assert!(started_720 > restarted, "720p started {started_720}");
    let variants = master_variants(&server.api, &id).await;
    assert!(variants.iter().any(|v| v == "720p"), "{variants:?}");
    let (code, server) = terminate(server).await;
    let log = server.log_text();
    assert_eq!(code, Some(0), "log:\n{log}");
    let passes = decode_passes(&log);
    assert_eq!(
        passes,
        ["[\"720p\"]"],
        "passes of the resumed run; log:\n{log}"
    );
}

/// A process killed outright (no shutdown grace) leaves status.json saying `processing`; once
/// nobody has rewritten it for a minute, the status endpoint reports it `interrupted` with what
/// to do, and a new trigger resumes it: the critical renditions published before the kill are
/// kept, the 720p is encoded again. The new process removes the dead one's scratch folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_leaves_a_job_that_reads_interrupted_and_resumes() {
    let ws = Workspace::new("sched_killed");
    let clip = ws.clip("clip.mp4", 1280, 720, 8.0, true);
    let root = ws.subdir("root");

    let mut server = start_server(&root).await;
    let id = server.api.upload_accepted(&clip).await;
    let seen = server
        .api
        .wait_for(&id, |s| {
            let encoding_720 = find(s, "720p").is_some_and(|r| r["state"] == "encoding");
            (s["playable"] == true && encoding_720) || is_final(s)
        })
        .await;
    assert_eq!(seen["state"], "processing", "{seen:#}");
    server.child.kill().unwrap(); // SIGKILL: no chance to record anything
    server.child.wait().unwrap();

    // What the status file looks like a minute later: nobody has written it since.
    let path = root.join(format!("cdn/videos/{id}/status.json"));
    let mut left = read_json(&path);
    assert_eq!(left["state"], "processing", "{left:#}");
    let stale = (Utc::now() - chrono::Duration::minutes(2)).to_rfc3339();
    left["timestamps"]["updated"] = json!(stale);
    std::fs::write(&path, serde_json::to_vec_pretty(&left).unwrap()).unwrap();

    let scratch = |root: &Path| std::fs::read_dir(root.join("scratch")).unwrap().count();
    assert_eq!(
        scratch(&root),
        1,
        "the killed process left its scratch folder"
    );

    let restarted = Utc::now();
    let server = start_server(&root).await;
    assert_eq!(
        scratch(&root),
        0,
        "the new process removed the dead one's scratch"
    );
    let shown = server.api.status(&id).await;
    assert_eq!(shown["state"], "interrupted", "{shown:#}");
    let reason = shown["error"].as_str().unwrap_or_default();
    assert!(reason.contains("trigger it again"), "{reason}");

    let key = format!(
        "pending/{}",
        left["input"].as_str().unwrap().rsplit('/').next().unwrap()
    );
    let accepted = server
        .api
        .trigger(&json!({"videoId": id, "inputPath": key}), &[])
        .await;
    assert_eq!(accepted.code, 202, "{:?}", accepted.body);
    let after = server.api.wait_final(&id).await;
    assert_eq!(after["state"], "ready", "{after:#}");
    for old in of_tier(&left, "critical") {
        let name = old["name"].as_str().unwrap();
        assert_eq!(old["state"], "ready", "{left:#}");
        assert_eq!(
            rendition(&after, name)["started"],
            old["started"],
            "{name} was encoded again: {after:#}"
        );
    }
    assert!(at(&rendition(&after, "720p")["started"]) > restarted);
    let (code, server) = terminate(server).await;
    assert_eq!(code, Some(0), "log:\n{}", server.log_text());
    assert_eq!(decode_passes(&server.log_text()), ["[\"720p\"]"]);
}

/// SIGTERM with an upload still arriving: the server lets the request finish and answers it
/// (503, shutting down: the file is not kept and no job starts), then exits 0 within its grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_an_upload_in_flight() {
    let ws = Workspace::new("sched_inflight");
    let root = ws.subdir("root");
    let server = start_server(&root).await;

    // 2 MiB sent in 20 slow chunks: about 2 s on the wire.
    let chunks = futures_util::stream::iter(0..20).then(|_| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<_, std::io::Error>(vec![0u8; 100 * 1024])
    });
    let part =
        reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(chunks)).file_name("slow.mp4");
    let form = reqwest::multipart::Form::new().part("file", part);
    let api = server.api.clone();
    let upload = tokio::spawn(async move { api.try_upload_form(form).await });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (code, server) = terminate(server).await;
    let answer = upload
        .await
        .unwrap()
        .expect("the upload in flight got an answer");
    assert_eq!(answer.code, 503, "{:?}", answer.body);
    assert_eq!(
        answer.body["error"]["code"], "unavailable",
        "{:?}",
        answer.body
    );
    assert_eq!(code, Some(0), "log:\n{}", server.log_text());
    let kept = files_under(&root.join("input"));
    assert!(kept.is_empty(), "the refused upload was kept: {kept:?}");
}

/// The `renditions` of every "decode pass started" line of a JSON server log.
fn decode_passes(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "decode pass started")
        .map(|l| match &l["renditions"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// A job whose source does not exist ends `failed` with a reason naming the key, and does not
/// disturb another job on the same server, which ends `ready`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_source_fails_alone() {
    let ws = Workspace::new("sched_missing");
    let clip = ws.clip("clip.mp4", 640, 360, 2.0, true);
    let app = spawn_app(&[]).await;

    let missing_id = uuid::Uuid::new_v4().to_string();
    let key = format!("pending/{missing_id}_nowhere.mp4");
    let accepted = app
        .api
        .trigger(&json!({"videoId": missing_id, "inputPath": key}), &[])
        .await;
    assert_eq!(accepted.code, 202, "{:?}", accepted.body);
    let good = app.api.upload_accepted(&clip).await;

    let failed = app.api.wait_final(&missing_id).await;
    assert_eq!(failed["state"], "failed", "{failed:#}");
    let reason = failed["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&key),
        "reason does not name {key}: {reason}"
    );
    assert_eq!(failed["playable"], false, "{failed:#}");
    assert!(
        !app.cdn_dir()
            .join(format!("videos/{missing_id}/manifest"))
            .exists(),
        "a failed job left a manifest folder"
    );

    let status = app.api.wait_final(&good).await;
    assert_eq!(status["state"], "ready", "{status:#}");
    assert!(
        master_variants(&app.api, &good)
            .await
            .contains(&"360p".to_string())
    );
    app.stop().await;
}
