//! Several instances sharing one bucket: one trigger delivered to two of them encodes once, and a
//! job interrupted on one instance resumes on another from the bucket's status.json.

use serde_json::Value;

use crate::common::*;
use crate::*;

/// Two server processes get the same trigger at the same moment (as when Pub/Sub redelivers to
/// another instance): one encodes, the other answers with that job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_trigger_one_encode() {
    let ws = Workspace::new("gcs_two_instances");
    let clip = std::fs::read(ws.clip("clip.mp4", 640, 360, 3.0, true)).unwrap();
    let gcs = emulator().await;
    gcs.put(INPUT, "shared.mp4", clip).await;
    let env = gcs_env(&gcs);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let one = ServerProcess::start(&ws.subdir("one"), &env);
    let two = ServerProcess::start(&ws.subdir("two"), &env);

    let body = trigger("gcs-shared", "shared.mp4");
    let (a, b) = tokio::join!(one.api.trigger(&body, &[]), two.api.trigger(&body, &[]));
    let mut codes = [a.code, b.code];
    codes.sort();
    assert_eq!(codes, [200, 202], "one new job, one existing: {a:?} {b:?}");
    for answer in [&a, &b] {
        assert_eq!(answer.body["videoId"], "gcs-shared");
    }

    let status = one.api.wait_final("gcs-shared").await;
    assert_eq!(status["state"], "ready", "{status:#}");
    // The encoding instance logs the end of its job just after its last status.json write.
    let started = std::time::Instant::now();
    while finished_jobs(&one, "gcs-shared") + finished_jobs(&two, "gcs-shared") == 0 {
        assert!(
            started.elapsed().as_secs() < 10,
            "no instance logged the job's end"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let encoders: Vec<&ServerProcess> = [&one, &two]
        .into_iter()
        .filter(|server| finished_jobs(server, "gcs-shared") > 0)
        .collect();
    assert_eq!(encoders.len(), 1, "exactly one instance ran the job");
    assert_eq!(finished_jobs(encoders[0], "gcs-shared"), 1);
    // Both instances report the same status, from memory or from the bucket.
    let other = two.api.wait_final("gcs-shared").await;
    assert_eq!(other["timestamps"], status["timestamps"]);

    // Once it is done, a redelivery to either instance is answered with the finished job.
    for server in [&one, &two] {
        let again = server.api.trigger(&body, &[]).await;
        assert_eq!(again.code, 200, "{:?}", again.body);
        assert_eq!(again.body["status"], "ready");
    }
}

/// How many times `server`'s log says a job for `video_id` finished.
fn finished_jobs(server: &ServerProcess, video_id: &str) -> usize {
    server
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "job finished" && l.to_string().contains(video_id))
        .count()
}

/// A job stopped on one instance (shutdown mid-encode) is triggered again on another: that one
/// reads status.json from the bucket, keeps the renditions already published and encodes only
/// the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_job_resumes_on_another_instance_from_the_bucket() {
    let ws = Workspace::new("gcs_resume");
    let clip = std::fs::read(ws.clip("clip.mp4", 1280, 720, 3.0, false)).unwrap();
    let gcs = emulator().await;
    gcs.put(INPUT, "resume.mp4", clip).await;
    let body = trigger("gcs-resume", "resume.mp4");

    // The first instance finishes the critical tier, then stops before the 720p pass can start.
    let first = spawn_gcs_app(&gcs, &[]).await;
    assert_eq!(first.api.trigger(&body, &[]).await.code, 202);
    let playable = first
        .api
        .wait_for("gcs-resume", |s| s["playable"] == true)
        .await;
    first.hold_encodes();
    first.stop().await;
    let stopped: Value = serde_json::from_slice(
        &gcs.get(CDN, &cdn_key("gcs-resume", "status.json"))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stopped["state"], "interrupted", "{stopped:#}");
    let kept = ready_renditions(&stopped);
    assert!(!kept.is_empty(), "{playable:#}");

    let second = spawn_gcs_app(&gcs, &[]).await;
    let answer = second.api.trigger(&body, &[]).await;
    assert_eq!(answer.code, 202, "{:?}", answer.body);
    let done = second.api.wait_final("gcs-resume").await;
    assert_eq!(done["state"], "ready", "{done:#}");
    let all = ready_renditions(&done);
    for rendition in &kept {
        assert!(
            all.contains(rendition),
            "{rendition:?} was encoded again: {done:#}"
        );
    }
    assert!(all.len() > kept.len(), "the rest was encoded: {done:#}");
    assert_eq!(
        done["timestamps"]["firstPlayable"],
        stopped["timestamps"]["firstPlayable"]
    );
    second.stop().await;
}

/// Ready renditions with their start times (a re-encode would change them).
fn ready_renditions(status: &Value) -> Vec<(String, String)> {
    status["renditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["state"] == "ready")
        .map(|r| (r["name"].to_string(), r["started"].to_string()))
        .collect()
}

/// The primitive claims rest on: of two creates of one object, one wins and the other is told
/// the object changed; a replace must name the version it read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_create_has_exactly_one_winner() {
    use video_transcoder::storage::{GcsOptions, GcsStore, Store, StoreError};
    let gcs = emulator().await;
    let options = GcsOptions {
        endpoint: Some(gcs.endpoint()),
        retry_budget: std::time::Duration::from_secs(5),
    };
    let store = GcsStore::new(&format!("gs://{CDN}/{CDN_PREFIX}"), &options)
        .await
        .unwrap();
    let first = store.put_if("claims/a", "one".into(), 0).await;
    eprintln!(
        "STORED {:?} {:?}",
        first,
        gcs.get(CDN, "media/claims/a").await.map(String::from_utf8)
    );
    let first = first.unwrap();
    let second = store.put_if("claims/a", "two".into(), 0).await;
    assert!(matches!(second, Err(StoreError::Changed(_))), "{second:?}");
    let stale = store.put_if("claims/a", "three".into(), first + 1).await;
    assert!(matches!(stale, Err(StoreError::Changed(_))), "{stale:?}");
    let (bytes, version) = store.get_versioned("claims/a").await.unwrap().unwrap();
    assert_eq!((bytes.as_ref(), version), (&b"one"[..], first));
    let replaced = store
        .put_if("claims/a", "four".into(), first)
        .await
        .unwrap();
    assert_ne!(replaced, first);
}
