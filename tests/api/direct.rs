//! Direct uploads with the local store: `POST /upload-url` signs a URL to the service itself,
//! the client PUTs the file there, and the job starts with the uploader's metadata.

use serde_json::{Value, json};

use crate::common::*;

/// Asks for an upload URL; returns the answer.
async fn upload_url(api: &Api, request: &Value) -> Answer {
    let response = api
        .http
        .post(api.url("/upload-url"))
        .json(request)
        .send()
        .await
        .unwrap();
    Answer::read(response).await
}

/// PUTs `bytes` to the signed URL with the headers the answer asked for.
async fn put_signed(api: &Api, answer: &Value, bytes: Vec<u8>) -> Answer {
    assert_eq!(answer["method"], "PUT", "{answer:#}");
    let mut request = api
        .http
        .put(answer["uploadUrl"].as_str().unwrap())
        .body(bytes);
    for (name, value) in answer["headers"].as_object().unwrap() {
        request = request.header(name, value.as_str().unwrap());
    }
    Answer::read(request.send().await.unwrap()).await
}

fn request_for(size: u64) -> Value {
    json!({
        "fileName": "My holiday.mp4",
        "contentType": "video/mp4",
        "sizeBytes": size,
        "metadata": {"title": "Holiday", "tags": ["sea"]},
    })
}

/// POST /upload-url → PUT the clip to the returned URL → the job ends ready with the
/// uploader's metadata in status.json; the URL's answer names the same video.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_upload_to_the_signed_url_ends_ready_with_its_metadata() {
    let ws = Workspace::new("direct_upload_local");
    let clip = std::fs::read(ws.clip("clip.mp4", 256, 144, 1.0, true)).unwrap();
    let app = spawn_app(&[]).await;
    let api = &app.api;

    let answer = upload_url(api, &request_for(clip.len() as u64)).await;
    assert_eq!(answer.code, 201, "{:?}", answer.body);
    let id = answer.body["videoId"].as_str().unwrap().to_string();
    assert_eq!(answer.body["statusUrl"], format!("/video-status/{id}"));
    assert!(
        answer.body["playbackUrl"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/videos/{id}/manifest/master.m3u8")),
        "{:?}",
        answer.body
    );
    let url = answer.body["uploadUrl"].as_str().unwrap();
    assert!(url.starts_with(&api.base), "{url}");
    assert!(
        chrono::DateTime::parse_from_rfc3339(answer.body["expiresAt"].as_str().unwrap()).is_ok()
    );

    let put = put_signed(api, &answer.body, clip.clone()).await;
    assert_eq!(put.code, 202, "{:?}", put.body);
    assert_eq!(put.body["videoId"], id.as_str());
    let status = api.wait_final(&id).await;
    assert_eq!(status["state"], "ready", "{status:#}");
    assert_eq!(
        status["metadata"],
        json!({"title": "Holiday", "tags": ["sea"]})
    );
    let stored = files_under(&app.input_dir().join("pending"));
    assert!(
        stored.contains(&format!("{id}_My_holiday.mp4")),
        "{stored:?}"
    );

    // The same URL a second time: the upload is there, nothing is overwritten.
    let again = put_signed(api, &answer.body, clip).await;
    assert_eq!(again.code, 409, "{:?}", again.body);
    app.stop().await;
}

/// A URL past its expiry, or with its signature, expiry or video changed, is refused with 403
/// before a byte is stored; a PUT larger than the declared size is refused and keeps nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tampered_and_oversized_puts_are_refused() {
    let app = spawn_app(&["--upload-url-ttl", "1"]).await;
    let api = &app.api;
    let body = vec![7u8; 1000];

    let expired = upload_url(api, &request_for(1000)).await;
    assert_eq!(expired.code, 201, "{:?}", expired.body);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let put = put_signed(api, &expired.body, body.clone()).await;
    assert_eq!(put.code, 403, "{:?}", put.body);
    assert!(
        put.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{:?}",
        put.body
    );
    app.stop().await;

    let app = spawn_app(&[]).await;
    let api = &app.api;
    let fresh = upload_url(api, &request_for(1000)).await;
    assert_eq!(fresh.code, 201, "{:?}", fresh.body);
    let url = fresh.body["uploadUrl"].as_str().unwrap().to_string();
    let signature = url.rsplit_once("signature=").unwrap().1.to_string();
    let flipped = match signature.chars().next().unwrap() {
        '0' => format!("1{}", &signature[1..]),
        _ => format!("0{}", &signature[1..]),
    };
    let expires = url
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("expires="))
        .unwrap()
        .to_string();
    let later = (expires.parse::<u64>().unwrap() + 3600).to_string();
    let other_id = uuid::Uuid::new_v4().to_string();
    let id = fresh.body["videoId"].as_str().unwrap();
    for tampered in [
        url.replace(&signature, &flipped),
        url.replace(&format!("expires={expires}"), &format!("expires={later}")),
        url.replace(id, &other_id),
        url.split("&signature=").next().unwrap().to_string(),
    ] {
        let mut answer = fresh.body.clone();
        answer["uploadUrl"] = tampered.clone().into();
        let put = put_signed(api, &answer, body.clone()).await;
        assert_eq!(put.code, 403, "{tampered}: {:?}", put.body);
    }
    // Another content type than the one signed.
    let mut answer = fresh.body.clone();
    answer["headers"]["content-type"] = "video/quicktime".into();
    let put = put_signed(api, &answer, body.clone()).await;
    assert_eq!(put.code, 403, "{:?}", put.body);

    // More bytes than declared.
    let put = put_signed(api, &fresh.body, vec![7u8; 1001]).await;
    assert_eq!(put.code, 413, "{:?}", put.body);
    assert!(
        files_under(&app.input_dir().join("pending"))
            .iter()
            .all(|f| !f.ends_with(".mp4")),
        "nothing is kept"
    );
    app.stop().await;
}

/// The request is checked: a size over MAX_VIDEO_SIZE, a content type the service does not
/// take, a file name that is a path, and metadata that is not an object are each 400.
#[tokio::test]
async fn upload_url_requests_are_checked() {
    let app = spawn_app(&["--max-video-size", "5000"]).await;
    let api = &app.api;
    let answer = upload_url(api, &request_for(5001)).await;
    assert_eq!(answer.code, 400, "{:?}", answer.body);
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("5000"),
        "{:?}",
        answer.body
    );
    let mut bad_type = request_for(100);
    bad_type["contentType"] = "text/html".into();
    let mut path = request_for(100);
    path["fileName"] = "../../etc/passwd".into();
    let mut metadata = request_for(100);
    metadata["metadata"] = json!([1, 2]);
    let mut zero = request_for(100);
    zero["sizeBytes"] = 0.into();
    for request in [bad_type, path, metadata, zero, json!({"fileName": "a.mp4"})] {
        let answer = upload_url(api, &request).await;
        assert_eq!(answer.code, 400, "{request}: {:?}", answer.body);
    }
    assert_eq!(upload_url(api, &request_for(5000)).await.code, 201);
    app.stop().await;
}
