//! Hostile requests: traversal and odd characters in video ids (URL path, trigger bodies, Pub/Sub
//! and CloudEvent shapes), object names, multipart file names and metadata. Each is refused with
//! 400 before anything is read or written, or (a name that is merely odd) made safe. The cases
//! tests/api/errors.rs already covers are not repeated.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::bait::{Bait, MARKER};
use crate::common::*;
use crate::support::*;

/// A trigger that must be refused: what it is, its body, its extra headers.
type Refused = (String, Value, Vec<(&'static str, &'static str)>);

/// Sends `GET <path>` byte for byte (no client-side normalisation of `..` or `%2e`) and returns
/// the status code and the body.
fn raw_get(base: &str, path: &str) -> (u16, String) {
    let address = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, answer)
}

/// Odd video ids in the URL (encoded slashes, dots, NUL, newline, space, non-ASCII, too long)
/// are 400 on `/video-status` and `/player`; `..` and encoded dots under `/videos` (the local
/// CDN) never leave the output store. In triggers, an id or object name with a path, a
/// backslash or a control character is 400 whichever shape carries it (direct, Pub/Sub data,
/// Pub/Sub attributes, CloudEvent). Names that only look like other protocols (`concat:`,
/// `subfile,,…:`, `file:`) are plain object names: the job fails as a missing source and no
/// canary is read. Nothing is written to the output store or read from outside the input store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_ids_and_object_names_are_refused_before_anything_is_touched() {
    let app = spawn_app(&[]).await;
    let api = &app.api;
    let bait = Bait::new(&app.input_dir().join("pending"));

    let long = "a".repeat(65);
    for id in [
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e",
        "a%00b",
        "a%0Ab",
        "a%20b",
        "vid%C3%A9o",
        "a%5Cb",
        long.as_str(),
    ] {
        for path in [
            format!("/video-status/{id}"),
            format!("/player/{id}"),
            format!("/thumbnail/{id}.jpg"),
        ] {
            let (code, body) = raw_get(&api.base, &path);
            assert_eq!(code, 400, "{path}: {body}");
        }
    }
    let canary_key = "input/pending/canary.txt";
    for path in [
        format!("/videos/../{canary_key}"),
        format!("/videos/..%2F{}", canary_key.replace('/', "%2F")),
        format!("/videos/%2e%2e/{canary_key}"),
        format!("/videos/%2E%2E%2F{canary_key}"),
        format!("/videos/..\\{}", canary_key.replace('/', "\\")),
        "/videos//etc/passwd".to_string(),
    ] {
        let (code, body) = raw_get(&api.base, &path);
        assert!(code >= 400, "{path}: {code}");
        assert!(!body.contains(MARKER), "{path} served the canary");
    }

    let b64 = |v: Value| base64::engine::general_purpose::STANDARD.encode(v.to_string());
    let long_key = format!("incoming/{}", "a".repeat(1020));
    let mut refused: Vec<Refused> = Vec::new();
    for path in [
        "..\\..\\x.mp4",
        "incoming\\x.mp4",
        "incoming/\u{0}.mp4",
        "incoming/a\nb.mp4",
        "incoming/\u{7f}.mp4",
        "incoming/",
        "./x.mp4",
        "incoming/./x.mp4",
        "",
        long_key.as_str(),
        "http://127.0.0.1:9/x.mp4",
    ] {
        refused.push((
            format!("direct inputPath {path:?}"),
            direct_trigger("odd-path", path),
            vec![],
        ));
    }
    for id in ["a\u{0}b", "a\nb", "a/b", "", long.as_str()] {
        refused.push((
            format!("direct videoId {id:?}"),
            direct_trigger(id, "incoming/a.mp4"),
            vec![],
        ));
    }
    refused.push((
        "Pub/Sub data with a traversing videoId".into(),
        json!({"message": {"data": b64(direct_trigger("../../x", "incoming/a.mp4"))}}),
        vec![],
    ));
    refused.push((
        "Pub/Sub data with an absolute inputPath".into(),
        json!({"message": {"data": b64(direct_trigger("x", "/etc/passwd"))}}),
        vec![],
    ));
    for name in ["/etc/passwd", "../../etc/passwd", "pending/../../x"] {
        refused.push((
            format!("Pub/Sub GCS object {name:?}"),
            json!({"message": {"data": b64(json!({"bucket": "in", "name": name, "generation": "1"}))}}),
            vec![],
        ));
        refused.push((
            format!("Pub/Sub attributes objectId {name:?}"),
            json!({"message": {"attributes": {"eventType": "OBJECT_FINALIZE", "bucketId": "in", "objectId": name}}}),
            vec![],
        ));
        refused.push((
            format!("CloudEvent object {name:?}"),
            json!({"bucket": "in", "name": name, "generation": 1}),
            vec![("ce-type", "google.cloud.storage.object.v1.finalized")],
        ));
    }
    for (what, body, headers) in &refused {
        let answer = api.trigger(body, headers).await;
        assert_eq!(answer.code, 400, "{what}: {:?}", answer.body);
        assert_error(&answer, 400, "bad_request");
    }
    assert_eq!(files_under(&app.cdn_dir()), Vec::<String>::new());

    // Valid object names that look like libav protocols or URLs: only ever a name in the store.
    let media = bait.media.display().to_string();
    let text = bait.text.display().to_string();
    let lookalikes = [
        format!("concat:{media}|{text}"),
        format!("subfile,,start,0,end,0,,:{text}"),
        format!("file:{text}"),
        "pending/concat:canary.ts|canary.txt".to_string(),
        "pending/file:canary.txt".to_string(),
        format!("http:/{}", bait.url("x.ts").trim_start_matches("http://")),
    ];
    for (i, path) in lookalikes.iter().enumerate() {
        let id = format!("lookalike-{i}");
        let answer = api.trigger(&direct_trigger(&id, path), &[]).await;
        assert_eq!(answer.code, 202, "{path}: {:?}", answer.body);
        let status = api.wait_final(&id).await;
        assert_eq!(status["state"], "failed", "{path}: {status:#}");
        let error = status["error"].as_str().unwrap_or_default();
        assert!(error.contains("does not exist"), "{path}: {error}");
        bait.assert_untouched(path, &[&app.cdn_dir(), &app.scratch_dir()]);
    }
    app.stop().await;
}

/// A multipart body with one `file` part whose `Content-Disposition` carries `disposition`
/// byte for byte, and optional `metadata` parts before (`before`) or after it.
fn raw_form(disposition: &[u8], before: Option<&[u8]>, after: Option<&[u8]>) -> Vec<u8> {
    const B: &str = "x-boundary-7d1f";
    let mut body = Vec::new();
    let metadata = |body: &mut Vec<u8>, value: &[u8]| {
        body.extend(
            format!("--{B}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n")
                .as_bytes(),
        );
        body.extend(value);
        body.extend(b"\r\n");
    };
    if let Some(value) = before {
        metadata(&mut body, value);
    }
    body.extend(format!("--{B}\r\nContent-Disposition: form-data; name=\"file\"; ").as_bytes());
    body.extend(disposition);
    body.extend(b"\r\nContent-Type: application/octet-stream\r\n\r\nnot a video at all\r\n");
    if let Some(value) = after {
        metadata(&mut body, value);
    }
    body.extend(format!("--{B}--\r\n").as_bytes());
    body
}

async fn post_raw_form(api: &Api, body: Vec<u8>) -> Answer {
    let response = api
        .http
        .post(api.url("/upload"))
        .header(
            "content-type",
            "multipart/form-data; boundary=x-boundary-7d1f",
        )
        .body(body)
        .send()
        .await
        .unwrap();
    Answer::read(response).await
}

/// Multipart file names with a backslash path, an absolute path, `..` or `.`, NUL or ESC are
/// 400 with nothing stored; merely odd names (encoded dots, non-ASCII, 1,000 characters, a
/// percent-encoded `filename*` path, which is not decoded) are stored directly under `pending/` with only
/// `[A-Za-z0-9._-]` in the name. `metadata` that is a number, a boolean, empty, invalid UTF-8,
/// a lone surrogate, nested past the parser's depth limit or over 64 KiB is 400, whether it
/// comes before the file (nothing written) or after it (the stored file removed). Odd
/// characters inside a metadata object are data: kept as given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_file_names_and_metadata_are_refused_or_made_safe() {
    let app = spawn_app(&[]).await;
    let api = &app.api;

    for disposition in [
        &br#"filename="..\..\x.mp4""#[..],
        br#"filename="..\\..\\x.mp4""#,
        br#"filename="C:\\temp\\x.mp4""#,
        br#"filename="/etc/passwd""#,
        br#"filename="..""#,
        br#"filename=".""#,
        b"filename=\"a\x00b.mp4\"",
        b"filename=\"a\x1bb.mp4\"",
    ] {
        let answer = post_raw_form(api, raw_form(disposition, None, None)).await;
        let shown = String::from_utf8_lossy(disposition);
        assert_eq!(answer.code, 400, "{shown}: {:?}", answer.body);
        assert_error(&answer, 400, "bad_request");
    }
    assert_eq!(files_under(&app.input_dir()), Vec::<String>::new());

    let long = format!("filename=\"{}.mp4\"", "x".repeat(1000));
    for disposition in [
        &br#"filename="%2e%2e%2fetc%2fpasswd""#[..],
        "filename=\"vidéo d'été ü.mp4\"".as_bytes(),
        long.as_bytes(),
        br#"filename="a;b=c.mp4""#,
        br#"filename*=UTF-8''..%2F..%2Fetc%2Fpasswd"#,
    ] {
        let answer = post_raw_form(api, raw_form(disposition, None, None)).await;
        let shown = String::from_utf8_lossy(disposition);
        assert_eq!(answer.code, 202, "{shown}: {:?}", answer.body);
        let id = answer.body["videoId"].as_str().unwrap();
        let stored: Vec<String> = files_under(&app.input_dir())
            .into_iter()
            .filter(|f| f.contains(&format!("{id}_"))) // not the upload's record, `<id>.json`
            .collect();
        assert_eq!(stored.len(), 1, "{shown}: {stored:?}");
        let name = stored[0]
            .strip_prefix(&format!("pending/{id}_"))
            .unwrap_or_else(|| panic!("{shown}: stored as {}", stored[0]));
        assert!(
            !name.is_empty()
                && name.len() <= 120
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "{shown}: stored as {name}"
        );
        api.wait_final(id).await;
    }
    let before = files_under(&app.input_dir());

    let deep = format!("{{\"a\": {}{}}}", "[".repeat(200), "]".repeat(200));
    let huge = format!("{{\"a\": \"{}\"}}", "x".repeat(70 * 1024));
    let bad_metadata: [&[u8]; 8] = [
        b"42",
        b"true",
        b"",
        b"{\"a\": \"\xff\xfe\"}",
        br#"{"a": "\ud800"}"#,
        deep.as_bytes(),
        huge.as_bytes(),
        b"{\"a\": 1} trailing",
    ];
    for metadata in bad_metadata {
        let shown = String::from_utf8_lossy(&metadata[..metadata.len().min(40)]).into_owned();
        for (first, then) in [(Some(metadata), None), (None, Some(metadata))] {
            let body = raw_form(br#"filename="clip.mp4""#, first, then);
            let answer = post_raw_form(api, body).await;
            assert_eq!(answer.code, 400, "metadata {shown}: {:?}", answer.body);
            let message = assert_error(&answer, 400, "bad_request");
            assert!(message.contains("metadata"), "{shown}: {message}");
        }
    }
    assert_eq!(
        files_under(&app.input_dir()),
        before,
        "a refused upload left a file"
    );

    let odd = json!({"title": "<script>alert(1)</script>", "path": "../../etc/passwd", "nul": "\u{0}", "emoji": "🎬"});
    let body = raw_form(
        br#"filename="clip.mp4""#,
        Some(odd.to_string().as_bytes()),
        None,
    );
    let answer = post_raw_form(api, body).await;
    assert_eq!(answer.code, 202, "{:?}", answer.body);
    let id = answer.body["videoId"].as_str().unwrap();
    let status = api.wait_final(id).await;
    assert_eq!(status["metadata"], odd, "{status:#}");
    app.stop().await;
}
