//! Requests against the document: the running binary accepts (2xx) exactly the request bodies
//! the document allows and refuses (400) the others, for the cases where the two once disagreed
//! (a fuzzer found them) and their neighbours. Every disagreement is listed before failing.

use base64::Engine as _;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::common::*;
use crate::document;
use crate::schema::validate;
use crate::service::check_answer;

const FINALIZED: &str = "google.cloud.storage.object.v1.finalized";

/// Extra request headers.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// Whether `value` fits `schema`, with the reasons when it does not.
fn allowed(doc: &Value, schema: &Value, value: &Value) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    validate(doc, schema, value, "$", &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Compares what the document says of a request (`allows`) with the intended verdict and
/// with the service's answer; returns the disagreements.
fn disagreements(
    doc: &Value,
    what: &str,
    intended: bool,
    allows: Result<(), Vec<String>>,
    path: &str,
    answer: &Answer,
) -> Vec<String> {
    let mut found = Vec::new();
    if allows.is_ok() != intended {
        found.push(format!(
            "{what}: the document {} it ({allows:?})",
            if intended { "refuses" } else { "allows" }
        ));
    }
    let accepted = (200..300).contains(&answer.code);
    if accepted != allows.is_ok() || (!accepted && answer.code != 400) {
        found.push(format!(
            "{what}: the document {} it, the service answered {} {}",
            if allows.is_ok() { "allows" } else { "refuses" },
            answer.code,
            answer.body
        ));
    }
    let content_type = answer.headers["content-type"].to_str().unwrap_or_default();
    check_answer(doc, path, "post", answer.code, content_type, &answer.body);
    found
}

/// `/transcode` reads a body by its members whatever the `ce-type` header says, checks every
/// member's type (a CloudEvent's `generation` too), and checks a Pub/Sub envelope before it
/// decides to ignore the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcode_accepts_exactly_the_bodies_the_document_allows() {
    let doc = document();
    let schema =
        &doc["paths"]["/transcode"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    let ws = Workspace::new("openapi_transcode_bodies");
    let server = ServerProcess::start(ws.path(), &[("MAX_PARALLEL_ENCODES", "1")]);
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let finalized: Headers = &[("ce-specversion", "1.0"), ("ce-type", FINALIZED)];
    let other: Headers = &[("ce-type", "com.example.other")];
    let cases: Vec<(&str, Headers, Value, bool)> = vec![
        (
            "a direct trigger with a CloudEvent header",
            finalized,
            json!({"videoId": "ce-direct", "inputPath": "incoming/a.mp4"}),
            true,
        ),
        (
            "a GCS object without a CloudEvent header",
            &[],
            json!({"bucket": "in", "name": "incoming/b.mp4", "generation": 7}),
            true,
        ),
        (
            "a CloudEvent of another type with a GCS object",
            other,
            json!({"bucket": "in", "name": "incoming/b.mp4"}),
            true,
        ),
        (
            "a CloudEvent of another type whose object name is not acceptable",
            other,
            json!({"bucket": "in", "name": "incoming//b.mp4"}),
            false,
        ),
        (
            "a direct trigger whose videoId is not acceptable, with a CloudEvent header of another type",
            other,
            json!({"videoId": "a.b", "inputPath": "incoming/a.mp4"}),
            false,
        ),
        (
            "a CloudEvent body whose generation is an object",
            finalized,
            json!({"bucket": "in", "name": "incoming/c.mp4", "generation": {}}),
            false,
        ),
        (
            "a CloudEvent body whose generation is a word",
            finalized,
            json!({"bucket": "in", "name": "incoming/c.mp4", "generation": "seven"}),
            false,
        ),
        (
            "a Pub/Sub body with wrong types and a CloudEvent header of another type",
            other,
            json!({"message": {"data": 5, "attributes": {"eventType": 1}}}),
            false,
        ),
        (
            "a Pub/Sub body whose attribute is a number",
            &[],
            json!({"message": {"attributes": {"eventType": "OBJECT_DELETE", "bucketId": 1}}}),
            false,
        ),
        (
            "a Pub/Sub body whose publishTime is not a date",
            &[],
            json!({"message": {"attributes": {"eventType": "OBJECT_DELETE"}, "publishTime": "noon"}}),
            false,
        ),
        (
            "a Pub/Sub message whose data names no object",
            &[],
            json!({"message": {"data": b64("[1, 2]"), "messageId": "1"}, "subscription": "s"}),
            true,
        ),
        (
            "a direct trigger with a member it does not have",
            &[],
            json!({"inputPath": "incoming/a.mp4", "outputbucket": "cdn"}),
            false,
        ),
    ];
    let mut found = Vec::new();
    for (what, headers, body, intended) in &cases {
        let answer = server.api.trigger(body, headers).await;
        let allows = allowed(&doc, schema, body);
        found.extend(disagreements(
            &doc,
            what,
            *intended,
            allows,
            "/transcode",
            &answer,
        ));
    }
    assert!(found.is_empty(), "{found:#?}");
}

/// `/upload` takes a `file` part and an optional `metadata` part holding a JSON object; an empty
/// `metadata` part is not one, nor is another part allowed, and the document and the service
/// both say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_accepts_exactly_the_parts_the_document_allows() {
    let doc = document();
    let schema =
        &doc["paths"]["/upload"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"];
    let ws = Workspace::new("openapi_upload_parts");
    let server = ServerProcess::start(ws.path(), &[("MAX_PARALLEL_ENCODES", "1")]);
    let video = "not a video at all";
    let mut found = Vec::new();
    for (parts, intended) in [
        (vec![], true),
        (vec![("metadata", r#"{"title": "t"}"#)], true),
        (vec![("metadata", "{}")], true),
        (vec![("metadata", "")], false),
        (vec![("metadata", "[1, 2]")], false),
        (vec![("metadata", "null")], false),
        (vec![("title", "t")], false),
    ] {
        let mut form =
            Form::new().part("file", Part::bytes(video.as_bytes()).file_name("clip.mp4"));
        // The parts as the document reads them: text for a string property, else JSON.
        let mut value = json!({"file": video});
        for (name, text) in &parts {
            form = form.text(*name, *text);
            value[*name] = match schema["properties"][*name]["type"].as_str() {
                Some("string") | None => json!(text),
                _ => serde_json::from_str(text).unwrap_or_else(|_| json!(text)),
            };
        }
        let answer = server.api.upload_form(form).await;
        let what = format!("parts {parts:?}");
        let allows = allowed(&doc, schema, &value);
        found.extend(disagreements(
            &doc, &what, intended, allows, "/upload", &answer,
        ));
    }
    assert!(found.is_empty(), "{found:#?}");
}

/// `POST /upload-url` takes `{fileName, contentType, sizeBytes, metadata?}` and nothing else,
/// with the file name, content type and size rules the document states (sizes up to
/// `MAX_VIDEO_SIZE`, which only the service knows, aside).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_url_accepts_exactly_the_requests_the_document_allows() {
    let doc = document();
    let schema = &doc["paths"]["/upload-url"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    let ws = Workspace::new("openapi_upload_url");
    let server = ServerProcess::start(ws.path(), &[]);
    let base = json!({"fileName": "clip.mp4", "contentType": "video/mp4", "sizeBytes": 1000});
    let with = |name: &str, value: Value| {
        let mut body = base.clone();
        match value {
            Value::Null if name.starts_with('-') => {
                body.as_object_mut().unwrap().remove(&name[1..]);
            }
            value => body[name] = value,
        }
        body
    };
    let cases: Vec<(&str, Value, bool)> = vec![
        ("the three members", base.clone(), true),
        ("metadata", with("metadata", json!({"title": "t"})), true),
        ("metadata null", with("metadata", Value::Null), false),
        ("metadata an array", with("metadata", json!([1])), false),
        ("no fileName", with("-fileName", Value::Null), false),
        ("an unknown member", with("title", json!("t")), false),
        ("sizeBytes 0", with("sizeBytes", json!(0)), false),
        ("sizeBytes -1", with("sizeBytes", json!(-1)), false),
        ("sizeBytes 1.5", with("sizeBytes", json!(1.5)), false),
        (
            "sizeBytes a string",
            with("sizeBytes", json!("1000")),
            false,
        ),
        (
            "octet-stream",
            with("contentType", json!("application/octet-stream")),
            true,
        ),
        (
            "video/x-matroska",
            with("contentType", json!("video/x-matroska")),
            true,
        ),
        ("text/html", with("contentType", json!("text/html")), false),
        ("video/ alone", with("contentType", json!("video/")), false),
        (
            "a name with spaces",
            with("fileName", json!("My clip (1).mp4")),
            true,
        ),
        ("an empty name", with("fileName", json!("")), false),
        ("a hidden name", with("fileName", json!(".clip.mp4")), false),
        ("a path", with("fileName", json!("a/b.mp4")), false),
        ("a backslash", with("fileName", json!("a\\b.mp4")), false),
        (
            "a C1 control",
            with("fileName", json!("a\u{85}b.mp4")),
            false,
        ),
    ];
    let mut found = Vec::new();
    for (what, body, intended) in &cases {
        let response = server
            .api
            .http
            .post(server.api.url("/upload-url"))
            .json(body)
            .send()
            .await
            .unwrap();
        let answer = Answer::read(response).await;
        let allows = allowed(&doc, schema, body);
        found.extend(disagreements(
            &doc,
            what,
            *intended,
            allows,
            "/upload-url",
            &answer,
        ));
    }
    assert!(found.is_empty(), "{found:#?}");
}
