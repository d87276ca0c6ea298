//! Priority across jobs (tier first, then arrival), the memory guard, playable before ready,
//! and a job with a missing source next to a healthy one.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::common::*;
use crate::support::*;

/// Earliest and latest `started` of some renditions.
fn started_span(rs: &[&Value]) -> (DateTime<Utc>, DateTime<Utc>) {
    let times: Vec<DateTime<Utc>> = rs.iter().map(|r| at(&r["started"])).collect();
    (*times.iter().min().unwrap(), *times.iter().max().unwrap())
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
