//! Requests the service refuses: 4xx with the JSON error body and nothing left behind, 413
//! for uploads over the size limit and 429 when the queue is full, answered even while the
//! client is still sending the body.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::multipart::{Form, Part};

use crate::common::*;
use crate::support::*;

/// Bad requests are refused with 4xx and the JSON error body, and leave nothing behind: an
/// upload over `--max-video-size` is 413 (whether the streamed bytes or the declared length
/// give it away, the latter answered before the body is read, while the client is still
/// sending it) with no file or partial file in the input store; a form without `file`,
/// `metadata` that is not a JSON object, and a file name with a path are 400; an unknown id is
/// 404 and a malformed one 400; triggers whose `inputPath` escapes the store or whose `videoId`
/// is not a safe name are 400 and write nothing to the output store. A file of exactly the
/// limit is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_and_leave_nothing_behind() {
    const LIMIT: usize = 100_000;
    let ws = Workspace::new("api_errors");
    // Just over the limit, within the multipart allowance: only the streamed size tells (and
    // the little that is left unread is already in the server's buffers when it answers).
    let over = write_noise(&ws.path().join("over.mp4"), LIMIT + 4096, 1);
    // Far over it, still within the allowance: the stream is cut with most of it unread.
    let far_over = write_noise(&ws.path().join("far_over.mp4"), 7 * LIMIT, 2);
    // Over the limit and the allowance: the declared length tells, before the body is read.
    let way_over = write_noise(&ws.path().join("way_over.mp4"), 3 << 20, 2);
    let exact = write_noise(&ws.path().join("exact.mp4"), LIMIT, 3);
    let app = spawn_app(&["--max-video-size", &LIMIT.to_string()]).await;
    let api = &app.api;

    let message = assert_error(&api.upload(&over, None).await, 413, "too_large");
    assert!(message.contains(&LIMIT.to_string()), "{message}");
    assert_eq!(files_in(&app.input_dir()), Vec::<String>::new());
    // Checked at the end, so that the rest of the contract is checked either way.
    let cut_short = early_answers(api, &far_over).await;
    let declared_too_large = early_answers(api, &way_over).await;
    assert_eq!(files_in(&app.input_dir()), Vec::<String>::new());

    let no_file = Form::new().text("metadata", r#"{"title": "x"}"#);
    let message = assert_error(&api.upload_form(no_file).await, 400, "bad_request");
    assert!(message.contains("file"), "{message}");

    // The file part comes first and is stored; the bad metadata after it must remove it.
    for metadata in ["[1,2]", "not json", r#""a string""#, "null"] {
        let form = Form::new()
            .part("file", file_part(noise(1000, 4), "clip.mp4"))
            .text("metadata", metadata);
        let message = assert_error(&api.upload_form(form).await, 400, "bad_request");
        assert!(message.contains("metadata"), "{metadata}: {message}");
    }
    for name in ["../../etc/passwd.mp4", "clips/a.mp4", ".hidden.mp4"] {
        let form = Form::new().part("file", file_part(noise(1000, 5), name));
        assert_error(&api.upload_form(form).await, 400, "bad_request");
    }
    assert_eq!(files_in(&app.input_dir()), Vec::<String>::new());

    let unknown = "0b7c61a8-3f55-4cc2-9a0c-4bde6e3f2a10";
    let message = assert_error(
        &api.get(&format!("/video-status/{unknown}")).await,
        404,
        "not_found",
    );
    assert!(message.contains(unknown), "{message}");
    assert_error(&api.get("/video-status/bad.id").await, 400, "bad_request");

    for path in [
        "../x.mp4",
        "/etc/passwd",
        "incoming/../../x.mp4",
        "a//b.mp4",
    ] {
        let answer = api.trigger(&direct_trigger("escape-test", path), &[]).await;
        assert_error(&answer, 400, "bad_request");
    }
    for id in ["bad.id", "../evil", "a b", "é"] {
        let answer = api
            .trigger(&direct_trigger(id, "incoming/a.mp4"), &[])
            .await;
        let message = assert_error(&answer, 400, "bad_request");
        assert!(message.contains("video id"), "{id}: {message}");
    }
    let not_json = api
        .http
        .post(api.url("/transcode"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_error(&Answer::read(not_json).await, 400, "bad_request");
    assert_eq!(files_in(&app.cdn_dir()), Vec::<String>::new());
    assert_eq!(files_in(&app.input_dir()), Vec::<String>::new());

    // Exactly the limit is not over it: accepted, stored whole, then refused as not a video.
    let id = api.upload_accepted(&exact).await;
    let stored = app.input_dir().join(format!("pending/{id}_exact.mp4"));
    assert_eq!(std::fs::metadata(&stored).unwrap().len(), LIMIT as u64);
    let status = api.wait_final(&id).await;
    assert_eq!(status["state"], "failed", "{status:#}");
    app.stop().await;

    let too_large = |answer: &Answer| {
        assert_error(answer, 413, "too_large");
    };
    assert_nothing_lost([
        lost_answers(
            "a streamed upload far over the limit",
            &cut_short,
            too_large,
        ),
        lost_answers("a declared oversize upload", &declared_too_large, too_large),
    ]);
}

/// With `--max-queued-jobs 1` and one job held in the scheduler, uploads and triggers get 429
/// with `Retry-After` and store nothing (an upload's 429 comes before its body is read, while
/// the client is still sending it); the held job still reaches `ready` once memory returns,
/// after which the instance admits work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_429_with_retry_after() {
    let ws = Workspace::new("api_busy");
    let clip = small_clip(&ws, "clip.mp4");
    let big = write_noise(&ws.path().join("big.mp4"), 3 << 20, 7);
    let app = spawn_app(&["--max-queued-jobs", "1"]).await;
    app.put_input("incoming/other.mp4", &clip);
    app.hold_encodes();

    let held = app.api.upload_accepted(&clip).await;
    wait_held(&app.api, &held).await;

    let trigger = app
        .api
        .trigger(&direct_trigger("busy-other", "incoming/other.mp4"), &[])
        .await;
    assert_busy(&trigger);
    // Checked at the end, so that the rest of the contract is checked either way.
    let busy_uploads = early_answers(&app.api, &big).await;
    // The refused upload left nothing: only the held job's source and record, and the copied
    // source.
    assert_eq!(
        files_in(&app.input_dir()),
        vec![
            "incoming/other.mp4".to_string(),
            format!("pending/{held}.json"),
            format!("pending/{held}_clip.mp4")
        ]
    );
    assert_error(
        &app.api.get("/video-status/busy-other").await,
        404,
        "not_found",
    );
    assert_eq!(app.api.status(&held).await["state"], "processing");

    app.release_encodes();
    let status = app.api.wait_final(&held).await;
    assert_eq!(status["state"], "ready", "{status:#}");

    // Room again (polled: the job's status turns `ready` an instant before the registry lets
    // its slot go). Held in the scheduler, so it costs no encode; shutdown interrupts it.
    app.hold_encodes();
    let started = Instant::now();
    let admitted = loop {
        let answer = app
            .api
            .trigger(&direct_trigger("busy-other", "incoming/other.mp4"), &[])
            .await;
        if answer.code != 429 || started.elapsed() > Duration::from_secs(30) {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(admitted.code, 202, "{:?}", admitted.body);
    app.stop().await;

    assert_nothing_lost([lost_answers(
        "an upload to a full queue",
        &busy_uploads,
        assert_busy,
    )]);
}

/// A 429 `busy` error with a `Retry-After` of at least a second.
fn assert_busy(answer: &Answer) {
    assert_error(answer, 429, "busy");
    let retry: u64 = answer.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is a number of seconds");
    assert!(retry >= 1, "Retry-After {retry}");
}

/// Sends `file` `ATTEMPTS` times and returns, for each attempt, the answer or why the client
/// got none. An answer given before the body is read (or with much of it unread) races the
/// client still sending the body, so one attempt may be lucky: every attempt must get it.
async fn early_answers(api: &Api, file: &Path) -> Vec<Result<Answer, String>> {
    const ATTEMPTS: usize = 20;
    let mut answers = Vec::with_capacity(ATTEMPTS);
    for _ in 0..ATTEMPTS {
        let form = Form::new().file("file", file).await.unwrap();
        answers.push(
            api.try_upload_form(form)
                .await
                .map_err(|e| format!("{e:?}")),
        );
    }
    answers
}

/// Checks each answer that arrived with `check`; describes the attempts that got none, or
/// `None` when every attempt got its answer.
fn lost_answers(
    what: &str,
    answers: &[Result<Answer, String>],
    check: impl Fn(&Answer),
) -> Option<String> {
    let lost: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    answers.iter().flatten().for_each(check);
    let first = lost.first()?;
    Some(format!(
        "{what}: {} of {} clients never got an answer (the server closed the connection while \
         they were still sending the body); first: {first}",
        lost.len(),
        answers.len()
    ))
}

/// Fails listing every `lost_answers` description.
fn assert_nothing_lost(lost: impl IntoIterator<Item = Option<String>>) {
    let lost: Vec<String> = lost.into_iter().flatten().collect();
    assert!(lost.is_empty(), "{}", lost.join("\n"));
}

/// A `file` part holding `bytes`, named `name` exactly as given.
fn file_part(bytes: Vec<u8>, name: &str) -> Part {
    Part::bytes(bytes).file_name(name.to_string())
}
