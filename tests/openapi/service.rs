//! The real binary serves the document and answers as it says.

use serde_json::{Value, json};

use crate::common::*;
use crate::document;
use crate::schema::{assert_valid, deref};

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
    // On a client of its own: the server answers without reading the body and drops the
    // connection, which a pooled client would otherwise hand to the next request.
    let huge = reqwest::Client::new()
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
    let jobs = api.get("/jobs.json").await;
    assert_eq!(jobs.headers["cache-control"], "no-store");
    check("/jobs.json", "get", &jobs);
    let input_path = std::fs::read_dir(ws.path().join("input/pending"))
        .unwrap()
        .map(|e| format!("pending/{}", e.unwrap().file_name().to_string_lossy()))
        .find(|name| name.contains(&format!("{id}_"))) // not its record, `<id>.json`
        .expect("the stored upload");
    let again = api.trigger(&json!({"inputPath": input_path}), &[]).await;
    assert_eq!(again.code, 200, "{:?}", again.body);
    assert_eq!(again.body["videoId"], id.as_str());
    check("/transcode", "post", &again);
    let last = api.wait_final(&id).await;
    assert_eq!(last["state"], "ready", "{last:#}");
    let done = api.get(&format!("/video-status/{id}")).await;
    check("/video-status/{id}", "get", &done);
    let jobs = api.get("/jobs.json").await;
    assert_eq!(jobs.body["active"], json!([]), "{:?}", jobs.body);
    check("/jobs.json", "get", &jobs);
    for (path, route) in [
        ("/jobs", "/jobs"),
        ("/assets/hls.min.js?v=1", "/assets/hls.min.js"),
    ] {
        let answer = api.http.get(api.url(path)).send().await.unwrap();
        assert_eq!(answer.status().as_u16(), 200, "{path}");
        let content_type = answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        check_answer(&doc, route, "get", 200, &content_type, &Value::Null);
    }
    let file = api.get(&format!("/videos/{id}/status.json")).await;
    assert_eq!(file.code, 200);
    check("/videos/{path}", "get", &file);
    for (query, code) in [
        ("?time=0.5&width=64", 200),
        ("?time=99", 400),
        ("?width=0", 400),
    ] {
        let path = format!("/thumbnail/{id}.jpg{query}");
        let answer = api.http.get(api.url(&path)).send().await.unwrap();
        let status = answer.status().as_u16();
        let content_type = answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = answer.bytes().await.unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert_eq!(status, code, "{path}: {body}");
        check_answer(
            &doc,
            "/thumbnail/{file}",
            "get",
            status,
            &content_type,
            &body,
        );
    }
    check(
        "/thumbnail/{file}",
        "get",
        &api.get("/thumbnail/no-such-video.png").await,
    );
    check(
        "/thumbnail/{file}",
        "get",
        &api.get(&format!("/thumbnail/{id}.gif")).await,
    );
    // A folder is not a file: 404 as documented (a bucket has no such object), not a redirect.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let folder = no_redirects
            .request(method.clone(), api.url(&format!("/videos/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(folder.status().as_u16(), 404, "{method} /videos/{id}");
        // Names longer than a file system allows name no file either (ENAMETOOLONG is no 500).
        let long_name = format!("{id}/{}", "%C3%A9".repeat(200));
        let deep = vec!["a".repeat(200); 30].join("/");
        for path in [long_name, deep] {
            let answer = no_redirects
                .request(method.clone(), api.url(&format!("/videos/{path}")))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status().as_u16(), 404, "{method} /videos/{path}");
        }
    }
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
pub fn check_answer(
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
