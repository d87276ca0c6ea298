//! A webhook receiver on 127.0.0.1 that records what it gets and answers as a test scripts it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

/// How the receiver answers the `n`th attempt (1, 2, …) at one event.
#[derive(Clone, Copy)]
pub enum Answer {
    Status(u16),
    /// A 307 to another receiver.
    RedirectTo(u16),
    /// A 200 with a 10 MB body.
    Huge,
    /// Never answers.
    Hang,
}

type Script = dyn Fn(u32) -> Answer + Send + Sync;

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub signature: String,
    pub body: Bytes,
    pub json: Value,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub port: u16,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Starts a receiver answering with `script(attempt of that event)`.
    pub async fn start(script: impl Fn(u32) -> Answer + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, Arc::new(script))
    }

    fn serve(listener: tokio::net::TcpListener, script: Arc<Script>) -> Self {
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::<Received>::new()));
        let seen = got.clone();
        let handler = move |headers: HeaderMap, body: Bytes| {
            let (seen, script) = (seen.clone(), script.clone());
            async move {
                let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let received = Received {
                    signature: headers
                        .get("transcoder-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string(),
                    body,
                    json: json.clone(),
                };
                let attempt = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(received);
                    seen.iter().filter(|r| r.json["id"] == json["id"]).count() as u32
                };
                respond(script(attempt)).await
            }
        };
        let app = axum::Router::new().fallback(handler);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://127.0.0.1:{port}/hooks/transcoder"),
            port,
            got,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Requests per event type.
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for r in self.received() {
            *counts
                .entry(r.json["type"].as_str().unwrap_or("").to_string())
                .or_default() += 1;
        }
        counts
    }

    /// Waits (up to 60 s) until `done(self)`.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let started = Instant::now();
        while !done(self) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "receiver: still not {what}; got {:?}",
                self.counts()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn respond(answer: Answer) -> Response {
    match answer {
        Answer::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Answer::RedirectTo(port) => (
            StatusCode::TEMPORARY_REDIRECT,
            [("location", format!("http://127.0.0.1:{port}/elsewhere"))],
        )
            .into_response(),
        Answer::Huge => Response::new(Body::from(vec![b'x'; 10 << 20])),
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
    }
}

/// Checks `received` the way the README tells receivers to: HMAC-SHA256 of `"<t>.<body>"` with
/// the secret, compared in constant time, and `t` within 5 minutes of now.
pub fn verify(received: &Received, secret: &str) -> Result<(), String> {
    let mut t = None;
    let mut v1 = None;
    for part in received.signature.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (t, v1) = t
        .zip(v1)
        .ok_or(format!("bad header `{}`", received.signature))?;
    if (chrono::Utc::now().timestamp() - t).abs() > 300 {
        return Err(format!("t={t} is more than 5 minutes away"));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&received.body);
    mac.verify_slice(&v1)
        .map_err(|_| "the signature does not match".to_string())
}

/// Uploads a file that is no video through `api`, waits for it to end `failed` and for its
/// `video.failed` event at `hooks`, and checks the event: signed with `secret`, for this video,
/// with the status's error. Returns the final status.
pub async fn garbage_fails_with_an_event(
    ws: &crate::common::Workspace,
    api: &crate::common::Api,
    hooks: &Receiver,
    secret: &str,
) -> Value {
    let garbage = ws.path().join("garbage.mp4");
    std::fs::write(&garbage, vec![7u8; 4096]).unwrap();
    let id = api.upload_accepted(&garbage).await;
    let status = api.wait_final(&id).await;
    assert_eq!(status["state"], "failed", "{status:#}");
    hooks
        .wait_until("given failed", |h| h.counts().contains_key("video.failed"))
        .await;
    let failed = hooks
        .received()
        .into_iter()
        .find(|r| r.json["type"] == "video.failed")
        .unwrap();
    verify(&failed, secret).unwrap();
    assert_eq!(failed.json["videoId"], id.as_str());
    assert_eq!(failed.json["state"], "failed");
    assert_eq!(failed.json["error"], status["error"], "{:#}", failed.json);
    assert!(failed.json["error"].as_str().is_some_and(|e| !e.is_empty()));
    status
}

/// After time for a duplicate to show up, asserts `hooks` got `video.playable` and
/// `video.ready` once each and nothing else, every request signed with `secret` (and not with
/// another); returns what it got.
pub async fn playable_and_ready_once(hooks: &Receiver, secret: &str) -> Vec<Received> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = hooks.counts();
    assert_eq!(counts.get("video.playable"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("video.ready"), Some(&1), "{counts:?}");
    assert_eq!(counts.len(), 2, "{counts:?}");
    let received = hooks.received();
    for got in &received {
        verify(got, secret).unwrap_or_else(|e| panic!("{e}: {:?}", got.signature));
        assert!(verify(got, "another secret of enough length").is_err());
    }
    received
}
