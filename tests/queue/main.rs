//! Queue mode's parts against a real Pub/Sub emulator (gcloud's, on the machine image): the
//! test harness itself (emulator, push and dead-letter topics, the round-robin proxy), the
//! service's publisher, and what a queued video gets once settled (images, download, webhooks).

#[path = "../common/mod.rs"]
mod common;

mod cluster; // the emulator, services sharing one output folder, and the proxy before them
mod extras; // a queued video's images, download and webhooks
mod harness; // the emulator's push, retry and dead-letter topic; the proxy's round robin
mod publisher; // the service's Publisher: pushed to a handler, retries, gives up
#[allow(dead_code)] // the webhook tests' receiver; these tests use part of it
#[path = "../webhooks/receiver.rs"]
mod receiver;
mod service; // queue mode end to end: units on two instances, kill, stop, storm, poison, load

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use serde_json::Value;

/// A backend on a loopback port that answers every request with `status` and keeps the JSON
/// bodies it received.
pub struct Recorder {
    pub base: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Recorder {
    pub async fn start(status: StatusCode) -> Self {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .fallback(
                move |State(bodies): State<Arc<Mutex<Vec<Value>>>>, body: axum::body::Bytes| async move {
                    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    bodies.lock().unwrap().push(json);
                    status
                },
            )
            .with_state(bodies.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base,
            bodies,
            server,
        }
    }

    pub fn received(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    /// Waits up to `wait` until `count` requests arrived; returns them all.
    pub async fn wait_for(&self, count: usize, wait: Duration) -> Vec<Value> {
        let started = std::time::Instant::now();
        while self.received().len() < count && started.elapsed() < wait {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.received()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A loopback address nothing listens on (connections to it are refused).
pub fn refused_base() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

pub fn decoded(envelope: &Value) -> Vec<u8> {
    let data = envelope["message"]["data"].as_str().unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap()
}
