//! The HTTP service end to end: a real server on 127.0.0.1, real uploads, real encodes.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_plays_over_http_once_ready() {
    let ws = Workspace::new("api_upload");
    let clip = ws.clip("clip.mp4", 640, 360, 3.0, true);
    let app = spawn_app(&[]).await;

    let accepted = app.api.upload(&clip, Some(r#"{"title": "Holiday"}"#)).await;
    assert_eq!(accepted.code, 202, "{:?}", accepted.body);
    let id = accepted.body["videoId"].as_str().unwrap().to_string();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    assert_eq!(accepted.body["status"], "queued");
    assert_eq!(accepted.body["statusUrl"], format!("/video-status/{id}"));
    assert_eq!(
        accepted.body["playbackUrl"],
        app.api.url(&format!("/videos/{id}/manifest/master.m3u8"))
    );
    let estimate = accepted.body["estimatedTime"].as_f64().unwrap();
    assert!(estimate >= 1.0, "estimate {estimate}");

    let status = app.api.wait_final(&id).await;
    assert_eq!(status["state"], "ready", "{status:#}");
    assert_eq!(status["metadata"]["title"], "Holiday");

    let (code, master) = app
        .api
        .text(&format!("/videos/{id}/manifest/master.m3u8"))
        .await;
    assert_eq!(code, 200);
    assert!(master.contains("360p/index.m3u8"), "{master}");
    let segment = app
        .api
        .http
        .get(
            app.api
                .url(&format!("/videos/{id}/manifest/360p/seg_00000.m4s")),
        )
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(segment.status().as_u16(), 206);
    assert_eq!(segment.headers()["content-type"], "video/iso.segment");
    assert_eq!(segment.bytes().await.unwrap().len(), 100);

    // A real client reads the whole package over HTTP.
    let master_url = app.api.url(&format!("/videos/{id}/manifest/master.m3u8"));
    let (probe, stderr) = tokio::task::spawn_blocking(move || {
        ffprobe(&["-show_streams"], std::path::Path::new(&master_url))
    })
    .await
    .unwrap();
    assert!(
        probe["streams"].as_array().is_some_and(|s| !s.is_empty()),
        "ffprobe read nothing: {stderr}"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A tiny clip (one 144p rendition plus audio): the cheapest real encode.
fn small_clip(ws: &Workspace, name: &str) -> PathBuf {
    ws.clip(name, 256, 144, 2.0, true)
}

/// `len` pseudo-random bytes (xorshift64*): not a video, and not compressible.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `noise(len, seed)` to `path`.
fn write_noise(path: &Path, len: usize, seed: u64) -> PathBuf {
    std::fs::write(path, noise(len, seed)).unwrap();
    path.to_path_buf()
}

/// FNV-1a over a byte stream, with its length.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Checksum {
    len: u64,
    fnv: u64,
}

impl Checksum {
    fn new() -> Self {
        Self {
            len: 0,
            fnv: 0xcbf2_9ce4_8422_2325,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        for &b in bytes {
            self.fnv = (self.fnv ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn of_file(path: &Path) -> Self {
        let mut file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let mut sum = Self::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).unwrap();
            if n == 0 {
                return sum;
            }
            sum.update(&buf[..n]);
        }
    }
}

/// Reads a response into an [`Answer`] (status, headers, JSON body or `Null`).
async fn try_answer(response: reqwest::Response) -> Result<Answer, reqwest::Error> {
    let code = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await?;
    Ok(Answer {
        code,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    })
}

async fn answer(response: reqwest::Response) -> Answer {
    try_answer(response).await.unwrap()
}

/// `POST /upload` of `file` streamed from disk over HTTP/1.1; `Err` when the client got no
/// answer at all (the server closed the connection while the body was still being sent).
async fn try_upload(api: &Api, file: &Path) -> Result<Answer, reqwest::Error> {
    let form = Form::new().file("file", file).await.unwrap();
    let response = api
        .http
        .post(api.url("/upload"))
        .multipart(form)
        .send()
        .await?;
    try_answer(response).await
}

/// Sends `file` `ATTEMPTS` times and returns, for each attempt, the answer or why the client
/// got none. An answer given before the body is read (or with much of it unread) races the
/// client still sending the body, so one attempt may be lucky: every attempt must get it.
async fn early_answers(api: &Api, file: &Path) -> Vec<Result<Answer, String>> {
    const ATTEMPTS: usize = 20;
    let mut answers = Vec::with_capacity(ATTEMPTS);
    for _ in 0..ATTEMPTS {
        answers.push(try_upload(api, file).await.map_err(|e| format!("{e:?}")));
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

/// `POST /upload` with a hand-made multipart form.
async fn upload_form(api: &Api, form: Form) -> Answer {
    let response = api
        .http
        .post(api.url("/upload"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    answer(response).await
}

/// A `file` part holding `bytes`, named `name` exactly as given.
fn file_part(bytes: Vec<u8>, name: &str) -> Part {
    Part::bytes(bytes).file_name(name.to_string())
}

/// Asserts an error answer: the status code and the body `{"error": {"code", "message"}}`
/// with a non-empty message; returns the message.
fn assert_error(answer: &Answer, status: u16, code: &str) -> String {
    assert_eq!(answer.code, status, "{:?}", answer.body);
    let error = &answer.body["error"];
    assert_eq!(error["code"], code, "{:?}", answer.body);
    let message = error["message"].as_str().unwrap_or_default();
    assert!(!message.trim().is_empty(), "no message: {:?}", answer.body);
    assert_eq!(
        answer.body.as_object().map(|o| o.len()),
        Some(1),
        "only `error` at the top: {:?}",
        answer.body
    );
    message.to_string()
}

/// Copies `clip` into the app's input store as `key`.
fn put_input(app: &TestApp, key: &str, clip: &Path) {
    let to = app.input_dir().join(key);
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(clip, &to).unwrap();
}

/// The direct trigger body.
fn direct_trigger(video_id: &str, input_path: &str) -> Value {
    json!({
        "videoId": video_id,
        "inputBucket": "in",
        "inputPath": input_path,
        "outputBucket": "cdn",
    })
}

/// A GCS object resource as notifications carry it.
fn gcs_object(name: &str, generation: &str) -> Value {
    json!({
        "kind": "storage#object",
        "bucket": "in",
        "name": name,
        "generation": generation,
        "contentType": "video/mp4",
        "size": "1234",
    })
}

/// A Pub/Sub push envelope carrying a GCS notification for `object`.
fn pubsub_push(object: &Value, event_type: &str) -> Value {
    let data = base64::engine::general_purpose::STANDARD.encode(object.to_string());
    json!({
        "message": {
            "data": data,
            "attributes": {
                "eventType": event_type,
                "bucketId": object["bucket"],
                "objectId": object["name"],
                "objectGeneration": object["generation"],
                "payloadFormat": "JSON_API_V1",
            },
            "messageId": "4242",
            "publishTime": "2026-01-01T00:00:00Z",
        },
        "subscription": "projects/p/subscriptions/transcode",
    })
}

/// Sends `object` as a binary-mode CloudEvent of type `kind` (as Eventarc does).
async fn cloud_event(api: &Api, kind: &str, object: &Value) -> Answer {
    let subject = format!("objects/{}", object["name"].as_str().unwrap());
    let headers = [
        ("ce-specversion", "1.0"),
        ("ce-type", kind),
        (
            "ce-source",
            "//storage.googleapis.com/projects/_/buckets/in",
        ),
        ("ce-subject", subject.as_str()),
        ("ce-id", "8123456789"),
        ("ce-time", "2026-01-01T00:00:00.000Z"),
    ];
    api.trigger(object, &headers).await
}

/// Waits until the job is `processing` with its renditions planned and all still pending:
/// with available memory at 0, it stays like this in the scheduler.
async fn wait_held(api: &Api, id: &str) -> Value {
    api.wait_for(id, |s| {
        s["state"] == "processing"
            && s["renditions"]
                .as_array()
                .is_some_and(|r| !r.is_empty() && r.iter().all(|r| r["state"] == "pending"))
    })
    .await
}

fn hold_encodes(app: &TestApp) {
    app.memory.0.store(0, Ordering::Relaxed);
}

fn release_encodes(app: &TestApp) {
    app.memory.0.store(64 << 30, Ordering::Relaxed);
}

/// status.json as the job last wrote it to the output store.
async fn status_file(app: &TestApp, id: &str) -> Value {
    let path = app.cdn_dir().join(format!("videos/{id}/status.json"));
    let text = tokio::fs::read_to_string(&path)
        .await
        .unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// status.json once it records a final state: the live status a client polls turns final an
/// instant before the job's last write of status.json.
async fn final_status_file(app: &TestApp, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let status = status_file(app, id).await;
        if !matches!(status["state"].as_str(), Some("queued" | "processing")) {
            return status;
        }
        assert!(
            started.elapsed() < JOB_TIMEOUT,
            "status.json of {id} never got final: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every rendition's name and `started` time, which a second encode would change.
fn rendition_starts(status: &Value) -> Vec<(String, String)> {
    let renditions = status["renditions"].as_array().expect("renditions");
    assert!(!renditions.is_empty(), "{status:#}");
    renditions
        .iter()
        .map(|r| {
            let started = r["started"].as_str().unwrap_or_else(|| panic!("{r}"));
            (r["name"].as_str().unwrap().to_string(), started.to_string())
        })
        .collect()
}

/// Files (not folders) under `dir`, which must exist.
fn files_in(dir: &Path) -> Vec<String> {
    assert!(dir.is_dir(), "{dir:?} is missing");
    files_under(dir)
}

/// One sample of the Prometheus text exposition format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// `{a="x",b="y\"z"}` (from after the `{`): the labels and the rest of the line.
fn parse_labels(mut rest: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = rest.split_once('=').ok_or("label without `=`")?;
        let name = name.trim();
        if !is_label_name(name) {
            return Err(format!("bad label name `{name}`"));
        }
        let mut chars = after
            .strip_prefix('"')
            .ok_or("unquoted label value")?
            .char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => return Err(format!("bad escape `\\{c}`")),
                },
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label `{name}` twice"));
        }
        rest = after[1 + end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Parses the Prometheus text format: comments (`# HELP`, `# TYPE`) and empty lines are
/// skipped; every other line must be `name value` or `name{labels} value` (an optional integer
/// timestamp may follow), with a float value.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = (|| -> Result<Sample, String> {
            let name_end = line.find(['{', ' ']).ok_or("no value")?;
            let name = &line[..name_end];
            if !is_metric_name(name) {
                return Err(format!("bad metric name `{name}`"));
            }
            let (labels, rest) = match line[name_end..].strip_prefix('{') {
                Some(after) => parse_labels(after)?,
                None => (BTreeMap::new(), &line[name_end..]),
            };
            let mut fields = rest.split_whitespace();
            let value = fields.next().ok_or("no value")?;
            let value = parse_float(value).ok_or(format!("`{value}` is not a float"))?;
            if let Some(timestamp) = fields.next() {
                timestamp
                    .parse::<i64>()
                    .map_err(|_| format!("bad timestamp `{timestamp}`"))?;
            }
            if fields.next().is_some() {
                return Err("junk after the value".into());
            }
            Ok(Sample {
                name: name.to_string(),
                labels,
                value,
            })
        })();
        samples.push(parsed.unwrap_or_else(|e| panic!("not Prometheus text ({e}): {line:?}")));
    }
    samples
}

/// The value of the sample `name` whose labels include every pair in `labels`.
fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

async fn scrape(api: &Api) -> Vec<Sample> {
    let response = api.http.get(api.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    parse_prometheus(&response.text().await.unwrap())
}

/// Scrapes until `done(samples)` holds: the job's final state shows in its status an instant
/// before the registry counts it.
async fn scrape_until(api: &Api, done: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let started = Instant::now();
    loop {
        let samples = scrape(api).await;
        if done(&samples) {
            return samples;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "metrics never got there: {samples:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

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
    let message = assert_error(&upload_form(api, no_file).await, 400, "bad_request");
    assert!(message.contains("file"), "{message}");

    // The file part comes first and is stored; the bad metadata after it must remove it.
    for metadata in ["[1,2]", "not json", r#""a string""#, "null"] {
        let form = Form::new()
            .part("file", file_part(noise(1000, 4), "clip.mp4"))
            .text("metadata", metadata);
        let message = assert_error(&upload_form(api, form).await, 400, "bad_request");
        assert!(message.contains("metadata"), "{metadata}: {message}");
    }
    for name in ["../../etc/passwd.mp4", "clips/a.mp4", ".hidden.mp4"] {
        let form = Form::new().part("file", file_part(noise(1000, 5), name));
        assert_error(&upload_form(api, form).await, 400, "bad_request");
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
    assert_error(&answer(not_json).await, 400, "bad_request");
    assert_eq!(files_in(&app.cdn_dir()), Vec::<String>::new());
    assert_eq!(files_in(&app.input_dir()), Vec::<String>::new());

    // Exactly the limit is not over it: accepted, stored whole, then refused as not a video.
    let accepted = api.upload(&exact, None).await;
    assert_eq!(accepted.code, 202, "{:?}", accepted.body);
    let id = accepted.body["videoId"].as_str().unwrap().to_string();
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
    put_input(&app, "incoming/other.mp4", &clip);
    hold_encodes(&app);

    let accepted = app.api.upload(&clip, None).await;
    assert_eq!(accepted.code, 202, "{:?}", accepted.body);
    let held = accepted.body["videoId"].as_str().unwrap().to_string();
    wait_held(&app.api, &held).await;

    let trigger = app
        .api
        .trigger(&direct_trigger("busy-other", "incoming/other.mp4"), &[])
        .await;
    assert_busy(&trigger);
    // Checked at the end, so that the rest of the contract is checked either way.
    let busy_uploads = early_answers(&app.api, &big).await;
    // The refused upload left nothing: only the held job's source and the copied one.
    assert_eq!(
        files_in(&app.input_dir()),
        vec![
            "incoming/other.mp4".to_string(),
            format!("pending/{held}_clip.mp4")
        ]
    );
    assert_error(
        &app.api.get("/video-status/busy-other").await,
        404,
        "not_found",
    );
    assert_eq!(app.api.status(&held).await["state"], "processing");

    release_encodes(&app);
    let status = app.api.wait_final(&held).await;
    assert_eq!(status["state"], "ready", "{status:#}");

    // Room again (polled: the job's status turns `ready` an instant before the registry lets
    // its slot go). Held in the scheduler, so it costs no encode; shutdown interrupts it.
    hold_encodes(&app);
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

// ---------------------------------------------------------------------------------------------
// Triggers
// ---------------------------------------------------------------------------------------------

/// The three trigger shapes start jobs for objects in the input store: a direct JSON trigger
/// (202, its own videoId), a Pub/Sub push of a GCS OBJECT_FINALIZE notification (202, a videoId
/// derived from the object), and an Eventarc binary CloudEvent for the same object (200, the
/// same videoId: the existing job). Events of other types are acknowledged with 200 and
/// `ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_shapes_direct_pubsub_and_cloudevent() {
    let ws = Workspace::new("api_triggers");
    let clip = small_clip(&ws, "clip.mp4");
    let app = spawn_app(&[]).await;
    put_input(&app, "incoming/a.mp4", &clip);
    put_input(&app, "incoming/b.mp4", &clip);
    let api = &app.api;

    let direct = api
        .trigger(&direct_trigger("shape-direct", "incoming/a.mp4"), &[])
        .await;
    assert_eq!(direct.code, 202, "{:?}", direct.body);
    assert_eq!(direct.body["videoId"], "shape-direct");
    assert_eq!(direct.body["statusUrl"], "/video-status/shape-direct");
    assert!(
        direct.body["estimatedTime"]
            .as_f64()
            .is_some_and(|t| t >= 1.0)
    );

    let object = gcs_object("incoming/b.mp4", "17");
    let pushed = api
        .trigger(&pubsub_push(&object, "OBJECT_FINALIZE"), &[])
        .await;
    assert_eq!(pushed.code, 202, "{:?}", pushed.body);
    let derived = pushed.body["videoId"].as_str().unwrap().to_string();
    uuid::Uuid::parse_str(&derived).expect("a derived videoId is a UUID");
    assert_ne!(derived, "shape-direct");
    assert_eq!(
        pushed.body["playbackUrl"],
        api.url(&format!("/videos/{derived}/manifest/master.m3u8"))
    );

    for id in ["shape-direct", derived.as_str()] {
        let status = api.wait_final(id).await;
        assert_eq!(status["state"], "ready", "{id}: {status:#}");
    }
    let input = api.status(&derived).await["input"].clone();
    assert!(
        input
            .as_str()
            .is_some_and(|i| i.ends_with("incoming/b.mp4")),
        "{input}"
    );

    let event = cloud_event(api, "google.cloud.storage.object.v1.finalized", &object).await;
    assert_eq!(event.code, 200, "{:?}", event.body);
    assert_eq!(event.body["videoId"], derived.as_str());
    assert_eq!(event.body["status"], "ready");
    assert_eq!(api.status(&derived).await["state"], "ready");

    let deleted = cloud_event(api, "google.cloud.storage.object.v1.deleted", &object).await;
    assert_eq!(deleted.code, 200, "{:?}", deleted.body);
    assert!(
        deleted.body["ignored"]
            .as_str()
            .is_some_and(|why| !why.is_empty()),
        "{:?}",
        deleted.body
    );
    let deleted = api
        .trigger(&pubsub_push(&object, "OBJECT_DELETE"), &[])
        .await;
    assert_eq!(deleted.code, 200, "{:?}", deleted.body);
    assert!(deleted.body["ignored"].is_string(), "{:?}", deleted.body);
    app.stop().await;
}

/// Redelivery is idempotent: while a job is queued or held in the scheduler, the same direct
/// trigger or Pub/Sub message again answers 200 with the same videoId and a live state; the
/// same videoId from another inputPath is 409; after `ready`, another delivery answers 200
/// `ready` and encodes nothing again (rendition start times in status.json unchanged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_triggers_find_the_existing_job() {
    let ws = Workspace::new("api_idempotent");
    let clip = small_clip(&ws, "clip.mp4");
    let app = spawn_app(&[]).await;
    put_input(&app, "incoming/c.mp4", &clip);
    put_input(&app, "incoming/d.mp4", &clip);
    let api = &app.api;
    hold_encodes(&app);

    let direct = direct_trigger("idem-direct", "incoming/c.mp4");
    let push = pubsub_push(&gcs_object("incoming/d.mp4", "42"), "OBJECT_FINALIZE");
    let mut ids = Vec::new();
    for body in [&direct, &push] {
        let first = api.trigger(body, &[]).await;
        assert_eq!(first.code, 202, "{:?}", first.body);
        let id = first.body["videoId"].as_str().unwrap().to_string();
        let again = api.trigger(body, &[]).await;
        assert_eq!(again.code, 200, "{:?}", again.body);
        assert_eq!(again.body["videoId"], id.as_str());
        let state = again.body["status"].as_str().unwrap();
        assert!(matches!(state, "queued" | "processing"), "{state}");
        ids.push(id);
    }
    for (id, body) in ids.iter().zip([&direct, &push]) {
        wait_held(api, id).await;
        let again = api.trigger(body, &[]).await;
        assert_eq!(
            (again.code, again.body["status"].as_str()),
            (200, Some("processing"))
        );
    }

    let other_source = direct_trigger("idem-direct", "incoming/d.mp4");
    let message = assert_error(&api.trigger(&other_source, &[]).await, 409, "conflict");
    assert!(message.contains("idem-direct"), "{message}");

    release_encodes(&app);
    for (id, body) in ids.iter().zip([&direct, &push]) {
        let status = api.wait_final(id).await;
        assert_eq!(status["state"], "ready", "{status:#}");
        let before = final_status_file(&app, id).await;
        assert_eq!(before["state"], "ready", "{before:#}");
        let starts = rendition_starts(&before);

        let again = api.trigger(body, &[]).await;
        assert_eq!(again.code, 200, "{:?}", again.body);
        assert_eq!(again.body["videoId"], id.as_str());
        assert_eq!(again.body["status"], "ready");
        // A second job would show as queued here, then rewrite status.json.
        assert_eq!(api.status(id).await["state"], "ready");
        let after = status_file(&app, id).await;
        assert_eq!(rendition_starts(&after), starts, "{id} was encoded again");
        assert_eq!(after["timestamps"], before["timestamps"]);
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Failures, observability
// ---------------------------------------------------------------------------------------------

/// A corrupt upload fails with a human reason and does not harm the good upload after it or
/// the server; no scratch is left behind and the failed job publishes only its status.json.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_upload_fails_cleanly_and_the_next_one_succeeds() {
    let ws = Workspace::new("api_corrupt");
    let good = small_clip(&ws, "clip.mp4");
    let corrupt = write_noise(&ws.subdir("bad").join("clip.mp4"), 200_000, 6);
    let app = spawn_app(&[]).await;
    let api = &app.api;

    let mut ids = Vec::new();
    for file in [&corrupt, &good] {
        let accepted = api.upload(file, None).await;
        assert_eq!(accepted.code, 202, "{:?}", accepted.body);
        ids.push(accepted.body["videoId"].as_str().unwrap().to_string());
    }

    let failed = api.wait_final(&ids[0]).await;
    assert_eq!(failed["state"], "failed", "{failed:#}");
    assert_eq!(failed["playable"], false);
    let reason = failed["error"].as_str().unwrap_or_default();
    assert!(reason.trim().len() >= 5, "reason: {:?}", failed["error"]);
    assert_eq!(failed["masterPlaylist"], Value::Null);

    let ready = api.wait_final(&ids[1]).await;
    assert_eq!(ready["state"], "ready", "{ready:#}");
    assert_eq!(api.get("/healthz").await.code, 200);

    let left: Vec<_> = std::fs::read_dir(app.scratch_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "scratch left: {left:?}");
    let written = final_status_file(&app, &ids[0]).await;
    assert_eq!(written["state"], "failed", "{written:#}");
    assert_eq!(
        files_in(&app.cdn_dir().join("videos").join(&ids[0])),
        vec!["status.json".to_string()]
    );
    app.stop().await;
}

/// `/metrics` is valid Prometheus text with the job, request, upload, encode and memory
/// series after a job; `/readyz` says ready and `/healthz` answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_readiness_and_health_after_a_job() {
    let ws = Workspace::new("api_metrics");
    let clip = small_clip(&ws, "clip.mp4");
    let clip_size = std::fs::metadata(&clip).unwrap().len() as f64;
    let app = spawn_app(&[]).await;
    let api = &app.api;

    let accepted = api.upload(&clip, None).await;
    assert_eq!(accepted.code, 202, "{:?}", accepted.body);
    let id = accepted.body["videoId"].as_str().unwrap().to_string();
    let status = api.wait_final(&id).await;
    assert_eq!(status["state"], "ready", "{status:#}");

    let samples = scrape_until(api, |s| {
        metric(s, "transcoder_jobs_total", &[("state", "ready")]).is_some_and(|v| v >= 1.0)
    })
    .await;
    let value = |name: &str, labels: &[(&str, &str)]| {
        metric(&samples, name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in {samples:#?}"))
    };
    let uploads = value(
        "transcoder_http_requests_total",
        &[("route", "/upload"), ("status", "202")],
    );
    assert!(uploads >= 1.0, "{uploads}");
    let bytes = value("transcoder_upload_bytes_total", &[]);
    assert!(bytes >= clip_size, "{bytes} < {clip_size}");
    let encodes = value("transcoder_encode_seconds_bucket", &[("le", "+Inf")]);
    assert!(encodes >= 1.0, "{encodes}");
    assert!(value("transcoder_encode_seconds_count", &[]) >= 1.0);
    let rss = value("process_resident_memory_bytes", &[]);
    assert!(rss > 0.0, "{rss}");
    let available = value("transcoder_memory_available_bytes", &[]);
    assert!(available >= 0.0, "{available}");

    let ready = api.get("/readyz").await;
    assert_eq!(ready.code, 200, "{:?}", ready.body);
    assert_eq!(ready.body["ready"], true);
    let health = api.get("/healthz").await;
    assert_eq!((health.code, &health.body["status"]), (200, &json!("ok")));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Transport and the local CDN
// ---------------------------------------------------------------------------------------------

/// An upload past 32 MiB over HTTP/2 cleartext (prior knowledge), streamed from disk, is
/// accepted and stored byte for byte; being noise, its job then fails with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_streams_a_large_upload_byte_for_byte() {
    const SIZE: usize = 40 << 20;
    let ws = Workspace::new("api_h2c");
    let big = ws.path().join("noise.mp4");
    let sent = {
        let big = big.clone();
        tokio::task::spawn_blocking(move || {
            let mut file = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
            let mut sum = Checksum::new();
            for chunk in 0..(SIZE >> 20) as u64 {
                let bytes = noise(1 << 20, 0x9e37_79b9 + chunk);
                sum.update(&bytes);
                file.write_all(&bytes).unwrap();
            }
            file.flush().unwrap();
            sum
        })
        .await
        .unwrap()
    };
    assert_eq!(sent.len, SIZE as u64);
    let app = spawn_app(&[]).await;

    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let form = Form::new().file("file", &big).await.unwrap();
    let response = h2
        .post(app.api.url("/upload"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let accepted = answer(response).await;
    assert_eq!(accepted.code, 202, "{:?}", accepted.body);
    let id = accepted.body["videoId"].as_str().unwrap().to_string();

    let stored = app.input_dir().join(format!("pending/{id}_noise.mp4"));
    let received = tokio::task::spawn_blocking(move || Checksum::of_file(&stored))
        .await
        .unwrap();
    assert_eq!(received, sent);

    let status = app.api.wait_final(&id).await;
    assert_eq!(status["state"], "failed", "{status:#}");
    assert!(
        status["error"]
            .as_str()
            .is_some_and(|e| !e.trim().is_empty()),
        "{status:#}"
    );
    app.stop().await;
}

/// The first URI line of a playlist that is not a tag.
fn first_uri(playlist: &str) -> String {
    playlist
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_else(|| panic!("no URI in {playlist}"))
        .to_string()
}

/// The `URI` of a media playlist's `#EXT-X-MAP`.
fn init_uri(playlist: &str) -> String {
    let map = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:"))
        .unwrap_or_else(|| panic!("no EXT-X-MAP in {playlist}"));
    parse_attributes(map)["URI"].clone()
}

/// The local CDN serves what players need: the HLS MIME types (master and media playlists
/// `application/vnd.apple.mpegurl`, `init.mp4` `video/mp4`, segments `video/iso.segment`),
/// byte ranges (206 with `Content-Range`), CORS for any origin and cache rules; a missing
/// file is 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cdn_serves_player_headers() {
    let ws = Workspace::new("api_cdn");
    let clip = small_clip(&ws, "clip.mp4");
    let app = spawn_app(&[]).await;
    let api = &app.api;
    let accepted = api.upload(&clip, None).await;
    assert_eq!(accepted.code, 202, "{:?}", accepted.body);
    let id = accepted.body["videoId"].as_str().unwrap().to_string();
    let status = api.wait_final(&id).await;
    assert_eq!(status["state"], "ready", "{status:#}");

    let base = format!("/videos/{id}/manifest");
    let get = |path: String, range: Option<&'static str>| {
        let mut request = api
            .http
            .get(api.url(&path))
            .header("origin", "https://player.example");
        if let Some(range) = range {
            request = request.header("range", range);
        }
        async move { request.send().await.unwrap() }
    };
    let check = |response: &reqwest::Response, code: u16, content_type: &str, cache: &str| {
        let path = response.url().path().to_string();
        assert_eq!(response.status().as_u16(), code, "{path}");
        let headers = response.headers();
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(headers["access-control-allow-origin"], "*", "{path}");
        let cache_control = headers["cache-control"].to_str().unwrap();
        assert!(cache_control.contains(cache), "{path}: {cache_control}");
    };

    let master = get(format!("{base}/master.m3u8"), None).await;
    check(&master, 200, "application/vnd.apple.mpegurl", "no-cache");
    let master = master.text().await.unwrap();
    assert!(master.starts_with("#EXTM3U"), "{master}");
    let variant = first_uri(&master);
    let folder = variant.rsplit_once('/').map_or("", |(f, _)| f).to_string();

    let media = get(format!("{base}/{variant}"), None).await;
    check(&media, 200, "application/vnd.apple.mpegurl", "no-cache");
    let media = media.text().await.unwrap();
    let init = init_uri(&media);
    assert_eq!(init, "init.mp4", "{media}");
    let segment = first_uri(&media);
    assert!(segment.ends_with(".m4s"), "{media}");

    let init = get(format!("{base}/{folder}/{init}"), None).await;
    check(&init, 200, "video/mp4", "immutable");

    let on_disk = app
        .cdn_dir()
        .join(format!("videos/{id}/manifest/{folder}/{segment}"));
    let whole = std::fs::read(&on_disk).unwrap();
    assert!(whole.len() > 100, "{} bytes", whole.len());
    let part = get(format!("{base}/{folder}/{segment}"), Some("bytes=0-99")).await;
    check(&part, 206, "video/iso.segment", "immutable");
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 0-99/{}", whole.len()).as_str()
    );
    let exposed = part.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("content-range"), "{exposed}");
    assert_eq!(part.bytes().await.unwrap(), whole[..100]);

    let full = get(format!("{base}/{folder}/{segment}"), None).await;
    check(&full, 200, "video/iso.segment", "immutable");
    assert_eq!(full.bytes().await.unwrap(), whole[..]);

    let missing = get(format!("{base}/{folder}/seg_99999.m4s"), None).await;
    assert_eq!(missing.status().as_u16(), 404);
    app.stop().await;
}
