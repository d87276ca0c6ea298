//! `POST /upload` to playback: the accepted answer, the package over HTTP, a corrupt upload,
//! a large upload over h2c, and the headers the local CDN serves to players.

use std::io::{Read, Write};

use futures_util::StreamExt;
use std::path::Path;

use reqwest::multipart::Form;
use serde_json::Value;

use crate::common::*;
use crate::support::*;

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
        ids.push(api.upload_accepted(file).await);
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
    let accepted = Answer::read(response).await;
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
    let id = api.upload_accepted(&clip).await;
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

/// A multipart body sent in two steps: the `file` part and the delimiter after it, then (when
/// the returned sender is told) `rest` (a part's headers and body) and the closing boundary.
fn held_upload(
    clip: &Path,
    rest: &str,
) -> (reqwest::Body, String, tokio::sync::oneshot::Sender<()>) {
    let boundary = "vt-held-upload".to_string();
    let mut first = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"held.mp4\"\r\n\
         Content-Type: video/mp4\r\n\r\n"
    )
    .into_bytes();
    first.extend(std::fs::read(clip).unwrap());
    // The next delimiter ends the file part: the service stores it and reads on.
    first.extend(format!("\r\n--{boundary}\r\n").into_bytes());
    let last = format!("{rest}--{boundary}--\r\n").into_bytes();
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(
        futures_util::stream::once(async move {
            let _ = wait.await;
            Ok(last)
        }),
    );
    (reqwest::Body::wrap_stream(stream), boundary, go)
}

/// Starts `POST /upload` of a multipart `body` in its own task; its answer when joined.
fn send_upload(
    app: &TestApp,
    body: reqwest::Body,
    boundary: String,
) -> tokio::task::JoinHandle<Answer> {
    let url = app.api.url("/upload");
    tokio::spawn(async move {
        let response = reqwest::Client::new()
            .post(url)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        Answer::read(response).await
    })
}

/// The object's own finalize event, as Pub/Sub pushes it.
async fn finalize_event(app: &TestApp, key: &str) -> Answer {
    let object = gcs_object("uploads", key, "1");
    app.api
        .trigger(&pubsub_push(&object, "OBJECT_FINALIZE"), &[])
        .await
}

/// The key `/upload` stored the held upload under, once its file part is in.
async fn stored_key(app: &TestApp) -> String {
    for _ in 0..200 {
        let found = files_under(&app.input_dir().join("pending"))
            .into_iter()
            .find(|f| f.ends_with("_held.mp4"));
        if let Some(name) = found {
            return format!("pending/{name}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the upload's file never reached the input store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploads_own_bucket_event_waits_for_it_and_keeps_its_metadata() {
    let ws = Workspace::new("api_upload_event");
    let clip = ws.clip("clip.mp4", 320, 240, 1.0, true);
    let app = spawn_app(&[]).await;
    let metadata = "Content-Disposition: form-data; name=\"metadata\"\r\n\r\n\
                    {\"title\": \"Race\"}\r\n";
    let (body, boundary, go) = held_upload(&clip, metadata);
    let upload = send_upload(&app, body, boundary);

    // The object is stored, the upload not yet queued: its event must wait, not plan.
    let key = stored_key(&app).await;
    let early = finalize_event(&app, &key).await;
    assert_eq!(early.code, 429, "{:?}", early.body);
    assert!(
        early.headers.contains_key("retry-after"),
        "{:?}",
        early.headers
    );

    go.send(()).unwrap();
    let accepted = upload.await.unwrap();
    assert_eq!(accepted.code, 202, "{:?}", accepted.body);
    let id = accepted.body["videoId"].as_str().unwrap().to_string();
    let later = finalize_event(&app, &key).await;
    assert_eq!(later.code, 200, "{:?}", later.body);
    assert_eq!(
        later.body["videoId"],
        id.as_str(),
        "the event names the upload's video"
    );
    let status = app.api.wait_final(&id).await;
    assert_eq!(status["state"], "ready", "{status:#}");
    assert_eq!(status["metadata"]["title"], "Race", "{status:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_uploads_event_finds_nothing_to_make() {
    let ws = Workspace::new("api_upload_refused_event");
    let clip = ws.clip("clip.mp4", 320, 240, 1.0, true);
    let app = spawn_app(&[]).await;
    let unknown = "Content-Disposition: form-data; name=\"extra\"\r\n\r\nx\r\n";
    let (body, boundary, go) = held_upload(&clip, unknown);
    let upload = send_upload(&app, body, boundary);
    let key = stored_key(&app).await;
    go.send(()).unwrap();
    assert_eq!(upload.await.unwrap().code, 400);

    let event = finalize_event(&app, &key).await;
    assert_eq!(event.code, 200, "{:?}", event.body);
    assert!(
        event.body["ignored"]
            .as_str()
            .unwrap()
            .contains("no longer exists"),
        "{:?}",
        event.body
    );
    assert!(
        files_under(&app.input_dir()).is_empty(),
        "{:?}",
        files_under(&app.input_dir())
    );
}
