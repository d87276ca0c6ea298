//! A small round-robin HTTP proxy on a loopback port, in front of several service processes (as
//! Cloud Run's front end is in front of its instances): each request is read whole and forwarded
//! to the next backend in turn. A backend that refuses the connection gets the request retried
//! on the next one; when none answers, the proxy answers 502. It counts its answers by status
//! code, so a test can say "429s happened".

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub struct Proxy {
    /// `http://127.0.0.1:PORT`, the address to give Pub/Sub as the push endpoint's base.
    pub base: String,
    state: Arc<Backends>,
    server: tokio::task::JoinHandle<()>,
}

struct Backends {
    bases: Mutex<Vec<String>>,
    next: AtomicUsize,
    answers: Mutex<BTreeMap<u16, u64>>,
    http: reqwest::Client,
}

impl Proxy {
    /// Starts a proxy in front of `backends` (base URLs such as `http://127.0.0.1:8080`).
    pub async fn start(backends: &[&str]) -> Self {
        let state = Arc::new(Backends {
            bases: Mutex::new(backends.iter().map(|b| b.to_string()).collect()),
            next: AtomicUsize::new(0),
            answers: Mutex::new(BTreeMap::new()),
            http: reqwest::Client::new(),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base,
            state,
            server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops sending requests to `backend` (requests already forwarded to it go on).
    pub fn remove_backend(&self, backend: &str) {
        self.state.bases.lock().unwrap().retain(|b| b != backend);
    }

    /// Sends requests to `backend` too.
    pub fn add_backend(&self, backend: &str) {
        self.state.bases.lock().unwrap().push(backend.to_owned());
    }

    /// How many answers of each status code the proxy gave (its own 502s included).
    pub fn answers(&self) -> BTreeMap<u16, u64> {
        self.state.answers.lock().unwrap().clone()
    }

    /// How many answers with `status` the proxy gave.
    pub fn count(&self, status: u16) -> u64 {
        self.answers().get(&status).copied().unwrap_or(0)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn forward(State(state): State<Arc<Backends>>, request: Request) -> Response {
    let answer = try_backends(&state, request).await;
    *state
        .answers
        .lock()
        .unwrap()
        .entry(answer.status().as_u16())
        .or_default() += 1;
    answer
}

/// Forwards `request` to each backend in turn, starting with the next one, until one takes the
/// connection; 502 if none does.
async fn try_backends(state: &Backends, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let bases = state.bases.lock().unwrap().clone();
    let first = state.next.fetch_add(1, Ordering::Relaxed);
    for i in 0..bases.len() {
        let base = &bases[(first + i) % bases.len()];
        let mut headers = parts.headers.clone();
        headers.remove(header::HOST);
        let sent = state
            .http
            .request(parts.method.clone(), format!("{base}{path}"))
            .headers(headers)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(answer) => return relay(answer).await,
            Err(e) if e.is_connect() => continue,
            Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
        }
    }
    StatusCode::BAD_GATEWAY.into_response()
}

/// A backend's answer, read whole, as the proxy's answer.
async fn relay(answer: reqwest::Response) -> Response {
    let status = answer.status();
    let mut headers: HeaderMap = answer.headers().clone();
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::CONNECTION);
    let body: Bytes = match answer.bytes().await {
        Ok(body) => body,
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
