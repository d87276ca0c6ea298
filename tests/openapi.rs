//! The API description (`src/api/openapi.json`) against the code and the running service: it
//! is OpenAPI 3.1, names exactly the routes `src/api/mod.rs` registers with their methods, every
//! `$ref` resolves, status.json as the Rust types serialize it fits the `JobStatus` schema, and
//! the real binary serves the document and answers as it says (bodies checked against the
//! documented schemas with a small validator for the JSON Schema keywords the document uses).

mod common;

use std::collections::BTreeSet;

use chrono::Utc;
use common::*;
use serde_json::{Value, json};
use video_transcoder::jobs::status::{
    JobState, JobStatus, Progress, RenditionKind, RenditionState, RenditionStatus, Timestamps,
};
use video_transcoder::media::ladder::Tier;
use video_transcoder::media::source::{AudioInfo, SourceInfo, Transfer, VideoInfo};

const DOCUMENT: &str = include_str!("../src/api/openapi.json");
const ROUTES: &str = include_str!("../src/api/mod.rs");
/// The one `pattern` the document uses; the validator checks it with the service's own rule.
const VIDEO_ID_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("src/api/openapi.json is JSON")
}

/// `(path, method)` of every `.route("…", method(…))` in `src/api/mod.rs`.
fn registered_routes() -> Vec<(String, String)> {
    let mut routes = Vec::new();
    for (i, _) in ROUTES.match_indices(".route(") {
        let rest = ROUTES[i + ".route(".len()..].trim_start();
        let rest = rest
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("a route that is not a literal: {}", &rest[..40]));
        let (path, rest) = rest.split_once('"').unwrap();
        let rest = rest.trim_start().strip_prefix(',').unwrap().trim_start();
        let method: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphabetic() || *c == '_')
            .collect();
        assert!(METHODS.contains(&method.as_str()), "{path}: `{method}`");
        routes.push((path.to_string(), method));
    }
    assert!(routes.len() >= 8, "found only {routes:?} in src/api/mod.rs");
    routes
}

/// Every `"$ref"` under `value`, with where it is.
fn refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push((at.to_string(), r.clone())),
                    _ => refs(v, &format!("{at}/{k}"), out),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// Follows a `$ref` (a response, parameter or header object) to what it names.
fn deref<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(r) => deref(doc, resolve(doc, r).unwrap_or_else(|| panic!("{r}"))),
        None => value,
    }
}

#[test]
fn document_is_openapi_3_1_and_names_every_route() {
    let doc = document();
    let version = doc["openapi"].as_str().expect("openapi is a string");
    assert!(version.starts_with("3.1."), "openapi {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let paths = doc["paths"].as_object().expect("paths");

    // Code → document: each registered route, with its method.
    let routes = registered_routes();
    for (path, method) in &routes {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is routed but not in openapi.json"));
        assert!(
            item[method].is_object(),
            "{method} {path} is routed but not documented"
        );
    }
    // Document → code: every documented path is routed; `/videos/…` is the nested local CDN.
    let routed: BTreeSet<&str> = routes.iter().map(|(p, _)| p.as_str()).collect();
    assert!(
        ROUTES.contains(r#".nest("/videos""#),
        "the /videos CDN moved"
    );
    for (path, item) in paths {
        if path.starts_with("/videos/") {
            continue;
        }
        assert!(
            routed.contains(path.as_str()),
            "{path} is documented, not routed"
        );
        for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            assert!(
                routes.contains(&(path.clone(), method.to_string())),
                "{method} {path} is documented, not routed"
            );
        }
    }
    assert!(paths.keys().any(|p| p.starts_with("/videos/")));

    // Operations: unique ids, responses, and every `{param}` of the template declared.
    let mut ids = BTreeSet::new();
    for (path, item) in paths {
        let shared = item["parameters"].as_array().cloned().unwrap_or_default();
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let id = op["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_string()), "operationId {id} twice");
            let responses = op["responses"].as_object().expect("responses");
            assert!(!responses.is_empty(), "{method} {path}: no responses");
            let params: Vec<Value> = shared
                .iter()
                .chain(op["parameters"].as_array().into_iter().flatten())
                .map(|p| deref(&doc, p).clone())
                .collect();
            for name in path.split('{').skip(1).filter_map(|s| s.split_once('}')) {
                assert!(
                    params
                        .iter()
                        .any(|p| p["in"] == "path" && p["name"] == name.0 && p["required"] == true),
                    "{method} {path}: path parameter `{}` not declared",
                    name.0
                );
            }
        }
    }

    // Every `$ref` points inside the document, at something.
    let mut all = Vec::new();
    refs(&doc, "#", &mut all);
    assert!(all.len() > 20, "only {} $refs", all.len());
    for (at, reference) in &all {
        assert!(
            resolve(&doc, reference).is_some(),
            "{at}: $ref {reference} does not resolve"
        );
    }
    assert_eq!(
        doc["components"]["schemas"]["VideoId"]["pattern"],
        VIDEO_ID_PATTERN
    );
}

/// status.json exactly as the Rust types write it (every optional field present, then every
/// one absent) fits the `JobStatus` schema, whose objects refuse unknown members. A new field
/// in these types fails to compile here until the schema and this test learn it.
#[test]
fn job_status_schema_matches_the_rust_types() {
    let doc = document();
    let now = Utc::now();
    let rendition = RenditionStatus {
        name: "720p".into(),
        kind: RenditionKind::Video,
        tier: Tier::Standard,
        width: Some(1280),
        height: Some(720),
        target_bitrate_kbps: 2800,
        state: RenditionState::Ready,
        playlist: "720p/index.m3u8".into(),
        size_bytes: Some(1 << 20),
        bitrate_kbps: Some(2700),
        peak_bitrate_kbps: Some(3000),
        frames_done: 300,
        frames_expected: 300,
        error: Some("an error".into()),
        codecs: Some("avc1.64001f".into()),
        started: Some(now),
        finished: Some(now),
    };
    let full = JobStatus {
        video_id: "0b7c61a8-3f55-4cc2-9a0c-4bde6e3f2a10".into(),
        input: Some("/data/input/pending/x_clip.mp4".into()),
        metadata: Some(json!({"title": "Holiday"})),
        state: JobState::Partial,
        playable: true,
        error: Some("one rendition failed".into()),
        progress: Progress {
            completed: 1,
            total: 2,
            percent: 55.5,
            eta_seconds: Some(3.5),
        },
        source: Some(SourceInfo {
            container: "mov,mp4,m4a,3gp,3g2,mj2".into(),
            duration_seconds: 10.0,
            size_bytes: 123_456,
            video: Some(VideoInfo {
                stream_index: 0,
                codec: "h264".into(),
                duration_seconds: 10.0,
                coded_width: 1920,
                coded_height: 1088,
                display_width: 1920,
                display_height: 1080,
                rotation: 90,
                sample_aspect_ratio: "1:1".into(),
                avg_frame_rate: 29.97,
                real_frame_rate: 29.97,
                pixel_format: "yuv420p10le".into(),
                bit_depth: 10,
                transfer: Transfer::Pq,
                interlaced: true,
            }),
            audio: vec![AudioInfo {
                stream_index: 1,
                codec: "aac".into(),
                channels: 2,
                sample_rate: 48_000,
            }],
        }),
        renditions: vec![
            rendition.clone(),
            RenditionStatus {
                name: "audio".into(),
                kind: RenditionKind::Audio,
                tier: Tier::Critical,
                width: None,
                height: None,
                state: RenditionState::Encoding,
                size_bytes: None,
                bitrate_kbps: None,
                peak_bitrate_kbps: None,
                error: None,
                codecs: None,
                started: None,
                finished: None,
                ..rendition
            },
        ],
        master_playlist: Some("videos/x/manifest/master.m3u8".into()),
        timestamps: Timestamps {
            queued: now,
            started: Some(now),
            first_playable: Some(now),
            finished: Some(now),
        },
    };
    let schema = json!({"$ref": "#/components/schemas/JobStatus"});
    let mut audio_only = full.clone();
    audio_only.source.as_mut().unwrap().video = None;
    for status in [full, audio_only, JobStatus::queued("v")] {
        let value = serde_json::to_value(&status).unwrap();
        assert_valid(&doc, &schema, &value);
    }
    // And the validator does refuse what does not fit.
    let mut wrong = serde_json::to_value(JobStatus::queued("v")).unwrap();
    wrong["extra"] = json!(1);
    wrong["state"] = json!("done");
    wrong["timestamps"]["queued"] = json!("yesterday");
    wrong.as_object_mut().unwrap().remove("renditions");
    let mut errors = Vec::new();
    validate(&doc, &schema, &wrong, "$", &mut errors);
    assert_eq!(errors.len(), 4, "{errors:#?}");
}

/// The binary serves this document, and its answers fit what it says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_serves_the_document_and_answers_as_documented() {
    let doc = document();
    let ws = Workspace::new("openapi");
    let server = ServerProcess::start(ws.path(), &[("MAX_PARALLEL_ENCODES", "1")]);
    let api = &server.api;

    let response = api.http.get(api.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served: Value = response.json().await.unwrap();
    assert_eq!(served, doc, "GET /openapi.json is not src/api/openapi.json");

    let check = |path: &str, method: &str, answer: &Answer| {
        let content_type = answer.headers["content-type"].to_str().unwrap().to_string();
        check_answer(&doc, path, method, answer.code, &content_type, &answer.body);
    };
    check("/healthz", "get", &api.get("/healthz").await);
    check("/readyz", "get", &api.get("/readyz").await);
    let missing = api.get("/video-status/no-such-video").await;
    assert_eq!(missing.code, 404);
    check("/video-status/{id}", "get", &missing);
    let bad = api.get("/video-status/a.b").await;
    assert_eq!(bad.code, 400);
    check("/video-status/{id}", "get", &bad);
    let page = api
        .http
        .get(api.url("/player/some-video"))
        .send()
        .await
        .unwrap();
    let content_type = page.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("some-video"));
    check_answer(
        &doc,
        "/player/{id}",
        "get",
        200,
        &content_type,
        &Value::Null,
    );
    check("/player/{id}", "get", &api.get("/player/a.b").await);
    let metrics = api.http.get(api.url("/metrics")).send().await.unwrap();
    let content_type = metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(metrics.status().as_u16(), 200);
    check_answer(&doc, "/metrics", "get", 200, &content_type, &Value::Null);

    // /upload: a body that is not multipart (framework, plain text), a bad metadata part.
    let not_multipart = api
        .http
        .post(api.url("/upload"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let content_type = not_multipart.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(not_multipart.status().as_u16(), 400);
    check_answer(&doc, "/upload", "post", 400, &content_type, &Value::Null);
    let clip = ws.clip("clip.mp4", 320, 180, 1.0, true);
    let refused = api.upload(&clip, Some("[1, 2]")).await;
    assert_eq!(refused.code, 400);
    check("/upload", "post", &refused);

    // /transcode: garbage, an event of no interest, an oversized body.
    let garbage = api.trigger(&json!({"nothing": true}), &[]).await;
    assert_eq!(garbage.code, 400);
    check("/transcode", "post", &garbage);
    let deleted = api
        .trigger(
            &json!({"bucket": "in", "name": "x.mp4"}),
            &[("ce-type", "google.cloud.storage.object.v1.deleted")],
        )
        .await;
    assert_eq!(deleted.code, 200);
    check("/transcode", "post", &deleted);
    let huge = api
        .http
        .post(api.url("/transcode"))
        .body(vec![b' '; 3 << 20])
        .send()
        .await
        .unwrap();
    let content_type = huge.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(huge.status().as_u16(), 413);
    check_answer(&doc, "/transcode", "post", 413, &content_type, &Value::Null);

    // A real job: 202 from /upload, 200 (existing) from /transcode naming the same object,
    // its status while queued or running and once final, and the files under /videos.
    let accepted = api.upload(&clip, Some(r#"{"title": "t"}"#)).await;
    assert_eq!(accepted.code, 202, "{:?}", accepted.body);
    check("/upload", "post", &accepted);
    let id = accepted.body["videoId"].as_str().unwrap().to_string();
    let running = api.get(&format!("/video-status/{id}")).await;
    assert_eq!(running.headers["cache-control"], "no-store");
    check("/video-status/{id}", "get", &running);
    let input_path = std::fs::read_dir(ws.path().join("input/pending"))
        .unwrap()
        .map(|e| format!("pending/{}", e.unwrap().file_name().to_string_lossy()))
        .find(|name| name.contains(&id))
        .expect("the stored upload");
    let again = api.trigger(&json!({"inputPath": input_path}), &[]).await;
    assert_eq!(again.code, 200, "{:?}", again.body);
    assert_eq!(again.body["videoId"], id.as_str());
    check("/transcode", "post", &again);
    let last = api.wait_final(&id).await;
    assert_eq!(last["state"], "ready", "{last:#}");
    let done = api.get(&format!("/video-status/{id}")).await;
    check("/video-status/{id}", "get", &done);
    let file = api.get(&format!("/videos/{id}/status.json")).await;
    assert_eq!(file.code, 200);
    check("/videos/{path}", "get", &file);
    let master = api
        .http
        .get(api.url(&format!("/videos/{id}/manifest/master.m3u8")))
        .send()
        .await
        .unwrap();
    let content_type = master.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    check_answer(
        &doc,
        "/videos/{path}",
        "get",
        200,
        &content_type,
        &Value::Null,
    );
    let part = api
        .http
        .get(api.url(&format!("/videos/{id}/manifest/audio/init.mp4")))
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    let content_type = part.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(part.status().as_u16(), 206);
    assert!(part.headers().contains_key("content-range"));
    check_answer(
        &doc,
        "/videos/{path}",
        "get",
        206,
        &content_type,
        &Value::Null,
    );
    drop(server);
}

/// Asserts the document lists `code` for `method path` with a media type covering
/// `content_type`, and (for JSON) that `body` fits its schema.
fn check_answer(
    doc: &Value,
    path: &str,
    method: &str,
    code: u16,
    content_type: &str,
    body: &Value,
) {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    let response = op["responses"]
        .get(code.to_string())
        .unwrap_or_else(|| panic!("{method} {path}: {code} is not documented ({body})"));
    let response = deref(doc, response);
    let essence = content_type.split(';').next().unwrap().trim();
    let range = format!("{}/*", essence.split('/').next().unwrap());
    let content = &response["content"];
    let media = [essence, range.as_str(), "*/*"]
        .iter()
        .find_map(|m| content.get(*m))
        .unwrap_or_else(|| {
            panic!("{method} {path} {code}: `{content_type}` is not documented ({body})")
        });
    if essence == "application/json" {
        assert_valid(doc, &media["schema"], body);
    }
}

fn assert_valid(doc: &Value, schema: &Value, value: &Value) {
    let mut errors = Vec::new();
    validate(doc, schema, value, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "{value:#}\ndoes not fit {schema}:\n{errors:#?}"
    );
}

/// The JSON Schema 2020-12 keywords the document uses; annotations (description, examples,
/// contentMediaType…) are skipped, an unknown `format` or `pattern` is a test error.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        return; // `true` or `{}`-like
    };
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let target = resolve(doc, reference).unwrap_or_else(|| panic!("{reference}"));
        validate(doc, target, value, at, errors);
    }
    let mut fail = |why: String| errors.push(format!("{at}: {why}"));
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            other => panic!("type {other}"),
        };
        let fits = |t: &str| match t {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "number" => value.is_number(),
            "integer" => value.is_i64() || value.is_u64(),
            other => panic!("type {other}"),
        };
        if !types.iter().any(|t| fits(t)) {
            fail(format!("{value} is not {types:?}"));
            return;
        }
    }
    if let Some(expected) = schema.get("const")
        && expected != value
    {
        fail(format!("{value} is not {expected}"));
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        fail(format!("{value} is not one of {options:?}"));
    }
    if let Some(n) = value.as_f64() {
        if schema
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m)
        {
            fail(format!("{n} is below the minimum"));
        }
        if schema
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n > m)
        {
            fail(format!("{n} is above the maximum"));
        }
    }
    if let Some(s) = value.as_str() {
        let chars = s.chars().count() as u64;
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| chars < m)
        {
            fail(format!("`{s}` is too short"));
        }
        if schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| chars > m)
        {
            fail(format!("`{s}` is too long"));
        }
        let format = schema.get("format").and_then(Value::as_str);
        let fits_format = match format {
            None | Some("uri-reference") => true,
            Some("date-time") => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
            Some("uuid") => uuid::Uuid::parse_str(s).is_ok(),
            Some("uri") => s.starts_with("http://") || s.starts_with("https://"),
            Some(other) => panic!("the validator does not know format `{other}`"),
        };
        if !fits_format {
            fail(format!("`{s}` is not a {}", format.unwrap_or_default()));
        }
        let pattern = schema.get("pattern").and_then(Value::as_str);
        let fits_pattern = match pattern {
            None => true,
            Some(VIDEO_ID_PATTERN) => video_transcoder::jobs::validate_video_id(s).is_ok(),
            Some(other) => panic!("the validator does not know pattern `{other}`"),
        };
        if !fits_pattern {
            fail(format!(
                "`{s}` does not match {}",
                pattern.unwrap_or_default()
            ));
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(name) {
                fail(format!("`{name}` is missing"));
            }
        }
        for (name, member) in object {
            let path = format!("{at}.{name}");
            match (
                properties.and_then(|p| p.get(name)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => validate(doc, s, member, &path, errors),
                (None, Some(Value::Bool(false))) => {
                    errors.push(format!("{at}: `{name}` is not in the schema"))
                }
                (None, Some(extra @ Value::Object(_))) => {
                    validate(doc, extra, member, &path, errors)
                }
                (None, _) => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            validate(doc, items, item, &format!("{at}[{i}]"), errors);
        }
    }
    let sub = |s: &Value| {
        let mut e = Vec::new();
        validate(doc, s, value, at, &mut e);
        e
    };
    for s in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        errors.extend(sub(s));
    }
    if let Some(options) = schema.get("anyOf").and_then(Value::as_array)
        && options.iter().all(|s| !sub(s).is_empty())
    {
        errors.push(format!("{at}: {value} fits none of anyOf"));
    }
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let results: Vec<Vec<String>> = options.iter().map(sub).collect();
        let fits = results.iter().filter(|e| e.is_empty()).count();
        if fits != 1 {
            errors.push(format!(
                "{at}: {value} fits {fits} of oneOf, not 1: {results:?}"
            ));
        }
    }
}
